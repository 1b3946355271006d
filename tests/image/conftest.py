"""Images built once per test session by the project's own builder, and containers per test."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import docker
import pytest

from awm.builder.build.batch import BuildResult, build_images
from awm.builder.catalog.loader import load_catalog
from awm.runtime.base import StartOptions
from awm.runtime.docker_backend import DockerBackend
from awm.runtime.env import Env
from tests.helpers import EXAMPLES

TEST_LABEL = {"awm-test": "image"}


@pytest.fixture(scope="session")
def example_images(docker_client: docker.DockerClient) -> dict[str, BuildResult]:
    results = build_images(load_catalog(EXAMPLES).bundles.values(), client=docker_client)
    failed = [f"{r.scenario}: {r.error}" for r in results if r.status == "failed"]
    assert not failed, failed
    return {r.scenario: r for r in results}


@pytest.fixture(scope="session")
def backend(docker_client: docker.DockerClient) -> DockerBackend:
    return DockerBackend(docker_client)


@pytest.fixture
def start_env(backend: DockerBackend) -> Iterator[Callable[..., Env]]:
    started: list[Env] = []

    def start(image: str, **kwargs: Any) -> Env:
        env = backend.start(image, StartOptions(labels=TEST_LABEL, **kwargs))
        started.append(env)
        return env

    yield start
    for env in started:
        env.stop()


@pytest.fixture
def world_readable_tmp(tmp_path: Path) -> Path:
    # The container's uid 10001 must reach files the tests write (pytest makes 0700 dirs).
    tmp_path.chmod(0o755)
    return tmp_path
