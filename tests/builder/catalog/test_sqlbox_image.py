"""The seed sandbox seen from a built image: `awm build` of crafted scenarios, real engine.

A planted host secret that the seed SQL tries to attach and copy is not in the image's
`seed.db`; a seed over the size limit fails the build with the setting to raise it.
"""

from __future__ import annotations

import io
import json
import os
import sqlite3
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest

from tests.builder.build.conftest import remove_scenario_images
from tests.builder.catalog.test_sqlbox import SECRET
from tests.builder.conftest import Dataset

pytestmark = pytest.mark.docker

PREFIX = "sqlbox_"
SEED_IN_IMAGE = "/opt/awm/scenario/seed.db"


@pytest.fixture
def crafted(tmp_path: Path, docker_client: docker.DockerClient) -> Iterator[Dataset]:
    """One scenario named with this file's prefix; its images are removed afterwards."""
    remove_scenario_images(docker_client, PREFIX)
    ds = Dataset(tmp_path / "dataset")
    ds.add_scenario("Sqlbox Notes", f"{PREFIX}notes")
    yield ds
    remove_scenario_images(docker_client, PREFIX)


def awm_build(root: Path, report: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "awm", "build", str(root), "--no-smoke", "--report", str(report)],
        env={**os.environ, **env}, capture_output=True, text=True, timeout=900, check=False,
    )


def seed_of(client: docker.DockerClient, image: str, dest: Path) -> Path:
    """Copy the image's seed.db out through a created (never started) container."""
    container = client.containers.create(image)
    try:
        chunks, _ = container.get_archive(SEED_IN_IMAGE)
        with tarfile.open(fileobj=io.BytesIO(b"".join(chunks))) as tar:
            member = tar.extractfile("seed.db")
            assert member is not None
            dest.write_bytes(member.read())
    finally:
        container.remove(force=True)
    return dest


def test_a_planted_host_secret_never_reaches_the_image(
    crafted: Dataset, tmp_path: Path, docker_client: docker.DockerClient
) -> None:
    secret_db = tmp_path / "host-secrets.db"
    conn = sqlite3.connect(secret_db)
    conn.execute("CREATE TABLE secrets (value TEXT)")
    conn.execute("INSERT INTO secrets VALUES (?)", (SECRET,))
    conn.commit()
    conn.close()
    tables = crafted.files["gen_db.jsonl"][0]["db_schema"]["tables"]
    tables[1]["examples"] = [
        f"ATTACH DATABASE '{secret_db}' AS host",
        "INSERT INTO notes (user_id, body) SELECT 1, value FROM host.secrets",
        "CREATE TABLE stolen AS SELECT * FROM host.secrets",
    ]
    done = awm_build(crafted.write(), tmp_path / "report.json")
    assert done.returncode == 0, done.stderr
    (result,) = json.loads((tmp_path / "report.json").read_text())["results"]
    assert result["status"] == "built"
    assert [f["error"].split(":")[0] for f in result["failed_sql"]] == ["refused", "no such table", "no such table"]

    seed = seed_of(docker_client, f"awm/{PREFIX}notes:latest", tmp_path / "seed-from-image.db")
    assert SECRET.encode() not in seed.read_bytes()
    rows = sqlite3.connect(seed).execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()
    assert sorted(r[0] for r in rows) == ["notes", "users"]


def test_a_seed_over_the_size_limit_fails_the_build(crafted: Dataset, tmp_path: Path) -> None:
    inserts = crafted.files["gen_sample.jsonl"][0]["sample_data"]["tables"][1]["insert_statements"]
    inserts += ["INSERT INTO notes (user_id, body) VALUES (1, hex(randomblob(32768)))"] * 48  # 3 MiB
    done = awm_build(crafted.write(), tmp_path / "report.json", AWM_SEED_MAX_MB="1")
    assert done.returncode != 0
    (result,) = json.loads((tmp_path / "report.json").read_text())["results"]
    assert (result["status"], result["stage"]) == ("failed", "seed")
    assert result["error"].startswith(
        f"scenario '{PREFIX}notes': the seed database is over its size limit of 1 MiB at insert of table 'notes'"
    )
    assert result["error"].endswith("raise the limit with AWM_SEED_MAX_MB=<MiB>")
    assert " ".join(result["error"].split()) in " ".join(done.stderr.split())  # said on the terminal too
