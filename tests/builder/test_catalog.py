from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

import pytest

from awm.builder.catalog.loader import load_catalog
from awm.builder.catalog.models import Severity
from awm.core.errors import DatasetError, ScenarioNotFound
from tests.builder.conftest import Dataset


def messages(problems: Iterable[object]) -> list[str]:
    return [str(p) for p in problems]


def test_healthy_dataset_loads_both_scenarios(dataset: Dataset) -> None:
    cat = load_catalog(dataset.write())
    assert sorted(cat.bundles) == ["quick_notes_personal", "team_notes"]
    assert cat.excluded == {}
    b = cat.get("Quick Notes (Personal)")
    assert b.name == "Quick Notes (Personal)"
    assert [t.name for t in b.tools] == ["list_notes", "create_note"]
    assert [(t.method, t.path) for t in b.tools] == [("GET", "/notes"), ("POST", "/notes")]
    assert sorted(b.verifiers["code"]) == [0, 1]
    assert b.problems == []


def test_display_and_normalised_names_join(dataset: Dataset) -> None:
    # tasks and verifiers name the scenario by display name, db/sample/envs by id
    records = dataset.files
    assert records["gen_tasks.jsonl"][0]["scenario"] == "Quick Notes (Personal)"
    assert records["gen_envs.jsonl"][0]["scenario"] == "quick_notes_personal"
    # and a file may even use a differently-spelled display name of the same id
    records["gen_sample.jsonl"][0]["scenario"] = "QUICK notes -- personal"
    cat = load_catalog(dataset.write())
    bundle = cat.bundles["quick_notes_personal"]
    assert bundle.sample is not None
    assert bundle.sample.tables[0].table_name == "users"
    assert len(bundle.tasks) == 2
    assert bundle.env_code


def test_unknown_fields_are_kept(dataset: Dataset) -> None:
    cat = load_catalog(dataset.write())
    record = cat.bundles["quick_notes_personal"].scenario_record
    assert record is not None
    assert record.model_extra == {"categories": ["x"]}


def test_malformed_json_line_names_file_and_line(dataset: Dataset) -> None:
    dataset.files["gen_tasks.jsonl"].insert(1, '{"scenario": "Team Notes", "tasks": [oops')
    cat = load_catalog(dataset.write())
    bad = [p for p in cat.all_problems() if "malformed JSON" in p.message]
    assert len(bad) == 1
    assert bad[0].file == "gen_tasks.jsonl"
    assert bad[0].line == 2
    assert bad[0].scenario == "team_notes"  # attributed from the broken text
    assert "gen_tasks.jsonl:2: malformed JSON line skipped" in str(bad[0])
    # the well-formed line further down still loads
    assert "team_notes" in cat.bundles


def test_missing_file_is_reported_and_its_scenarios_excluded(dataset: Dataset) -> None:
    root = dataset.write()
    (root / "gen_envs.jsonl").unlink()
    cat = load_catalog(root)
    assert messages(cat.problems) == ["warning: gen_envs.jsonl: missing file gen_envs.jsonl"]
    assert cat.bundles == {}
    assert sorted(cat.excluded) == ["quick_notes_personal", "team_notes"]
    reasons = messages(cat.excluded["team_notes"])
    assert "fatal: [team_notes] gen_envs.jsonl: no environment module" in reasons


def test_scenario_without_environment_module_is_excluded_others_load(dataset: Dataset) -> None:
    dataset.files["gen_envs.jsonl"] = [
        r for r in dataset.files["gen_envs.jsonl"] if r["scenario"] != "team_notes"
    ]
    cat = load_catalog(dataset.write())
    assert list(cat.bundles) == ["quick_notes_personal"]
    assert [p.message for p in cat.excluded["team_notes"] if p.severity is Severity.FATAL] == [
        "no environment module"
    ]
    with pytest.raises(ScenarioNotFound, match="'team_notes' was excluded: no environment module"):
        cat.get("Team Notes")


def test_scenario_without_tasks_or_schema_is_excluded(dataset: Dataset) -> None:
    dataset.files["gen_tasks.jsonl"][1]["tasks"] = []
    dataset.files["gen_db.jsonl"][1]["db_schema"]["tables"] = []
    cat = load_catalog(dataset.write())
    fatal = [p.message for p in cat.excluded["team_notes"] if p.severity is Severity.FATAL]
    assert fatal == ["no tasks", "no database schema"]


def test_module_that_does_not_parse_is_fatal(dataset: Dataset) -> None:
    dataset.files["gen_envs.jsonl"][1]["full_code"] = "def broken(:\n    pass\n"
    cat = load_catalog(dataset.write())
    (p,) = [p for p in cat.excluded["team_notes"] if p.severity is Severity.FATAL]
    assert p.message.startswith("environment module does not parse: invalid syntax")
    assert p.file == "gen_envs.jsonl"
    assert p.line == 2


