"""Pieces of building at scale that need no engine: selection, the report file, smoke-test
planning from the spec, derived variants."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from awm.builder.build.batch import default_jobs, excluded_results, select_bundles
from awm.builder.build.render import render
from awm.builder.build.report import BuildReport, BuildResult, ReportWriter, load_report
from awm.builder.build.smoke import _plan_calls, example_arguments, status_code_of
from awm.builder.catalog.loader import load_catalog
from awm.builder.catalog.models import ApiSpec
from awm.builder.catalog.variants import derive_variants
from awm.core.errors import ScenarioNotFound
from tests.builder.conftest import Dataset
from tests.helpers import EXAMPLES

CATALOG = load_catalog(EXAMPLES)


def test_select_by_id_name_glob_exclude_and_limit() -> None:
    def ids(**kw: Any) -> list[str]:
        return [b.id for b in select_bundles(CATALOG, **kw)[0]]

    assert ids() == sorted(CATALOG.bundles)
    assert ids(only=["PantryPal Recipe Planner"]) == ["pantrypal_recipe_planner"]
    assert ids(only=["*_re*"]) == ["pantrypal_recipe_planner", "trailhead_campground_reservations"]
    assert ids(exclude=["acme_*"], limit=1) == ["pantrypal_recipe_planner"]
    with pytest.raises(ScenarioNotFound, match="none of the 3 scenario"):  # a build of nothing fails
        ids(limit=0)
    with pytest.raises(ScenarioNotFound, match="'no_such' is not in"):
        select_bundles(CATALOG, only=["No Such"])


def test_excluded_scenarios_become_failed_results(dataset: Dataset) -> None:
    dataset.files["gen_envs.jsonl"][1]["full_code"] = "def broken(:\n"
    cat = load_catalog(dataset.write())
    bundles, excluded = select_bundles(cat)
    assert [b.id for b in bundles] == ["quick_notes_personal"]
    assert list(excluded) == ["team_notes"]
    (result,) = excluded_results(excluded)
    assert (result.status, result.stage) == ("failed", "catalog")
    assert result.error is not None
    assert result.error.startswith("scenario 'team_notes' was excluded from the dataset: ")
    assert "environment module does not parse" in result.error


def test_default_jobs_is_bounded() -> None:
    assert 2 <= default_jobs() <= 8


def test_report_is_whole_json_after_every_result_and_detects_an_interrupted_run(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "report.json"
    report = BuildReport(dataset="/data", started_at="t0", selected=3)
    writer = ReportWriter(path, report, min_interval_s=0.0)
    assert json.loads(path.read_text())["counts"]["pending"] == 3  # written before any result
    writer.add(BuildResult(scenario="b", status="built", tools=["x"]))
    on_disk = load_report(path)
    assert on_disk is not None
    assert [r.scenario for r in on_disk.results] == ["b"]
    assert not on_disk.complete
    writer.add(BuildResult(scenario="a", status="failed", stage="check", error="boom"))
    assert list(tmp_path.joinpath("sub").iterdir()) == [path]  # no temporary file left
    # A new run on the same dataset sees an incomplete report: it resumes.
    again = ReportWriter(path, BuildReport(dataset="/data", started_at="t1", selected=3))
    assert again.report.resumed
    assert again.report.previous == {
        "started_at": "t0", "built": 1, "cached": 0, "failed": 1, "quarantined": 0, "pending": 1,
    }
    again.add(BuildResult(scenario="c", status="cached"))
    again.add(BuildResult(scenario="a", status="built"))
    final = again.finish()
    assert [r.scenario for r in final.results] == ["a", "c"]
    assert final.complete
    data = json.loads(path.read_text())
    assert data["counts"] == {"built": 1, "cached": 1, "failed": 0, "quarantined": 0, "pending": 1}
    assert data["complete"] is True
    assert data["format"] == "awm.build-report/1"
    # A complete report, or one of another dataset, is not resumed.
    assert not ReportWriter(path, BuildReport(dataset="/data", started_at="t2")).report.resumed
    path.write_text("{not json")
    assert load_report(path) is None
    assert not ReportWriter(path, BuildReport(dataset="/data", started_at="t3")).report.resumed


def test_status_code_of_tool_error_text() -> None:
    assert status_code_of('Error calling get_x. Status code: 500. Response: {"detail": "boom"}') == 500
    assert status_code_of("Error calling get_x. Status code: 404. Response: nope") == 404
    assert status_code_of("tool call GET /slow timed out after 1s") is None


def test_smoke_plan_uses_spec_examples_and_skips_what_it_cannot_call() -> None:
    bundle = CATALOG.bundles["pantrypal_recipe_planner"]
    examples = example_arguments(bundle.spec)
    assert examples["list_meal_plan"] == {"start_date": "2025-03-15", "end_date": "2025-03-15"}
    assert examples["get_recipe"] == {"recipe_id": 8}
    served: dict[str, dict[str, Any]] = {
        "list_recipes": {"properties": {"search": {}}, "required": []},
        "get_recipe": {"properties": {"recipe_id": {}}, "required": ["recipe_id"]},
        "list_pantry_items": {"properties": {"limit": {}}},
        "add_meal_plan_entry": {"properties": {"recipe_id": {}}, "required": ["recipe_id"]},
    }
    calls, skipped = _plan_calls(bundle, served)
    assert calls == [("list_recipes", {"search": "Shakshuka"}), ("get_recipe", {"recipe_id": 8}),
                     ("list_pantry_items", {})]  # GET routes only; not served ones are not called
    assert skipped == []
    no_spec = bundle.model_copy(update={"spec": None})
    calls, skipped = _plan_calls(no_spec, served)
    assert [c[0] for c in calls] == ["list_recipes", "list_pantry_items"]
    assert [(s.tool, s.detail) for s in skipped] == [
        ("get_recipe", "required argument(s) recipe_id: the dataset has no spec")
    ]
    assert example_arguments(ApiSpec()) == {}
    assert example_arguments(None) == {}


def test_variants_are_distinct_scenarios_that_differ_in_name_rows_and_tasks(tmp_path: Path) -> None:
    ids = derive_variants(EXAMPLES, tmp_path, 5, prefix="Unit Var")
    assert ids[0] == "unit_var_0000_acme_helpdesk_support_tickets"
    assert len(set(ids)) == 5
    cat = load_catalog(tmp_path)
    assert sorted(cat.bundles) == sorted(ids)
    assert not cat.excluded
    a, b = cat.bundles[ids[0]], cat.bundles[ids[3]]  # both derived from the helpdesk
    assert a.tasks[0].startswith("[v0000] ")
    assert b.tasks[0].startswith("[v0003] ")
    assert a.env_code == b.env_code
    assert a.tools == b.tools
    assert a.sample is not None
    assert b.sample is not None
    assert a.sample.tables[0].insert_statements[0] != b.sample.tables[0].insert_statements[0]
    digests = {render(bundle, "awm/base:x").digest for bundle in cat.bundles.values()}
    assert len(digests) == 5
    assert all(render(bundle, "awm/base:x").seed_stats.failed == [] for bundle in cat.bundles.values())
