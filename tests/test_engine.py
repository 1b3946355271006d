from __future__ import annotations

import docker
import pytest


@pytest.mark.docker
def test_engine_answers_and_lists_images(docker_client: docker.DockerClient) -> None:
    info = docker_client.info()
    assert info["ServerVersion"]
    assert isinstance(docker_client.images.list(), list)
