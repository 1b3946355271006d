"""HTTP clients for one environment server: its control plane and its MCP tools.

`EnvClient` (sync) and `AsyncEnvClient` share `_EnvClientBase`, which holds everything but I/O,
and have methods of the same names (`close`/`aclose`). MCP is spoken with the official `mcp`
client over streamable HTTP, exactly as an agent would.

    with EnvClient("http://127.0.0.1:32768") as env:
        print([t.name for t in env.list_tools()])
        env.call_tool("list_recipes", {"limit": 2})
        env.verify(3)["result"]
        env.reset()

Errors, the same from both clients and every method:
- `EnvUnavailable`: the environment does not answer (container gone, crashed, wrong address), or
  what answers is not an environment (an HTTP error status on /mcp). Connecting is given
  `connect_timeout_s` (0.5 s by default): a live server's kernel accepts a connection in
  microseconds whatever its load, so a dead one is told apart in well under a second, while
  a slow answer still gets the whole `timeout_s`.
- Tool failures are results, not exceptions: whatever the server reports about a call (an
  unknown tool, arguments that do not fit the schema, an error the tool raised) comes back as
  `ToolResult(is_error=True, text=why)`, exactly what an agent would see and react to.
  `ToolCallError` (with `tool`) is for a server that answers the call with a JSON-RPC error
  instead of a result: a protocol-level refusal, not something an agent can act on.
- `ResetError` / `VerifierError` / `EnvError`: the control plane answered an error status.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from types import TracebackType
from typing import Any, Self, TypeVar, cast

import anyio
import httpx
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import McpError
from mcp.types import TextContent, Tool

from awm.core.errors import (
    AWMError,
    EnvError,
    EnvUnavailable,
    InvalidURL,
    ResetError,
    ToolCallError,
    VerifierError,
)
from awm.core.loop import LoopThread
from awm_server.contract import ResetResult, VerifyResult

__all__ = [
    "CONNECT_TIMEOUT_S",
    "AsyncEnvClient",
    "EnvClient",
    "ToolResult",
    "check_url",
    "list_mcp_tools",
    "open_mcp_session",
]

T = TypeVar("T")

CONNECT_TIMEOUT_S = 0.5  # an environment's server: on this host or its cluster network


@dataclass(frozen=True)
class ToolResult:
    """What a tool call returned: its text, and whether the tool reported a failure."""

    text: str
    is_error: bool


def check_url(url: str) -> str:
    """`url` if it is an http(s) URL with a host; else `InvalidURL` saying what is wrong."""
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL as exc:
        raise InvalidURL(f"{url!r} is not a valid URL ({exc})", url=url) from exc
    if parsed.scheme not in ("http", "https"):
        raise InvalidURL(f"{url!r} is not an http:// or https:// URL", url=url)
    if not parsed.host:
        raise InvalidURL(f"{url!r} names no host", url=url)
    return url


def _needs_tls(url: str) -> bool:
    # Loading the CA bundle costs ~20 ms per client; environments are mostly plain http.
    return url.startswith("https://")


def _leaves(exc: BaseException) -> list[BaseException]:
    """The exceptions inside (nested) exception groups: anyio's task groups wrap every error."""
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in _leaves(inner)]
    return [exc]


def _mcp_error(exc: BaseException, url: str, what: str, tool: str | None) -> AWMError | None:
    """This project's error for what an MCP exchange with `url` raised; None for a bug."""
    leaves = _leaves(exc)
    for leaf in leaves:
        if isinstance(leaf, AWMError):
            return leaf
    for leaf in leaves:
        if isinstance(leaf, httpx.TransportError | anyio.BrokenResourceError | anyio.ClosedResourceError):
            return EnvUnavailable(f"{what} on {url} failed: the environment does not answer "
                                  f"({type(leaf).__name__}: {leaf})".replace(": )", ")"), url=url, tool=tool)
    for leaf in leaves:
        if isinstance(leaf, httpx.HTTPStatusError):
            status = leaf.response.status_code
            return EnvUnavailable(f"{what} on {url} failed: it answered HTTP {status} "
                                  f"{leaf.response.reason_phrase}, not MCP", url=url, tool=tool,
                                  hint="an environment's MCP endpoint is its address + /mcp" if status != 401
                                  else "the environment wants its control token (--token / AWM_CONTROL_TOKEN)")
    for leaf in leaves:
        if isinstance(leaf, McpError):
            # mcp reports an HTTP 404 as this (code 32600): no MCP endpoint, or a session it lost
            if leaf.error.message == "Session terminated":
                return EnvUnavailable(f"{what} on {url} failed: it answered HTTP 404 Not Found, not MCP",
                                      url=url, tool=tool, hint="an environment's MCP endpoint is its address + /mcp")
            if leaf.error.code == 408:  # the session's read timeout
                return EnvUnavailable(f"{what} on {url}: no answer in time ({leaf.error.message})", url=url, tool=tool)
            if tool is not None:
                return ToolCallError(f"tool {tool!r} on {url}: the MCP server refused the call: {leaf.error.message}",
                                     url=url, tool=tool)
            return EnvError(f"{what} on {url}: the MCP server answered an error: {leaf.error.message}", url=url)
    return None


