"""A quarantined image never gets `:latest`: not when a rebuild gives the same image (the engine's
layer cache) with smoke tests off."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import docker
import pytest

from awm.builder.build.batch import BuildOptions, build_images
from awm.builder.catalog.loader import load_catalog
from tests.builder.build.conftest import edit_records, make_variants
from tests.builder.build.test_report import FAILS_AT_STARTUP

pytestmark = pytest.mark.docker


def test_a_rebuild_without_smoke_tests_keeps_the_quarantine(
    docker_client: docker.DockerClient, tmp_path: Path, own_images: Callable[[str], str]
) -> None:
    own_images("t4_quarantine_")
    root = tmp_path / "dataset"
    (sid,) = make_variants(root, 1, "t4 quarantine")
    main_guard = '\n\nif __name__ == "__main__":'
    edit_records(root, "gen_envs.jsonl", sid,
                 lambda rec: rec.update(full_code=rec["full_code"].replace(main_guard, FAILS_AT_STARTUP, 1)))
    bundles = load_catalog(root).bundles

    (first,) = build_images(bundles.values(), BuildOptions(smoke=True, smoke_timeout_s=30), client=docker_client)
    assert first.status == "quarantined", first.error
    for options in (BuildOptions(rebuild=True, smoke=False), BuildOptions(smoke=False)):
        (again,) = build_images(bundles.values(), options, client=docker_client)
        assert again.image_id == first.image_id  # the same image, from the layer cache or the digest
        assert again.status == "quarantined", again
        assert "t4 startup hook failed" in str(again.error)
        tags = docker_client.images.get(str(first.image_id)).tags
        assert f"awm/{sid}:quarantined" in tags
        assert f"awm/{sid}:latest" not in tags
