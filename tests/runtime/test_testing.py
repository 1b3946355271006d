"""The testcontainers module, used the way a CI pipeline would: a plain pytest test."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import cast

import docker
import pytest

from awm.builder.catalog.solutions import load_solutions
from awm.runtime.testing import AWMContainer
from tests.helpers import EXAMPLES

pytestmark = pytest.mark.docker


def test_awm_container_replays_a_task(images: dict[str, str], docker_client: docker.DockerClient) -> None:
    solution = load_solutions(EXAMPLES)["trailhead_campground_reservations"][3]
    with AWMContainer(images["trailhead_campground_reservations"]) as env:
        assert env.get_mcp_url().endswith("/mcp")
        client = env.get_client()
        assert env.verify(3)["result"] == "others"
        results = client.call_tools([(c.tool, c.arguments) for c in solution.calls])
        assert not any(r.is_error for r in results)
        assert env.verify(3, solution.final_answer)["result"] == "complete"
        env.reset()
        assert env.verify(3)["result"] == "others"
        container_id = cast(str, env.get_wrapped_container().id)
        attrs = docker_client.containers.get(container_id).attrs
        assert attrs["HostConfig"]["ReadonlyRootfs"] is True
        assert attrs["Config"]["User"] == "10001:10001"
        assert attrs["Config"]["Labels"]["awm.owner"].split(":")[1] == str(os.getpid())
    assert docker_client.containers.list(ignore_removed=True, all=True, filters={"id": container_id}) == []


def test_fixture_with_control_token(awm_container: Callable[..., AWMContainer], images: dict[str, str]) -> None:
    env = awm_container(images["pantrypal_recipe_planner"], control_token="t0k")
    assert env.reset()["ok"] is True  # the client carries the token
    assert [t.name for t in env.get_client().list_tools()][:2] == ["list_recipes", "get_recipe"]


def test_failed_start_leaves_nothing(docker_client: docker.DockerClient, images: dict[str, str]) -> None:
    container = AWMContainer(images["pantrypal_recipe_planner"], startup_timeout_s=5).with_env(
        "AWM_SCENARIO_DIR", "/nonexistent"
    )
    with pytest.raises(TimeoutError) as info:
        container.start()
    assert "/nonexistent" in "".join(getattr(info.value, "__notes__", []))  # its log is attached
    container_id = cast(str, container.get_wrapped_container().id)
    assert docker_client.containers.list(ignore_removed=True, all=True, filters={"id": container_id}) == []
