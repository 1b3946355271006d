"""Without a Docker engine: generated code is probed in a bubblewrap sandbox on this host.

The engine is made unreachable (DOCKER_HOST=unix:///nonexistent). `gen env` then probes in
bubblewrap and says so, and every tool of the module is called. Attacks from a generated
module: a route that connects to a listener of this host, a route and an import that write
outside the probe's folder; each fails inside the probe, and the host sees neither the
connection nor the file.
"""

from __future__ import annotations

import json
import socket
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pytest
from typer.testing import CliRunner

from awm.builder.catalog.routes import read_routes
from awm.builder.synth import env
from awm.builder.synth.bwrap import BubblewrapProber
from awm.builder.synth.filemode import Kind, read_drafts
from awm.builder.synth.probe import ProbeRun, VerifierJob
from awm.cli import app
from tests.builder.synth.conftest import make_ctx, make_llm
from tests.builder.synth.scripted import ScriptedLLM
from tests.builder.synth.test_filemode import EXAMPLES, _example_entries

NO_ENGINE = "unix:///nonexistent"
# docker-py leaves the socket of a failed connect to a missing unix socket unclosed (its unixconn),
# which pytest reports when the object is collected: that is the engine being unreachable, as meant.
leaky_docker = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")


@pytest.fixture
def server() -> Iterator[ScriptedLLM]:
    s = ScriptedLLM(_example_entries()).start()
    yield s
    s.stop()


@leaky_docker
def test_gen_env_without_an_engine_probes_in_bubblewrap_and_calls_every_tool(
    server: ScriptedLLM, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DOCKER_HOST", NO_ENGINE)
    files: dict[Kind, Path] = {"spec": EXAMPLES / "gen_spec.jsonl", "db": EXAMPLES / "gen_db.jsonl",
             "sample": EXAMPLES / "gen_sample.jsonl", "scenario": EXAMPLES / "gen_scenario.jsonl"}
    draft = next(d for d in read_drafts(files, "spec") if d.id == "pantrypal_recipe_planner")
    with make_llm(server) as llm:
        ctx = make_ctx(llm, tmp_path)
        result = env.run(ctx, draft)
    assert result.status == "done", result.error
    assert ctx.probe.startswith("bubblewrap")
    output = cast(dict[str, Any], result.output)  # a done stage has its output
    tools = output["tools"]
    served = [r.name for r in read_routes(output["code"]).routes if not r.shadowed]
    assert sorted(t["tool"] for t in tools) == sorted(set(served))
    assert len(tools) == 12
    assert all(t["outcome"] in ("ok", "client_error") for t in tools)
    # the first module's raising tool was found in the sandbox and fed back
    assert server.replied() == ["pantry_pilot_meal_planner-env-1", "pantry_pilot_meal_planner-env-2"]


@leaky_docker
def test_the_command_line_says_which_probe_ran(server: ScriptedLLM, tmp_path: Path) -> None:
    out = tmp_path / "gen_envs.jsonl"
    result = CliRunner().invoke(app, [
        "gen", "env", "--input_spec", str(EXAMPLES / "gen_spec.jsonl"), "--input_db", str(EXAMPLES / "gen_db.jsonl"),
        "--output", str(out), "--allowed_scenarios", "PantryPal Recipe Planner", "--model", "scripted",
        "--base-url", server.url, "--no-cache",
    ], env={"AWM_LLM_API_KEY": "k", "COLUMNS": "200", "DOCKER_HOST": NO_ENGINE})
    assert result.exit_code == 0, result.output
    assert "probe: bubblewrap (no Docker engine answers" in result.output
    assert len(out.read_text().splitlines()) == 1


MODULE = '''
import os, socket
from fastapi import FastAPI
from sqlalchemy import create_engine
engine = create_engine(os.getenv("DATABASE_PATH", "sqlite:///./app.db"))
app = FastAPI()
{import_time}

@app.get("/connect", operation_id="connect_out", summary="s", description="d")
def connect_out():
    socket.create_connection(("127.0.0.1", {port}), timeout=5).sendall(b"stolen")
    return {{"sent": True}}

@app.get("/write", operation_id="write_out", summary="s", description="d")
def write_out():
    with open({target!r}, "w") as fh:
        fh.write("escaped")
    return {{"written": True}}

@app.get("/scratch", operation_id="write_tmp", summary="s", description="d")
def write_tmp():
    with open("/tmp/scratch.txt", "w") as fh:  # its own /tmp: allowed, and gone afterwards
        fh.write("fine")
    return {{"written": True}}

if __name__ == "__main__":
    import uvicorn
    uvicorn.run(app, host="127.0.0.1", port=8000)
'''


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    sock.setblocking(False)
    yield sock
    sock.close()


def test_a_module_cannot_reach_the_host_network_or_write_outside_its_folder(
    tmp_path: Path, seed: Path, listener: socket.socket,
) -> None:
    target = tmp_path / "escaped.txt"
    code = MODULE.format(import_time="", port=listener.getsockname()[1], target=str(target))
    runs = [ProbeRun(id=t, calls=[{"tool": t, "arguments": {}}]) for t in ("connect_out", "write_out", "write_tmp")]
    result = BubblewrapProber(timeout_s=60).probe("attack", code, seed, runs, tmp_path / "out")
    assert result.import_error is None
    assert sorted(result.tools) == ["connect_out", "write_out", "write_tmp"]
    calls = {c.tool: c for c in result.calls}
    # its own network namespace: 127.0.0.1 there is not this host's loopback, so nothing listens
    assert calls["connect_out"].is_error
    assert "ConnectionRefusedError" in (calls["connect_out"].exception or "")
    assert calls["write_out"].is_error
    assert "No such file or directory" in (calls["write_out"].exception or "")
    assert not calls["write_tmp"].is_error
    with pytest.raises(BlockingIOError):
        listener.accept()  # nothing reached the host
    assert not target.exists()


def test_writing_outside_at_import_fails_the_import(tmp_path: Path, seed: Path, listener: socket.socket) -> None:
    target = Path(__file__).resolve().parent / "escaped-at-import.txt"  # a folder of this host that exists
    import_time = f"open({str(target)!r}, 'w').write('escaped')"
    code = MODULE.format(import_time=import_time, port=listener.getsockname()[1], target=str(target))
    result = BubblewrapProber(timeout_s=60).probe("attack", code, seed, [], tmp_path / "out")
    assert result.import_error is not None
    assert "No such file or directory" in result.import_error or "Read-only file system" in result.import_error
    assert not target.exists()


def test_verifiers_run_in_the_sandbox_too(tmp_path: Path, seed: Path) -> None:
    code = textwrap.dedent('''
        import sqlite3
        def verify_task_completion(initial_db_path, final_db_path, final_answer=None):
            with sqlite3.connect(f"file:{final_db_path}?mode=ro", uri=True) as conn:
                (n,) = conn.execute("SELECT COUNT(*) FROM users").fetchone()
            return {"result": "complete" if n == 1 else "others"}
    ''')
    jobs = [VerifierJob(id="v", code=code, function="verify_task_completion", initial="seed.db", final="seed.db")]
    verdicts = BubblewrapProber(timeout_s=60).verify("s", jobs, {"seed.db": seed})
    assert verdicts["v"].error is None, json.dumps(verdicts["v"].model_dump())
    assert verdicts["v"].value == {"result": "complete"}
