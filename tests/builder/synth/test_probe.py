"""The environment probe: `python -m awm_server probe` calls every tool as /mcp would.

The command itself is tested on the host (a child process; these modules are the tests' own),
and once through `DockerProber` in a container of the base image, as `awm gen` runs it.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import docker
import pytest

from awm.builder.synth.probe import PROBE_ROLE, DockerProber, ProbeRun
from tests.builder.conftest import MODULE

RAISES = MODULE.replace(
    '@app.post("/notes"',
    '@app.get("/notes/{note_id}", operation_id="get_note", summary="Get a note", tags=["notes"])\n'
    "def get_note(note_id: int):\n"
    "    db = SessionLocal()\n"
    "    try:\n"
    "        note = db.get(Note, note_id)\n"
    "        return {'id': note.id, 'words': len(note.body.split()) / note.user_id}\n"
    "    finally:\n"
    "        db.close()\n\n\n"
    '@app.post("/notes"',
)


def seed(path: Path) -> Path:
    conn = sqlite3.connect(path)
    conn.executescript(
        "CREATE TABLE notes (id INTEGER PRIMARY KEY, user_id INTEGER, body TEXT);"
        "INSERT INTO notes VALUES (1, 1, 'first note'), (2, 0, 'zero owner');"
    )
    conn.commit()
    conn.close()
    return path


RUNS: list[dict[str, Any]] = [
    {"id": "a", "calls": [{"tool": "list_notes", "arguments": {}}, {"tool": "get_note", "arguments": {"note_id": 2}},
                          {"tool": "get_note", "arguments": {"note_id": 1}}]},
    {"id": "b", "calls": [{"tool": "create_note", "arguments": {"body": "third"}},
                          {"tool": "no_such_tool", "arguments": {}}], "keep_db": True},
    {"id": "c", "calls": [{"tool": "list_notes", "arguments": {}}], "keep_db": True},
]


def probe_on_host(tmp_path: Path, code: str, runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    out.mkdir()
    (src / "env.py").write_text(code)
    seed(src / "seed.db")
    (src / "runs.json").write_text(json.dumps({"runs": runs}))
    done = subprocess.run([sys.executable, "-m", "awm_server", "probe", "--dir", str(src), "--out", str(out)],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path, check=False)
    assert done.returncode == 0, done.stderr
    return [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]


def test_probe_calls_each_tool_and_records_exceptions(tmp_path: Path) -> None:
    lines = probe_on_host(tmp_path, RAISES, RUNS)
    assert lines[0] == {"kind": "tools", "tools": ["list_notes", "create_note", "get_note"]}
    calls = [line for line in lines if line["kind"] == "call"]
    assert [(c["run"], c["tool"], c["is_error"], c["status_code"]) for c in calls] == [
        ("a", "list_notes", False, None),
        ("a", "get_note", True, 500),
        ("a", "get_note", False, None),
        ("b", "create_note", False, None),
        ("b", "no_such_tool", True, None),
        ("c", "list_notes", False, None),
    ]
    raised = calls[1]
    assert raised["text"] == "Error calling get_note. Status code: 500. Response: Internal Server Error"
    assert raised["exception"].startswith("ZeroDivisionError: division by zero\n  env.py line ")
    assert "in get_note: return {'id': note.id, 'words': len(note.body.split()) / note.user_id}" in raised["exception"]
    assert calls[4]["text"] == "Unknown tool: no_such_tool"
    # each run starts from the seed: run c does not see the note run b created
    assert len(json.loads(calls[5]["text"])) == 2
    assert [line["db"] for line in lines if line["kind"] == "run"] == ["b.db", "c.db"]
    kept = sqlite3.connect(tmp_path / "out" / "b.db")
    rows = kept.execute("SELECT body FROM notes ORDER BY id").fetchall()
    assert rows == [("first note",), ("zero owner",), ("third",)]
    kept.close()


def test_probe_reports_an_import_error(tmp_path: Path) -> None:
    broken = MODULE.replace("app = FastAPI", "raise RuntimeError('no config')\napp = FastAPI")
    lines = probe_on_host(tmp_path, broken, RUNS)
    assert len(lines) == 1
    assert lines[0]["kind"] == "import_error"
    assert "environment module failed on import: RuntimeError: no config" in lines[0]["error"]


@pytest.mark.docker
def test_docker_prober_runs_the_module_in_a_sealed_container(
    prober: DockerProber, docker_client: docker.DockerClient, tmp_path: Path
) -> None:
    runs = [ProbeRun.model_validate(r) for r in RUNS]
    result = prober.probe("probe_test", RAISES, seed(tmp_path / "seed.db"), runs, tmp_path / "dbs")
    assert result.error is None
    assert result.import_error is None
    assert result.exit_code == 0
    assert result.tools == ["list_notes", "create_note", "get_note"]
    assert [c.status_code for c in result.calls_of("a")] == [None, 500, None]
    assert (result.calls_of("a")[1].exception or "").startswith("ZeroDivisionError: division by zero")
    assert sorted(result.dbs) == ["b", "c"]
    assert result.dbs["b"].parent == tmp_path / "dbs"
    # nothing left behind, and what ran was labelled as this run's probe
    left = docker_client.containers.list(ignore_removed=True, all=True, filters={"label": [f"awm.role={PROBE_ROLE}",
                                                                      f"awm.run-id={prober.run_id}"]})
    assert left == []


@pytest.mark.docker
def test_docker_prober_has_no_network_and_bounds_time(prober: DockerProber, tmp_path: Path) -> None:
    # the module learns at import what the container lets it reach; a hang is cut off
    snoop = MODULE.replace(
        "app = FastAPI",
        "import socket\ntry:\n    socket.create_connection(('1.1.1.1', 53), timeout=2)\n    NET = 'open'\n"
        "except OSError as exc:\n    NET = type(exc).__name__\nraise RuntimeError('network: ' + NET)\napp = FastAPI",
    )
    result = prober.probe("probe_test", snoop, seed(tmp_path / "seed.db"), [], tmp_path / "dbs")
    assert result.import_error is not None
    assert "RuntimeError: network: OSError" in result.import_error
    quick = DockerProber(prober.client, image=prober.image, timeout_s=3, run_id=prober.run_id)
    hang = MODULE.replace("app = FastAPI", "import time\ntime.sleep(60)\napp = FastAPI")
    result = quick.probe("probe_test", hang, seed(tmp_path / "seed2.db"), [], tmp_path / "dbs")
    assert result.error == "the probe did not finish within 3s (a tool or the import hangs)"


PLANTS = {  # run after the probe closed its results: point the host at its own files
    "links": """