@asynccontextmanager
async def open_mcp_session(
    mcp_url: str,
    *,
    headers: dict[str, str] | None = None,
    timeout_s: float = 60.0,
    connect_timeout_s: float = 5.0,
) -> AsyncIterator[ClientSession]:
    """An initialised MCP client session on any streamable-HTTP MCP endpoint.

    Raises `InvalidURL` for a malformed URL. The transport's own errors are raised as they
    come (in exception groups); `AsyncEnvClient` and `list_mcp_tools` translate them.
    """
    check_url(mcp_url)
    timeout = httpx.Timeout(timeout_s, connect=min(connect_timeout_s, timeout_s), read=max(timeout_s, 300.0))
    # what mcp's create_mcp_http_client makes, without loading CA certificates for plain http
    async with (
        httpx.AsyncClient(headers=headers, timeout=timeout, follow_redirects=True, verify=_needs_tls(mcp_url)) as http,
        streamable_http_client(mcp_url, http_client=http) as (read, write, _),
        ClientSession(read, write, read_timeout_seconds=timedelta(seconds=max(timeout_s, 300.0))) as session,
    ):
        await session.initialize()
        yield session


async def _with_session(
    mcp_url: str,
    what: str,
    op: Callable[[ClientSession], Awaitable[T]],
    *,
    headers: dict[str, str] | None = None,
    timeout_s: float = 60.0,
    connect_timeout_s: float = 5.0,
    tool: str | None = None,
) -> T:
    """`op` in a fresh MCP session, its failures raised as this project's errors."""
    try:
        async with open_mcp_session(
            mcp_url, headers=headers, timeout_s=timeout_s, connect_timeout_s=connect_timeout_s
        ) as session:
            return await op(session)
    except Exception as exc:  # ExceptionGroup included; cancellation and KeyboardInterrupt are not
        error = _mcp_error(exc, mcp_url, what, tool)
        if error is None or error is exc:
            raise
        raise error from exc


async def _tools(session: ClientSession) -> list[Tool]:
    return list((await session.list_tools()).tools)


async def list_mcp_tools(mcp_url: str, *, headers: dict[str, str] | None = None) -> list[Tool]:
    """The tools of any MCP endpoint (for `awm env check`).

    Raises:
        InvalidURL: `mcp_url` is not an http(s) URL.
        EnvUnavailable: nothing answers there, or not MCP.
    """
    return await _with_session(mcp_url, "listing tools", _tools, headers=headers)


