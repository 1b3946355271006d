"""Serve the environment app's routes as MCP tools over streamable HTTP at /mcp.

Tools must be exactly what the original environments exposed, because models were trained on
that interface. So the tool list, the argument mapping and the result text come from
fastapi-mcp 0.4.0 itself (the same converter the original launcher used), applied to the
app's OpenAPI document. Only the transport is this project's own:
- sessions where the client keeps one: an `initialize` without a session id opens a stateful
  session (the MCP SDK's own transport and server loop), and the client's later requests
  reuse it. A stateless transport builds and tears down a session for every request, which
  costs about 2.7 ms a call on a small machine; a kept session does not. State stays bounded:
  at most `max_sessions` sessions, a session idle for `session_idle_s` is closed, and when the
  table is full a new one replaces the longest-idle one (its client gets 404 and may open a
  new session, as the protocol says);
- every other request without a session id is served statelessly, as before: one request,
  one throwaway session (plain JSON-RPC POSTs keep working without `initialize`);
- GET (a stream for server-initiated messages) is answered 405, which the protocol allows for
  a server that sends none: these tools never do, and a stream per session would hold a
  connection and a task for the session's whole life;
- input validation as the SDK does it (`jsonschema.validate` semantics: the tool's schema
  checked, `best_match` error, the same error text), with each tool's validator built once:
  `jsonschema.validate` checks the schema against its metaschema on every call, which costs
  milliseconds per call; the tool function itself is fastapi-mcp's own `handle_call_tool`;
- a per-call timeout: a tool whose handler hangs returns a tool error instead of hanging;
- calls reach the app in process (ASGI), through the reset gate.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any
from uuid import uuid4

import anyio
import httpx
import jsonschema  # type: ignore[import-untyped]  # no stubs in the image's lock
from anyio.abc import TaskGroup, TaskStatus
from fastapi_mcp import FastApiMCP
from mcp.server.streamable_http import MCP_SESSION_ID_HEADER, StreamableHTTPServerTransport
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from mcp.types import CallToolRequest, CallToolResult, TextContent
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["McpBridge", "buffered_body"]

_log = logging.getLogger(__name__)


class _TimeoutClient(httpx.AsyncClient):
    # httpx's ASGI transport ignores httpx timeouts, so the bound is enforced here.
    def __init__(self, timeout_s: float, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._tool_timeout_s = timeout_s

    async def send(self, request: httpx.Request, **kwargs: Any) -> httpx.Response:
        try:
            return await asyncio.wait_for(super().send(request, **kwargs), self._tool_timeout_s)
        except TimeoutError:
            raise TimeoutError(
                f"tool call {request.method} {request.url.path} timed out after "
                f"{self._tool_timeout_s:g}s"
            ) from None


@dataclass
class _Session:
    transport: StreamableHTTPServerTransport
    scope: anyio.CancelScope = field(default_factory=anyio.CancelScope)
    last_used: float = field(default_factory=time.monotonic)
    posts: int = 0  # POSTs in flight: a session with none may be closed


def _validate_once(fastapi_mcp: FastApiMCP) -> None:
    """Re-register fastapi-mcp's tool handler with input validators built once per tool.

    The SDK's `call_tool()` wrapper runs `jsonschema.validate(arguments, tool.inputSchema)`:
    validator class from the schema, `check_schema`, `best_match` of the errors, message
    "Input validation error: <message>"; a bad schema's `SchemaError` becomes the error text.
    The same steps run here, but the class, the schema check and the validator are made once.
    """
    server = fastapi_mcp.server
    wrapper = server.request_handlers[CallToolRequest]
    cells = [c.cell_contents for c in wrapper.__closure__ or ()]
    handle_call_tool = next((f for f in cells if getattr(f, "__name__", "") == "handle_call_tool"), None)
    if handle_call_tool is None:  # pinned versions (fastapi-mcp 0.4.0, mcp 1.26): never
        raise RuntimeError("fastapi-mcp's handle_call_tool not found in the SDK's call_tool wrapper")
    checks: dict[str, Any] = {}
    for tool in fastapi_mcp.tools:
        cls = jsonschema.validators.validator_for(tool.inputSchema)
        try:
            cls.check_schema(tool.inputSchema)
            checks[tool.name] = cls(tool.inputSchema)
        except jsonschema.SchemaError as exc:
            checks[tool.name] = exc

    async def call_tool(name: str, arguments: dict[str, Any]) -> Any:
        check = checks.get(name)
        if isinstance(check, jsonschema.SchemaError):
            raise check  # the SDK turns it into an error result with str(exc), as before
        if check is not None:
            error = jsonschema.exceptions.best_match(check.iter_errors(arguments))
            if error is not None:
                text = f"Input validation error: {error.message}"
                return CallToolResult(content=[TextContent(type="text", text=text)], isError=True)
        return await handle_call_tool(name, arguments)

    server.call_tool(validate_input=False)(call_tool)


def _rpc_error(status: int, message: str) -> JSONResponse:
    # the shape the SDK uses for a session it does not know
    return JSONResponse({"jsonrpc": "2.0", "id": "server-error", "error": {"code": -32600, "message": message}},
                        status_code=status)


def _is_initialize(body: bytes) -> bool:
    try:
        message = json.loads(body)
    except ValueError:  # the SDK reports malformed JSON itself
        return False
    return isinstance(message, dict) and message.get("method") == "initialize"


class McpBridge:
    """The MCP server of one environment app: `tools`, and an ASGI app for /mcp."""

    def __init__(
        self,
        env_app: Any,
        gated_app: ASGIApp,
        *,
        tool_timeout_s: float,
        max_sessions: int = 16,
        session_idle_s: float = 600.0,
    ) -> None:
        client = _TimeoutClient(
            tool_timeout_s,
            transport=httpx.ASGITransport(app=gated_app, raise_app_exceptions=False),
            base_url="http://apiserver",
            timeout=None,
        )
        self.fastapi_mcp = FastApiMCP(env_app, http_client=client)
        _validate_once(self.fastapi_mcp)
        self.tools = self.fastapi_mcp.tools
        self.max_sessions = max_sessions
        self.session_idle_s = session_idle_s
        self._client = client
        self._server = self.fastapi_mcp.server
        self._stateless = StreamableHTTPSessionManager(app=self._server, json_response=True, stateless=True)
        self._sessions: dict[str, _Session] = {}
        self._tasks: TaskGroup | None = None

    @property
    def session_count(self) -> int:
        return len(self._sessions)

    @asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        async with self._stateless.run(), anyio.create_task_group() as tasks:
            self._tasks = tasks
            tasks.start_soon(self._expire_idle)
            try:
                yield
            finally:
                self._tasks = None
                for session in list(self._sessions.values()):
                    await self._close(session)
                tasks.cancel_scope.cancel()
                await self._client.aclose()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["method"] == "GET":
            no_stream = _rpc_error(405, "Method Not Allowed: this server sends no messages of its own")
            no_stream.headers["allow"] = "POST, DELETE"
            await no_stream(scope, receive, send)
            return
        session_id = dict(scope["headers"]).get(MCP_SESSION_ID_HEADER.encode())
        if session_id is not None:
            session = self._sessions.get(session_id.decode("latin-1"))
            if session is None:
                await _rpc_error(404, "Session not found")(scope, receive, send)
                return
            await self._in_session(session, scope, receive, send)
            return
        if scope["method"] != "POST":
            await self._stateless.handle_request(scope, receive, send)
            return
        body, receive = await buffered_body(receive)
        if body is None:
            return  # the client went away
        if not _is_initialize(body):
            await self._stateless.handle_request(scope, receive, send)
            return
        opened = await self._open()
        if opened is None:
            await _rpc_error(503, f"all {self.max_sessions} MCP sessions are busy; retry")(scope, receive, send)
            return
        await self._in_session(opened, scope, receive, send)

    async def _in_session(self, session: _Session, scope: Scope, receive: Receive, send: Send) -> None:
        post = scope["method"] == "POST"
        session.posts += post
        try:
            await session.transport.handle_request(scope, receive, send)
        finally:
            session.posts -= post
            session.last_used = time.monotonic()
            if session.transport.is_terminated:  # the client's DELETE
                await self._close(session)

    async def _open(self) -> _Session | None:
        """A new stateful session, its server loop running; None when every session is busy."""
        if len(self._sessions) >= self.max_sessions:
            idle = [s for s in self._sessions.values() if s.posts == 0]
            if not idle:
                return None
            await self._close(min(idle, key=lambda s: s.last_used))
        session_id = uuid4().hex
        session = _Session(StreamableHTTPServerTransport(mcp_session_id=session_id, is_json_response_enabled=True))
        self._sessions[session_id] = session

        async def serve(*, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
            with session.scope:
                try:
                    async with session.transport.connect() as (read, write):
                        task_status.started()
                        await self._server.run(read, write, self._server.create_initialization_options(),
                                               stateless=False)
                except Exception:
                    _log.exception("MCP session %s failed", session_id)
            self._sessions.pop(session_id, None)

        assert self._tasks is not None, "McpBridge.running() first"
        await self._tasks.start(serve)
        return session

    async def _close(self, session: _Session) -> None:
        self._sessions.pop(session.transport.mcp_session_id or "", None)
        if not session.transport.is_terminated:
            await session.transport.terminate()
        session.scope.cancel()

    async def _expire_idle(self) -> None:
        while True:
            await anyio.sleep(min(30.0, self.session_idle_s / 4))
            cutoff = time.monotonic() - self.session_idle_s
            for session in [s for s in self._sessions.values() if s.posts == 0 and s.last_used < cutoff]:
                await self._close(session)


async def buffered_body(receive: Receive) -> tuple[bytes | None, Receive]:
    """The whole request body (None if the client left), and a `receive` that replays it."""
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return None, receive
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    body = b"".join(chunks)
    replayed = False

    async def replay() -> Message:
        nonlocal replayed
        if replayed:
            return await receive()
        replayed = True
        return {"type": "http.request", "body": body, "more_body": False}

    return body, replay
