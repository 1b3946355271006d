"""Serve the environment app's routes as MCP tools over streamable HTTP at /mcp.

Tools must be exactly what the original environments exposed, because models were trained on
that interface. So the tool list, the argument mapping and the result text come from
fastapi-mcp 0.4.0 itself (the same converter the original launcher used), applied to the
app's OpenAPI document. Only the transport is this project's own:
- stateless streamable HTTP: every request stands alone, so no per-client session state can
  accumulate in a long-lived environment;
- a per-call timeout: a tool whose handler hangs returns a tool error instead of hanging;
- calls reach the app in process (ASGI), through the reset gate.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
from fastapi_mcp import FastApiMCP
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from starlette.types import ASGIApp, Receive, Scope, Send

__all__ = ["McpBridge"]


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


class McpBridge:
    """The MCP server of one environment app: `tools`, and an ASGI app for /mcp."""

    def __init__(self, env_app: Any, gated_app: ASGIApp, *, tool_timeout_s: float) -> None:
        client = _TimeoutClient(
            tool_timeout_s,
            transport=httpx.ASGITransport(app=gated_app, raise_app_exceptions=False),
            base_url="http://apiserver",
            timeout=None,
        )
        self.fastapi_mcp = FastApiMCP(env_app, http_client=client)
        self.tools = self.fastapi_mcp.tools
        self._client = client
        self._sessions = StreamableHTTPSessionManager(
            app=self.fastapi_mcp.server, json_response=True, stateless=True
        )

    @asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        async with self._sessions.run():
            try:
                yield
            finally:
                await self._client.aclose()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._sessions.handle_request(scope, receive, send)
