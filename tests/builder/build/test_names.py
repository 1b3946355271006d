"""Names at build time: labels keep a display name exactly (no `$VAR` expansion), a name too long
for an image fails in the catalog and leaves no image, and a build of nothing exits non-zero."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import cast

import docker
import pytest
from typer.testing import CliRunner

from awm.builder.build.batch import BuildOptions, build_images
from awm.builder.catalog.loader import load_catalog
from awm.cli import app
from awm.core.naming import normalise
from tests.builder.conftest import Dataset

runner = CliRunner()
TRICKY = "T4 Label $HOME ${PATH} \"q\" back\\slash <b>&'x' \u00e9"


def _dataset(root: Path, *names: str) -> Path:
    ds = Dataset(root)
    for name in names:
        ds.add_scenario(name, normalise(name) or name)
    return ds.write()


@pytest.mark.docker
def test_a_display_name_reaches_the_label_unchanged(
    docker_client: docker.DockerClient, tmp_path: Path, own_images: Callable[[str], str]
) -> None:
    own_images("t4_label_")
    bundles = load_catalog(_dataset(tmp_path / "ds", TRICKY)).bundles
    (result,) = build_images(bundles.values(), BuildOptions(smoke=False), client=docker_client)
    assert result.status == "built", result.error
    labels = docker_client.images.get(cast(str, result.tag)).labels
    assert labels["org.opencontainers.image.description"] == TRICKY
    assert labels["awm.scenario"] == "t4_label_home_path_q_back_slash_b_x"


@pytest.mark.docker
def test_a_name_too_long_for_an_image_fails_in_the_catalog_and_leaves_no_image(
    docker_client: docker.DockerClient, tmp_path: Path
) -> None:
    name = "T4 Long " + "y" * 295  # 303 characters
    sid = normalise(name)
    result = runner.invoke(app, ["build", str(_dataset(tmp_path / "ds", name)), "--report",
                                 str(tmp_path / "report.json")], env={"COLUMNS": "400"})
    assert result.exit_code == 1, result.output
    assert "more than 100 (the image name awm/<id> is made from it); shorten it" in result.output
    assert docker_client.api.images(filters={"label": f"awm.scenario={sid}"}) == []


@pytest.mark.parametrize(("names", "extra", "expected"), [
    (["日本語", "!!!"], [], ["has no scenario; first problem:", "so its id would be empty; rename it"]),
    (["T4 Empty"], ["--exclude", "*"], ["nothing to build: none of the 1 scenario(s)"]),
], ids=["no-usable-scenario", "all-excluded"])
def test_a_build_of_nothing_fails(tmp_path: Path, names: list[str], extra: list[str], expected: list[str]) -> None:
    result = runner.invoke(app, ["build", str(_dataset(tmp_path / "ds", *names)), *extra, "--report",
                                 str(tmp_path / "report.json")], env={"COLUMNS": "400"})
    assert result.exit_code != 0
    assert result.output.startswith("error: nothing to build: ")
    assert all(part in result.output for part in expected), result.output
