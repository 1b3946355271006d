"""Fixtures of the build-at-scale tests: derived datasets, and removal of the images they make.

Every test here names its scenarios with its own prefix (`t4_<test>_...`) and registers it with
`own_images` (tests/conftest.py), which removes every image of that prefix when the test ends,
smoke records included: the engine is shared, so nothing else is touched.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import docker
import pytest

from awm.builder.build.base_image import ensure_base_image
from awm.builder.catalog.variants import derive_variants
from awm.core.naming import normalise
from tests.helpers import EXAMPLES, remove_scenario_images

__all__ = ["edit_records", "make_variants", "remove_scenario_images"]


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
