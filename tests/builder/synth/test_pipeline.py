"""`awm gen all` end to end, against the scripted server, with real probe containers and images.

One run on the two seed scenarios of the fixtures, then what the issue asks of it: the folder
loads in the catalog without problems; every fault of the fixtures was fed back; `awm build`
makes working images whose verifiers say others on the seed and complete after the reference
solution; a second run asks nothing and changes nothing (also into a new folder, from the
cache); a run killed mid-way resumes with only the remaining work.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import pytest
from typer.testing import CliRunner

from awm.builder.catalog.loader import load_catalog
from awm.builder.catalog.solutions import load_solutions
from awm.builder.synth.cache import request_key
from awm.builder.synth.dialogue import FEEDBACK_HEADER
from awm.builder.synth.probe import PROBE_ROLE
from awm.cli import app
from awm.core.labels import LABEL_OWNER
from awm.runtime.base import StartOptions
from awm.runtime.docker_backend import DockerBackend
from tests.builder.synth.scripted import FIXTURES, SCENARIOS, ScriptedLLM

pytestmark = pytest.mark.docker

PANTRY, CAMP = SCENARIOS
TEST_LABEL = {"awm-test": "synth"}
runner = CliRunner()


def gen_args(server: ScriptedLLM, out: Path, cache: Path, *extra: str) -> list[str]:
    return ["gen", "all", "--seeds", str(FIXTURES / "seeds.jsonl"), "-o", str(out), "--model", "scripted",
            "--base-url", server.url, "--cache-dir", str(cache), "-n", "2", "-k", "6",
            "--error_threshold", "0", *extra]  # the fixtures' faulty inserts are fed back, not tolerated


def invoke(args: list[str]) -> Any:
    result = runner.invoke(app, args, env={"AWM_LLM_API_KEY": "test-key", "COLUMNS": "200"})
    assert result.exit_code == 0, result.output + repr(result.exception)
    return result


def files_of(root: Path, *, state: bool = True) -> dict[str, bytes]:
    """Every file under `root` (the last run's report aside, which counts requests)."""
    out = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if path.is_file() and rel != ".awm-gen/report.json" and (state or not rel.startswith(".awm-gen/")):
            out[rel] = path.read_bytes()
    return out


@pytest.fixture(scope="module")
def server() -> Iterator[ScriptedLLM]:
    s = ScriptedLLM().start()
    yield s
    s.stop()


@pytest.fixture(scope="module")
def first(server: ScriptedLLM, docker_client: docker.DockerClient,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    root = tmp_path_factory.mktemp("gen")
    out, cache = root / "out", root / "cache"
    result = invoke(gen_args(server, out, cache))
    yield {"out": out, "cache": cache, "output": result.output, "requests": list(server.requests)}
    # the images of the generated scenarios are this module's own (their names are the fixtures')
    for sid in SCENARIOS:
        for image in docker_client.images.list(name=f"awm/{sid}"):
            for tag in image.tags:
                with contextlib.suppress(docker.errors.NotFound):  # its other tag took it already
                    docker_client.images.remove(tag, noprune=False)


def test_gen_all_writes_a_dataset_the_catalog_loads_without_problems(first: dict[str, Any]) -> None:
    catalog = load_catalog(first["out"])
    assert sorted(catalog.bundles) == sorted(SCENARIOS)
    assert catalog.excluded == {}
    assert catalog.all_problems() == []
    for sid in SCENARIOS:
        bundle = catalog.bundles[sid]
        assert len(bundle.tasks) == 6
        assert len(bundle.tools) == 12
        assert sorted(bundle.verifiers["code"]) == sorted(bundle.verifiers["sql"]) == list(range(6))
    solutions = load_solutions(first["out"])
    assert {sid: sorted(s) for sid, s in solutions.items()} == {sid: list(range(6)) for sid in SCENARIOS}
    assert "2 scenario(s), 0 failed; LLM: 29 requests, 0 cache hits" in first["output"]
    assert "rejected scenario 'Acme Support Desk (Helpdesk Tickets)': name too close to" in first["output"]
    assert "retry pantry_pilot_meal_planner env: tool list_recipes called with" in first["output"]


def _feedback(first: dict[str, Any], fixture_id: str) -> str:
    request = next(r for r in first["requests"] if r["entry"] == fixture_id)
    return str(request["body"]["messages"][-1]["content"])


def test_every_fault_was_retried_with_its_error(first: dict[str, Any]) -> None:
    fixes = {r["entry"] for r in first["requests"]
             if r["body"]["messages"][-1]["content"].startswith(FEEDBACK_HEADER)}
    assert fixes == {f"{PANTRY}-task-2", f"{PANTRY}-db-2", f"{PANTRY}-env-2", f"{CAMP}-sample-2",
                     f"{CAMP}-verifier-2-2"}
    assert "Expecting ',' delimiter at line 4 column 5" in _feedback(first, f"{PANTRY}-task-2")
    assert "ddl of table 'recipes' failed: near \")\": syntax error" in _feedback(first, f"{PANTRY}-db-2")
    assert "insert of table 'reviews' failed: FOREIGN KEY constraint failed" in _feedback(first, f"{CAMP}-sample-2")
    env = _feedback(first, f"{PANTRY}-env-2")
    assert ('tool list_recipes called with {"search": "Shakshuka"} raised an exception (HTTP 500):\n'
            "AttributeError: type object 'Recipe' has no attribute 'name'\n  env.py line ") in env
    assert "in list_recipes: query = query.filter(Recipe.name.ilike(f\"%{search}%\"))" in env
    verifier = _feedback(first, f"{CAMP}-verifier-2-2")
    assert "the code verifier returned complete on the untouched seed database" in verifier
    # the faulty reply itself goes back with its feedback
    request = next(r for r in first["requests"] if r["entry"] == f"{CAMP}-verifier-2-2")
    assert "r.check_in LIKE '2025-08-%'" in request["body"]["messages"][-2]["content"]


def test_every_tool_was_called_and_recorded(first: dict[str, Any]) -> None:
    for sid in SCENARIOS:
        state = json.loads((first["out"] / ".awm-gen" / "scenarios" / sid / "env.json").read_text())
        tools = {t["tool"]: t["outcome"] for t in state["output"]["tools"]}
        assert len(tools) == 12, tools
        assert set(tools.values()) <= {"ok", "client_error"}, tools
    report = json.loads((first["out"] / ".awm-gen" / "report.json").read_text())
    pantry = next(s for s in report["scenarios"] if s["id"] == PANTRY)
    assert pantry["tools"]["list_recipes"] == "ok"
    assert pantry["flagged_tasks"] == []


def test_awm_build_makes_images_whose_verifiers_grade_the_reference_solutions(
    first: dict[str, Any], docker_client: docker.DockerClient, tmp_path: Path
) -> None:
    invoke(["build", str(first["out"]), "--no-smoke", "--report", str(tmp_path / "report.json")])
    solutions = load_solutions(first["out"])
    backend = DockerBackend(docker_client)
    for sid in SCENARIOS:
        with backend.start(f"awm/{sid}:latest", StartOptions(labels=TEST_LABEL)) as env:
            for idx, solution in sorted(solutions[sid].items()):
                assert env.verify(idx)["result"] == "others", (sid, idx)
                results = env.client.call_tools([(c.tool, c.arguments) for c in solution.calls])
                assert not any(r.is_error for r in results), (sid, idx, [r.text for r in results])
                graded = env.verify(idx, final_answer=solution.final_answer)
                assert graded["result"] == "complete", (sid, idx, graded)
                env.reset()


def test_a_second_run_asks_nothing_and_changes_nothing(
    first: dict[str, Any], server: ScriptedLLM, tmp_path: Path
) -> None:
    before = files_of(first["out"])
    server.clear()
    # same folder, with --build: every stage is skipped; the finished scenarios go to the builder
    result = invoke(gen_args(server, first["out"], first["cache"], "--build"))
    assert server.requests == []
    assert files_of(first["out"]) == before
    assert "LLM: 0 requests, 0 cache hits" in result.output
    for sid in SCENARIOS:
        assert f"image {sid}: awm/{sid}:" in result.output
    # a new folder: every reply comes from the cache, and every file comes out the same
    again = invoke(gen_args(server, tmp_path / "out", first["cache"]))
    assert server.requests == []
    assert "LLM: 0 requests, 29 cache hits" in again.output
    assert files_of(tmp_path / "out") == before


def _wait_for_line(proc: subprocess.Popen[str], needle: str, seen: list[str]) -> bool:
    assert proc.stderr is not None
    for line in proc.stderr:
        seen.append(line)
        if needle in line:
            return True
    return False


def test_a_killed_run_resumes_with_the_remaining_work_only(
    first: dict[str, Any], server: ScriptedLLM, docker_client: docker.DockerClient, tmp_path: Path
) -> None:
    out, cache = tmp_path / "out", tmp_path / "cache"
    server.clear()
    command = [str(Path(sys.executable).parent / "awm"), *gen_args(server, out, cache, "--jobs", "1")]
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "AWM_LLM_API_KEY": "test-key"})
    seen: list[str] = []
    reader = threading.Thread(target=_wait_for_line, args=(proc, f"done {PANTRY} db:", seen), daemon=True)
    reader.start()
    reader.join(timeout=180)
    assert any(f"done {PANTRY} db:" in line for line in seen), "".join(seen)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    reader.join(timeout=30)  # the pipe ends with the process
    assert proc.stderr is not None
    proc.stderr.close()
    killed_pid = proc.pid

    assert list(Path(tempfile.gettempdir()).glob(f"awm-gen-{killed_pid}-*"))  # a SIGKILL cleans nothing
    killed_requests = list(server.requests)
    state = out / ".awm-gen" / "scenarios"
    done_at_kill = {(p.parent.name, p.stem) for p in state.glob("*/*.json") if not p.name.endswith(".failed.json")}
    assert {(PANTRY, "task"), (PANTRY, "db")} <= done_at_kill
    assert (CAMP, "verifier") not in done_at_kill
    paid = {p.stem for p in cache.glob("*/*.json")}
    # what the cache holds is exactly what the killed run was answered (keys are the requests)
    answered = {request_key("chat", r["body"]) for r in killed_requests if r["status"] == 200}
    assert paid <= answered
    assert len(answered - paid) <= 4

    server.clear()
    invoke(gen_args(server, out, cache))
    resumed = list(server.requests)
    assert resumed, "the run was killed before the end: there was work left"
    for r in resumed:
        assert request_key("chat", r["body"]) not in paid  # nothing paid for is asked again
        assert not any(r["entry"].startswith(f"{sid}-{stage}-") for sid, stage in done_at_kill), r["entry"]
    assert not any(r["entry"].startswith("scenario-") for r in resumed)
    # together the two runs asked what one run asks, and made the same files
    both = {r["entry"] for r in killed_requests + resumed if r["entry"]}
    assert both == {r["entry"] for r in first["requests"] if r["entry"]}
    assert files_of(out) == files_of(first["out"])
    # and nothing of the killed run is left behind: its scratch folder, its probe containers
    assert not list(Path(tempfile.gettempdir()).glob(f"awm-gen-{killed_pid}-*"))
    left = docker_client.containers.list(ignore_removed=True, all=True, filters={"label": [f"awm.role={PROBE_ROLE}"]})
    assert not [c for c in left if f":{killed_pid}:" in (c.labels or {}).get(LABEL_OWNER, "")]
