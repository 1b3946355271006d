"""Bounds of the server, in process: bodies cut while they stream, JSON depth, tokens, temp files."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from awm_server.app import BodyLimit, JsonDepthGuard, parse_json
from awm_server.database import WorkingDatabase
from awm_server.environment import Environment
from awm_server.settings import Settings, hash_token, scrub_control_env

CHUNK = 64 * 1024


def _echo_app() -> BodyLimit:
    async def echo(request: Request) -> JSONResponse:
        return JSONResponse({"bytes": len(await request.body())})

    app = Starlette(routes=[Route("/_awm/verify", echo, methods=["POST"]), Route("/mcp", echo, methods=["POST"])])
    return BodyLimit(app, control_bytes=1024 * 1024, other_bytes=4 * 1024 * 1024)


async def _post(path: str, content: bytes | AsyncIterator[bytes]) -> httpx.Response:
    transport = httpx.ASGITransport(app=_echo_app())
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        return await client.post(path, content=content)


@pytest.mark.parametrize(("path", "limit", "setting"), [
    ("/_awm/verify", 1024 * 1024, "AWM_MAX_BODY_BYTES"),
    ("/mcp", 4 * 1024 * 1024, "AWM_MCP_MAX_BODY_BYTES"),
])
def test_bodies_over_the_limit_get_413_while_streaming(path: str, limit: int, setting: str) -> None:
    sent = 0

    async def endless() -> AsyncIterator[bytes]:  # no Content-Length: only counting can stop it
        nonlocal sent
        for _ in range(100 * 1024 * 1024 // CHUNK):
            sent += CHUNK
            yield b"x" * CHUNK

    reply = asyncio.run(_post(path, endless()))
    assert reply.status_code == 413
    assert reply.json() == {"error": f"request body larger than {limit} bytes for {path} ({setting})", "limit": limit}
    assert sent <= limit + 2 * CHUNK  # cut right after the limit, not after reading 100 MB


def test_declared_length_over_the_limit_is_refused_before_the_app() -> None:
    reply = asyncio.run(_post("/_awm/verify", b"x" * (1024 * 1024 + 1)))
    assert reply.status_code == 413
    assert asyncio.run(_post("/_awm/verify", b"x" * 1024 * 1024)).json() == {"bytes": 1024 * 1024}
    assert asyncio.run(_post("/mcp", b"x" * 3 * 1024 * 1024)).json() == {"bytes": 3 * 1024 * 1024}


def test_mcp_messages_nested_too_deep_get_a_parse_error_and_others_pass_unchanged() -> None:
    seen: list[bytes] = []

    async def inner(request: Request) -> JSONResponse:
        seen.append(await request.body())
        return JSONResponse({"ok": True})

    app = JsonDepthGuard(Starlette(routes=[Route("/", inner, methods=["POST"])]), max_depth=64)

    async def post(body: bytes) -> httpx.Response:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
            return await client.post("/", content=body)

    deep = asyncio.run(post(b'{"x": ' + b"[" * 10_000 + b"]" * 10_000 + b"}"))
    assert deep.status_code == 400
    assert deep.json()["error"] == {"code": -32700, "message": "Parse error: JSON nested deeper than 64 levels"}
    for body in (b'{"jsonrpc": "2.0", "id": 1, "method": "tools/list"}', b"not json"):
        assert asyncio.run(post(body)).json() == {"ok": True}
    assert seen == [b'{"jsonrpc": "2.0", "id": 1, "method": "tools/list"}', b"not json"]


@pytest.mark.parametrize("depth", [33, 100_000])
def test_deep_json_is_a_value_error(depth: int) -> None:
    with pytest.raises(ValueError, match="JSON nested deeper than 32 levels"):
        parse_json(b"[" * depth + b"]" * depth, 32)
    assert parse_json(json.dumps({"a": [[1]]}).encode(), 3) == {"a": [[1]]}


def test_settings_keep_only_the_hash_of_the_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWM_CONTROL_TOKEN", "s3cret")
    settings = Settings.from_env()
    assert settings.control_token_sha256 == hash_token("s3cret") == hashlib.sha256(b"s3cret").hexdigest()
    assert "s3cret" not in repr(settings)
    monkeypatch.setenv("AWM_CONTROL_TOKEN_SHA256", "0" * 64)
    with pytest.raises(ValueError, match="both set and disagree"):
        Settings.from_env()
    monkeypatch.delenv("AWM_CONTROL_TOKEN")
    monkeypatch.setenv("AWM_CONTROL_TOKEN_SHA256", "NOT-HEX")
    with pytest.raises(ValueError, match="64 lowercase hex digits"):
        Settings.from_env()


def test_scrub_removes_control_variables_only(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in list(os.environ.items()):  # restored after the test
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("AWM_CONTROL_TOKEN_SHA256", "0" * 64)
    monkeypatch.setenv("AWM_PORT", "8000")
    monkeypatch.setenv("DATABASE_PATH", "sqlite:////tmp/awm/env.db")
    scrub_control_env()
    assert not [name for name in os.environ if name.startswith("AWM_")]
    assert os.environ["DATABASE_PATH"] == "sqlite:////tmp/awm/env.db"


def test_snapshot_leaves_no_temp_file_whether_it_works_or_fails(tmp_path: Path) -> None:
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    seed = tmp_path / "seed.db"
    with sqlite3.connect(seed) as conn:
        conn.execute("create table t(x)")
    conn.close()
    db = WorkingDatabase(seed, tmp_path / "work" / "env.db")
    db.prepare()
    env = SimpleNamespace(settings=Settings(scratch_dir=scratch), db=db)
    fd = Environment.snapshot_fd(env)  # type: ignore[arg-type]  # only settings and db are used
    with os.fdopen(fd, "rb") as copy:
        assert copy.read(16) == b"SQLite format 3\x00"
        assert list(scratch.iterdir()) == []  # unlinked while still open
    db.work.unlink()
    db.work.parent.rmdir()  # the copy fails: its source is gone
    with pytest.raises(sqlite3.OperationalError):
        Environment.snapshot_fd(env)  # type: ignore[arg-type]
    assert list(scratch.iterdir()) == []
