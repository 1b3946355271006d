"""Fixtures of the synthesis tests: the scripted LLM server, clients on it, the Docker prober, a seed."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import pytest

from awm.builder.synth import GenOptions, LLMClient, LLMSettings, ResponseCache
from awm.builder.synth.base import StageContext
from awm.builder.synth.probe import DockerProber
from tests.builder.synth.scripted import ScriptedLLM


@pytest.fixture
def llm_server() -> Iterator[ScriptedLLM]:
    server = ScriptedLLM().start()
    yield server
    server.stop()


def make_llm(server: ScriptedLLM, cache: Path | None = None, **settings: Any) -> LLMClient:
    """A client of the scripted server (its faults carry a short Retry-After, so the SDK's retries are quick)."""
    values = {"model": "scripted", "base_url": server.url, "api_key": "test-key", **settings}
    return LLMClient(LLMSettings(**values), cache=ResponseCache(cache) if cache is not None else None)


def make_ctx(llm: LLMClient, tmp_path: Path, prober: Any = None, **options: Any) -> StageContext:
    return StageContext(llm=llm, options=GenOptions(**{"tasks": 6, "scenarios": 2, **options}),
                        workdir=tmp_path / "work", prober_factory=(lambda: prober) if prober is not None else None)


@pytest.fixture(scope="session")
def prober(docker_client: docker.DockerClient) -> DockerProber:
    """Probes in containers of the base image (built once if the engine lacks it)."""
    return DockerProber(docker_client, timeout_s=120)


@pytest.fixture
def seed(tmp_path: Path) -> Path:
    """A one-table seed database (users: Ada) for the probe tests."""
    path = tmp_path / "seed.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT)")
        conn.execute("INSERT INTO users VALUES (1, 'Ada')")
    return path
