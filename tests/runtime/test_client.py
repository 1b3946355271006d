"""The environment clients against real containers: inside event loops, from threads, when dead."""

from __future__ import annotations

import asyncio
import gc
import threading
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import docker
import pytest
from mcp.shared.exceptions import McpError
from mcp.types import ErrorData

from awm.core.errors import (
    BackendUnavailable,
    EngineError,
    EnvUnavailable,
    InvalidURL,
    ToolCallError,
)
from awm.runtime.client import CONNECT_TIMEOUT_S, AsyncEnvClient, EnvClient, _mcp_error, list_mcp_tools
from awm.runtime.docker_backend import DockerBackend
from awm.runtime.env import Env
from tests.helpers import free_port

SID = "pantrypal_recipe_planner"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # what Jupyter and pytest-asyncio run


@pytest.fixture(scope="module")
def backend(docker_client: docker.DockerClient) -> DockerBackend:
    return DockerBackend(docker_client)


@pytest.fixture(scope="module")
def env(backend: DockerBackend, images: dict[str, str]) -> Iterator[Env]:
    with backend.start(images[SID]) as started:
        yield started


def _loop_threads() -> int:
    return sum(1 for t in threading.enumerate() if t.name == "awm-env-client")


# -- where the sync client works -----------------------------------------------------------


@pytest.mark.docker
def test_sync_client_inside_a_running_event_loop(env: Env) -> None:
    async def agent_step() -> tuple[int, bool, str]:
        asyncio.get_running_loop()  # as in Jupyter or pytest-asyncio: a loop runs in this thread
        with EnvClient(env.base_url, token=env.token) as client:
            tools = client.list_tools()
            result = client.call_tool("list_recipes", {"limit": 1})
            return len(tools), result.is_error, client.verify(0)["result"]

    assert asyncio.run(agent_step()) == (len(env.client.list_tools()), False, "others")


@pytest.mark.docker
@pytest.mark.anyio
async def test_sync_client_in_an_async_test(env: Env) -> None:
    # the anyio pytest plugin runs this test in an event loop, as pytest-asyncio would
    assert [r.is_error for r in env.client.call_tools([("list_recipes", {"limit": 1})] * 2)] == [False, False]


@pytest.mark.docker
def test_sync_client_from_8_threads_at_once(env: Env) -> None:
    client = EnvClient(env.base_url, token=env.token)
    start = threading.Barrier(8)
    results: dict[int, Any] = {}

    def work(i: int) -> None:
        start.wait()
        try:
            results[i] = (client.call_tool("list_recipes", {"limit": 1}).is_error, len(client.list_tools()),
                          client.health()["status"])
        except BaseException as exc:  # reported below, with the thread's number
            results[i] = exc

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    tools = len(env.client.list_tools())
    assert results == dict.fromkeys(range(8), (False, tools, "ok"))
    before = _loop_threads()
    client.close()
    assert _loop_threads() == before - 1  # close() ends its loop thread


# -- a dead environment --------------------------------------------------------------------


@pytest.fixture
def dead_env(backend: DockerBackend, images: dict[str, str]) -> Iterator[Env]:
    started = backend.start(images[SID])
    try:
        backend.client.api.kill(started.id)
        yield started
    finally:
        started.stop()


def _sync_calls(client: EnvClient, tmp_path: Path) -> dict[str, Callable[[], object]]:
    return {
        "health": client.health, "info": client.info, "tasks": client.tasks, "reset": client.reset,
        "verify": lambda: client.verify(0), "snapshot": lambda: client.snapshot(tmp_path / "s.db"),
        "list_tools": client.list_tools, "call_tool": lambda: client.call_tool("list_recipes", {}),
        "call_tools": lambda: client.call_tools([("list_recipes", {})]),
    }


