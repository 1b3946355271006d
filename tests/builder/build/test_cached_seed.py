"""A cached scenario costs no seed SQL, and its report still tells its seed: counts from the
image's labels, failed statements from the manifest in the image."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import docker
import pytest

from awm.builder.build.batch import BuildOptions, build_images
from awm.builder.catalog import seed as seed_module
from awm.builder.catalog.loader import load_catalog
from awm.core.labels import LABEL_ROLE
from tests.builder.build.conftest import edit_records, make_variants

pytestmark = pytest.mark.docker

SEED_FIELDS = ("tag", "image_id", "scenario_bytes", "seed_tables", "seed_rows", "failed_statements", "failed_sql",
               "warnings")


def test_a_cached_build_runs_no_seed_and_reports_the_same_seed(
    docker_client: docker.DockerClient, tmp_path: Path, own_images: Callable[[str], str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    own_images("t4_seedcache_")
    root = tmp_path / "dataset"
    clean, failing = make_variants(root, 2, "t4 seedcache")

    def bad_insert(rec: dict[str, Any]) -> None:
        rec["sample_data"]["tables"][0]["insert_statements"].append("INSERT INTO no_such_table VALUES (1)")

    edit_records(root, "gen_sample.jsonl", failing, bad_insert)
    first = build_images(load_catalog(root).bundles.values(), BuildOptions(jobs=2), client=docker_client)
    assert [r.status for r in first] == ["built", "built"]
    by_id = {r.scenario: r for r in first}
    assert by_id[clean].failed_statements == 0
    assert [f.sql for f in by_id[failing].failed_sql] == ["INSERT INTO no_such_table VALUES (1)"]

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("seed SQL was run for a cached scenario")

    monkeypatch.setattr(seed_module, "run_seed_sql", refuse)
    second = build_images(load_catalog(root).bundles.values(), BuildOptions(jobs=2), client=docker_client)
    assert [r.status for r in second] == ["cached", "cached"]
    for old, new in zip(first, second, strict=True):
        assert {f: getattr(new, f) for f in SEED_FIELDS} == {f: getattr(old, f) for f in SEED_FIELDS}
        assert new.seed_rows > 0
    # The manifest was read from a container that is gone again.
    left = docker_client.containers.list(all=True, filters={"label": f"{LABEL_ROLE}=build-read"})
    assert [c.id for c in left if c.labels.get("awm.scenario", "").startswith("t4_seedcache_")] == []