class _EnvClientBase:
    def __init__(
        self,
        base_url: str,
        *,
        token: str | None = None,
        timeout_s: float = 60.0,
        connect_timeout_s: float = CONNECT_TIMEOUT_S,
    ) -> None:
        self.base_url = check_url(base_url).rstrip("/")
        self.token = token
        self.timeout_s = timeout_s
        self.connect_timeout_s = connect_timeout_s

    @property
    def mcp_url(self) -> str:
        return f"{self.base_url}/mcp"

    @property
    def _timeout(self) -> httpx.Timeout:
        # A dead container's address may not answer at all: fail the connect fast, while a
        # verifier may legitimately take long to answer.
        return httpx.Timeout(self.timeout_s, connect=min(self.connect_timeout_s, self.timeout_s))

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    @staticmethod
    def _verify_body(task_idx: int, final_answer: str | None, flavour: str) -> dict[str, Any]:
        return {"task_idx": task_idx, "final_answer": final_answer, "flavour": flavour}

    def _checked(self, response: httpx.Response, what: str) -> Any:
        if response.status_code >= 400:
            try:
                detail = response.json().get("error", response.text)
            except (ValueError, AttributeError):
                detail = response.text
            error = {"reset": ResetError, "verify": VerifierError}.get(what, EnvError)
            raise error(f"{what} on {self.base_url} failed ({response.status_code}): {detail}", url=self.base_url)
        try:
            return response.json()
        except ValueError as exc:
            raise EnvUnavailable(f"{what} on {self.base_url}: the answer is not JSON; is this an environment?",
                                 url=self.base_url) from exc

    def _unavailable(self, what: str, exc: httpx.TransportError) -> EnvUnavailable:
        return EnvUnavailable(
            f"{what} on {self.base_url} failed: the environment does not answer ({type(exc).__name__}: {exc})",
            url=self.base_url,
        )

    @staticmethod
    def _tool_result(result: Any) -> ToolResult:
        text = "\n".join(c.text for c in result.content if isinstance(c, TextContent))
        return ToolResult(text=text, is_error=bool(result.isError))

    def mcp_session(self) -> AbstractAsyncContextManager[ClientSession]:
        """An initialised MCP client session on this environment's /mcp endpoint (errors untranslated)."""
        return open_mcp_session(self.mcp_url, headers=self._headers(), timeout_s=self.timeout_s,
                                connect_timeout_s=self.connect_timeout_s)

    # The MCP operations, as coroutines both clients run (the sync one on its own loop).

    async def _mcp(self, what: str, op: Callable[[ClientSession], Awaitable[T]], tool: str | None = None) -> T:
        return await _with_session(self.mcp_url, what, op, headers=self._headers(), timeout_s=self.timeout_s,
                                   connect_timeout_s=self.connect_timeout_s, tool=tool)

    def _list_tools(self) -> Coroutine[Any, Any, list[Tool]]:
        return self._mcp("listing tools", _tools)

    async def _call(self, session: ClientSession, name: str, arguments: dict[str, Any] | None) -> ToolResult:
        try:
            result = await session.call_tool(name, arguments or {})
        except McpError as exc:  # the server's JSON-RPC error for this call: name the tool
            raise _mcp_error(exc, self.mcp_url, f"calling tool {name!r}", name) or exc from exc
        return self._tool_result(result)

    def _call_tool(self, name: str, arguments: dict[str, Any] | None) -> Coroutine[Any, Any, ToolResult]:
        async def op(session: ClientSession) -> ToolResult:
            return await self._call(session, name, arguments)

        return self._mcp(f"calling tool {name!r}", op, tool=name)

    def _call_tools(self, calls: list[tuple[str, dict[str, Any]]]) -> Coroutine[Any, Any, list[ToolResult]]:
        async def op(session: ClientSession) -> list[ToolResult]:
            return [await self._call(session, name, arguments) for name, arguments in calls]

        return self._mcp(f"calling {len(calls)} tools", op)


class AsyncEnvClient(_EnvClientBase):
    """Async client; see the module docstring."""

    def __init__(
        self,
        base_url: str,
        *,
        token: str | None = None,
        timeout_s: float = 60.0,
        connect_timeout_s: float = CONNECT_TIMEOUT_S,
    ) -> None:
        super().__init__(base_url, token=token, timeout_s=timeout_s, connect_timeout_s=connect_timeout_s)
        self._http = httpx.AsyncClient(
            base_url=self.base_url, headers=self._headers(), timeout=self._timeout, verify=_needs_tls(self.base_url)
        )

    async def _send(self, method: str, path: str, what: str, **kwargs: Any) -> httpx.Response:
        try:
            return await self._http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise self._unavailable(what, exc) from exc

    async def health(self) -> dict[str, Any]:
        return cast(dict[str, Any], self._checked(await self._send("GET", "/_awm/health", "health"), "health"))

    async def info(self) -> dict[str, Any]:
        return cast(dict[str, Any], self._checked(await self._send("GET", "/_awm/info", "info"), "info"))

    async def tasks(self) -> list[dict[str, Any]]:
        return cast(list[dict[str, Any]], self._checked(await self._send("GET", "/_awm/tasks", "tasks"), "tasks"))

    async def reset(self) -> ResetResult:
        return ResetResult.model_validate(self._checked(await self._send("POST", "/_awm/reset", "reset"), "reset"))

    async def verify(self, task_idx: int, final_answer: str | None = None, flavour: str = "code") -> VerifyResult:
        body = self._verify_body(task_idx, final_answer, flavour)
        response = await self._send("POST", "/_awm/verify", "verify", json=body)
        return VerifyResult.model_validate(self._checked(response, "verify"))

    async def snapshot(self, path: str | Path) -> Path:
        response = await self._send("GET", "/_awm/snapshot", "snapshot")
        if response.status_code >= 400:
            self._checked(response, "snapshot")
        await anyio.Path(path).write_bytes(response.content)
        return Path(path)

    async def list_tools(self) -> list[Tool]:
        return await self._list_tools()

    async def call_tool(self, name: str, arguments: dict[str, Any] | None = None) -> ToolResult:
        return await self._call_tool(name, arguments)

    async def call_tools(self, calls: list[tuple[str, dict[str, Any]]]) -> list[ToolResult]:
        """Several calls in one MCP session (one handshake), in order."""
        return await self._call_tools(calls)

    @property
    def is_closed(self) -> bool:
        return self._http.is_closed

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


