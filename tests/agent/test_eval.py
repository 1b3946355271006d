"""`awm eval` over all 18 example tasks, with scripted models over real HTTP."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import docker
import pytest
from typer.testing import CliRunner

from awm.builder.catalog.solutions import Solution
from awm.cli import app
from tests.agent.scripted import ScriptedModel, answer_at_once, replay
from tests.helpers import EXAMPLES

pytestmark = pytest.mark.docker
ROOT = Path(__file__).resolve().parents[2]
FIELDS = {"scenario", "task_idx", "result", "reward", "iterations", "tool_calls", "tool_errors", "tokens",
          "durations", "error_class"}


def _eval(url: str, out: Path, *args: str) -> str:
    result = CliRunner().invoke(app, ["eval", str(EXAMPLES), "--api_url", url, "--model", "scripted",
                                      "--out", str(out), "--concurrency", "4", *args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def _lines(out: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("protocol", ["awm", "native"])
def test_reference_solutions_get_full_reward_on_every_example_task(
    protocol: str, images: dict[str, str], solutions_by_task: dict[str, Solution], tmp_path: Path,
    no_leftovers: None,
) -> None:
    out = tmp_path / "eval"
    with ScriptedModel(replay(solutions_by_task, native=protocol == "native")) as model:
        output = _eval(model.url, out, "--protocol", protocol)
        lines = _lines(out)
        assert len(lines) == 18
        assert all(set(line) >= FIELDS for line in lines)
        assert {(line["scenario"], line["task_idx"]) for line in lines} == {
            (s, i) for s in images for i in range(6)}
        assert [line for line in lines if line["reward"] != 1.0] == []
        assert all(line["result"] == "complete" and line["error_class"] is None for line in lines)
        assert "100.0%" in output
        for line in lines:  # every run folder is complete
            run = out / str(line["run_dir"])
            assert {"trajectory.json", "initial.db", "final.db", "verify.code.json"} <= {p.name for p in run.iterdir()}
        report = (out / "report.html").read_text()
        assert "<svg" in report
        assert "100.0%" in report
        assert not any(tag in report for tag in ("src=", "href=", "<link", "@import", "url("))  # self-contained
        asked = len(model.chats())
        _eval(model.url, out, "--protocol", protocol)  # a rerun: everything is finished
        assert len(model.chats()) == asked
        assert len(_lines(out)) == 18
    if protocol == "awm":
        # awm verify on a run folder (the image's sandbox, offline) == /_awm/verify on the live database
        run = out / str(lines[0]["run_dir"])
        live = json.loads((run / "verify.code.json").read_text())
        (run / "verify.code.json").unlink()
        graded = CliRunner().invoke(app, ["verify", str(run), "--mode", "code"], catch_exceptions=False)
        assert graded.exit_code == 0, graded.output
        offline = json.loads((run / "verify.code.json").read_text())
        assert offline["reward_type"] == live["reward_type"] == "complete"
        for key in ("result", "value", "reward", "task_idx", "scenario"):
            assert offline["verify_result"][key] == live["verify_result"][key]


def test_a_model_that_answers_at_once_gets_nothing(images: dict[str, str], tmp_path: Path, no_leftovers: None) -> None:
    out = tmp_path / "eval"
    with ScriptedModel(answer_at_once) as model:
        output = _eval(model.url, out)
    lines = _lines(out)
    assert len(lines) == 18
    assert all(line["reward"] == 0.0 and line["result"] == "others" and line["iterations"] == 1 for line in lines)
    assert "0.0%" in output


def test_ctrl_c_keeps_finished_results_and_leaves_no_container(
    images: dict[str, str], solutions_by_task: dict[str, Solution], tmp_path: Path, docker_client: docker.DockerClient,
) -> None:
    out = tmp_path / "eval"
    with ScriptedModel(replay(solutions_by_task)) as model:
        proc = subprocess.Popen(
            [sys.executable, "-m", "awm", "eval", str(EXAMPLES), "--api_url", model.url, "--model", "scripted",
             "--out", str(out), "--concurrency", "2"],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            deadline = time.monotonic() + 240
            while time.monotonic() < deadline and proc.poll() is None:
                results = out / "results.jsonl"
                if results.is_file() and len(results.read_text().splitlines()) >= 2:
                    break
                time.sleep(0.2)
            assert proc.poll() is None, proc.communicate()
            proc.send_signal(signal.SIGINT)
            proc.communicate(timeout=120)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
        owner_pid = f":{proc.pid}:"
        left = [c.name for c in docker_client.containers.list(ignore_removed=True, all=True)
                if owner_pid in (c.labels or {}).get("awm.owner", "")]
        assert left == []
        lines = _lines(out)  # every line parses: none was cut
        assert 2 <= len(lines) < 18
        assert all(line["reward"] == 1.0 for line in lines)
        _eval(model.url, out)  # resumes: the rest runs, nothing twice
    lines = _lines(out)
    assert len(lines) == 18
    assert len({(line["scenario"], line["task_idx"]) for line in lines}) == 18
    assert os.path.isfile(out / "report.html")
