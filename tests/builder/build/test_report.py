"""A dirty dataset: each kind of broken scenario is named in the report with its reason, the
healthy ones build, the exit code says something failed; quarantine and `awm images prune`."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import docker
import pytest
from typer.testing import CliRunner

from awm.cli import app
from tests.builder.build.conftest import edit_records, make_variants

pytestmark = pytest.mark.docker
runner = CliRunner()

CRASHES_AT_IMPORT = 'raise RuntimeError("t4 boom at import")\napp = FastAPI('
FAILS_AT_STARTUP = '''

def _t4_fail_startup():
    raise RuntimeError("t4 startup hook failed")


app.router.on_startup.append(_t4_fail_startup)


if __name__ == "__main__":'''
FIVE_HUNDRED = '''

@app.get("/t4-boom", operation_id="t4_boom", summary="Always fails", tags=["test"])
def t4_boom():
    raise RuntimeError("t4 tool bug")


if __name__ == "__main__":'''
DONE_AT_SEED = '''
def verify_task_completion(initial_db_path, final_db_path, final_answer=None):
    return {"result": "complete"}
'''


def _code(edit: Callable[[str], str]) -> Callable[[dict[str, Any]], None]:
    def apply(rec: dict[str, Any]) -> None:
        rec["full_code"] = edit(rec["full_code"])

    return apply


def _dirty_dataset(root: Path) -> list[str]:
    ids = make_variants(root, 7, "t4 report")
    crash, inserts, done, startup, five, _healthy, unparsable = ids
    edit_records(root, "gen_envs.jsonl", crash, _code(lambda c: c.replace("app = FastAPI(", CRASHES_AT_IMPORT, 1)))

    def orphan_insert(rec: dict[str, Any]) -> None:
        table = rec["sample_data"]["tables"][-1]
        table["insert_statements"].append(f"INSERT INTO {table['table_name']} (id) VALUES (NULL, 'x')")

    edit_records(root, "gen_sample.jsonl", inserts, orphan_insert)

    def complete(rec: dict[str, Any]) -> None:
        if rec["task_idx"] == 2:
            rec["verification"]["code"] = DONE_AT_SEED

    edit_records(root, "gen_verifier.pure_code.jsonl", done, complete)
    main_guard = '\n\nif __name__ == "__main__":'
    edit_records(root, "gen_envs.jsonl", startup, _code(lambda c: c.replace(main_guard, FAILS_AT_STARTUP, 1)))
    edit_records(root, "gen_envs.jsonl", five, _code(lambda c: c.replace(main_guard, FIVE_HUNDRED, 1)))
    edit_records(root, "gen_envs.jsonl", unparsable, _code(lambda c: c + "\ndef broken(:\n"))
    return ids


def test_report_names_each_broken_scenario_and_the_others_build(
    docker_client: docker.DockerClient, tmp_path: Path, own_images: Callable[[str], str]
) -> None:
    own_images("t4_report_")
    root = tmp_path / "dataset"
    crash, inserts, done, startup, five, healthy, unparsable = _dirty_dataset(root)
    report_path = tmp_path / "report.json"

    result = runner.invoke(app, ["build", str(root), "--smoke", "--jobs", "4", "--report", str(report_path)])
    assert result.exit_code == 1, result.output
    report = json.loads(report_path.read_text())
    by = {r["scenario"]: r for r in report["results"]}
    assert report["complete"] is True
    assert report["selected"] == 7
    assert len(by) == 7
    assert report["counts"] == {"built": 4, "cached": 0, "failed": 2, "quarantined": 1, "pending": 0}

    # a module that raises at import: no image, the exception named
    assert (by[crash]["status"], by[crash]["stage"]) == ("failed", "check")
    expected = f"scenario '{crash}': environment module failed on import: RuntimeError: t4 boom at import"
    assert expected in by[crash]["error"]
    with pytest.raises(docker.errors.ImageNotFound):
        docker_client.images.get(by[crash]["tag"])
    # a module that does not parse never reaches Docker
    assert (by[unparsable]["status"], by[unparsable]["stage"]) == ("failed", "catalog")
    assert "environment module does not parse" in by[unparsable]["error"]
    # failing inserts: built, the statement and its error recorded
    assert by[inserts]["status"] == "built"
    assert by[inserts]["failed_statements"] == 1
    assert by[inserts]["failed_sql"][0]["stage"] == "insert"
    assert by[inserts]["warnings"][0].startswith("1 seed statement(s) failed, first: insert of table")
    # a task already complete on the untouched seed
    assert by[done]["status"] == "built"
    assert by[done]["smoke"]["status"] == "issues"
    assert by[done]["smoke"]["complete_at_seed"] == [2]
    assert "task 2 is already complete on the untouched seed" in by[done]["warnings"]
    # a read-only tool answering 500, recorded per tool
    assert by[five]["smoke"]["server_errors"] == {"t4_boom": 500}
    boom = next(t for t in by[five]["smoke"]["tools"] if t["tool"] == "t4_boom")
    assert boom["outcome"] == "server_error"
    assert "Status code: 500" in boom["detail"]
    # an image that cannot start: kept, tagged quarantined, never :latest
    q = by[startup]
    assert (q["status"], q["stage"]) == ("quarantined", "smoke")
    assert f"awm/{startup}:quarantined" in q["error"]
    assert "t4 startup hook failed" in q["error"]
    image = docker_client.images.get(f"awm/{startup}:quarantined")
    assert image.id == q["image_id"]
    assert f"awm/{startup}:latest" not in image.tags
    # the healthy one: every read-only tool called with the spec's examples, all fine
    h = by[healthy]["smoke"]
    assert by[healthy]["status"] == "built"
    assert h["status"] == "passed"
    assert h["complete_at_seed"] == []
    called = [t for t in h["tools"] if t["outcome"] != "skipped"]
    assert called
    assert any(t["arguments"] for t in called)
    assert {t["outcome"] for t in called} <= {"ok", "error"}
    for sid in (crash, unparsable, startup):
        assert sid in result.output  # the table and the closing lines name them

    # A rerun builds nothing new: the quarantined image stays quarantined, the broken module
    # fails again, the rest is cached with its smoke results.
    again = runner.invoke(app, ["build", str(root), "--smoke", "--report", str(report_path)])
    assert again.exit_code == 1
    by2 = {r["scenario"]: r for r in json.loads(report_path.read_text())["results"]}
    assert {s: r["status"] for s, r in by2.items()} == {
        crash: "failed", inserts: "cached", done: "cached", startup: "quarantined", five: "cached",
        healthy: "cached", unparsable: "failed",
    }
    assert by2[done]["smoke"]["complete_at_seed"] == [2]

    listed = runner.invoke(app, ["images", "ls", "t4_report_*", "--json"])
    assert listed.exit_code == 0, listed.output
    states = {i["scenario"]: (i["state"], i["smoke"]) for i in json.loads(listed.output)}
    assert states[startup] == ("quarantined", "failed")
    assert states[healthy] == ("current", "passed")
    assert states[done] == ("current", "issues")
    assert crash not in states
    assert unparsable not in states

    pruned = runner.invoke(app, ["images", "prune", "t4_report_*"])
    assert pruned.exit_code == 0, pruned.output
    assert f"removed {startup}" in pruned.output
    after = {i["scenario"] for i in json.loads(runner.invoke(app, ["images", "ls", "t4_report_*", "--json"]).output)}
    assert after == {inserts, done, five, healthy}


def test_strict_refuses_failing_inserts_before_building(tmp_path: Path, own_images: Callable[[str], str]) -> None:
    own_images("t4_strict_")
    root = tmp_path / "dataset"
    (sid,) = make_variants(root, 1, "t4 strict")

    def orphan_insert(rec: dict[str, Any]) -> None:
        rec["sample_data"]["tables"][-1]["insert_statements"].append("INSERT INTO nowhere VALUES (1)")

    edit_records(root, "gen_sample.jsonl", sid, orphan_insert)
    report_path = tmp_path / "r.json"
    result = runner.invoke(app, ["build", str(root), "--strict", "--no-smoke", "--report", str(report_path)])
    assert result.exit_code == 1
    (r,) = json.loads(report_path.read_text())["results"]
    assert (r["status"], r["stage"]) == ("failed", "seed")
    assert "no such table: nowhere" in r["error"]
