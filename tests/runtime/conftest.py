"""Runtime tests use the example images built by the project's own builder."""

from __future__ import annotations

import docker
import pytest

from awm.builder.build.batch import BuildResult, build_images
from awm.builder.catalog.loader import load_catalog
from tests.helpers import EXAMPLES


@pytest.fixture(scope="session")
def images(docker_client: docker.DockerClient) -> dict[str, str]:
    """scenario id -> image tag, for every example."""
    results: list[BuildResult] = build_images(load_catalog(EXAMPLES).bundles.values(), client=docker_client)
    failed = [f"{r.scenario}: {r.error}" for r in results if r.status == "failed"]
    assert not failed, failed
    return {r.scenario: str(r.tag) for r in results}