class EnvClient(_EnvClientBase):
    """Sync client; see the module docstring.

    Safe to use from several threads at once and from inside a running event loop (where it
    blocks that loop's thread for the call, as any sync call does). MCP calls run on a
    private event loop thread, made on the first MCP call and ended by `close()`.
    """

    def __init__(
        self,
        base_url: str,
        *,
        token: str | None = None,
        timeout_s: float = 60.0,
        connect_timeout_s: float = CONNECT_TIMEOUT_S,
    ) -> None:
        super().__init__(base_url, token=token, timeout_s=timeout_s, connect_timeout_s=connect_timeout_s)
        self._http = httpx.Client(
            base_url=self.base_url, headers=self._headers(), timeout=self._timeout, verify=_needs_tls(self.base_url)
        )
        self._loop: LoopThread | None = None
        self._loop_lock = threading.Lock()

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        with self._loop_lock:
            if self._loop is None:
                self._loop = LoopThread("awm-env-client")
                weakref.finalize(self, self._loop.close)
            loop = self._loop
        return loop.run(
            coro, own_thread_error="a sync EnvClient method was called from its own event loop; use AsyncEnvClient"
        )

    def _send(self, method: str, path: str, what: str, **kwargs: Any) -> httpx.Response:
        try:
            return self._http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise self._unavailable(what, exc) from exc

    def health(self) -> dict[str, Any]:
        return cast(dict[str, Any], self._checked(self._send("GET", "/_awm/health", "health"), "health"))

    def info(self) -> dict[str, Any]:
        return cast(dict[str, Any], self._checked(self._send("GET", "/_awm/info", "info"), "info"))

    def tasks(self) -> list[dict[str, Any]]:
        return cast(list[dict[str, Any]], self._checked(self._send("GET", "/_awm/tasks", "tasks"), "tasks"))

    def reset(self) -> ResetResult:
        return ResetResult.model_validate(self._checked(self._send("POST", "/_awm/reset", "reset"), "reset"))

    def verify(self, task_idx: int, final_answer: str | None = None, flavour: str = "code") -> VerifyResult:
        body = self._verify_body(task_idx, final_answer, flavour)
        response = self._send("POST", "/_awm/verify", "verify", json=body)
        return VerifyResult.model_validate(self._checked(response, "verify"))

    def snapshot(self, path: str | Path) -> Path:
        response = self._send("GET", "/_awm/snapshot", "snapshot")
        if response.status_code >= 400:
            self._checked(response, "snapshot")
        Path(path).write_bytes(response.content)
        return Path(path)

    def list_tools(self) -> list[Tool]:
        return self._run(self._list_tools())

    def call_tool(self, name: str, arguments: dict[str, Any] | None = None) -> ToolResult:
        return self._run(self._call_tool(name, arguments))

    def call_tools(self, calls: list[tuple[str, dict[str, Any]]]) -> list[ToolResult]:
        """Several calls in one MCP session (one handshake), in order."""
        return self._run(self._call_tools(calls))

    def close(self) -> None:
        self._http.close()
        with self._loop_lock:
            loop, self._loop = self._loop, None
        if loop is not None:
            loop.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
