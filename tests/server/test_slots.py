"""Episode slots and kept MCP sessions, in process: the server on a real port (uvicorn on a
thread), the official MCP client, a module derived from an example with module-level state, a
tool that hangs and one that crashes. The container tests (tests/image/test_slots.py) cover
the same in the image with the examples' reference solutions.
"""

from __future__ import annotations

import asyncio
import sqlite3
import sys
import threading
import time
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi_mcp import FastApiMCP
from mcp.types import CallToolRequest, CallToolRequestParams, CallToolResult

from awm.runtime.client import AsyncEnvClient
from awm_server.app import create_app
from awm_server.envmodule import MODULE_NAME
from awm_server.settings import Settings
from awm_server.slots import load_slots
from tests.helpers import scenario_with_routes, serve_app, stop_server

SID = "pantrypal_recipe_planner"
SLOTS = 3
EXTRA_ROUTES = '''

CALLS = {"n": 0}  # module-level state: one counter per import


@app.post("/count", operation_id="count_calls", summary="Counts calls to this tool", tags=["test"])
def count_calls():
    CALLS["n"] += 1
    return {"n": CALLS["n"]}


@app.get("/hang", operation_id="hang_tool", summary="Never answers", tags=["test"])
async def hang_tool():
    import asyncio as _asyncio
    await _asyncio.sleep(3600)


@app.get("/crash", operation_id="crash_tool", summary="Raises", tags=["test"])
def crash_tool():
    raise RuntimeError("handler bug")
'''


@pytest.fixture(scope="module")
def scenario_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return scenario_with_routes(tmp_path_factory.mktemp("ctx"), SID, EXTRA_ROUTES)


