"""`gen verifier` runs the generated verifiers in the probe container's verifier sandbox, never on
this host: a verifier that writes a file at an absolute host path leaves nothing there."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from awm.builder.synth import GenOptions, generate
from awm.builder.synth.probe import DockerProber
from awm.builder.synth.state import OutputFolder
from tests.builder.synth.conftest import make_llm
from tests.builder.synth.scripted import FIXTURES, ScriptedLLM, load_entries

pytestmark = pytest.mark.docker

CAMP = "campfire_site_reservations"
CODE_DEF = "def verify_task_completion(initial_db_path, final_db_path, final_answer=None):\n"
SQL_DEF = "def verify_task(initial_db_path, final_db_path):\n"


def _plant(canary: Path, name: str) -> str:
    """Verifier lines that write a host canary, and go on as if nothing happened when denied."""
    return (f"    try:\n        open({str(canary / name)!r}, 'w').write('written by a generated verifier')\n"
            "    except OSError:\n        pass\n")


def test_generated_verifiers_never_run_on_the_host(prober: DockerProber, tmp_path: Path) -> None:
    canary = tmp_path / "canary"
    canary.mkdir()
    entries = load_entries()
    planted = []
    for entry in entries:
        if entry["id"].startswith(f"{CAMP}-verifier-0-"):
            assert CODE_DEF in entry["reply"]
            assert SQL_DEF in entry["reply"]
            entry["reply"] = (entry["reply"].replace(CODE_DEF, CODE_DEF + _plant(canary, "code"), 1)
                              .replace(SQL_DEF, SQL_DEF + _plant(canary, "sql"), 1))
            planted.append(entry["id"])
    assert planted
    server = ScriptedLLM(entries).start()
    try:
        out = tmp_path / "out"
        generate(out, stages=("scenario", "task", "db", "sample", "spec", "env", "verifier"),
                 llm=make_llm(server), options=GenOptions(scenarios=2, tasks=6), seeds=FIXTURES / "seeds.jsonl",
                 only=[CAMP], prober_factory=lambda: prober)
    finally:
        server.stop()

    assert sorted(p.name for p in canary.iterdir()) == []  # nothing reached the host
    assert f"{CAMP}-verifier-0-1" in server.replied()
    # The planted verifiers ran (in the container) and graded task 0 as before: accepted.
    state = OutputFolder(out).load_stage(CAMP, "verifier")
    assert state is not None
    assert state.status == "done", state
    assert "0" in json.loads(json.dumps(state.output))["tasks"]
