"""Fixtures of the build-at-scale tests: derived datasets, and removal of the images they make.

Every test here names its scenarios with its own prefix (`t4_<test>_...`) and removes every
image of that prefix when it ends (fixture teardown), smoke records included: the engine is
shared, so nothing else is touched.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import docker
import docker.errors
import pytest

from awm.builder.build.base_image import ensure_base_image
from awm.core.naming import normalise
from awm.builder.build.smoke import record_path
from awm.builder.catalog.variants import derive_variants
from tests.helpers import EXAMPLES

__all__ = ["edit_records", "make_variants", "remove_scenario_images"]


def remove_scenario_images(client: docker.DockerClient, prefix: str) -> int:
    """Remove every image whose `awm.scenario` label starts with `prefix` (all its tags)."""
    removed = 0
    for item in client.api.images(filters={"label": "awm.scenario"}):
        if not (item.get("Labels") or {}).get("awm.scenario", "").startswith(prefix):
            continue
        try:
            client.api.remove_image(item["Id"], force=True)
            removed += 1
        except docker.errors.NotFound:
            pass
        record_path(item["Id"]).unlink(missing_ok=True)
    return removed


def make_variants(dest: Path, count: int, prefix: str) -> list[str]:
    """A dataset of `count` scenarios derived from the examples, named `<prefix> NNNN ...`."""
    return derive_variants(EXAMPLES, dest, count, prefix=prefix)


def edit_records(root: Path, file: str, scenario: str, edit: Callable[[dict[str, Any]], None]) -> None:
    """Apply `edit` to every record of `scenario` in one dataset file, in place."""
    path = root / file
    lines = []
    for line in path.read_text().splitlines():
        rec = json.loads(line)
        key = "name" if "name" in rec and "scenario" not in rec else "scenario"
        if normalise(rec[key]) == scenario:
            edit(rec)
        lines.append(json.dumps(rec))
    path.write_text("\n".join(lines) + "\n")


@pytest.fixture(scope="session")
def base_image(docker_client: docker.DockerClient) -> str:
    return ensure_base_image(docker_client)


@pytest.fixture
def own_images(docker_client: docker.DockerClient) -> Iterator[Callable[[str], str]]:
    """Register a scenario prefix; its images are removed after the test."""
    prefixes: list[str] = []

    def register(prefix: str) -> str:
        remove_scenario_images(docker_client, prefix)  # leftovers of an earlier, killed run
        prefixes.append(prefix)
        return prefix

    yield register
    for prefix in prefixes:
        remove_scenario_images(docker_client, prefix)
