"""Shared fixtures. Docker tests skip, saying why, when no engine runs; under CI=true they fail."""

from __future__ import annotations

import os
from collections.abc import Iterator

import docker
import pytest

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")

# The testcontainers module's fixtures (`awm_container`), as a user's conftest would load them.
pytest_plugins = ["awm.runtime.testing"]
# No registry here: testcontainers' reaper image cannot be pulled. AWM's own owner labels and
# `awm env gc` cover what it would clean up.
os.environ.setdefault("TESTCONTAINERS_RYUK_DISABLED", "true")


@pytest.fixture(scope="session")
def docker_client() -> Iterator[docker.DockerClient]:
    try:
        client = docker.from_env()
        client.ping()
    except docker.errors.DockerException as exc:
        message = f"no Docker engine answers ({exc}); run `make docker` or bash .ci/docker-up"
        if IN_CI:
            pytest.fail(f"CI=true: {message}")
        pytest.skip(message)
    yield client
    client.close()
