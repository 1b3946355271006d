"""File in, file out: each stage on the bundled example dataset's files, with the original's flag names.

The scripted server answers with the fixtures' replies, matched on the examples' own names (the
fixtures were derived from two examples under other names). The example files are hashed before
and after: no stage touches its inputs.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from awm.cli import app
from tests.builder.synth.scripted import FIXTURES, ScriptedLLM, load_entries

ROOT = Path(__file__).resolve().parents[3]
EXAMPLES = ROOT / "examples"
RENAMES = {"Pantry Pilot Meal Planner": "PantryPal Recipe Planner",
           "Campfire Site Reservations": "Trailhead Campground Reservations"}
runner = CliRunner()


def _example_entries() -> list[dict[str, Any]]:
    entries = []
    for e in load_entries():
        match = list(e["match"])
        for fixture_name, example_name in RENAMES.items():
            match = [m.replace(fixture_name, example_name) for m in match]
        entries.append({**e, "match": match})
    return entries


def _forty_users_one_failing() -> dict[str, Any]:
    """A seed-data reply of 40 inserts, the last repeating id 1 (it fails: 1 of 40)."""
    rows = [f"INSERT INTO users (id, username, full_name, email, household_size, created_at) VALUES "
            f"({i}, 'user{i}', 'User {i}', 'user{i}@example.org', 2, '2025-01-0{1 + i % 9}T08:00:00')"
            for i in range(1, 40)]
    rows.append("INSERT INTO users (id, username, full_name, email, household_size, created_at) VALUES "
                "(1, 'again', 'Again', 'again@example.org', 1, '2025-01-01T08:00:00')")
    reply = "```json\n" + json.dumps({"tables": [{"table_name": "users", "reasoning": "people",
                                                   "insert_statements": rows}]}) + "\n```"
    return {"id": "forty-users", "stage": "sample", "match": ["Task: write the seed data",
                                                              "## Scenario: PantryPal Recipe Planner"],
            "feedback": None, "fault": "one failing insert of 40", "reply": reply}


@pytest.fixture
def server() -> Iterator[ScriptedLLM]:
    s = ScriptedLLM([_forty_users_one_failing(), *_example_entries()]).start()
    yield s
    s.stop()


def _digests() -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(EXAMPLES.glob("*.json*"))}


@pytest.fixture
def untouched() -> Iterator[None]:
    before = _digests()
    yield
    assert _digests() == before  # no input was modified


def gen(server: ScriptedLLM, *args: str) -> Any:
    return runner.invoke(app, ["gen", *args, "--model", "scripted", "--base-url", server.url, "--no-cache"],
                         env={"AWM_LLM_API_KEY": "k", "COLUMNS": "200"})


def rows(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_scenario_file_to_file_with_target_count(server: ScriptedLLM, tmp_path: Path) -> None:
    out = tmp_path / "gen_scenario.jsonl"
    result = gen(server, "scenario", "--input_path", str(FIXTURES / "seeds.jsonl"), "--output_path", str(out),
                 "--target_count", "4")
    assert result.exit_code == 0, result.output
    written = rows(out)
    assert len(written) == 4  # the total, seeds included
    assert [r["name"] for r in written[:2]] == [r["name"] for r in rows(FIXTURES / "seeds.jsonl")]
    assert sorted(tmp_path.iterdir()) == [out]


def test_task_file_to_file(server: ScriptedLLM, tmp_path: Path, untouched: None) -> None:
    out = tmp_path / "gen_tasks.jsonl"
    result = gen(server, "task", "--input", str(EXAMPLES / "gen_scenario.jsonl"), "--output", str(out),
                 "--allowed_scenarios", "PantryPal Recipe Planner", "--num_tasks", "6")
    assert result.exit_code == 0, result.output
    (row,) = rows(out)
    assert row["scenario"] == "PantryPal Recipe Planner"
    assert len(row["tasks"]) == 6
    assert sorted(tmp_path.iterdir()) == [out]


def test_db_file_to_file_materialises_the_database(server: ScriptedLLM, tmp_path: Path, untouched: None) -> None:
    out, dbs = tmp_path / "gen_db.jsonl", tmp_path / "databases"
    result = gen(server, "db", "--input", str(EXAMPLES / "gen_tasks.jsonl"), "--output", str(out),
                 "--allowed-scenarios", "pantrypal_recipe_planner", "--database_dir", str(dbs))
    assert result.exit_code == 0, result.output
    (row,) = rows(out)
    assert row["db_path"] == str(dbs.resolve() / "pantrypal_recipe_planner.db")
    with sqlite3.connect(row["db_path"]) as conn:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert {t["name"] for t in row["db_schema"]["tables"]} <= tables


def test_sample_keeps_one_failing_insert_of_40_within_the_threshold(
    server: ScriptedLLM, tmp_path: Path, untouched: None,
) -> None:
    out = tmp_path / "gen_sample.jsonl"
    args = ["sample", "--input_task", str(EXAMPLES / "gen_tasks.jsonl"), "--input_db", str(EXAMPLES / "gen_db.jsonl"),
            "--output", str(out), "--allowed_scenarios", "PantryPal Recipe Planner", "--attempts", "1"]
    result = gen(server, *args, "--error_threshold", "0.1")
    assert result.exit_code == 0, result.output
    (row,) = rows(out)
    assert row["inserts_count"] == 40
    assert "1 of 40 INSERT statements failed, within --error_threshold 0.1; kept" in result.output
    assert "UNIQUE constraint failed: users.id" in result.output

    strict = tmp_path / "strict.jsonl"
    result = gen(server, *args[:5], "--output", str(strict), *args[7:], "--strict")
    assert result.exit_code == 1
    assert rows(strict) == []  # dropped
    assert "failed scenario 'pantrypal_recipe_planner', stage sample" in " ".join(result.output.split())


def test_sample_keeps_the_best_attempt_when_attempts_run_out(
    server: ScriptedLLM, tmp_path: Path, untouched: None,
) -> None:
    out = tmp_path / "gen_sample.jsonl"
    result = gen(server, "sample", "--input_task", str(EXAMPLES / "gen_tasks.jsonl"), "--input_db",
                 str(EXAMPLES / "gen_db.jsonl"), "--output", str(out), "--allowed_scenarios",
                 "PantryPal Recipe Planner", "--attempts", "1", "--error_threshold", "0")
    assert result.exit_code == 0, result.output
    assert rows(out)[0]["inserts_count"] == 40
    assert "best attempt kept after 1 attempts: 1 of 40 INSERT statements fail" in " ".join(result.output.split())


def test_spec_file_to_file(server: ScriptedLLM, tmp_path: Path, untouched: None) -> None:
    out = tmp_path / "gen_spec.jsonl"
    result = gen(server, "spec", "--input_task", str(EXAMPLES / "gen_tasks.jsonl"), "--input_db",
                 str(EXAMPLES / "gen_db.jsonl"), "--output", str(out), "--allowed_scenarios",
                 "Trailhead Campground Reservations")
    assert result.exit_code == 0, result.output
    (row,) = rows(out)
    assert row["scenario"] == "trailhead_campground_reservations"
    assert row["api_spec"]["api_groups"]


def test_an_input_is_never_the_output(server: ScriptedLLM, tmp_path: Path) -> None:
    copy = tmp_path / "gen_tasks.jsonl"
    copy.write_bytes((EXAMPLES / "gen_tasks.jsonl").read_bytes())
    result = gen(server, "db", "--input", str(copy), "--output", str(copy))
    assert result.exit_code != 0
    assert "is an input of this stage, and `awm gen` never overwrites an input" in " ".join(result.output.split())
    assert copy.read_bytes() == (EXAMPLES / "gen_tasks.jsonl").read_bytes()


def test_a_missing_input_is_named(server: ScriptedLLM, tmp_path: Path) -> None:
    (tmp_path / "gen_tasks.jsonl").write_bytes((EXAMPLES / "gen_tasks.jsonl").read_bytes())
    result = gen(server, "sample", "--input_task", str(tmp_path / "gen_tasks.jsonl"), "--output",
                 str(tmp_path / "out" / "gen_sample.jsonl"))
    assert result.exit_code != 0
    assert "`awm gen sample` needs gen_db.jsonl: pass --input_db" in " ".join(result.output.split())


@pytest.mark.docker
def test_env_file_to_file_calls_every_tool(
    server: ScriptedLLM, tmp_path: Path, untouched: None, docker_client: Any,
) -> None:
    out = tmp_path / "gen_envs.jsonl"
    result = gen(server, "env", "--input_spec", str(EXAMPLES / "gen_spec.jsonl"), "--input_db",
                 str(EXAMPLES / "gen_db.jsonl"), "--output", str(out), "--allowed_scenarios",
                 "PantryPal Recipe Planner")
    assert result.exit_code == 0, result.output
    (row,) = rows(out)
    assert row["scenario"] == "pantrypal_recipe_planner"
    assert "FastAPI(" in row["full_code"]
    assert server.replied() == ["pantry_pilot_meal_planner-env-1", "pantry_pilot_meal_planner-env-2"]
    assert sorted(tmp_path.iterdir()) == [out]


@pytest.mark.docker
def test_verifier_code_mode_regenerates_only_the_verifier_file(
    server: ScriptedLLM, tmp_path: Path, untouched: None, docker_client: Any,
) -> None:
    out = tmp_path / "gen_verifier.pure_code.jsonl"
    result = gen(server, "verifier", "--mode", "code", "--input_task", str(EXAMPLES / "gen_tasks.jsonl"),
                 "--output", str(out), "--allowed_scenarios", "PantryPal Recipe Planner")
    assert result.exit_code == 0, result.output
    written = rows(out)
    assert [(r["scenario"], r["task_idx"]) for r in written] == [("PantryPal Recipe Planner", i) for i in range(6)]
    assert all("def verify_task_completion(" in r["verification"]["code"] for r in written)
    assert sorted(tmp_path.iterdir()) == [out]  # the other files were read beside gen_tasks.jsonl, not written


@pytest.mark.docker
def test_every_task_gets_a_verifier_row_flagged_ones_marked(
    server: ScriptedLLM, tmp_path: Path, untouched: None, docker_client: Any,
) -> None:
    out = tmp_path / "gen_verifier.pure_code.jsonl"
    result = gen(server, "verifier", "--mode", "code", "--input_task", str(EXAMPLES / "gen_tasks.jsonl"),
                 "--output", str(out), "--allowed_scenarios", "Trailhead Campground Reservations", "--attempts", "1")
    assert result.exit_code == 0, result.output
    written = {r["task_idx"]: r for r in rows(out)}
    assert sorted(written) == list(range(6))  # the original's verify finds a row for every task
    flagged = written[2]
    assert flagged["flagged"] is True
    assert "returned complete on the untouched seed database" in flagged["flag_reason"]
    assert "return {\"result\": \"others\"}" in flagged["verification"]["code"]
    assert not any(r.get("flagged") for i, r in written.items() if i != 2)
    # awm catalog does not use a flagged row: the task is one without a verifier
    from awm.builder.catalog.loader import load_catalog

    folder = tmp_path / "dataset"
    folder.mkdir()
    for name in ("gen_scenario.jsonl", "gen_tasks.jsonl", "gen_db.jsonl", "gen_sample.jsonl", "gen_spec.jsonl",
                 "gen_envs.jsonl"):
        (folder / name).write_bytes((EXAMPLES / name).read_bytes())
    (folder / out.name).write_bytes(out.read_bytes())
    bundle = load_catalog(folder).bundles["trailhead_campground_reservations"]
    assert sorted(bundle.verifiers["code"]) == [0, 1, 3, 4, 5]


def test_folder_mode_materialises_the_seed_databases(tmp_path: Path) -> None:
    from awm.builder.synth import GenOptions, generate
    from tests.builder.synth.conftest import make_llm

    fixtures = ScriptedLLM().start()
    try:
        out = tmp_path / "out"
        with make_llm(fixtures) as llm:
            report = generate(out, stages=("scenario", "task", "db", "sample"), llm=llm, seeds=FIXTURES / "seeds.jsonl",
                              options=GenOptions(scenarios=2, tasks=6, error_threshold=0.0))
    finally:
        fixtures.stop()
    assert not report.failed
    for row in rows(out / "gen_db.jsonl"):
        path = out / row["db_path"]
        assert row["db_path"] == f"databases/{row['scenario']}.db"
        assert path.is_file()
        with sqlite3.connect(path) as conn:
            assert conn.execute("SELECT COUNT(*) FROM users WHERE id = 1").fetchone() == (1,)  # rows, not only tables
    assert f"databases/{rows(out / 'gen_db.jsonl')[0]['scenario']}.db" in report.files_changed
