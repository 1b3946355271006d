"""The HTTP server of an environment container: /mcp, the control plane, and the app itself.

    /mcp              MCP streamable HTTP (the agent's tools)
    /_awm/health      GET, never guarded: readiness for wait strategies
    /_awm/info        GET  manifest + runtime counters
    /_awm/tasks       GET  the tasks and which verifiers each has
    /_awm/reset       POST restore the database from the seed, in place
    /_awm/verify      POST {task_idx, final_answer?, flavour?} -> the verifier's result
    /_awm/snapshot    GET  a consistent copy of the working database
    /...              every other path goes to the environment app, as in the original

With AWM_SLOTS=N > 1 (`awm_server.slots`), slot k answers the same paths under `/e/<k>/`
(`/e/<k>/mcp`, `/e/<k>/_awm/reset`, ..., and its app's own routes); the unprefixed paths
are slot 0.

The control plane is not part of the app's OpenAPI document, so it never becomes a tool. When a
control token is configured (the server keeps only its SHA-256), every control route but health
needs `Authorization: Bearer <token>`; without one the control plane is open, and /_awm/info
says so.

Every request body is bounded while it streams in (`BodyLimit`): AWM_MAX_BODY_BYTES for
/_awm/*, AWM_MCP_MAX_BODY_BYTES for /mcp and the app; a larger one gets 413 before the rest is
read. JSON nested deeper than AWM_MAX_JSON_DEPTH (control plane) or AWM_MCP_MAX_JSON_DEPTH
(/mcp) gets 400.
"""

from __future__ import annotations

import errno
import hmac
import json
import os
import re
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import BaseRoute, Mount, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from awm_server.environment import Environment
from awm_server.gate import DrainTimeout
from awm_server.mcp_bridge import buffered_body
from awm_server.settings import hash_token
from awm_server.slots import slot_prefix

__all__ = ["BodyLimit", "JsonDepthGuard", "JsonTooDeep", "create_app", "parse_json"]

Handler = Callable[[Request], Awaitable[Response]]

_CONTROL_PATH = re.compile(r"(/e/[0-9]+)?/_awm/")


def _error(status: int, message: str, **extra: Any) -> JSONResponse:
    return JSONResponse({"error": message, **extra}, status_code=status)


class JsonTooDeep(ValueError):
    def __init__(self, max_depth: int) -> None:
        super().__init__(f"JSON nested deeper than {max_depth} levels")


def parse_json(body: bytes, max_depth: int) -> Any:
    """Parse a request body; ValueError (never RecursionError) for bad or too deeply nested JSON."""
    try:
        value = json.loads(body)
    except RecursionError:
        raise JsonTooDeep(max_depth) from None
    level: list[tuple[Any, int]] = [(value, 1)]
    while level:  # iterative: the check itself must not recurse
        item, depth = level.pop()
        if isinstance(item, (dict, list)):
            if depth > max_depth:
                raise JsonTooDeep(max_depth)
            level.extend((child, depth + 1) for child in (item.values() if isinstance(item, dict) else item))
    return value


def _storage_error(scenario: str, action: str, exc: Exception) -> JSONResponse:
    full = (isinstance(exc, OSError) and exc.errno == errno.ENOSPC) or "disk is full" in str(exc)
    hint = " (the container's /tmp is full)" if full else ""
    return _error(507 if full else 500, f"{action} of {scenario!r} failed: {type(exc).__name__}: {exc}{hint}")


class BodyLimit:
    """Refuse request bodies over a per-path limit with 413, counting while they stream in.

    A declared Content-Length over the limit is refused before the app runs; a body that grows
    past it is cut: the client gets 413, the app sees a disconnect, and the server discards
    the rest without buffering it.
    """

    def __init__(self, app: ASGIApp, *, control_bytes: int, other_bytes: int) -> None:
        self.app = app
        self.control_bytes = control_bytes
        self.other_bytes = other_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        control = _CONTROL_PATH.match(path) is not None
        limit = self.control_bytes if control else self.other_bytes
        setting = "AWM_MAX_BODY_BYTES" if control else "AWM_MCP_MAX_BODY_BYTES"
        too_large = _error(413, f"request body larger than {limit} bytes for {path} ({setting})", limit=limit)
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > limit):
            await too_large(scope, receive, send)
            return
        received = 0
        started = cut = False

        async def counted_receive() -> Message:
            nonlocal received, cut
            if cut:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    cut = True
                    if not started:
                        await too_large(scope, receive, send)
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if cut:
                return  # the 413 went out instead
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted_receive, guarded_send)
        except Exception:
            if not cut:
                raise
            # it saw the disconnect we gave it in place of the rest of the body; 413 was sent


