"""Parallel builds are cached by digest: a rerun builds nothing, one changed row rebuilds one."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import docker
import pytest

from awm.builder.build.batch import BuildOptions, build_images
from awm.builder.build.report import BuildReport, ReportWriter
from awm.builder.catalog.loader import load_catalog
from tests.builder.build.conftest import edit_records, make_variants

pytestmark = pytest.mark.docker


def _image_ids(client: docker.DockerClient, prefix: str) -> dict[str, str]:
    """scenario -> id of the image its :latest tag names."""
    out = {}
    for item in client.api.images(filters={"label": "awm.scenario"}):
        sid = (item.get("Labels") or {}).get("awm.scenario", "")
        if sid.startswith(prefix) and f"awm/{sid}:latest" in (item.get("RepoTags") or []):
            out[sid] = item["Id"]
    return out


def test_rerun_builds_nothing_and_a_changed_row_rebuilds_one_scenario(
    docker_client: docker.DockerClient, tmp_path: Path, own_images: Callable[[str], str]
) -> None:
    prefix = own_images("t4_cache_")
    root = tmp_path / "dataset"
    ids = make_variants(root, 5, "t4 cache")

    first = build_images(load_catalog(root).bundles.values(), BuildOptions(jobs=3), client=docker_client)
    assert [(r.scenario, r.status, r.error) for r in first] == [(sid, "built", None) for sid in ids]
    assert all(r.tools and r.layer_bytes and r.image_id for r in first)
    before = _image_ids(docker_client, prefix)
    assert before == {r.scenario: r.image_id for r in first}

    report_path = tmp_path / "report.json"
    writer = ReportWriter(report_path, BuildReport(dataset=str(root), started_at="now", selected=len(ids)))
    bundles = load_catalog(root).bundles.values()
    second = build_images(bundles, BuildOptions(jobs=3), client=docker_client, report=writer)
    writer.finish()
    assert [r.status for r in second] == ["cached"] * len(ids)
    assert _image_ids(docker_client, prefix) == before  # not one image was made again
    report = json.loads(report_path.read_text())
    assert report["complete"] is True
    assert report["counts"] == {"built": 0, "cached": 5, "failed": 0, "quarantined": 0, "pending": 0}
    assert report["images_per_s"] is None  # nothing was built

    changed = ids[1]

    def add_suffix(rec: dict[str, Any]) -> None:  # one row value of one scenario
        stmts = rec["sample_data"]["tables"][0]["insert_statements"]
        stmts[-1] = stmts[-1].replace("'", "'changed ", 1)

    edit_records(root, "gen_sample.jsonl", changed, add_suffix)
    third = build_images(load_catalog(root).bundles.values(), BuildOptions(jobs=3), client=docker_client)
    assert {r.scenario: r.status for r in third} == {sid: "built" if sid == changed else "cached" for sid in ids}
    after = _image_ids(docker_client, prefix)
    assert {sid for sid in ids if after[sid] != before[sid]} == {changed}
    old = next(r for r in first if r.scenario == changed)
    new = next(r for r in third if r.scenario == changed)
    assert new.tag != old.tag
    assert new.seed_rows == old.seed_rows
    # the earlier digest is still there (an "old" image for `awm images prune`)
    assert docker_client.images.get(cast(str, old.tag)).id == old.image_id
