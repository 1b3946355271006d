from __future__ import annotations

from awm import runtime
from awm.runtime.base import Backend
from awm.runtime.docker_backend import DockerBackend


def test_public_surface_is_sorted_and_importable() -> None:
    assert runtime.__all__ == sorted(runtime.__all__)
    for name in runtime.__all__:
        assert getattr(runtime, name) is not None


def test_docker_backend_satisfies_the_protocol() -> None:
    methods = ("start", "stop", "logs", "is_running", "list", "gc")
    missing = [m for m in methods if not callable(getattr(DockerBackend, m, None))]
    assert missing == []
    backend = DockerBackend.__new__(DockerBackend)  # no engine needed to check the shape
    backend.run_id = "r"
    assert isinstance(backend, Backend)
