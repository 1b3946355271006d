"""Shared fixtures. Docker tests skip, saying why, when no engine runs; under CI=true they fail."""

from __future__ import annotations

import os
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path

import docker
import pytest

from tests.helpers import remove_scenario_images

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


@pytest.fixture
def own_images(docker_client: docker.DockerClient) -> Iterator[Callable[[str], str]]:
    """Register a scenario id prefix; every image of it is removed when the test ends.

    Tests that build crafted scenarios use it; the examples' own images are shared and stay.
    """
    prefixes: list[str] = []

    def register(prefix: str) -> str:
        remove_scenario_images(docker_client, prefix)  # leftovers of an earlier, killed run
        prefixes.append(prefix)
        return prefix

    yield register
    for prefix in prefixes:
        remove_scenario_images(docker_client, prefix)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Outcomes per test folder, so a folder that silently stops running shows in the log."""
    counts: dict[str, Counter[str]] = defaultdict(Counter)
    for outcome in ("passed", "failed", "error", "skipped"):
        for report in terminalreporter.stats.get(outcome, []):
            folder = str(Path(report.nodeid.split("::")[0]).parent)
            counts[folder][outcome] += 1
    if not counts:
        return
    terminalreporter.section("tests per folder")
    for folder in sorted(counts):
        line = " ".join(f"{outcome}={n}" for outcome, n in sorted(counts[folder].items()))
        terminalreporter.write_line(f"{folder:<32} {line}")
