"""The MCP fast path for tools/call, in process: the server on a real port (uvicorn on a thread),
spoken to with raw JSON-RPC POSTs and with the official client (mcp.ClientSession over
streamable_http_client).

Every answer of the fast path is compared with the answer of the same server with the fast
path switched off (the SDK's transport, session and server loop serve the call, and httpx's own
client sends the tool's request to the app): same status, headers and body bytes, for results,
tool errors, validation errors, unknown tools, a route that raises, odd paths and queries,
bodies, cookies, a gzip response, cancellation, and requests the fast path must leave to the SDK.
"""

from __future__ import annotations

import asyncio
import json
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
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.types import CallToolRequest, ClientRequest

from awm_server import mcp_bridge
from awm_server.app import create_app
from awm_server.environment import Environment
from awm_server.envmodule import MODULE_NAME
from awm_server.settings import Settings
from tests.helpers import scenario_with_routes, serve_app, stop_server

SID = "pantrypal_recipe_planner"
VERSION = "2025-06-18"
HEADERS = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json",
           "MCP-Protocol-Version": VERSION}
EXTRA_ROUTES = '''

import gzip as _gzip
import threading as _threading
from fastapi import Request as _Request, Response as _Response

RELEASE = _threading.Event()  # set by the test: wait_tool returns


async def _seen(request):
    return {"method": request.method, "path": request.scope["path"], "raw_path": request.scope["raw_path"].decode(),
            "query": request.scope["query_string"].decode(), "headers": [list(h) for h in request.headers.items()],
            "body": (await request.body()).decode(), "client": list(request.scope["client"]),
            "server": list(request.scope["server"]), "root_path": request.scope["root_path"]}


@app.get("/echo/{word}", operation_id="echo_request", summary="What the app saw", tags=["test"])
async def echo_request(word: str, request: _Request, q: str | None = None, n: int | None = None,
                       flag: bool | None = None):
    return await _seen(request)


@app.post("/echo-body", operation_id="echo_body", summary="What the app saw, with a body", tags=["test"])
async def echo_body(request: _Request):
    return await _seen(request)


@app.get("/crash", operation_id="crash_tool", summary="Raises", tags=["test"])
def crash_tool():
    raise RuntimeError("handler bug")


@app.get("/zipped", operation_id="zipped_tool", summary="A gzip-encoded answer", tags=["test"])
def zipped_tool():
    return _Response(_gzip.compress(b'{"zipped": true, "text": "caf\\xc3\\xa9"}'), media_type="application/json",
                     headers={"content-encoding": "gzip"})


@app.get("/text", operation_id="text_tool", summary="Not JSON", tags=["test"])
def text_tool():
    return _Response("plain words", media_type="text/plain")


@app.post("/login", operation_id="login_tool", summary="Sets a cookie", tags=["test"])
def login_tool(response: _Response):
    response.set_cookie("sid", "abc123")
    return {"ok": True}


@app.get("/wait", operation_id="wait_tool", summary="Returns once the test says so", tags=["test"])
async def wait_tool():
    import asyncio as _asyncio
    while not RELEASE.is_set():
        await _asyncio.sleep(0.01)
    return {"released": True}
'''


@pytest.fixture(scope="module")
def scenario_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return scenario_with_routes(tmp_path_factory.mktemp("ctx"), SID, EXTRA_ROUTES)


@pytest.fixture
def serve(scenario_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """serve(**settings) -> (base URL, the environment module) of a fresh server on a thread."""
    servers: list[tuple[uvicorn.Server, threading.Thread, Environment, types.ModuleType]] = []
    monkeypatch.setenv("DATABASE_PATH", "")

    def start(**overrides: Any) -> tuple[str, types.ModuleType]:
        monkeypatch.setitem(sys.modules, MODULE_NAME, types.ModuleType(MODULE_NAME))
        settings = Settings(scenario_dir=scenario_dir, work_dir=tmp_path / f"work{len(servers)}",
                            scratch_dir=tmp_path, tool_timeout_s=5.0, **overrides)
        env = Environment(settings)
        module = sys.modules[MODULE_NAME]
        url, server, thread = serve_app(create_app(env))
        servers.append((server, thread, env, module))
        return url, module

    yield start
    for server, thread, env, module in servers:
        module.RELEASE.set()
        stop_server(server, thread)
        env.env.dispose_engines()


def _no_fast_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """The reference: the SDK serves every tools/call, and httpx's client sends every tool request."""
    monkeypatch.setattr(mcp_bridge, "_tool_call", lambda scope, message: None)
    monkeypatch.setattr(mcp_bridge, "_plain_query", lambda params: None)


def _call(name: str, arguments: Any, rid: Any = 1, **params: Any) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": rid, "method": "tools/call", "params": {"name": name, "arguments": arguments,
                                                                            **params}}


