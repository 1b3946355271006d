"""HTTP clients for one environment server: its control plane and its MCP tools.

`EnvClient` (sync) and `AsyncEnvClient` share `_EnvClientBase`, which holds everything but I/O,
and have methods of the same names (`close`/`aclose`). MCP is spoken with the official `mcp`
client over streamable HTTP, exactly as an agent would.

    with EnvClient("http://127.0.0.1:32768") as env:
        print([t.name for t in env.list_tools()])
        env.call_tool("list_recipes", {"limit": 2})
        env.verify(3)["result"]
        env.reset()
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import httpx
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.types import TextContent, Tool

from awm.core.errors import AWMError, EnvUnavailable, ResetError, VerifierError

__all__ = ["AsyncEnvClient", "EnvClient", "ToolResult", "list_mcp_tools", "open_mcp_session"]


@dataclass(frozen=True)
class ToolResult:
    """What a tool call returned: its text, and whether the server marked it an error."""

    text: str
    is_error: bool


def _needs_tls(url: str) -> bool:
    # Loading the CA bundle costs ~20 ms per client; environments are mostly plain http.
    return url.startswith("https://")


@asynccontextmanager
async def open_mcp_session(
    mcp_url: str, *, headers: dict[str, str] | None = None, timeout_s: float = 60.0
) -> AsyncIterator[ClientSession]:
    """An initialised MCP client session on any streamable-HTTP MCP endpoint."""
    timeout = httpx.Timeout(timeout_s, connect=min(5.0, timeout_s), read=max(timeout_s, 300.0))
    # what mcp's create_mcp_http_client makes, without loading CA certificates for plain http
    async with (
        httpx.AsyncClient(headers=headers, timeout=timeout, follow_redirects=True, verify=_needs_tls(mcp_url)) as http,
        streamable_http_client(mcp_url, http_client=http) as (read, write, _),
        ClientSession(read, write) as session,
    ):
        await session.initialize()
        yield session


async def list_mcp_tools(mcp_url: str, *, headers: dict[str, str] | None = None) -> list[Tool]:
    """The tools of any MCP endpoint (for `awm env check`)."""
    async with open_mcp_session(mcp_url, headers=headers) as session:
        return list((await session.list_tools()).tools)


class _EnvClientBase:
    def __init__(self, base_url: str, *, token: str | None = None, timeout_s: float = 60.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.token = token
        self.timeout_s = timeout_s

    @property
    def mcp_url(self) -> str:
        return f"{self.base_url}/mcp"

    @property
    def _timeout(self) -> httpx.Timeout:
        # A dead container's address may not answer at all: fail the connect fast, while a
        # verifier may legitimately take long to answer.
        return httpx.Timeout(self.timeout_s, connect=min(5.0, self.timeout_s))

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    @staticmethod
    def _verify_body(task_idx: int, final_answer: str | None, flavour: str) -> dict[str, Any]:
        return {"task_idx": task_idx, "final_answer": final_answer, "flavour": flavour}

    def _checked(self, response: httpx.Response, what: str) -> Any:
        if response.status_code >= 400:
            try:
                detail = response.json().get("error", response.text)
            except ValueError:
                detail = response.text
            error = {"reset": ResetError, "verify": VerifierError}.get(what, AWMError)
            raise error(f"{what} on {self.base_url} failed ({response.status_code}): {detail}")
        return response.json()

    @staticmethod
    def _tool_result(result: Any) -> ToolResult:
        text = "\n".join(c.text for c in result.content if isinstance(c, TextContent))
        return ToolResult(text=text, is_error=bool(result.isError))

    def mcp_session(self) -> AbstractAsyncContextManager[ClientSession]:
        """An initialised MCP client session on this environment's /mcp endpoint."""
        return open_mcp_session(self.mcp_url, headers=self._headers(), timeout_s=self.timeout_s)


def _unavailable(base_url: str, what: str, exc: Exception) -> EnvUnavailable:
    return EnvUnavailable(f"{what} on {base_url} failed: the environment does not answer ({type(exc).__name__}: {exc})")


