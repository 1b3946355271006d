"""`awm gen ...` on the command line (CliRunner, the scripted server; no Docker needed here)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from awm.builder.synth import GenOptions, generate
from awm.builder.synth.state import OutputFolder
from awm.cli import app
from awm.core.errors import SynthesisError
from tests.builder.synth.conftest import make_llm
from tests.builder.synth.scripted import FIXTURES, ScriptedLLM

runner = CliRunner()
SEEDS = str(FIXTURES / "seeds.jsonl")


def run(args: list[str], **env: str) -> Any:
    return runner.invoke(app, args, env={"AWM_LLM_API_KEY": "k", "COLUMNS": "200", **env})


def test_gen_lists_its_stages() -> None:
    result = run(["gen", "--help"])
    assert result.exit_code == 0
    for stage in ("scenario", "task", "db", "sample", "spec", "env", "verifier", "all"):
        assert f"│ {stage} " in result.output


def test_stage_by_stage_with_progress_and_summary(llm_server: ScriptedLLM, tmp_path: Path) -> None:
    out = str(tmp_path / "out")
    common = ["-o", out, "--model", "scripted", "--base-url", llm_server.url, "--no-cache"]
    result = run(["gen", "scenario", "--seeds", SEEDS, "-n", "2", *common])
    assert result.exit_code == 0, result.output
    assert "done scenario: 2 new scenario(s), 1 rejected" in result.output
    result = run(["gen", "task", "-k", "6", "--attempts", "1", *common])
    assert result.exit_code == 1  # one scenario failed; the other is done
    assert "done campfire_site_reservations task: 6 tasks (1 reply)" in result.output
    assert ("failed scenario 'pantry_pilot_meal_planner', stage task: no acceptable reply in 1 attempt(s); "
            "last problems: the JSON does not parse") in result.output
    assert "2 scenario(s), 1 failed; LLM: 2 requests" in result.output
    result = run(["gen", "task", "-k", "6", "--only", "Pantry Pilot Meal Planner", *common])
    assert result.exit_code == 0, result.output
    assert "retry pantry_pilot_meal_planner task: the JSON does not parse" in result.output
    assert "1 scenario(s), 0 failed; LLM: 2 requests" in result.output
    tasks = [json.loads(line)["scenario"] for line in (tmp_path / "out" / "gen_tasks.jsonl").read_text().splitlines()]
    assert tasks == ["Campfire Site Reservations", "Pantry Pilot Meal Planner"]


def test_stages_need_a_scenario_list(tmp_path: Path) -> None:
    result = run(["gen", "db", "-o", str(tmp_path / "new"), "--model", "m"])
    assert result.exit_code == SynthesisError.exit_code
    assert "has no scenario list yet: run `awm gen scenario --seeds FILE -o" in result.output


def test_no_model_says_what_to_set(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AWM_LLM_MODEL", raising=False)
    result = run(["gen", "scenario", "--seeds", SEEDS, "-o", str(tmp_path / "out")])
    assert result.exit_code == SynthesisError.exit_code
    assert "error: no model configured: pass --model or set AWM_LLM_MODEL" in result.output


def test_unknown_only_is_refused(llm_server: ScriptedLLM, tmp_path: Path) -> None:
    out = str(tmp_path / "out")
    assert run(["gen", "scenario", "--seeds", SEEDS, "-n", "2", "-o", out, "--model", "s",
                "--base-url", llm_server.url, "--no-cache"]).exit_code == 0
    result = run(["gen", "task", "-o", out, "--model", "s", "--only", "nope"])
    assert result.exit_code == SynthesisError.exit_code
    assert "no scenario nope in the scenario list" in result.output


def test_an_interrupted_run_keeps_what_it_finished(llm_server: ScriptedLLM, tmp_path: Path) -> None:
    out = tmp_path / "out"

    def interrupt(event: Any) -> None:
        if event.kind == "done" and event.stage == "task":
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        generate(out, stages=("scenario", "task", "db"), llm=make_llm(llm_server), seeds=SEEDS,
                 options=GenOptions(scenarios=2, tasks=6, jobs=1), on_event=interrupt)
    report = json.loads((out / ".awm-gen" / "report.json").read_text())
    assert report["complete"] is False
    assert (out / "gen_tasks.jsonl").read_text().count("\n") >= 1  # assembled on the way out
    llm_server.clear()
    resumed = generate(out, stages=("scenario", "task", "db"), llm=make_llm(llm_server), seeds=SEEDS,
                       options=GenOptions(scenarios=2, tasks=6, jobs=1))
    assert resumed.complete
    assert not resumed.failed
    assert not any(e.startswith("scenario-") for e in llm_server.replied())
    assert resumed.scenario_stage == "skipped"


def test_one_run_at_a_time_per_folder(llm_server: ScriptedLLM, tmp_path: Path) -> None:
    folder = OutputFolder(tmp_path / "out")
    with folder.locked(), pytest.raises(SynthesisError, match="another `awm gen` is running on"):
        generate(tmp_path / "out", stages=("scenario",), llm=make_llm(llm_server), seeds=SEEDS)
    assert llm_server.requests == []
    generate(tmp_path / "out", stages=("scenario",), llm=make_llm(llm_server), seeds=SEEDS,
             options=GenOptions(scenarios=2))  # the lock went with the run that held it
