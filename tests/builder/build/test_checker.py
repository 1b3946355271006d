"""The batch checker: one container checks every new scenario of a build, with the same verdicts
as starting each image; when it dies, the build checks the images themselves."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import docker
import pytest

from awm.builder.build.batch import build_bundle, build_images, new_build_run_id
from awm.builder.catalog.loader import load_catalog
from awm.builder.build.checker import BatchChecker, CheckerUnavailable
from awm.core.labels import LABEL_OWNER, Owner
from tests.builder.build.conftest import edit_records, make_variants

pytestmark = pytest.mark.docker

# A module that writes to stdout at import, even a line that looks like the checker's protocol.
NOISY = 'print(\'{"req": "1", "code": 0, "stdout": "{\\\\"tools\\\\": []}"}\', flush=True)\napp = FastAPI('
BLOCKS = "import time\ntime.sleep(3600)\napp = FastAPI("


def _mine(client: docker.DockerClient) -> list[Any]:
    """Containers this test process owns."""
    me = Owner.current()
    return [c for c in client.containers.list(all=True, filters={"label": LABEL_OWNER})
            if Owner.parse(c.labels.get(LABEL_OWNER, "")) == me]


def test_checker_verdicts_match_the_image_check(
    docker_client: docker.DockerClient, tmp_path: Path, own_images: Callable[[str], str]
) -> None:
    own_images("t4_checker_")
    root = tmp_path / "dataset"
    noisy, blocks, healthy = make_variants(root, 3, "t4 checker")
    for sid, edit in ((noisy, NOISY), (blocks, BLOCKS)):
        edit_records(root, "gen_envs.jsonl", sid,
                     lambda rec, e=edit: rec.update(full_code=rec["full_code"].replace("app = FastAPI(", e, 1)))
    bundles = load_catalog(root).bundles
    results = {r.scenario: r for r in build_images(bundles.values(), client=docker_client, jobs=3, check_timeout_s=3)}

    assert results[noisy].status == "built"
    assert sorted(results[noisy].tools) == sorted(t.name for t in bundles[noisy].tools)  # the check, not the print
    assert results[healthy].status == "built" and len(results[healthy].tools) == 12
    assert (results[blocks].status, results[blocks].stage) == ("failed", "check")
    assert results[blocks].error == (
        f"scenario {blocks!r}: environment module did not finish importing within 3s "
        "(does it start a server or block at import time?)"
    )
    assert _mine(docker_client) == []  # the checker container is gone with the build


def test_a_dead_checker_falls_back_to_checking_the_image(
    docker_client: docker.DockerClient, tmp_path: Path, own_images: Callable[[str], str], base_image: str
) -> None:
    own_images("t4_fallback_")
    root = tmp_path / "dataset"
    (sid,) = make_variants(root, 1, "t4 fallback")
    bundle = load_catalog(root).bundles[sid]
    checker = BatchChecker(docker_client, base_image, run_id=new_build_run_id()).start()
    try:
        checker._container.kill()  # as the memory limit would
        deadline = time.monotonic() + 30
        while checker._alive and time.monotonic() < deadline:
            time.sleep(0.05)
        from awm.builder.build.render import render

        with pytest.raises(CheckerUnavailable, match="the checker container exited"):
            checker.check(render(bundle, base_image), 10)
        result = build_bundle(docker_client, bundle, base_image, checker=checker)
        assert (result.status, result.error) == ("built", None)
        assert len(result.tools) == 12
    finally:
        checker.close()
    assert _mine(docker_client) == []
