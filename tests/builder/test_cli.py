from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from typer.testing import CliRunner

from awm.cli import app
from awm.core.errors import DatasetError
from tests.builder.conftest import Dataset

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
runner = CliRunner()


def test_catalog_table_of_examples() -> None:
    result = runner.invoke(app, ["catalog", str(EXAMPLES)])
    assert result.exit_code == 0, result.output
    assert "3 loadable, 0 excluded" in result.output
    for sid, rows in [
        ("acme_helpdesk_support_tickets", "161"),
        ("pantrypal_recipe_planner", "200"),
        ("trailhead_campground_reservations", "138"),
    ]:
        line = next(line for line in result.output.splitlines() if sid in line)
        cells = [c.strip() for c in line.strip("│ ").split("│")]
        assert cells[1:] == ["ok", "12", "6", "6/6", cells[5], rows, "0", "0"], line


def test_catalog_json_parses_with_counts() -> None:
    result = runner.invoke(app, ["catalog", str(EXAMPLES), "--json"])
    assert result.exit_code == 0
    data = json.loads(result.output)
    assert (data["loadable"], data["excluded"]) == (3, 0)
    by_id = {s["id"]: s for s in data["scenarios"]}
    helpdesk = by_id["acme_helpdesk_support_tickets"]
    assert helpdesk["name"] == "Acme Helpdesk (Support Tickets)"
    assert (helpdesk["tools"], helpdesk["tasks"], helpdesk["verifiers_code"]) == (12, 6, 6)
    assert (helpdesk["tables"], helpdesk["seed_rows"], helpdesk["failed_statements"]) == (7, 161, 0)


def test_catalog_exits_1_when_nothing_loads(dataset: Dataset) -> None:
    root = dataset.write()
    (root / "gen_tasks.jsonl").unlink()
    result = runner.invoke(app, ["catalog", str(root), "--json"])
    assert result.exit_code == 1
    data = json.loads(result.output)
    assert data["loadable"] == 0
    assert data["excluded"] == 2
    assert "fatal: [team_notes] gen_tasks.jsonl: no tasks" in data["scenarios"][1]["problems"]


def test_catalog_reports_failed_statements(dataset: Dataset) -> None:
    inserts = dataset.files["gen_sample.jsonl"][0]["sample_data"]["tables"][1]["insert_statements"]
    inserts.append("INSERT INTO notes (id, user_id, body) VALUES (9, 42, 'orphan')")
    result = runner.invoke(app, ["catalog", str(dataset.write())])
    assert result.exit_code == 0
    assert (
        "warning: [quick_notes_personal] seed insert of table 'notes' failed: "
        "FOREIGN KEY constraint failed" in result.output
    )


def test_missing_folder_is_one_line_error(tmp_path: Path) -> None:
    result = runner.invoke(app, ["catalog", str(tmp_path / "nope")])
    assert result.exit_code == DatasetError.exit_code
    assert result.output.strip().splitlines()[0] == f"error: dataset folder {tmp_path / 'nope'} does not exist"


def test_seed_command_writes_databases_and_stats(tmp_path: Path) -> None:
    result = runner.invoke(
        app, ["seed", str(EXAMPLES), "-o", str(tmp_path), "--only", "PantryPal Recipe Planner"]
    )
    assert result.exit_code == 0, result.output
    db = tmp_path / "pantrypal_recipe_planner.db"
    stats = json.loads((tmp_path / "pantrypal_recipe_planner.json").read_text())
    assert stats["rows"]["recipes"] == sqlite3.connect(db).execute("SELECT count(*) FROM recipes").fetchone()[0]
    assert stats["foreign_keys"] is True
    assert stats["failed"] == []


def test_seed_strict_refuses_failing_scenario(dataset: Dataset, tmp_path: Path) -> None:
    inserts = dataset.files["gen_sample.jsonl"][0]["sample_data"]["tables"][1]["insert_statements"]
    inserts.append("INSERT INTO notes VALUES (9, 42, 'orphan')")
    result = runner.invoke(app, ["seed", str(dataset.write()), "-o", str(tmp_path / "o"), "--strict"])
    assert result.exit_code == 1
    assert "scenario 'quick_notes_personal': 1 seed statement(s) failed" in result.output
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == ["team_notes.db", "team_notes.json"]
