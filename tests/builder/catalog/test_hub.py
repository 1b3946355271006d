"""`hf://<org>/<name>[@revision]` datasets from a prepared Hugging Face cache, offline (no Hub here).

The cache is laid out as huggingface_hub writes it: `datasets--<org>--<name>/snapshots/<rev>/`
holding the files, and `refs/main` naming the revision. With HF_HUB_OFFLINE=1 nothing is asked
of the Hub.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import docker
import pytest
from typer.testing import CliRunner

from awm.builder.catalog.hub import parse_reference, resolve_dataset
from awm.builder.catalog.loader import load_catalog
from awm.cli import app
from awm.core.errors import DatasetError
from awm.core.naming import normalise

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"
REVISION = "0123456789abcdef0123456789abcdef01234567"
runner = CliRunner()


def prepare_cache(hub: Path, repo: str, files: dict[str, str]) -> Path:
    org, name = repo.split("/")
    root = hub / f"datasets--{org}--{name}"
    snapshot = root / "snapshots" / REVISION
    snapshot.mkdir(parents=True)
    for file, text in files.items():
        (snapshot / file).write_text(text)
    (root / "refs").mkdir()
    (root / "refs" / "main").write_text(REVISION)
    return snapshot


def example_files() -> dict[str, str]:
    return {p.name: p.read_text() for p in EXAMPLES.glob("gen_*.jsonl")}


@pytest.fixture
def offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    hub = tmp_path / "hf" / "hub"
    monkeypatch.setenv("HF_HUB_CACHE", str(hub))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("HF_TOKEN", raising=False)
    return hub


def test_references() -> None:
    ref = parse_reference("hf://Snowflake/AgentWorldModel-1K@v1/data")
    assert (ref.repo_id, ref.revision, ref.folder) == ("Snowflake/AgentWorldModel-1K", "v1", "data")
    assert parse_reference(Path("hf://Snowflake/AgentWorldModel-1K")).repo_id == "Snowflake/AgentWorldModel-1K"
    with pytest.raises(DatasetError, match="a Hub dataset is named hf://<org>/<name>"):
        parse_reference("hf://just-a-name")
    assert resolve_dataset("examples") == Path("examples")


def test_catalog_of_a_hub_dataset_offline(offline: Path) -> None:
    snapshot = prepare_cache(offline, "awm-test/Example-Envs", example_files())
    assert resolve_dataset("hf://awm-test/Example-Envs") == snapshot
    assert resolve_dataset(f"hf://awm-test/Example-Envs@{REVISION}") == snapshot
    result = runner.invoke(app, ["catalog", "hf://awm-test/Example-Envs", "--json", "--no-seed"],
                           env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    ids = sorted(s["id"] for s in json.loads(result.output)["scenarios"])
    assert ids == sorted(load_catalog(EXAMPLES).bundles)


def test_an_uncached_dataset_offline_is_a_clear_error(offline: Path) -> None:
    result = runner.invoke(app, ["catalog", "hf://awm-test/Not-Cached"], env={"COLUMNS": "200"})
    assert result.exit_code == DatasetError.exit_code
    text = " ".join(result.output.split())
    assert "hf://awm-test/Not-Cached: HF_HUB_OFFLINE is set and the cache holds no snapshot of it" in text


def renamed(name: str) -> dict[str, str]:
    """The PantryPal example alone, under another name (its image is this test's own)."""
    out = {}
    for path in EXAMPLES.glob("gen_*.jsonl"):
        rows = []
        for line in path.read_text().splitlines():
            row: dict[str, Any] = json.loads(line)
            key = "name" if "name" in row and "scenario" not in row else "scenario"
            if normalise(row[key]) == "pantrypal_recipe_planner":
                rows.append(json.dumps({**row, key: name}))
        out[path.name] = "".join(r + "\n" for r in rows)
    return out


@pytest.mark.docker
def test_build_from_a_hub_dataset(offline: Path, tmp_path: Path, docker_client: docker.DockerClient,
                                  own_images: Callable[[str], str]) -> None:
    sid = own_images("hub_pantry_test")
    prepare_cache(offline, "awm-test/Hub-Pantry", renamed("Hub Pantry Test"))
    result = runner.invoke(app, ["build", "hf://awm-test/Hub-Pantry", "--no-smoke", "--report",
                                 str(tmp_path / "report.json"), "--json"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "report.json").read_text())
    (built,) = report["results"]
    assert (built["scenario"], built["status"]) == (sid, "built")
    assert docker_client.images.list(name=f"awm/{sid}")
