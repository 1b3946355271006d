"""The shared base image awm/base: its version digest, and (with Docker) the image itself."""

from __future__ import annotations

import json
import re
import shutil
import time
from pathlib import Path
from typing import Any

import docker
import docker.errors
import docker.models.images
import pytest

from awm.builder.build import base_image
from awm.core.errors import ImageBuildError
from awm.core.settings import AWMSettings

PINNED = {
    "fastapi": "0.115.12",
    "sqlalchemy": "2.0.41",
    "pydantic": "2.12.5",
    "starlette": "0.46.2",
    "uvicorn": "0.40.0",
    "mcp": "1.26.0",
    "fastapi-mcp": "0.4.0",
    "anyio": "4.11.0",
}

# ---------------------------------------------------------------------------------------------
# Without Docker


@pytest.fixture
def base_copy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of images/base that base_image reads instead of the real one."""
    src = base_image.BASE_DIR
    dst = tmp_path / "base"
    dst.mkdir()
    shutil.copy2(src / "Dockerfile", dst / "Dockerfile")
    shutil.copy2(src / "requirements.lock", dst / "requirements.lock")
    shutil.copytree(src / "awm_server", dst / "awm_server",
                    ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(base_image, "BASE_DIR", dst)
    return dst


def test_base_version_is_short_hex_and_tag_uses_it(base_copy: Path) -> None:
    version = base_image.base_version()
    assert re.fullmatch(r"[0-9a-f]{12}", version)
    assert base_image.base_tag() == f"awm/base:{version}"
    assert base_image.base_version() == version  # deterministic


@pytest.mark.parametrize("name", ["Dockerfile", "requirements.lock", "awm_server/__init__.py"])
def test_base_version_changes_with_any_input(base_copy: Path, name: str) -> None:
    before = base_image.base_version()
    path = base_copy / name
    path.write_bytes(path.read_bytes() + b"\n# changed\n")
    assert base_image.base_version() != before


def test_base_version_sees_new_server_files_but_not_bytecode(base_copy: Path) -> None:
    before = base_image.base_version()
    cache = base_copy / "awm_server" / "__pycache__"
    cache.mkdir(exist_ok=True)
    (cache / "x.cpython-311.pyc").write_bytes(b"junk")
    assert base_image.base_version() == before
    (base_copy / "awm_server" / "extra.py").write_text("X = 1\n")
    assert base_image.base_version() != before


def test_lock_pins_the_environment_stack_exactly() -> None:
    pins = dict(base_image.locked_requirements())
    for name, version in PINNED.items():
        assert pins.get(name) == version, name
    assert "pytest" not in pins
    assert "pip" not in pins


class _NoEngineImages:
    """Images of an engine that has none and reaches no registry."""

    def get(self, name: str) -> Any:
        raise docker.errors.ImageNotFound(f"no such image: {name}")

    def pull(self, repository: str, tag: str | None = None) -> Any:
        raise docker.errors.APIError("no registry")


class _NoEngineClient:
    def __init__(self) -> None:
        self.images = _NoEngineImages()
        self.api = type("Api", (), {"timeout": 60})()


def test_os_image_without_registry_or_debootstrap_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("awm.builder.build.base_image.shutil.which", lambda _cmd: None)
    client = _NoEngineClient()
    with pytest.raises(ImageBuildError, match="apt-get install debootstrap"):
        base_image.ensure_os_image(client)  # type: ignore[arg-type]
    assert client.api.timeout == 60  # the pull cap is undone


def test_wheelhouse_cached_dir_is_reused_and_failed_download_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(base_image, "settings", lambda: AWMSettings(cache_dir=tmp_path / "cache"))

    def failing_run(argv: list[str], *, what: str, env: Any = None) -> None:
        raise ImageBuildError(f"{what} failed (simulated)")

    monkeypatch.setattr(base_image, "_run", failing_run)
    with pytest.raises(ImageBuildError, match="simulated"):
        base_image.ensure_wheelhouse()
    root = tmp_path / "cache" / "wheelhouse"
    assert list(root.iterdir()) == []  # no partial folder taken for a finished one

    def fake_download(argv: list[str], *, what: str, env: Any = None) -> None:
        dest = Path(argv[argv.index("-d") + 1])
        for name, version in base_image.locked_requirements():
            (dest / f"{name.replace('-', '_')}-{version}-py3-none-any.whl").write_bytes(b"")

    steps: list[str] = []
    monkeypatch.setattr(base_image, "_run", fake_download)
    first = base_image.ensure_wheelhouse(on_step=steps.append)
    assert first.parent == root
    assert first.is_dir()
    assert steps
    monkeypatch.setattr(base_image, "_run", failing_run)  # a cached one needs no download
    assert base_image.ensure_wheelhouse() == first


# ---------------------------------------------------------------------------------------------
# With Docker


@pytest.fixture(scope="module")
def base(docker_client: docker.DockerClient) -> str:
    return base_image.ensure_base_image(docker_client)


def _python(client: docker.DockerClient, tag: str, code: str, **kwargs: Any) -> str:
    out: bytes = client.containers.run(
        tag, ["-c", code], entrypoint=["python"], remove=True, **kwargs
    )
    return out.decode()


@pytest.mark.docker
def test_base_image_is_tagged_and_labelled(docker_client: docker.DockerClient, base: str) -> None:
    assert base == base_image.base_tag()
    image = docker_client.images.get(base)
    assert image.id == docker_client.images.get("awm/base:latest").id
    labels = image.labels
    assert labels["awm.base.version"] == base_image.base_version()
    assert labels["org.opencontainers.image.licenses"] == "Apache-2.0"
    config = image.attrs["Config"]
    assert config["User"] == "10001:10001"
    assert config["Entrypoint"] == ["/opt/awm/venv/bin/python", "-m", "awm_server"]
    assert "8000/tcp" in config["ExposedPorts"]


@pytest.mark.docker
def test_base_image_runs_as_uid_10001(docker_client: docker.DockerClient, base: str) -> None:
    out = docker_client.containers.run(base, ["-u"], entrypoint=["id"], remove=True)
    assert out.decode().strip() == "10001"
    out = docker_client.containers.run(base, ["-g"], entrypoint=["id"], remove=True)
    assert out.decode().strip() == "10001"


@pytest.mark.docker
def test_base_image_has_exactly_the_pinned_stack(
    docker_client: docker.DockerClient, base: str
) -> None:
    code = (
        "import json, importlib.metadata as md\n"
        "import fastapi, sqlalchemy, pydantic, starlette, uvicorn, mcp, fastapi_mcp, anyio\n"
        f"print(json.dumps({{d: md.version(d) for d in {sorted(PINNED)!r}}}))\n"
    )
    versions = json.loads(_python(docker_client, base, code, network_mode="none"))
    assert versions == PINNED


NO_NETWORK_APP = """
from fastapi import FastAPI
from fastapi.testclient import TestClient
from fastapi_mcp import FastApiMCP
from sqlalchemy import create_engine, text
from sqlalchemy.pool import StaticPool