def test_verifier_for_nonexistent_task(dataset: Dataset) -> None:
    extra = dict(dataset.files["gen_verifier.pure_code.jsonl"][0], task_idx=7)
    dataset.files["gen_verifier.pure_code.jsonl"].append(extra)
    cat = load_catalog(dataset.write())
    bundle = cat.bundles["quick_notes_personal"]
    assert sorted(bundle.verifiers["code"]) == [0, 1]
    assert messages(bundle.problems) == [
        (
            "warning: [quick_notes_personal] gen_verifier.pure_code.jsonl:5: code verifier for "
            "task 7 ignored: the scenario has 2 tasks (0..1)"
        )
    ]


def test_duplicate_verifier_rows_first_wins(dataset: Dataset) -> None:
    rows = dataset.files["gen_verifier.pure_code.jsonl"]
    dup = json.loads(json.dumps(rows[1]))
    dup["verification"]["code"] = dup["verification"]["code"].replace("n > 2", "n > 99")
    rows.append(dup)
    cat = load_catalog(dataset.write())
    bundle = cat.bundles["quick_notes_personal"]
    kept = bundle.verifier(1)
    assert kept is not None
    assert "n > 2" in kept.code
    assert kept.source_line == 2
    assert messages(bundle.problems) == [
        (
            "warning: [quick_notes_personal] gen_verifier.pure_code.jsonl:5: duplicate code "
            "verifier row for task 1 ignored (gen_verifier.pure_code.jsonl line 2 is used)"
        )
    ]


def test_task_without_verifier(dataset: Dataset) -> None:
    dataset.files["gen_verifier.pure_code.jsonl"].pop(0)
    cat = load_catalog(dataset.write())
    assert "tasks without a verifier: 0" in messages(cat.bundles["quick_notes_personal"].problems)[0]


def test_sql_flavour_is_told_apart_by_its_function(dataset: Dataset) -> None:
    sql_code = "def verify_task(initial_db_path, final_db_path):\n    return {'n': 1}\n"
    dataset.files["gen_verifier.jsonl"] = [
        {"scenario": "team_notes", "task_idx": 0, "task": "t", "verification": {"code": sql_code}}
    ]
    cat = load_catalog(dataset.write())
    bundle = cat.bundles["team_notes"]
    sql = bundle.verifier(0, "sql")
    assert sql is not None
    assert sql.function == "verify_task"
    assert bundle.verifier(0, "code") is not None


def test_invalid_record_is_reported_with_its_field(dataset: Dataset) -> None:
    dataset.files["gen_db.jsonl"][0]["db_schema"] = {"tables": "nope"}
    cat = load_catalog(dataset.write())
    (bad,) = [p for p in cat.all_problems() if p.file == "gen_db.jsonl" and p.line == 1]
    assert bad.message.startswith("invalid DbRecord record skipped: db_schema.tables")
    assert "no database schema" in messages(cat.excluded["quick_notes_personal"])[-1]


def test_duplicate_scenario_row_is_reported(dataset: Dataset) -> None:
    dataset.files["gen_envs.jsonl"].append(dict(dataset.files["gen_envs.jsonl"][0], full_code="x = 1"))
    cat = load_catalog(dataset.write())
    bundle = cat.bundles["quick_notes_personal"]
    assert "FastAPI" in bundle.env_code
    assert "gen_envs.jsonl:3: duplicate row ignored (line 1 is used)" in messages(bundle.problems)[0]


def test_folder_errors(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="does not exist"):
        load_catalog(tmp_path / "nope")
    with pytest.raises(DatasetError, match="holds none of the AWM dataset files"):
        load_catalog(tmp_path)


def test_unknown_scenario(dataset: Dataset) -> None:
    cat = load_catalog(dataset.write())
    with pytest.raises(ScenarioNotFound, match=r"'nope' is not in .*; `awm catalog"):
        cat.get("nope")


def test_names_that_cannot_be_ids_are_refused_by_name_and_never_merge(dataset: Dataset) -> None:
    long_name = "Shop " + "x" * 298  # 303 characters
    for name in ("日本語", "!!!", long_name):
        dataset.add_scenario(name, name)  # every file names it by its display name
    cat = load_catalog(dataset.write())

    # the healthy scenarios load; nothing was made of the bad names
    assert sorted(cat.bundles) == ["quick_notes_personal", "team_notes"]
    assert "" not in cat.bundles
    assert "" not in cat.excluded
    empty = [p for p in cat.problems if "its id would be empty" in p.message]
    for name in ("日本語", "!!!"):  # each reported on its own, in every file, with its line
        mine = [p for p in empty if p.message.startswith(f"scenario name {name!r} ")]
        assert {p.file for p in mine} >= {"gen_scenario.jsonl", "gen_envs.jsonl", "gen_tasks.jsonl"}
        assert all(p.severity is Severity.FATAL and p.line for p in mine)
    assert len(empty) == len({(p.message, p.file, p.line) for p in empty})

    long_id = "shop_" + "x" * 298
    assert list(cat.excluded) == [long_id]
    assert long_id not in cat.bundles
    (first, *_rest) = cat.excluded[long_id]
    assert first.severity is Severity.FATAL
    assert first.message == (f"scenario name {long_name[:60]!r}... gives an id of 303 characters, more than 100 "
                             "(the image name awm/<id> is made from it); shorten it")
    with pytest.raises(ScenarioNotFound, match="more than 100"):
        cat.get(long_name)
