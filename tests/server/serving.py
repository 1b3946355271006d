"""Serving a rendered example in process, for the server tests that need a real HTTP port.

`scenario_with_routes` renders an example scenario with extra routes appended to its module;
`serve_app` runs an ASGI app under uvicorn on a thread, on a free port of 127.0.0.1, and
`stop_server` ends it.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import uvicorn
from starlette.types import ASGIApp

from awm.builder.build.render import render
from awm.builder.catalog.loader import load_catalog
from awm_server.contract import CONTEXT_DIR, MODULE_FILE
from tests.helpers import EXAMPLES, free_port

__all__ = ["scenario_with_routes", "serve_app", "stop_server"]


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