class JsonDepthGuard:
    """Answer JSON-RPC requests nested deeper than `max_depth` with a 400 parse error.

    The MCP SDK's own parser fails on deep nesting with a 500 (RecursionError); the body is
    already bounded by `BodyLimit`, so it is read here, checked, and handed on unchanged.
    Other malformed JSON goes on to the SDK, which reports it as usual.
    """

    def __init__(self, app: ASGIApp, *, max_depth: int) -> None:
        self.app = app
        self.max_depth = max_depth

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        body, replay = await buffered_body(receive)
        if body is None:
            return  # the client went away (or BodyLimit cut it): nothing to answer
        try:
            parse_json(body, self.max_depth)
        except JsonTooDeep as exc:
            error = {"jsonrpc": "2.0", "id": None, "error": {"code": -32700, "message": f"Parse error: {exc}"}}
            await JSONResponse(error, status_code=400)(scope, receive, send)
            return
        except ValueError:
            pass
        await self.app(scope, replay, send)


def _slot_routes(env: Environment) -> list[BaseRoute]:
    """The control plane and /mcp of one slot (the app's own routes are mounted after them)."""
    token_sha256 = env.settings.control_token_sha256
    max_depth = env.settings.max_json_depth

    def guarded(handler: Handler) -> Handler:
        async def check(request: Request) -> Response:
            if token_sha256 is not None:
                scheme, _, given = request.headers.get("authorization", "").partition(" ")
                # Compare hashes: constant time, and the token itself is never held here.
                if scheme.lower() != "bearer" or not hmac.compare_digest(hash_token(given), token_sha256):
                    return _error(401, "control plane needs Authorization: Bearer <AWM_CONTROL_TOKEN>")
            return await handler(request)

        return check

    slot = {"slot": env.slot} if env.settings.slots > 1 else {}

    async def health(request: Request) -> Response:
        return JSONResponse({"status": "ok", "scenario": env.scenario, **slot})

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
            return JSONResponse((await env.reset()).model_dump(mode="json"))
        except DrainTimeout as exc:
            return _error(503, f"reset of {env.scenario!r} not done: {exc}", retryable=True)
        except (OSError, sqlite3.Error) as exc:
            return _storage_error(env.scenario, "reset", exc)

    async def verify(request: Request) -> Response:
        try:
            body = parse_json(await request.body() or b"{}", max_depth)
            task_idx = body["task_idx"]
            if not isinstance(task_idx, int) or isinstance(task_idx, bool):
                raise TypeError("task_idx must be an integer")
            final_answer = body.get("final_answer")
            flavour = body.get("flavour", "code")
            if final_answer is not None and not isinstance(final_answer, str):
                raise TypeError("final_answer must be a string or null")
            if flavour not in ("code", "sql"):
                raise ValueError("flavour must be 'code' or 'sql'")
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            return _error(400, f"bad verify request: {exc}; expected {{task_idx, final_answer?, flavour?}}")
        try:
            return JSONResponse((await env.verify(task_idx, final_answer, flavour)).model_dump(mode="json"))
        except LookupError as exc:
            return _error(404, str(exc.args[0]))
        except (OSError, sqlite3.Error) as exc:
            return _storage_error(env.scenario, "verify", exc)

    async def snapshot(request: Request) -> Response:
        try:
            copy = os.fdopen(env.snapshot_fd(), "rb")  # closed when read, or when dropped
        except (OSError, sqlite3.Error) as exc:
            return _storage_error(env.scenario, "snapshot", exc)
        return StreamingResponse(
            iter(lambda: copy.read(1 << 20), b""),
            media_type="application/vnd.sqlite3",
            headers={
                "content-length": str(os.fstat(copy.fileno()).st_size),
                "content-disposition": f'attachment; filename="{env.scenario}.db"',
            },
            background=BackgroundTask(copy.close),
        )

    return [
        Route("/_awm/health", health, methods=["GET"]),
        Route("/_awm/info", guarded(info), methods=["GET"]),
        Route("/_awm/tasks", guarded(tasks), methods=["GET"]),
        Route("/_awm/reset", guarded(reset), methods=["POST"]),
        Route("/_awm/verify", guarded(verify), methods=["POST"]),
        Route("/_awm/snapshot", guarded(snapshot), methods=["GET"]),
        Route("/mcp", JsonDepthGuard(env.mcp, max_depth=env.settings.mcp_max_json_depth),
              methods=["GET", "POST", "DELETE"]),
    ]


def create_app(slots: Environment | Sequence[Environment]) -> Starlette:
    """The server of one environment, or of several slots (slot 0 first, at the unprefixed paths)."""
    envs = [slots] if isinstance(slots, Environment) else list(slots)
    first = envs[0]
    prefixed: list[BaseRoute] = [
        Mount(slot_prefix(env.slot), routes=[*_slot_routes(env), Mount("/", app=env.gated_app)])
        for env in envs
    ] if len(envs) > 1 else []

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            for env in envs:
                await stack.enter_async_context(env.env.app.router.lifespan_context(env.env.app))
                await stack.enter_async_context(env.mcp.running())
            yield

    app = Starlette(routes=[*_slot_routes(first), *prefixed, Mount("/", app=first.gated_app)], lifespan=lifespan)
    app.add_middleware(BodyLimit, control_bytes=first.settings.max_body_bytes,
                       other_bytes=first.settings.mcp_max_body_bytes)
    return app
