"""The shared contract: the folder `awm build` writes is the folder the server reads, and the
control plane's answers keep their wire format."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from awm.builder.build.render import render
from awm.builder.catalog.loader import load_catalog
from awm_server.contract import (
    CONTEXT_DIR,
    MANIFEST_FILE,
    SCENARIO_DIR,
    SCENARIO_FILES,
    ResetResult,
    ScenarioManifest,
    VerifyResult,
)
from awm_server.environment import ScenarioFiles, grade_databases
from tests.helpers import EXAMPLES

SID = "pantrypal_recipe_planner"


@pytest.fixture(scope="module")
def scenario_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("ctx")
    ctx = render(load_catalog(EXAMPLES).bundles[SID], "awm/base:test")
    ctx.write(root)
    return root / CONTEXT_DIR


def test_the_folder_render_writes_is_the_one_the_server_reads(scenario_dir: Path) -> None:
    assert sorted(p.name for p in scenario_dir.iterdir()) == sorted(SCENARIO_FILES)
    raw = json.loads((scenario_dir / MANIFEST_FILE).read_text())
    manifest = ScenarioManifest.model_validate(raw)
    assert manifest.model_dump(mode="json") == raw  # nothing lost or added on the way
    files = ScenarioFiles(scenario_dir)
    assert files.manifest == manifest
    assert files.scenario == SID
    assert len(files.tasks) == manifest.task_count
    assert manifest.image_digest
    assert manifest.versions.base_image == "awm/base:test"
    assert "get_recipe" in manifest.tool_names


def test_the_dockerfile_copies_the_folder_where_the_server_looks(scenario_dir: Path) -> None:
    dockerfile = (scenario_dir.parent / "Dockerfile").read_text()
    assert f"COPY {CONTEXT_DIR}/ {SCENARIO_DIR}/\n" in dockerfile


def test_a_manifest_with_a_field_the_server_does_not_know_is_refused(scenario_dir: Path) -> None:
    raw = json.loads((scenario_dir / MANIFEST_FILE).read_text())
    with pytest.raises(ValidationError, match="surprise"):
        ScenarioManifest.model_validate({**raw, "surprise": 1})


def test_verify_result_keeps_its_wire_format(scenario_dir: Path) -> None:
    files = ScenarioFiles(scenario_dir)
    result = grade_databases(files, 0, files.seed)
    body = result.model_dump(mode="json")
    assert set(body) >= {"scenario", "task_idx", "flavour", "result", "reward", "value", "error",
                         "timed_out", "duration_ms"}
    assert (body["scenario"], body["task_idx"], body["flavour"]) == (SID, 0, "code")
    assert (body["result"], body["reward"]) == ("others", 0.0)
    assert VerifyResult.model_validate_json(json.dumps(body)) == result  # what a client parses


def test_answers_from_another_version_still_parse() -> None:
    reset = ResetResult.model_validate({"ok": True, "resets": 3, "duration_ms": 1.5, "new_field": "x"})
    assert reset.model_dump(mode="json") == {"ok": True, "resets": 3, "duration_ms": 1.5}
    with pytest.raises(ValidationError):
        ResetResult.model_validate({"ok": True})  # what a client cannot do without
