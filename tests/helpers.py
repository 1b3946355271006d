"""Helpers shared by test packages: derived datasets, in-process module import, table dumps, ports,
servers run in process (an example with extra routes; any ASGI app under uvicorn on a thread)."""

from __future__ import annotations

import importlib.util
import json
import socket
import sqlite3
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import docker
import docker.errors
import uvicorn
from starlette.types import ASGIApp

from awm.builder.build.render import render
from awm.builder.build.smoke import record_path
from awm.builder.catalog.loader import load_catalog
from awm.core.naming import normalise
from awm_server.contract import CONTEXT_DIR, MODULE_FILE

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def derive_dataset(
    dest: Path,
    source_scenario: str,
    new_name: str,
    *,
    env_code: Callable[[str], str] | None = None,
    verifiers: dict[int, str] | None = None,
) -> Path:
    """Write a one-scenario dataset copied from an example, renamed, with optional edits."""
    dest.mkdir(parents=True, exist_ok=True)
    new_id = normalise(new_name)
    for path in sorted(EXAMPLES.glob("gen_*.jsonl")):
        out = []
        for line in path.read_text().splitlines():
            rec: dict[str, Any] = json.loads(line)
            key = "name" if "name" in rec and "scenario" not in rec else "scenario"
            if normalise(rec[key]) != source_scenario:
                continue
            rec[key] = new_name if rec[key] != source_scenario else new_id
            if "full_code" in rec and env_code:
                rec["full_code"] = env_code(rec["full_code"])
            if "verification" in rec and verifiers and rec["task_idx"] in verifiers:
                rec["verification"]["code"] = verifiers[rec["task_idx"]]
            out.append(json.dumps(rec))
        (dest / path.name).write_text("\n".join(out) + "\n")
    return dest


def remove_scenario_images(client: docker.DockerClient, prefix: str) -> int:
    """Remove every image whose `awm.scenario` label starts with `prefix` (all its tags, and
    untagged ones a failed build left), with their smoke records; returns how many went."""
    removed = 0
    for item in client.api.images(filters={"label": "awm.scenario"}):
        if not (item.get("Labels") or {}).get("awm.scenario", "").startswith(prefix):
            continue
        try:
            client.api.remove_image(item["Id"], force=True)
            removed += 1
        except docker.errors.NotFound:
            pass
        record_path(item["Id"]).unlink(missing_ok=True)
    return removed


def import_env_module(code: str, database_url: str, name: str, monkeypatch: Any) -> ModuleType:
    """Import an environment module's source in process (trusted example code only)."""
    monkeypatch.setenv("DATABASE_PATH", database_url)
    spec = importlib.util.spec_from_loader(name, loader=None)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, name, module)  # pydantic resolves annotations there
    exec(compile(code, f"{name}.py", "exec"), module.__dict__)
    return module


def dump_tables(path: Path, *, skip_columns: dict[str, set[str]] | None = None) -> dict[str, list[tuple[Any, ...]]]:
    """Every table's rows, sorted, for comparing two databases by content."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        tables = [r[0] for r in conn.execute(
            "SELECT name FROM sqlite_master WHERE type='table' AND name NOT LIKE 'sqlite_%' ORDER BY name")]
        out = {}
        for table in tables:
            cols = [r[1] for r in conn.execute(f'PRAGMA table_info("{table}")')]
            keep = [c for c in cols if c not in (skip_columns or {}).get(table, set())]
            select = ", ".join(f'"{c}"' for c in keep)
            out[table] = sorted(conn.execute(f'SELECT {select} FROM "{table}"').fetchall(), key=repr)
        return out
    finally:
        conn.close()


def free_port() -> int:
    """A TCP port of 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def scenario_with_routes(root: Path, scenario: str, extra_routes: str) -> Path:
    """Render `scenario` into `root` with `extra_routes` (module source) added; its context folder."""
    render(load_catalog(EXAMPLES).bundles[scenario], "awm/base:test").write(root)
    module = root / CONTEXT_DIR / MODULE_FILE
    head, main = module.read_text().split('if __name__ == "__main__":')
    module.write_text(head + extra_routes + '\n\nif __name__ == "__main__":' + main)
    return root / CONTEXT_DIR


def serve_app(app: ASGIApp) -> tuple[str, uvicorn.Server, threading.Thread]:
    """Run `app` on a thread; its base URL once it accepts connections, the server and the thread."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.01)
    return f"http://127.0.0.1:{port}", server, thread


def stop_server(server: uvicorn.Server, thread: threading.Thread) -> None:
    server.should_exit = True
    thread.join(10)