class AsyncEnvClient(_EnvClientBase):
    """Async client; see the module docstring."""

    def __init__(self, base_url: str, *, token: str | None = None, timeout_s: float = 60.0) -> None:
        super().__init__(base_url, token=token, timeout_s=timeout_s)
        self._http = httpx.AsyncClient(
            base_url=self.base_url, headers=self._headers(), timeout=self._timeout, verify=_needs_tls(self.base_url)
        )

    async def _send(self, method: str, path: str, what: str, **kwargs: Any) -> httpx.Response:
        try:
            return await self._http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise _unavailable(self.base_url, what, exc) from exc

    async def health(self) -> dict[str, Any]:
        return self._checked(await self._send("GET", "/_awm/health", "health"), "health")  # type: ignore[no-any-return]

    async def info(self) -> dict[str, Any]:
        return self._checked(await self._send("GET", "/_awm/info", "info"), "info")  # type: ignore[no-any-return]

    async def tasks(self) -> list[dict[str, Any]]:
        return self._checked(await self._send("GET", "/_awm/tasks", "tasks"), "tasks")  # type: ignore[no-any-return]

    async def reset(self) -> dict[str, Any]:
        return self._checked(await self._send("POST", "/_awm/reset", "reset"), "reset")  # type: ignore[no-any-return]

    async def verify(self, task_idx: int, final_answer: str | None = None, flavour: str = "code") -> dict[str, Any]:
        body = self._verify_body(task_idx, final_answer, flavour)
        return self._checked(await self._send("POST", "/_awm/verify", "verify", json=body), "verify")  # type: ignore[no-any-return]

    async def snapshot(self, path: str | Path) -> Path:
        response = await self._send("GET", "/_awm/snapshot", "snapshot")
        if response.status_code >= 400:
            self._checked(response, "snapshot")
        Path(path).write_bytes(response.content)
        return Path(path)

    async def list_tools(self) -> list[Tool]:
        async with self.mcp_session() as session:
            return list((await session.list_tools()).tools)

    async def call_tool(self, name: str, arguments: dict[str, Any] | None = None) -> ToolResult:
        async with self.mcp_session() as session:
            return self._tool_result(await session.call_tool(name, arguments or {}))

    async def call_tools(self, calls: list[tuple[str, dict[str, Any]]]) -> list[ToolResult]:
        """Several calls in one MCP session (one handshake), in order."""
        async with self.mcp_session() as session:
            return [self._tool_result(await session.call_tool(n, a)) for n, a in calls]

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
    """Sync client; see the module docstring. MCP calls run a short event loop each."""

    def __init__(self, base_url: str, *, token: str | None = None, timeout_s: float = 60.0) -> None:
        super().__init__(base_url, token=token, timeout_s=timeout_s)
        self._http = httpx.Client(
            base_url=self.base_url, headers=self._headers(), timeout=self._timeout, verify=_needs_tls(self.base_url)
        )

    def _send(self, method: str, path: str, what: str, **kwargs: Any) -> httpx.Response:
        try:
            return self._http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise _unavailable(self.base_url, what, exc) from exc

    def health(self) -> dict[str, Any]:
        return self._checked(self._send("GET", "/_awm/health", "health"), "health")  # type: ignore[no-any-return]

    def info(self) -> dict[str, Any]:
        return self._checked(self._send("GET", "/_awm/info", "info"), "info")  # type: ignore[no-any-return]

    def tasks(self) -> list[dict[str, Any]]:
        return self._checked(self._send("GET", "/_awm/tasks", "tasks"), "tasks")  # type: ignore[no-any-return]

    def reset(self) -> dict[str, Any]:
        return self._checked(self._send("POST", "/_awm/reset", "reset"), "reset")  # type: ignore[no-any-return]

    def verify(self, task_idx: int, final_answer: str | None = None, flavour: str = "code") -> dict[str, Any]:
        body = self._verify_body(task_idx, final_answer, flavour)
        return self._checked(self._send("POST", "/_awm/verify", "verify", json=body), "verify")  # type: ignore[no-any-return]

    def snapshot(self, path: str | Path) -> Path:
        response = self._send("GET", "/_awm/snapshot", "snapshot")
        if response.status_code >= 400:
            self._checked(response, "snapshot")
        Path(path).write_bytes(response.content)
        return Path(path)

    def list_tools(self) -> list[Tool]:
        async def run() -> list[Tool]:
            async with self.mcp_session() as session:
                return list((await session.list_tools()).tools)

        return asyncio.run(run())

    def call_tool(self, name: str, arguments: dict[str, Any] | None = None) -> ToolResult:
        async def run() -> ToolResult:
            async with self.mcp_session() as session:
                return self._tool_result(await session.call_tool(name, arguments or {}))

        return asyncio.run(run())

    def call_tools(self, calls: list[tuple[str, dict[str, Any]]]) -> list[ToolResult]:
        """Several calls in one MCP session (one handshake), in order."""

        async def run() -> list[ToolResult]:
            async with self.mcp_session() as session:
                return [self._tool_result(await session.call_tool(n, a)) for n, a in calls]

        return asyncio.run(run())

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