CALLS: list[dict[str, Any]] = [
    _call("get_recipe", {"recipe_id": 8}),
    _call("get_recipe", {"recipe_id": "eight"}, rid="str-id"),
    _call("get_recipe", {}),
    _call("get_recipe", {"recipe_id": 8, "extra": [1]}),
    _call("no_such_tool", {}),
    _call("crash_tool", {}),
    _call("text_tool", {}),
    _call("zipped_tool", {}),
    _call("echo_request", {"word": "plain-1.x_~", "q": "x", "n": 3, "flag": True}),
    _call("echo_request", {"word": "a b/../c?d=1#e", "q": "ü &=x"}),  # httpx's own path in both
    _call("echo_request", {"word": "..", "q": ""}),
    _call("echo_request", {"word": "%41", "flag": False}),
    _call("echo_body", {"x": [1, "é", None], "nested": {"k": 1.5}}),
    _call("echo_body", {}),
    _call("echo_body", {"bad": float("nan")}),
    _call("delete_meal_plan_entry", {"entry_id": 10}),
    _call("delete_meal_plan_entry", {"entry_id": 10}),  # now gone: the route's 404 as a tool error
    _call("get_recipe", {"recipe_id": 8}, _meta={"progressToken": 5}),
    {"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": {"name": "echo_body"}},  # no arguments
    _call("echo_request", {"word": ""}),  # /echo/: no such route
    _call("login_tool", {}),
    _call("echo_request", {"word": "after-login"}),  # the cookie goes with every later request
]

# Requests the fast path must leave to the SDK (each an error the SDK answers, or not a tools/call)
DECLINED: list[tuple[dict[str, str], Any]] = [
    ({"MCP-Protocol-Version": "1999-01-01"}, _call("get_recipe", {"recipe_id": 8})),
    ({"Accept": "text/event-stream"}, _call("get_recipe", {"recipe_id": 8})),
    ({"Content-Type": "text/plain"}, _call("get_recipe", {"recipe_id": 8})),
    ({"Content-Type": "Application/JSON"}, _call("get_recipe", {"recipe_id": 8})),
    ({}, {"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": 5}),
    ({}, {"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": {"arguments": {}}}),
    ({}, {"jsonrpc": "2.0", "id": 3.5, "method": "tools/call", "params": {"name": "get_recipe"}}),
    ({}, {"jsonrpc": "1.0", "id": 3, "method": "tools/call", "params": {"name": "get_recipe"}}),
    ({}, [_call("get_recipe", {"recipe_id": 8})]),
    ({}, {"jsonrpc": "2.0", "id": 4, "method": "tools/list"}),
    ({}, {"jsonrpc": "2.0", "id": 5, "method": "ping"}),
    ({}, {"jsonrpc": "2.0", "method": "notifications/initialized"}),
]