def _plant():
    os.symlink(SECRET_DB, "/y/leak.db")
    lines = [{"kind": "run", "run": "b", "db": "leak.db"}, {"kind": "run", "run": "c", "db": SECRET_DB},
             {"kind": "run", "run": "../../escaped", "db": "b.db"}]
    with open("/y/results.jsonl", "a") as f:
        f.writelines(json.dumps(line) + "\\n" for line in lines)
""",
    "results": """
def _plant():
    os.remove("/y/results.jsonl")
    os.symlink(SECRET_JSON, "/y/results.jsonl")
""",
}


@pytest.mark.docker
@pytest.mark.parametrize("attack", sorted(PLANTS))
def test_the_host_reads_nothing_the_sandbox_points_it_at(prober: DockerProber, tmp_path: Path, attack: str) -> None:
    # The output folder is the module's to write: the host must take only regular files under
    # plain names from it, and only the runs it asked for, into its own folder.
    secret_db = seed(tmp_path / "host-secret.db")
    secret_json = tmp_path / "host-secret.jsonl"
    secret_json.write_text(json.dumps({"kind": "import_error", "error": "HOST SECRET"}) + "\n")
    plant = (f"import atexit, json, os\nSECRET_DB, SECRET_JSON = {str(secret_db)!r}, {str(secret_json)!r}\n"
             f"{PLANTS[attack]}\natexit.register(_plant)\n")
    code = MODULE + plant
    runs = [ProbeRun.model_validate(r) for r in RUNS]
    out = tmp_path / "dbs"
    result = prober.probe("probe_test", code, seed(tmp_path / "seed.db"), runs, out)
    assert result.exit_code == 0, result.log_tail
    assert "HOST SECRET" not in (result.import_error or "")
    if attack == "links":  # the honest lines came first: those runs are there, as the probe wrote them
        assert result.tools == ["list_notes", "create_note"]
        assert sorted(result.dbs) == ["b", "c"]
    for db in result.dbs.values():
        assert db.parent == out
        assert db.read_bytes() != secret_db.read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dbs", "host-secret.db", "host-secret.jsonl", "seed.db"]
    assert set(result.dbs) <= {"b", "c"}
