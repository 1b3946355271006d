"""Shipping images: `awm images export` (a `docker save` tarball that loads and serves MCP) and
`awm images push`/`pull` against a real registry (Debian's docker-registry) on 127.0.0.1."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, cast

import docker
import httpx
import pytest
from typer.testing import CliRunner

from awm.builder.build.batch import build_images
from awm.builder.catalog.loader import load_catalog
from awm.cli import app
from awm.runtime.docker_backend import DockerBackend
from tests.builder.build.conftest import make_variants, remove_scenario_images
from tests.conftest import IN_CI
from tests.helpers import free_port

pytestmark = pytest.mark.docker
runner = CliRunner()
PREFIX = "t4_ship_"


@pytest.fixture(scope="module")
def ship_images(docker_client: docker.DockerClient, tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[str]]:
    """Two scenario images made by the project's builder; removed (every tag) afterwards."""
    remove_scenario_images(docker_client, PREFIX)
    root = tmp_path_factory.mktemp("ship")
    ids = make_variants(root, 2, "t4 ship")
    results = build_images(load_catalog(root).bundles.values(), client=docker_client)
    assert [r.status for r in results] == ["built", "built"], [r.error for r in results]
    yield ids
    remove_scenario_images(docker_client, PREFIX)


def _base_layer_count(client: docker.DockerClient, scenario: str) -> int:
    base = client.images.get(f"awm/{scenario}:latest").labels["org.opencontainers.image.base.name"]
    return len(client.images.get(base).attrs["RootFS"]["Layers"])


def _serves_mcp(client: docker.DockerClient, image: str) -> list[str]:
    with DockerBackend(client=client).start(image) as env:
        return sorted(t.name for t in env.client.list_tools())


def test_exported_tarball_loads_after_removal_and_serves_mcp(
    docker_client: docker.DockerClient, ship_images: list[str], tmp_path: Path
) -> None:
    tools_before = {sid: _serves_mcp(docker_client, f"awm/{sid}:latest") for sid in ship_images}
    ids_before = {sid: docker_client.images.get(f"awm/{sid}:latest").id for sid in ship_images}
    out = tmp_path / "out"
    out.mkdir()
    result = runner.invoke(app, ["images", "export", f"{PREFIX}*", "--output", str(out)])
    assert result.exit_code == 0, result.output
    tarball = out / "awm-images.tar"
    assert f"wrote {tarball}" in result.output

    with tarfile.open(tarball) as tar:
        manifest = json.load(cast(IO[bytes], tar.extractfile("manifest.json")))  # a file member: never None
        members = set(tar.getnames())
    tags = sorted(t for entry in manifest for t in entry["RepoTags"])
    assert tags == sorted(f"awm/{sid}:{t}" for sid in ship_images
                          for t in ("latest", docker_client.images.get(f"awm/{sid}:latest").labels["awm.digest"]))
    # self-contained: every layer of both images, the base's included, is in the file, and the
    # base layers the two images share are stored once
    layers = [layer for entry in manifest for layer in entry["Layers"]]
    assert set(layers) <= members
    base_layers = _base_layer_count(docker_client, ship_images[0])
    assert len(layers) == 2 * (base_layers + 1)
    assert len(set(layers)) == base_layers + 2

    assert remove_scenario_images(docker_client, PREFIX) == len(ship_images)
    for sid in ship_images:
        with pytest.raises(docker.errors.ImageNotFound):
            docker_client.images.get(f"awm/{sid}:latest")
    with tarball.open("rb") as handle:
        loaded = docker_client.images.load(handle)
    assert {i.id for i in loaded} == set(ids_before.values())
    for sid in ship_images:
        assert _serves_mcp(docker_client, f"awm/{sid}:latest") == tools_before[sid]


# ---- a real registry ------------------------------------------------------------------------


def _registry_binary() -> str | None:
    found = shutil.which("docker-registry")
    if found is None and shutil.which("apt-get") and os.geteuid() == 0:
        # .ci/docker-up installs it; a developer's machine may not have it yet.
        subprocess.run(["apt-get", "install", "-y", "-qq", "docker-registry"], capture_output=True, timeout=600,
                       env={"DEBIAN_FRONTEND": "noninteractive", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"})
        found = shutil.which("docker-registry")
    return found


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`docker-registry serve` on 127.0.0.1:<free port> with a temporary storage folder."""
    binary = _registry_binary()
    if binary is None:
        message = "docker-registry is not installed (apt-get install docker-registry; .ci/docker-up does it)"
        if IN_CI:
            pytest.fail(f"CI=true: {message}")
        pytest.skip(message)
    root = tmp_path_factory.mktemp("registry")
    port = free_port()
    config = root / "config.yml"
    config.write_text(
        "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n"
        f"    rootdirectory: {root / 'storage'}\n  delete:\n    enabled: true\n"
        f"http:\n  addr: 127.0.0.1:{port}\n"
    )
    log = (root / "registry.log").open("wb")
    proc = subprocess.Popen([binary, "serve", str(config)], stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/v2/", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"docker-registry did not start: {(root / 'registry.log').read_text()[-2000:]}")
            time.sleep(0.1)
        yield f"127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        log.close()


def test_push_shares_the_base_and_pull_restores_a_runnable_image(
    docker_client: docker.DockerClient, ship_images: list[str], registry: str
) -> None:
    first, second = ship_images
    digests = {sid: docker_client.images.get(f"awm/{sid}:latest").labels["awm.digest"] for sid in ship_images}
    result = runner.invoke(app, ["images", "push", f"{PREFIX}*", "--registry", registry])
    assert result.exit_code == 0, result.output
    assert "pushed 4 tag(s)" in result.output
    lines = {line.split()[1]: line for line in result.output.splitlines() if line.startswith("ok ")}
    # The first image uploads the base and its own layer; the second only its own layer.
    base_layers = _base_layer_count(docker_client, first)
    assert f"({base_layers + 1} layer(s) pushed, 0 already there)" in lines[f"{registry}/awm/{first}:{digests[first]}"]
    assert f"(1 layer(s) pushed, {base_layers} already there)" in lines[f"{registry}/awm/{second}:{digests[second]}"]
    assert "(0 layer(s) pushed" in lines[f"{registry}/awm/{second}:latest"]

    catalog = httpx.get(f"http://{registry}/v2/_catalog").json()["repositories"]
    assert {f"awm/{first}", f"awm/{second}"} <= set(catalog)
    tags = httpx.get(f"http://{registry}/v2/awm/{second}/tags/list").json()["tags"]
    assert sorted(tags) == sorted(["latest", digests[second]])
    # local registry tags are not left behind
    assert not [t for t in docker_client.images.get(f"awm/{second}:latest").tags if t.startswith(registry)]

    image_id = docker_client.images.get(f"awm/{second}:latest").id
    assert remove_scenario_images(docker_client, second) == 1
    with pytest.raises(docker.errors.ImageNotFound):
        docker_client.images.get(f"awm/{second}:latest")
    pulled = runner.invoke(app, ["images", "pull", second, "--registry", registry])
    assert pulled.exit_code == 0, pulled.output
    image = docker_client.images.get(f"awm/{second}:latest")
    assert image.id == image_id
    assert f"awm/{second}:{digests[second]}" in image.tags
    assert "list_recipes" in _serves_mcp(docker_client, f"awm/{second}:latest")
