"""The HTTP server of an environment container: /mcp, the control plane, and the app itself.

    /mcp              MCP streamable HTTP (the agent's tools)
    /_awm/health      GET, never guarded: readiness for wait strategies
    /_awm/info        GET  manifest + runtime counters
    /_awm/tasks       GET  the tasks and which verifiers each has
    /_awm/reset       POST restore the database from the seed, in place
    /_awm/verify      POST {task_idx, final_answer?, flavour?} -> the verifier's result
    /_awm/snapshot    GET  a consistent copy of the working database
    /...              every other path goes to the environment app, as in the original

The control plane is not part of the app's OpenAPI document, so it never becomes a tool. When
AWM_CONTROL_TOKEN is set, every control route but health needs `Authorization: Bearer <token>`.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Mount, Route

from awm_server.environment import Environment
from awm_server.gate import DrainTimeout

__all__ = ["create_app"]

Handler = Callable[[Request], Awaitable[Response]]


def _error(status: int, message: str, **extra: Any) -> JSONResponse:
    return JSONResponse({"error": message, **extra}, status_code=status)


def create_app(env: Environment) -> Starlette:
    token = env.settings.control_token

    def guarded(handler: Handler) -> Handler:
        async def check(request: Request) -> Response:
            if token is not None:
                given = request.headers.get("authorization", "")
                if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
                    return _error(401, "control plane needs Authorization: Bearer <AWM_CONTROL_TOKEN>")
            return await handler(request)

        return check

    async def health(request: Request) -> Response:
        return JSONResponse({"status": "ok", "scenario": env.scenario})

    async def info(request: Request) -> Response:
        return JSONResponse(env.info())

    async def tasks(request: Request) -> Response:
        return JSONResponse(
            [
                {
                    "task_idx": i,
                    "task": text,
                    "verifiers": sorted(f for f, by in env.files.verifiers.items() if str(i) in by),
                }
                for i, text in enumerate(env.files.tasks)
            ]
        )

    async def reset(request: Request) -> Response:
        try:
            return JSONResponse(await env.reset())
        except DrainTimeout as exc:
            return _error(503, f"reset of {env.scenario!r} not done: {exc}", retryable=True)

    async def verify(request: Request) -> Response:
        try:
            body = json.loads(await request.body() or b"{}")
            task_idx = body["task_idx"]
            if not isinstance(task_idx, int) or isinstance(task_idx, bool):
                raise TypeError("task_idx must be an integer")
            final_answer = body.get("final_answer")
            flavour = body.get("flavour", "code")
            if flavour not in ("code", "sql"):
                raise ValueError("flavour must be 'code' or 'sql'")
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            return _error(400, f"bad verify request: {exc}; expected {{task_idx, final_answer?, flavour?}}")
        try:
            return JSONResponse(await env.verify(task_idx, final_answer, flavour))
        except LookupError as exc:
            return _error(404, str(exc.args[0]))

    async def snapshot(request: Request) -> Response:
        path = env.snapshot_file()
        return FileResponse(
            path,
            media_type="application/vnd.sqlite3",
            filename=f"{env.scenario}.db",
            background=BackgroundTask(path.unlink, missing_ok=True),
        )

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with env.env.app.router.lifespan_context(env.env.app), env.mcp.running():
            yield

    return Starlette(
        routes=[
            Route("/_awm/health", health, methods=["GET"]),
            Route("/_awm/info", guarded(info), methods=["GET"]),
            Route("/_awm/tasks", guarded(tasks), methods=["GET"]),
            Route("/_awm/reset", guarded(reset), methods=["POST"]),
            Route("/_awm/verify", guarded(verify), methods=["POST"]),
            Route("/_awm/snapshot", guarded(snapshot), methods=["GET"]),
            Route("/mcp", env.mcp, methods=["GET", "POST", "DELETE"]),
            Mount("/", app=env.gated_app),
        ],
        lifespan=lifespan,
    )
