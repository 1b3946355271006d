"""`awm agent` against the example images with a scripted model over real HTTP."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from typer.testing import CliRunner

from awm.builder.catalog.solutions import Solution
from awm.cli import app
from tests.agent.scripted import ScriptedModel, replay

pytestmark = pytest.mark.docker

ORIGINAL_FIELDS = ["scenario", "task_id", "task", "model", "api_url", "max_iterations", "temperature",
                   "total_iterations", "timestamp", "trajectory", "messages"]


def _agent(*args: str) -> str:
    result = CliRunner().invoke(app, ["agent", *args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def test_agent_replays_a_solution_and_writes_the_run_folder(
    images: dict[str, str], solutions_by_task: dict[str, Solution], tmp_path: Path, no_leftovers: None
) -> None:
    out = tmp_path / "run"
    with ScriptedModel(replay(solutions_by_task)) as model:
        _agent("--scenario", "acme_helpdesk_support_tickets", "--task-id", "0", "--api_url", model.url,
               "--model", "scripted", "--output_dir", str(out), "--max_iterations", "10")
    doc = json.loads((out / "trajectory.json").read_text())
    assert list(doc)[:len(ORIGINAL_FIELDS)] == ORIGINAL_FIELDS
    assert doc["scenario"] == "acme_helpdesk_support_tickets"
    assert doc["task_id"] == 0
    assert doc["total_iterations"] == 5
    assert doc["end_reason"] == "answer"
    steps = doc["trajectory"]
    assert [s["tool_calls"][0]["name"] for s in steps[:-1]] == ["list_tools", "call_tool", "call_tool", "call_tool"]
    assert steps[-1] == {"iteration": 5, "role": "assistant", "content": steps[-1]["content"], "tool_calls": [],
                         "is_final": True}
    assert set(steps[1]) >= {"iteration", "role", "content", "tool_calls", "tool_response"}
    assert steps[1]["tool_response"]["tool_call_id"] == steps[1]["tool_calls"][0]["id"]
    assert [m["role"] for m in doc["messages"][:4]] == ["system", "user", "assistant", "tool"]
    assert doc["usage"]["total_tokens"] > 0
    assert doc["timings"]["total_s"] > 0
    with sqlite3.connect(out / "initial.db") as before, sqlite3.connect(out / "final.db") as after:
        assert before.execute("SELECT count(*) FROM tickets").fetchone()[0] + 1 == \
            after.execute("SELECT count(*) FROM tickets").fetchone()[0]
    graded = CliRunner().invoke(app, ["verify", str(out), "--mode", "code"], catch_exceptions=False)
    assert graded.exit_code == 0, graded.output
    verdict = json.loads((out / "verify.code.json").read_text())
    assert verdict["reward_type"] == "complete"
    assert verdict["reward"] == 1.0
