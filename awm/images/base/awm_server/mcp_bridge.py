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
- a `tools/call` on an initialized session, or without a session, takes a fast path
  (`McpBridge._answer`): the SDK's own tool handler runs in the request's task and its
  JSON-RPC response is sent as the SDK's transport would send it, without the SDK's
  per-message streams and tasks; every other message, and every request the SDK would refuse,
  is the SDK's;
- GET (a stream for server-initiated messages) is answered 405, which the protocol allows for
  a server that sends none: these tools never do, and a stream per session would hold a
  connection and a task for the session's whole life;
- input validation as the SDK does it (`jsonschema.validate` semantics: the tool's schema
  checked, `best_match` error, the same error text), with each tool's validator built once:
  `jsonschema.validate` checks the schema against its metaschema on every call, which costs
  milliseconds per call; the tool function itself is fastapi-mcp's own `handle_call_tool`;
- a per-call timeout: a tool whose handler hangs returns a tool error instead of hanging;
- calls reach the app in process (ASGI), through the reset gate; a plain request is run
  straight on the app's ASGI callable as httpx's ASGI transport runs it (`_AppClient`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any
from uuid import uuid4

import anyio
import httpx
import jsonschema
from anyio.abc import TaskGroup, TaskStatus
from fastapi_mcp import FastApiMCP
from mcp.server.lowlevel.server import request_ctx
from mcp.server.streamable_http import (
    CONTENT_TYPE_JSON,
    MCP_PROTOCOL_VERSION_HEADER,
    MCP_SESSION_ID_HEADER,
    StreamableHTTPServerTransport,
)
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from mcp.shared.context import RequestContext
from mcp.shared.exceptions import McpError
from mcp.shared.version import SUPPORTED_PROTOCOL_VERSIONS
from mcp.types import (
    DEFAULT_NEGOTIATED_VERSION,
    CallToolRequest,
    CallToolResult,
    CancelledNotification,
    ClientNotification,
    ErrorData,
    JSONRPCError,
    JSONRPCMessage,
    JSONRPCNotification,
    JSONRPCRequest,
    JSONRPCResponse,
    RequestId,
    TextContent,
)
from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["McpBridge", "buffered_body"]

_log = logging.getLogger(__name__)


_PLAIN = re.compile(r"[A-Za-z0-9._~-]*")  # URL characters that httpx neither encodes nor decodes
# the arguments of a request that asks nothing special of the client
_AS_DEFAULT: dict[str, Any] = {
    "content": None, "data": None, "files": None, "cookies": None, "extensions": None,
    "auth": httpx.USE_CLIENT_DEFAULT, "follow_redirects": httpx.USE_CLIENT_DEFAULT, "timeout": httpx.USE_CLIENT_DEFAULT,
}


def _plain_path(path: str) -> bool:
    """Whether httpx sends `path` as it is: plain segments, no dot segment, no `//`."""
    return path.startswith("/") and "//" not in path and all(
        _PLAIN.fullmatch(segment) and segment not in (".", "..") for segment in path[1:].split("/"))


def _plain_query(params: Any) -> bytes | None:
    """The query string httpx makes of `params` when it is plain (scalars whose text needs no
    escaping), else None."""
    if not params:
        return b""
    if not isinstance(params, dict):
        return None
    items = []
    for key, value in params.items():
        text = "true" if value is True else "false" if value is False else "" if value is None else \
            str(value) if isinstance(value, (str, int, float)) else None
        if text is None or not isinstance(key, str) or not (_PLAIN.fullmatch(key) and _PLAIN.fullmatch(text)):
            return None
        items.append(f"{key}={text}")
    return "&".join(items).encode("ascii")


class _AppClient(httpx.AsyncClient):
    """fastapi-mcp's HTTP client: its requests go to the app's ASGI callable, each with a time bound.

    A plain request (a path and query of characters httpx leaves as they are, no header or
    cookie to send) is run here as httpx's ASGI transport would run it: the same scope,
    headers, JSON body, receive and send, and 500 for an app that raises. That skips the
    client's URL parsing, header merging and send machinery, about half the MCP cost of a
    small call. Every other request takes httpx's own path. The time bound is enforced here
    because httpx's ASGI transport ignores httpx timeouts.
    """

    def __init__(self, app: ASGIApp, timeout_s: float) -> None:
        super().__init__(transport=httpx.ASGITransport(app=app, raise_app_exceptions=False),
                         base_url="http://apiserver", timeout=None)
        self._app = app
        self._tool_timeout_s = timeout_s
        # what httpx sends with every request: Host first, then the client's default headers
        self._asgi_headers = [(b"host", b"apiserver"), *((k.lower(), v) for k, v in self.headers.raw)]

    async def request(self, method: str, url: Any, *args: Any, **kwargs: Any) -> httpx.Response:
        path = url if isinstance(url, str) and _plain_path(url) else None
        query = _plain_query(kwargs.get("params"))
        plain = (path is not None and query is not None and not args and not self.cookies
                 and not kwargs.get("headers") and all(kwargs.get(k, v) is v for k, v in _AS_DEFAULT.items())
                 and kwargs.keys() <= _AS_DEFAULT.keys() | {"params", "headers", "json"})
        if path is None or query is None or not plain:
            return await super().request(method, url, *args, **kwargs)
        try:
            async with asyncio.timeout(self._tool_timeout_s):
                return await self._call(method, path, query or b"", kwargs.get("params"), kwargs.get("json"))
        except TimeoutError:
            raise self._timed_out(method, path) from None

    async def send(self, request: httpx.Request, **kwargs: Any) -> httpx.Response:
        try:
            return await asyncio.wait_for(super().send(request, **kwargs), self._tool_timeout_s)
        except TimeoutError:
            raise self._timed_out(request.method, request.url.path) from None

    def _timed_out(self, method: str, path: str) -> TimeoutError:
        return TimeoutError(f"tool call {method} {path} timed out after {self._tool_timeout_s:g}s")

    async def _call(self, method: str, path: str, query: bytes, params: Any, body: Any) -> httpx.Response:
        """One request to the app, as httpx.ASGITransport makes it."""
        headers = self._asgi_headers
        content = b""
        if body is not None:
            content = json.dumps(body, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()
            headers = [*headers, (b"content-length", str(len(content)).encode()),
                       (b"content-type", b"application/json")]
        elif method in ("POST", "PUT", "PATCH"):
            headers = [headers[0], (b"content-length", b"0"), *headers[1:]]
        scope = {
            "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method,
            "headers": headers, "scheme": "http", "path": path, "raw_path": path.encode(),
            "query_string": query, "server": ("apiserver", None), "client": ("127.0.0.1", 123),
            "root_path": "",
        }
        chunks = [{"type": "http.request", "body": content, "more_body": True},
                  {"type": "http.request", "body": b"", "more_body": False}]
        complete = asyncio.Event()
        status: int | None = None
        response_headers: Any = None
        parts: list[bytes] = []

        async def receive() -> Message:
            if chunks:
                return chunks.pop(0)
            await complete.wait()
            return {"type": "http.disconnect"}

        async def send(message: Message) -> None:
            nonlocal status, response_headers
            if message["type"] == "http.response.start":
                status, response_headers = message["status"], message.get("headers", [])
            elif message["type"] == "http.response.body":
                if message.get("body") and method != "HEAD":
                    parts.append(message["body"])
                if not message.get("more_body", False):
                    complete.set()

        try:
            await self._app(scope, receive, send)
        except Exception:
            complete.set()
            status = 500 if status is None else status
            response_headers = {} if response_headers is None else response_headers
        response = httpx.Response(status or 500, headers=response_headers, content=b"".join(parts))
        if "set-cookie" in response.headers:  # keep the client's cookie jar as httpx would
            response.request = self.build_request(method, path, params=params, json=body)
            self.cookies.extract_cookies(response)
        return response


@dataclass
class _Session:
    transport: StreamableHTTPServerTransport
    scope: anyio.CancelScope = field(default_factory=anyio.CancelScope)
    last_used: float = field(default_factory=time.monotonic)
    posts: int = 0  # POSTs in flight: a session with none may be closed
    ready: bool = False  # the SDK answered its `initialize`: it serves any request from now on
    calls: dict[RequestId, anyio.CancelScope] = field(default_factory=dict)  # fast-path calls in flight


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


def _header(scope: Scope, name: bytes) -> str | None:
    # the first value, as Starlette's `Headers.get` (and so the SDK) reads it
    for key, value in scope["headers"]:
        if key == name:
            return str(value.decode("latin-1"))
    return None


def _json(body: bytes) -> Any:
    try:
        return json.loads(body)
    except ValueError:  # the SDK reports malformed JSON itself
        return None


def _tool_call(scope: Scope, message: Any) -> tuple[JSONRPCRequest, CallToolRequest] | None:
    """The `tools/call` request of a POST that the SDK would hand to the tool handler, else None.

    Only the ordinary case qualifies: the headers pass every check of the SDK's transport
    (Content-Type, Accept for JSON responses, a supported MCP-Protocol-Version) and the message
    validates as the SDK validates it. Anything else (an error to answer, another method, a
    batch) returns None and goes to the SDK, which answers it itself.
    """
    if not (isinstance(message, dict) and message.get("method") == "tools/call"):
        return None
    content_type = _header(scope, b"content-type") or ""
    if not (content_type.lower().startswith(CONTENT_TYPE_JSON)
            and any(part.strip() == CONTENT_TYPE_JSON for part in content_type.split(";")[0].split(","))):
        return None
    accept = _header(scope, b"accept") or ""
    if not any(media.strip().startswith(CONTENT_TYPE_JSON) for media in accept.split(",")):
        return None
    if (_header(scope, MCP_PROTOCOL_VERSION_HEADER.encode()) or DEFAULT_NEGOTIATED_VERSION) \
            not in SUPPORTED_PROTOCOL_VERSIONS:
        return None
    try:
        rpc = JSONRPCMessage.model_validate(message).root
        if not isinstance(rpc, JSONRPCRequest):
            return None
        # The SDK validates `ClientRequest`, a union of every request type (~100 us); CallToolRequest
        # is its only member whose method is "tools/call", so this gives the same result.
        return rpc, CallToolRequest.model_validate(rpc.model_dump(by_alias=True, mode="json", exclude_none=True))
    except ValidationError:
        return None


def _cancelled_id(message: Any) -> RequestId | None:
    """The request id of a `notifications/cancelled` message, validated as the SDK does."""
    if not (isinstance(message, dict) and message.get("method") == "notifications/cancelled"):
        return None
    try:
        note = JSONRPCMessage.model_validate(message).root
        if not isinstance(note, JSONRPCNotification):
            return None
        cancelled = ClientNotification.model_validate(note.model_dump(by_alias=True, mode="json",
                                                                      exclude_none=True)).root
    except ValidationError:
        return None
    return cancelled.params.requestId if isinstance(cancelled, CancelledNotification) else None


class McpBridge:
    """The MCP server of one environment app: `tools`, and an ASGI app for /mcp.

    A `tools/call` is answered here on a fast path when it is an ordinary one (see
    `_tool_call`) on an initialized session, or without a session: the request runs the same
    handler as the SDK's server loop would (the SDK's `call_tool` wrapper around fastapi-mcp's
    tool function, with the HTTP request in its request context), and the answer is the SDK's
    JSON-RPC response, serialized the way its transport does. It skips the SDK's per-message
    plumbing (memory streams between transport, session and server loop, a task per message,
    and a union validation of every request type), which is most of the MCP cost of a call.
    Everything else (initialize, tools/list, notifications, pings, DELETE, every error) is the
    SDK's. The tools here send the client nothing during a call (no progress, logging or
    sampling), so the fast path needs no session object of the SDK's. A notifications/cancelled
    naming a fast-path call in flight cancels it, and the call gets the SDK's answer for that.
    """

    def __init__(
        self,
        env_app: Any,
        gated_app: ASGIApp,
        *,
        tool_timeout_s: float,
        max_sessions: int = 16,
        session_idle_s: float = 600.0,
    ) -> None:
        client = _AppClient(gated_app, tool_timeout_s)
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
        method = scope["method"]
        if method == "GET":
            no_stream = _rpc_error(405, "Method Not Allowed: this server sends no messages of its own")
            no_stream.headers["allow"] = "POST, DELETE"
            await no_stream(scope, receive, send)
            return
        session_id = _header(scope, MCP_SESSION_ID_HEADER.encode())
        session = None
        if session_id is not None:
            session = self._sessions.get(session_id)
            if session is None:
                await _rpc_error(404, "Session not found")(scope, receive, send)
                return
        if method != "POST":
            if session is None:
                await self._stateless.handle_request(scope, receive, send)
            else:
                await self._in_session(session, scope, receive, send)
            return
        body, receive = await buffered_body(receive)
        if body is None:
            return  # the client went away
        message = _json(body)
        if session is None or session.ready:  # the SDK would serve a tools/call on either
            call = _tool_call(scope, message)
            if call is not None:
                await self._answer(session, *call, scope, receive, send)
                return
        if session is not None:
            if session.calls and (cancelled := _cancelled_id(message)) in session.calls:
                session.calls[cancelled].cancel()  # then the SDK takes the notification, as usual
            await self._in_session(session, scope, receive, send)
            return
        if not (isinstance(message, dict) and message.get("method") == "initialize"):
            await self._stateless.handle_request(scope, receive, send)
            return
        opened = await self._open()
        if opened is None:
            await _rpc_error(503, f"all {self.max_sessions} MCP sessions are busy; retry")(scope, receive, send)
            return
        await self._in_session(opened, scope, receive, _watch_initialize(opened, send))

    async def _answer(self, session: _Session | None, rpc: JSONRPCRequest, call: CallToolRequest,
                      scope: Scope, receive: Receive, send: Send) -> None:
        """Answer a tools/call as the SDK would, without its server loop (see the class doc)."""
        headers = {"Content-Type": CONTENT_TYPE_JSON}
        if session is None:
            answer = await self._run_tool(rpc, call, Request(scope, receive))
        else:
            headers[MCP_SESSION_ID_HEADER] = session.transport.mcp_session_id or ""
            session.posts += 1
            cancel = session.calls[rpc.id] = anyio.CancelScope()
            try:
                with cancel:
                    answer = await self._run_tool(rpc, call, Request(scope, receive))
            finally:
                session.posts -= 1
                session.last_used = time.monotonic()
                if session.calls.get(rpc.id) is cancel:
                    del session.calls[rpc.id]
            if cancel.cancel_called:  # a notifications/cancelled for it: the SDK's answer to that
                answer = JSONRPCError(jsonrpc="2.0", id=rpc.id,
                                      error=ErrorData(code=0, message="Request cancelled", data=None))
        content = JSONRPCMessage(answer).model_dump_json(by_alias=True, exclude_none=True)
        await Response(content, status_code=200, headers=headers)(scope, receive, send)

    async def _run_tool(self, rpc: JSONRPCRequest, call: CallToolRequest,
                        request: Request) -> JSONRPCResponse | JSONRPCError:
        # As the SDK's Server._handle_request and RequestResponder.respond do it.
        context: RequestContext[Any, Any, Request] = RequestContext(
            rpc.id, call.params.meta, None, {}, request=request)
        token = request_ctx.set(context)
        try:
            result = await self._server.request_handlers[CallToolRequest](call)
        except McpError as exc:
            error = exc.error
        except Exception as exc:
            error = ErrorData(code=0, message=str(exc), data=None)
        else:
            return JSONRPCResponse(jsonrpc="2.0", id=rpc.id,
                                   result=result.model_dump(by_alias=True, mode="json", exclude_none=True))
        finally:
            request_ctx.reset(token)
        return JSONRPCError(jsonrpc="2.0", id=rpc.id, error=error)

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


def _watch_initialize(session: _Session, send: Send) -> Send:
    """`send` for a session's `initialize`: marks the session ready once the SDK answered it.

    The SDK's session serves other requests from the moment it has answered `initialize` with
    a result; an initialize it refused (an error, a 4xx) leaves the session as it was.
    """
    status = 0
    chunks: list[bytes] = []

    async def watch(message: Message) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
        elif message["type"] == "http.response.body" and status == 200:
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                answer = _json(b"".join(chunks))
                session.ready = isinstance(answer, dict) and "result" in answer
        await send(message)

    return watch


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
