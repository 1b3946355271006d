"""The environment image, tested through real containers of the example scenarios."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import docker
import httpx
import pytest
from fastapi_mcp import FastApiMCP

from awm.builder.build.batch import BuildResult
from awm.builder.catalog.loader import load_catalog
from awm.builder.catalog.seed import build_seed
from awm.builder.catalog.solutions import load_solutions
from awm.runtime.client import AsyncEnvClient
from awm.runtime.env import Env
from tests.helpers import EXAMPLES, dump_tables, import_env_module

pytestmark = pytest.mark.docker

CATALOG = load_catalog(EXAMPLES)
SOLUTIONS = load_solutions(EXAMPLES)
SCENARIOS = sorted(CATALOG.bundles)


def _tool_dicts(tools: list[Any]) -> list[dict[str, Any]]:
    return [{"name": t.name, "description": t.description, "inputSchema": t.inputSchema} for t in tools]


@pytest.mark.parametrize("sid", SCENARIOS)
def test_mcp_tools_equal_routes_and_fastapi_mcp(
    sid: str,
    example_images: dict[str, BuildResult],
    start_env: Callable[..., Env],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    env = start_env(example_images[sid].tag)
    served = env.client.list_tools()
    bundle = CATALOG.bundles[sid]
    assert sorted(t.name for t in served) == sorted(t.name for t in bundle.tools)

    # The reference: fastapi-mcp 0.4.0 on the same app, in this process (example code only).
    build_seed(bundle, tmp_path / "seed.db")
    module = import_env_module(bundle.env_code, f"sqlite:///{tmp_path / 'seed.db'}", f"ref_{sid}", monkeypatch)
    try:
        reference = FastApiMCP(module.app).tools
    finally:
        module.engine.dispose()
    assert _tool_dicts(served) == _tool_dicts(reference)
    for tool in served:  # every route's parameters are in the schema an agent sees
        assert tool.inputSchema["type"] == "object"


@pytest.mark.parametrize("sid", SCENARIOS)
def test_replay_verify_reset_cycle(
    sid: str, example_images: dict[str, BuildResult], start_env: Callable[..., Env], tmp_path: Path
) -> None:
    env = start_env(example_images[sid].tag)
    bundle = CATALOG.bundles[sid]
    seed = tmp_path / "seed.db"
    build_seed(bundle, seed)
    for idx, solution in sorted(SOLUTIONS[sid].items()):
        assert env.verify(idx)["result"] == "others", f"task {idx} complete before acting"
        results = env.client.call_tools([(c.tool, c.arguments) for c in solution.calls])
        assert [r.is_error for r in results] == [False] * len(results), [r.text for r in results]
        graded = env.verify(idx, solution.final_answer)
        assert (graded["result"], graded["reward"], graded["error"]) == ("complete", 1.0, None), graded
        reset = env.reset()
        assert reset["ok"] is True
        env.snapshot(tmp_path / f"after_reset_{idx}.db")
        assert dump_tables(tmp_path / f"after_reset_{idx}.db") == dump_tables(seed)
        assert env.verify(idx)["result"] == "others"
    info = env.client.info()
    assert info["awm.runtime"]["resets"] == len(SOLUTIONS[sid])


def test_tool_errors_name_the_status_code(
    example_images: dict[str, BuildResult], start_env: Callable[..., Env]
) -> None:
    env = start_env(example_images["pantrypal_recipe_planner"].tag)
    result = env.client.call_tool("get_recipe", {"recipe_id": 999999})
    assert result.is_error
    assert result.text.startswith("Error calling get_recipe. Status code: 404.")


def test_concurrent_writes_during_reset(
    example_images: dict[str, BuildResult], start_env: Callable[..., Env], tmp_path: Path
) -> None:
    """8 clients write while a reset runs: no error, and exactly the pre-reset writes vanish."""
    sid = "acme_helpdesk_support_tickets"
    env = start_env(example_images[sid].tag)
    seed = tmp_path / "seed.db"
    build_seed(CATALOG.bundles[sid], seed)
    errors: list[str] = []
    # marker -> (sent at, acknowledged at)
    writes: dict[str, tuple[float, float]] = {}
    reset_window: list[float] = []

    async def writer(client: AsyncEnvClient, n: int, stop: asyncio.Event, wrote: asyncio.Event) -> None:
        async with client.mcp_session() as session:
            i = 0
            while not stop.is_set():
                marker = f"w{n}-{i}"
                sent = time.monotonic()
                result = await session.call_tool("add_ticket_comment", {"ticket_id": 1 + n, "body": marker})
                if result.isError:
                    errors.append(str(result.content))
                writes[marker] = (sent, time.monotonic())
                wrote.set()
                i += 1

    async def main() -> None:
        async with AsyncEnvClient(env.base_url, token=env.token) as client:
            stop = asyncio.Event()
            wrote = asyncio.Event()  # set by a writer after each acknowledged write

            async def until(enough: Callable[[], bool]) -> None:
                while not enough():
                    wrote.clear()
                    await wrote.wait()

            tasks = [asyncio.create_task(writer(client, n, stop, wrote)) for n in range(8)]
            await until(lambda: len(writes) >= 40)
            reset_window.append(time.monotonic())
            reply = await client.reset()
            reset_window.append(time.monotonic())
            assert reply["ok"] is True
            await until(lambda: len([w for w in writes.values() if w[0] > reset_window[1]]) >= 40)
            stop.set()
            await asyncio.gather(*tasks)

    asyncio.run(main())
    assert errors == []
    env.snapshot(tmp_path / "final.db")
    conn = sqlite3.connect(tmp_path / "final.db")
    present = {r[0] for r in conn.execute("SELECT body FROM ticket_comments WHERE body GLOB 'w[0-7]-[0-9]*'")}
    before = {m for m, (_, ack) in writes.items() if ack < reset_window[0]}
    after = {m for m, (sent, _) in writes.items() if sent > reset_window[1]}
    assert before
    assert after
    assert present.isdisjoint(before), "writes acknowledged before the reset survived it"
    assert after <= present, "writes sent after the reset are missing"
    # Everything else is the seed: comments other than the markers, and all other tables.
    final = dump_tables(tmp_path / "final.db", skip_columns={"tickets": {"updated_at"}})
    expected = dump_tables(seed, skip_columns={"tickets": {"updated_at"}})
    final["ticket_comments"] = [r for r in final["ticket_comments"] if r[3] not in present]
    assert final == expected


def test_hardened_container(
    example_images: dict[str, BuildResult], start_env: Callable[..., Env], docker_client: docker.DockerClient
) -> None:
    env = start_env(example_images["trailhead_campground_reservations"].tag)
    container = docker_client.containers.get(env.id)
    attrs = container.attrs
    host = attrs["HostConfig"]
    assert host["ReadonlyRootfs"] is True
    assert host["CapDrop"] == ["ALL"]
    assert host["SecurityOpt"] == ["no-new-privileges"]
    assert host["Memory"] == 512 * 1024 * 1024
    assert host["PidsLimit"] == 256
    assert attrs["Config"]["User"] == "10001:10001"
    assert env.client.info()["awm.runtime"]["uid"] == 10001
    # the image's files cannot be changed, the seed least of all
    code, out = container.exec_run(
        ["python", "-c", "open('/opt/awm/scenario/seed.db', 'r+b')"], user="10001:10001"
    )
    assert (code != 0 and b"Read-only file system" in out) or b"Permission denied" in out
    # and the environment keeps serving
    assert env.client.call_tool("list_parks", {}).is_error is False


def test_offline_verify_matches_control_plane(
    example_images: dict[str, BuildResult],
    start_env: Callable[..., Env],
    world_readable_tmp: Path,
    docker_client: docker.DockerClient,
) -> None:
    sid = "pantrypal_recipe_planner"
    tag = cast(str, example_images[sid].tag)
    env = start_env(tag)
    solution = SOLUTIONS[sid][0]
    env.client.call_tools([(c.tool, c.arguments) for c in solution.calls])
    online = env.verify(0)
    final = env.snapshot(world_readable_tmp / "final.db")
    final.chmod(0o644)
    out = docker_client.containers.run(
        tag,
        ["verify", "--task-idx", "0", "--final-db", "/data/final.db"],
        volumes={str(world_readable_tmp): {"bind": "/data", "mode": "ro"}},
        network_mode="none",
        read_only=True,
        tmpfs={"/tmp": ""},
        remove=True,
    )
    offline = json.loads(out)
    assert online["result"] == "complete"
    keys = ("scenario", "task_idx", "flavour", "result", "reward", "value", "error")
    assert {k: offline[k] for k in keys} == {k: online[k] for k in keys}


def test_image_command_line_tasks_and_info(
    example_images: dict[str, BuildResult], docker_client: docker.DockerClient
) -> None:
    tag = cast(str, example_images["acme_helpdesk_support_tickets"].tag)
    tasks = json.loads(docker_client.containers.run(tag, ["tasks"], remove=True, network_mode="none"))
    assert tasks == CATALOG.bundles["acme_helpdesk_support_tickets"].tasks
    info = json.loads(docker_client.containers.run(tag, ["info"], remove=True, network_mode="none"))
    assert info["scenario"] == "acme_helpdesk_support_tickets"
    assert info["image_digest"] == tag.split(":")[1]
    assert info["seed"]["foreign_keys"] is True
    assert info["seed"]["failed_statements"] == []


def test_control_token_guards_control_plane(
    example_images: dict[str, BuildResult], start_env: Callable[..., Env]
) -> None:
    env = start_env(example_images["acme_helpdesk_support_tickets"].tag, control_token="s3cret")
    with httpx.Client(base_url=env.base_url) as http:
        assert http.get("/_awm/health").status_code == 200
        denied = http.post("/_awm/reset")
        assert denied.status_code == 401
        assert "Bearer" in denied.json()["error"]
        assert http.post("/_awm/reset", headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert http.post("/_awm/reset", headers={"Authorization": "Bearer s3cret"}).status_code == 200
    assert env.reset()["ok"] is True  # the Env handle carries the token
    # control routes are never tools
    assert not any(t.name.startswith("_awm") or "awm" in t.name for t in env.client.list_tools())


def test_mcp_sessions_are_bounded(example_images: dict[str, BuildResult], start_env: Callable[..., Env]) -> None:
    env = start_env(example_images["acme_helpdesk_support_tickets"].tag, env={"AWM_MCP_MAX_SESSIONS": "2"})
    init = {
        "jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": {"protocolVersion": "2025-03-26", "capabilities": {},
                   "clientInfo": {"name": "t", "version": "1"}},
    }
    headers = {"Accept": "application/json, text/event-stream"}
    with httpx.Client() as http:
        for _ in range(5):  # clients that never end their sessions
            reply = http.post(env.mcp_url, json=init, headers=headers)
            assert reply.status_code == 200
            assert reply.headers["mcp-session-id"]
        info = http.get(f"{env.base_url}/_awm/info", headers={"Authorization": f"Bearer {env.token}"}).json()
        assert info["awm.runtime"]["mcp_sessions"] == 2  # the cap: the oldest made room