engine = create_engine("sqlite://", connect_args={"check_same_thread": False},
                       poolclass=StaticPool)
with engine.begin() as conn:
    conn.execute(text("CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT)"))
    conn.execute(text("INSERT INTO notes (body) VALUES ('hello')"))
app = FastAPI()

@app.get("/notes", operation_id="list_notes")
def list_notes() -> list[str]:
    with engine.connect() as conn:
        return [row[0] for row in conn.execute(text("SELECT body FROM notes"))]

mcp = FastApiMCP(app)
mcp.mount_http()
with TestClient(app) as client:
    assert client.get("/notes").json() == ["hello"]
routes = open("/proc/net/route").read().splitlines()[1:]
print("ok", [t.name for t in mcp.tools], len(routes))
"""


@pytest.mark.docker
def test_base_image_works_without_network(docker_client: docker.DockerClient, base: str) -> None:
    out = _python(docker_client, base, NO_NETWORK_APP, network_mode="none").split()
    assert out[0] == "ok"
    assert "'list_notes']" in out[1]
    assert out[-1] == "0"  # no route at all: nothing here could have reached a network


@pytest.mark.docker
def test_second_ensure_is_a_lookup_not_a_build(
    docker_client: docker.DockerClient, base: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = docker_client.images.get(base).id

    def no_build(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("ensure_base_image rebuilt an image it already had")

    monkeypatch.setattr(docker.models.images.ImageCollection, "build", no_build)
    started = time.monotonic()
    again = base_image.ensure_base_image(docker_client)
    elapsed = time.monotonic() - started
    assert again == base
    assert docker_client.images.get(again).id == before
    assert elapsed < 2.0


@pytest.mark.docker
def test_failed_build_raises_with_the_build_log(
    docker_client: docker.DockerClient, base: str, base_copy: Path
) -> None:
    dockerfile = base_copy / "Dockerfile"
    failing = "RUN echo boom-marker && false\nWORKDIR /tmp"
    dockerfile.write_text(dockerfile.read_text().replace("WORKDIR /tmp", failing))
    with pytest.raises(ImageBuildError) as caught:
        base_image.ensure_base_image(docker_client)
    assert "boom-marker" in caught.value.message
    assert caught.value.image == base_image.base_tag()
    with pytest.raises(docker.errors.ImageNotFound):
        docker_client.images.get(base_image.base_tag())