@pytest.fixture
def serve(scenario_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """serve(slots=N, **settings) -> base URL of a server running on a thread."""
    servers: list[tuple[uvicorn.Server, threading.Thread, list[Any]]] = []
    monkeypatch.setenv("DATABASE_PATH", "")

    def start(slots: int = SLOTS, **overrides: Any) -> str:
        for name in [MODULE_NAME, *(f"{MODULE_NAME}_e{k}" for k in range(slots))]:
            monkeypatch.setitem(sys.modules, name, types.ModuleType(name))
        settings = Settings(scenario_dir=scenario_dir, work_dir=tmp_path / f"work{len(servers)}",
                            scratch_dir=tmp_path, slots=slots, tool_timeout_s=2.0, **overrides)
        envs = load_slots(settings)
        url, server, thread = serve_app(create_app(envs))
        servers.append((server, thread, envs))
        return url

    yield start
    for server, thread, envs in servers:
        stop_server(server, thread)
        for env in envs:
            env.env.dispose_engines()


def _slot_url(base: str, k: int) -> str:
    return f"{base}/e/{k}"


async def _call(url: str, tool: str, arguments: dict[str, Any] | None = None) -> tuple[str, bool]:
    async with AsyncEnvClient(url) as client:
        result = await client.call_tool(tool, arguments or {})
    return result.text, result.is_error


def _rows(db: bytes, tmp: Path, sql: str) -> list[tuple[Any, ...]]:
    path = tmp / "snap.db"
    path.write_bytes(db)
    conn = sqlite3.connect(path)
    try:
        return list(conn.execute(sql))
    finally:
        conn.close()
        path.unlink()


def test_each_slot_has_its_own_module_state(serve: Any) -> None:
    base = serve()

    async def main() -> list[str]:
        for _ in range(3):
            await _call(_slot_url(base, 0), "count_calls")
        await _call(_slot_url(base, 2), "count_calls")
        return [(await _call(_slot_url(base, k), "count_calls"))[0] for k in range(SLOTS)]

    counts = asyncio.run(main())
    assert [httpx.Response(200, content=c).json()["n"] for c in counts] == [4, 1, 2]


def test_slot_data_and_reset_are_separate(serve: Any, tmp_path: Path) -> None:
    base = serve()
    count = "SELECT COUNT(*) FROM meal_plan_entries"
    with httpx.Client() as http:
        before = _rows(http.get(f"{base}/_awm/snapshot").content, tmp_path, count)
        asyncio.run(_call(_slot_url(base, 1), "delete_meal_plan_entry", {"entry_id": 10}))
        after = [_rows(http.get(f"{_slot_url(base, k)}/_awm/snapshot").content, tmp_path, count) for k in range(SLOTS)]
        assert after == [before, [(before[0][0] - 1,)], before]
        # the unprefixed control plane is slot 0
        assert http.post(f"{base}/_awm/reset").json()["resets"] == 1
        assert _rows(http.get(f"{_slot_url(base, 1)}/_awm/snapshot").content, tmp_path, count) == after[1]
        assert http.post(f"{_slot_url(base, 1)}/_awm/reset").json()["resets"] == 1
        assert _rows(http.get(f"{_slot_url(base, 1)}/_awm/snapshot").content, tmp_path, count) == before
        health = [http.get(f"{_slot_url(base, k)}/_awm/health").json() for k in range(SLOTS)]
        assert [h["slot"] for h in health] == list(range(SLOTS))
        assert http.get(f"{_slot_url(base, 2)}/_awm/info").json()["awm.runtime"]["slot"] == 2


def test_every_slot_lists_the_one_slot_tools(serve: Any) -> None:
    one, many = serve(slots=1), serve()

    async def tools(url: str) -> list[dict[str, Any]]:
        async with AsyncEnvClient(url) as client:
            return [t.model_dump(mode="json") for t in await client.list_tools()]

    async def main() -> tuple[list[dict[str, Any]], list[list[dict[str, Any]]]]:
        return await tools(one), [await tools(_slot_url(many, k)) for k in range(SLOTS)]

    reference, per_slot = asyncio.run(main())
    assert per_slot == [reference] * SLOTS
    assert asyncio.run(tools(many)) == reference
    with httpx.Client() as http:  # one slot: no prefixed paths; they go to the app (404)
        assert http.get(f"{_slot_url(one, 0)}/_awm/health").status_code == 404
        assert "slot" not in http.get(f"{one}/_awm/health").json()


def test_a_hanging_call_in_one_slot_does_not_hold_another(serve: Any) -> None:
    base = serve()

    async def main() -> None:
        hung = asyncio.create_task(_call(_slot_url(base, 0), "hang_tool"))
        await asyncio.sleep(0.2)  # the hanging call is in flight
        texts = [await _call(_slot_url(base, 1), "get_recipe", {"recipe_id": 8}) for _ in range(3)]
        assert not hung.done()  # other slots were served while it hung
        assert all(not is_error for _, is_error in texts)
        text, is_error = await hung
        assert is_error
        assert "timed out after 2s" in text

    asyncio.run(main())


def test_a_crashing_handler_leaves_its_slot_serving(serve: Any) -> None:
    base = serve()
    text, is_error = asyncio.run(_call(_slot_url(base, 1), "crash_tool"))
    assert is_error
    assert "Status code: 500" in text
    text, is_error = asyncio.run(_call(_slot_url(base, 1), "get_recipe", {"recipe_id": 8}))
    assert not is_error
    assert '"id": 8' in text


def test_validation_and_results_match_the_sdk_default(scenario_dir: Path, serve: Any) -> None:
    """Input validation built once gives the SDK's own error text, and results are unchanged."""
    base = serve(slots=1)
    module = sys.modules[MODULE_NAME]
    pristine = FastApiMCP(module.app)  # the SDK's call_tool wrapper, validating per call

    async def reference(tool: str, arguments: dict[str, Any]) -> tuple[str, bool]:
        request = CallToolRequest(method="tools/call", params=CallToolRequestParams(name=tool, arguments=arguments))
        result = (await pristine.server.request_handlers[CallToolRequest](request)).root
        assert isinstance(result, CallToolResult)
        return "\n".join(getattr(c, "text", "") for c in result.content), bool(result.isError)

    cases: list[tuple[str, dict[str, Any]]] = [
        ("get_recipe", {"recipe_id": 8}), ("get_recipe", {"recipe_id": "eight"}), ("get_recipe", {}),
        ("get_recipe", {"recipe_id": 8, "extra": [1]}), ("no_such_tool", {}),
    ]

    async def main() -> None:
        for tool, arguments in cases:
            assert await _call(base, tool, arguments) == await reference(tool, arguments), (tool, arguments)

    try:
        asyncio.run(main())
    finally:
        asyncio.run(pristine._http_client.aclose())


def test_sessions_are_kept_bounded_and_freed(serve: Any) -> None:
    base = serve(slots=1, mcp_max_sessions=2, mcp_session_idle_s=1.0)
    client_info = {"name": "t", "version": "1"}
    init = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
            "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": client_info}}
    call = {"jsonrpc": "2.0", "id": 2, "method": "tools/call",
            "params": {"name": "get_recipe", "arguments": {"recipe_id": 8}}}
    headers = {"Accept": "application/json, text/event-stream", "MCP-Protocol-Version": "2025-06-18"}

    def sessions(http: httpx.Client) -> int:
        return int(http.get(f"{base}/_awm/info").json()["awm.runtime"]["mcp_sessions"])

    with httpx.Client() as http:
        ids = [http.post(f"{base}/mcp", json=init, headers=headers).headers["mcp-session-id"] for _ in range(3)]
        assert len(set(ids)) == 3
        assert sessions(http) == 2
        evicted = http.post(f"{base}/mcp", json=call, headers={**headers, "mcp-session-id": ids[0]})
        assert evicted.status_code == 404
        # a request without a session and without initialize is served statelessly, as before
        stateless = http.post(f"{base}/mcp", json=call, headers=headers)
        assert stateless.status_code == 200
        assert not stateless.json()["result"]["isError"]
        assert "mcp-session-id" not in stateless.headers
        assert http.delete(f"{base}/mcp", headers={**headers, "mcp-session-id": ids[2]}).status_code == 200
        assert sessions(http) == 1
        deadline = time.monotonic() + 30
        while sessions(http) and time.monotonic() < deadline:  # idle expiry (1 s here)
            time.sleep(0.1)
        assert sessions(http) == 0

    async def client_session() -> int:  # the official client keeps one session and ends it
        async with AsyncEnvClient(base) as client, client.mcp_session() as session:
            for _ in range(3):
                assert not (await session.call_tool("get_recipe", {"recipe_id": 8})).isError
            async with httpx.AsyncClient() as http:
                return int((await http.get(f"{base}/_awm/info")).json()["awm.runtime"]["mcp_sessions"])

    assert asyncio.run(client_session()) == 1
    with httpx.Client() as http:
        assert sessions(http) == 0