@pytest.mark.docker
def test_every_sync_method_of_a_dead_environment_raises_env_unavailable(dead_env: Env, tmp_path: Path) -> None:
    client = EnvClient(dead_env.base_url, token=dead_env.token)
    # what makes the detection fast: the connect, not the whole request, has a short timeout
    assert client.connect_timeout_s == CONNECT_TIMEOUT_S <= 0.5
    assert client._http.timeout.connect == CONNECT_TIMEOUT_S
    with client:
        for name, call in _sync_calls(client, tmp_path).items():
            with pytest.raises(EnvUnavailable, match="does not answer") as caught:
                call()
            assert caught.value.url is not None, name
            assert dead_env.base_url in caught.value.url, name
    for name, call in {"reset": dead_env.reset, "verify": lambda: dead_env.verify(0),
                       "snapshot": lambda: dead_env.snapshot(tmp_path / "t.db")}.items():
        with pytest.raises(EnvUnavailable, match=r"is exited \(137\)"):  # the handle says what happened
            call()
        assert name


@pytest.mark.docker
def test_every_async_method_of_a_dead_environment_raises_env_unavailable(dead_env: Env, tmp_path: Path) -> None:
    async def check() -> list[str]:
        raised = []
        async with AsyncEnvClient(dead_env.base_url, token=dead_env.token) as client:
            calls: dict[str, Callable[[], Any]] = {
                "health": client.health, "info": client.info, "tasks": client.tasks, "reset": client.reset,
                "verify": lambda: client.verify(0), "snapshot": lambda: client.snapshot(tmp_path / "s.db"),
                "list_tools": client.list_tools, "call_tool": lambda: client.call_tool("list_recipes", {}),
                "call_tools": lambda: client.call_tools([("list_recipes", {})]),
            }
            for name, call in calls.items():
                try:
                    await call()
                except EnvUnavailable:
                    raised.append(name)
        return raised

    assert asyncio.run(check()) == ["health", "info", "tasks", "reset", "verify", "snapshot", "list_tools",
                                    "call_tool", "call_tools"]


# -- tool errors, endpoints that are not environments -------------------------------------


@pytest.mark.docker
def test_a_tool_failure_is_a_result_the_agent_sees(env: Env) -> None:
    unknown = env.client.call_tool("no_such_tool", {})
    assert unknown.is_error
    assert "no_such_tool" in unknown.text
    bad = env.client.call_tool("list_recipes", {"limit": "many"})
    assert bad.is_error
    assert "many" in bad.text


def test_a_json_rpc_refusal_is_a_tool_call_error_naming_the_tool() -> None:
    refusal = McpError(ErrorData(code=-32602, message="Invalid params"))
    error = _mcp_error(ExceptionGroup("task group", [refusal]), "http://h/mcp", "calling tool 'x'", "x")
    assert isinstance(error, ToolCallError)
    assert error.tool == "x"
    assert "Invalid params" in error.message


def test_list_mcp_tools_errors_are_typed() -> None:
    port = free_port()
    with pytest.raises(EnvUnavailable, match="does not answer"):
        asyncio.run(list_mcp_tools(f"http://127.0.0.1:{port}/mcp"))
    with pytest.raises(InvalidURL):
        asyncio.run(list_mcp_tools("127.0.0.1:8000/mcp"))
    with pytest.raises(InvalidURL):
        EnvClient("localhost:8000")


# -- the engine's errors leave the runtime as this project's ------------------------------


@pytest.fixture
def engineless() -> Iterator[DockerBackend]:
    # an explicit API version: the SDK does not ask the engine for one at construction
    client = docker.DockerClient(base_url="unix:///nonexistent.sock", version="1.41")
    # docker-py leaves the socket of a failed unix connect to the garbage collector, whose
    # ResourceWarning would fail whatever runs then: collect them here, quietly.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        yield DockerBackend(client)
        client.close()
        gc.collect()


def test_backend_methods_without_an_engine_raise_backend_unavailable(engineless: DockerBackend) -> None:
    calls: dict[str, Callable[[], object]] = {
        "start": lambda: engineless.start("awm/x:y"), "stop": lambda: engineless.stop("abc"),
        "logs": lambda: engineless.logs("abc"), "state": lambda: engineless.state("abc"),
        "is_running": lambda: engineless.is_running("abc"), "list": engineless.list, "gc": engineless.gc,
    }
    for name, call in calls.items():
        with pytest.raises(BackendUnavailable, match="no Docker engine answers"):
            call()
        assert name


@pytest.mark.docker
def test_an_engine_refusal_is_an_engine_error(backend: DockerBackend) -> None:
    with pytest.raises(EngineError, match="inspecting environment"):
        backend.state("")  # the SDK refuses an empty id
