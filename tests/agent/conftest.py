"""Agent tests: the example images built by the project's builder, their tasks and solutions."""

from __future__ import annotations

from collections.abc import Iterator

import docker
import pytest

from awm.builder.build.batch import BuildResult, build_images
from awm.builder.catalog.loader import load_catalog
from awm.builder.catalog.solutions import Solution, load_solutions
from awm.core.labels import LABEL_OWNER, Owner
from tests.helpers import EXAMPLES


@pytest.fixture(scope="session")
def images(docker_client: docker.DockerClient) -> dict[str, str]:
    """scenario id -> image tag, for every example."""
    results: list[BuildResult] = build_images(load_catalog(EXAMPLES).bundles.values(), client=docker_client)
    failed = [f"{r.scenario}: {r.error}" for r in results if r.status == "failed"]
    assert not failed, failed
    return {r.scenario: str(r.tag) for r in results}


@pytest.fixture(scope="session")
def solutions_by_task() -> dict[str, Solution]:
    """Each example task's text -> its reference solution (what the scripted model replays)."""
    catalog = load_catalog(EXAMPLES)
    out: dict[str, Solution] = {}
    for sid, by_task in load_solutions(EXAMPLES).items():
        for idx, solution in by_task.items():
            out[catalog.get(sid).tasks[idx]] = solution
    assert len(out) == 18
    return out


@pytest.fixture
def no_leftovers(docker_client: docker.DockerClient) -> Iterator[None]:
    """Fails the test when a container this process started is still there afterwards."""
    owner = f"{LABEL_OWNER}={Owner.current()}"
    before = {c.id for c in docker_client.containers.list(ignore_removed=True, all=True, filters={"label": owner})}
    yield
    listed = docker_client.containers.list(ignore_removed=True, all=True, filters={"label": owner})
    left = [c.name for c in listed if c.id not in before]
    assert left == [], f"containers left behind: {left}"