def _initialize(http: httpx.Client, base: str) -> str:
    init = {"jsonrpc": "2.0", "id": 0, "method": "initialize",
            "params": {"protocolVersion": VERSION, "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}}
    session = http.post(f"{base}/mcp", json=init, headers=HEADERS).headers["mcp-session-id"]
    note = {"jsonrpc": "2.0", "method": "notifications/initialized"}
    assert http.post(f"{base}/mcp", json=note, headers={**HEADERS, "mcp-session-id": session}).status_code == 202
    return session


def _answer(response: httpx.Response, session: str | None) -> tuple[Any, ...]:
    """Status, headers (the session id replaced by whether it is this session's) and body bytes."""
    headers = {k: v for k, v in response.headers.items() if k not in ("date", "server")}
    if "mcp-session-id" in headers:
        headers["mcp-session-id"] = str(headers["mcp-session-id"] == session)
    return response.status_code, sorted(headers.items()), response.content


def _answers(base: str) -> list[tuple[Any, ...]]:
    out = []
    with httpx.Client(timeout=30) as http:
        session = _initialize(http, base)
        for message in CALLS:
            out.append(_answer(http.post(f"{base}/mcp", content=json.dumps(message),
                                         headers={**HEADERS, "mcp-session-id": session}), session))
        for message in CALLS[:8]:  # without a session: served statelessly
            out.append(_answer(http.post(f"{base}/mcp", content=json.dumps(message), headers=HEADERS), None))
        for extra, message in DECLINED:
            for sid in (session, None):
                headers = {**HEADERS, **extra, **({"mcp-session-id": sid} if sid else {})}
                out.append(_answer(http.post(f"{base}/mcp", content=json.dumps(message), headers=headers), sid))
    return out


def test_the_fast_path_answers_exactly_what_the_sdk_answers(serve: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    fast, _ = serve()
    answers = _answers(fast)
    with monkeypatch.context() as patch:
        _no_fast_path(patch)
        reference, _ = serve()
        expected = _answers(reference)
    assert len(answers) == len(expected)
    for message, got, want in zip([*CALLS, *CALLS[:8], *(m for _, m in DECLINED for _ in "ab")], answers, expected,
                                  strict=True):
        assert got == want, message
    # the cases say what they are meant to say
    bodies = [json.loads(a[2]) for a in answers[:len(CALLS)]]
    texts = [b["result"]["content"][0]["text"] for b in bodies]
    errors = [b["result"]["isError"] for b in bodies]
    assert [i for i, e in enumerate(errors) if e] == [1, 2, 4, 5, 10, 16, 19]  # 10: httpx made /echo/.. / (404)
    assert json.loads(texts[0])["id"] == 8
    assert texts[1].startswith("Input validation error")
    assert "Unknown tool: no_such_tool" in texts[4]
    assert "Status code: 500" in texts[5]
    assert texts[6] == "plain words"
    assert json.loads(texts[7]) == {"zipped": True, "text": "café"}
    seen = json.loads(texts[8])
    assert (seen["path"], seen["query"]) == ("/echo/plain-1.x_~", "q=x&n=3&flag=true")
    assert seen["server"] == ["apiserver", None]
    assert ["user-agent", f"python-httpx/{httpx.__version__}"] in seen["headers"]
    assert json.loads(texts[12])["body"] == '{"x":[1,"é",null],"nested":{"k":1.5}}'
    assert json.loads(texts[14])["body"] == '{"bad":null}'  # the SDK's JSON dump of the request made NaN null
    assert "Status code: 404" in texts[16]
    assert ["cookie", "sid=abc123"] in json.loads(texts[-1])["headers"]
    assert bodies[1]["id"] == "str-id"


def test_the_official_client_takes_the_fast_path(serve: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    answered: list[str] = []
    answer = mcp_bridge.McpBridge._answer

    async def counted(self: mcp_bridge.McpBridge, session: Any, rpc: Any, call: CallToolRequest,
                      *args: Any) -> None:
        answered.append(call.params.name)
        await answer(self, session, rpc, call, *args)

    monkeypatch.setattr(mcp_bridge.McpBridge, "_answer", counted)
    calls: list[tuple[str, dict[str, Any]]] = [
        ("get_recipe", {"recipe_id": 8}), ("get_recipe", {"recipe_id": "x"}), ("no_such_tool", {}),
        ("crash_tool", {}), ("echo_body", {"a": [1, 2]}),
    ]

    async def run(base: str) -> list[dict[str, Any]]:
        async with streamable_http_client(f"{base}/mcp") as (read, write, _), ClientSession(read, write) as session:
            await session.initialize()
            return [(await session.call_tool(name, args)).model_dump(mode="json") for name, args in calls]

    fast, _ = serve()
    results = asyncio.run(run(fast))
    assert answered == [name for name, _ in calls]
    with monkeypatch.context() as patch:
        _no_fast_path(patch)
        reference, _ = serve()
        assert asyncio.run(run(reference)) == results
    assert answered == [name for name, _ in calls]  # the reference took the SDK's path
    assert [r["isError"] for r in results] == [False, True, True, True, False]


def test_unknown_deleted_and_uninitialized_sessions(serve: Any) -> None:
    base, _ = serve()
    call = json.dumps(_call("get_recipe", {"recipe_id": 8}))
    with httpx.Client() as http:
        unknown = http.post(f"{base}/mcp", content=call, headers={**HEADERS, "mcp-session-id": "f" * 32})
        assert unknown.status_code == 404
        assert unknown.json()["error"]["message"] == "Session not found"
        session = _initialize(http, base)
        assert http.delete(f"{base}/mcp", headers={**HEADERS, "mcp-session-id": session}).status_code == 200
        gone = http.post(f"{base}/mcp", content=call, headers={**HEADERS, "mcp-session-id": session})
        assert gone.status_code == 404
        # an initialize the SDK refused opens no usable session: its calls go to the SDK
        bad = {"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {"protocolVersion": VERSION}}
        refused = http.post(f"{base}/mcp", json=bad, headers=HEADERS)
        assert refused.status_code == 200
        assert "error" in refused.json()
        answer = http.post(f"{base}/mcp", content=call,
                           headers={**HEADERS, "mcp-session-id": refused.headers["mcp-session-id"]})
        assert answer.json()["error"]["message"] == "Invalid request parameters"


def _in_flight(http: httpx.Client, base: str) -> int:
    return int(http.get(f"{base}/_awm/info").json()["awm.runtime"]["in_flight"])


def _wait_in_flight(http: httpx.Client, base: str, n: int) -> None:
    deadline = time.monotonic() + 30
    while _in_flight(http, base) != n:
        assert time.monotonic() < deadline, f"never {n} request(s) in flight"
        time.sleep(0.01)


def _cancelled_call(base: str, module: types.ModuleType) -> Any:
    """A wait_tool call that a notifications/cancelled ends: the answer to the call."""
    with httpx.Client(timeout=30) as http:
        session = _initialize(http, base)
        headers = {**HEADERS, "mcp-session-id": session}
        box: list[httpx.Response] = []
        thread = threading.Thread(target=lambda: box.append(
            httpx.post(f"{base}/mcp", content=json.dumps(_call("wait_tool", {}, rid=41)), headers=headers,
                       timeout=30)))
        thread.start()
        _wait_in_flight(http, base, 1)
        cancel = {"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": 41}}
        assert http.post(f"{base}/mcp", json=cancel, headers=headers).status_code == 202
        thread.join(30)
        module.RELEASE.set()
        _wait_in_flight(http, base, 0)
        return box[0].status_code, box[0].json()


def test_a_cancelled_call_is_answered_as_the_sdk_answers_it(serve: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    answer = _cancelled_call(*serve())
    assert answer == (200, {"jsonrpc": "2.0", "id": 41, "error": {"code": 0, "message": "Request cancelled"}})
    with monkeypatch.context() as patch:
        _no_fast_path(patch)
        assert _cancelled_call(*serve()) == answer


def test_a_reset_waits_for_a_fast_path_call_in_flight(serve: Any) -> None:
    base, module = serve(reset_drain_timeout_s=0.2)

    async def call() -> Any:
        async with streamable_http_client(f"{base}/mcp") as (read, write, _), ClientSession(read, write) as session:
            await session.initialize()
            return await session.call_tool("wait_tool", {})

    box: list[Any] = []
    thread = threading.Thread(target=lambda: box.append(asyncio.run(call())))
    thread.start()
    with httpx.Client(timeout=30) as http:
        _wait_in_flight(http, base, 1)
        refused = http.post(f"{base}/_awm/reset")  # the call holds the gate: the reset gives up
        assert refused.status_code == 503
        assert "1 request(s) still in flight" in refused.json()["error"]
        module.RELEASE.set()
        thread.join(30)
        assert not box[0].isError
        assert json.loads(box[0].content[0].text) == {"released": True}
        assert http.post(f"{base}/_awm/reset").json()["resets"] == 1


def test_call_tool_request_is_the_only_client_request_for_tools_call() -> None:
    """Why the fast path may validate CallToolRequest where the SDK validates ClientRequest."""
    samples: list[dict[str, Any]] = [
        {"method": "tools/call", "params": {"name": "t", "arguments": {"a": 1}}},
        {"method": "tools/call", "params": {"name": "t"}},
        {"method": "tools/call", "params": {"name": "t", "arguments": None, "_meta": {"progressToken": "p"}}},
        {"method": "tools/call", "params": {"name": "t", "arguments": {}, "task": {"ttl": 5}}},
        {"method": "tools/call", "params": {"name": 5}},
        {"method": "tools/call", "params": {"arguments": {}}},
        {"method": "tools/call"},
    ]
    for sample in samples:
        try:
            union: Any = ClientRequest.model_validate(sample).root
        except ValueError:
            union = None
        try:
            alone: Any = CallToolRequest.model_validate(sample)
        except ValueError:
            alone = None
        assert union == alone, sample
