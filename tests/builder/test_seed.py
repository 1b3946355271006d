from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from awm.builder.catalog.loader import load_catalog
from awm.builder.catalog.models import ScenarioBundle
from awm.builder.catalog.seed import build_seed
from awm.core.errors import SeedError
from tests.builder.conftest import Dataset


def bundle_of(dataset: Dataset, sid: str = "quick_notes_personal") -> ScenarioBundle:
    return load_catalog(dataset.write()).bundles[sid]


def test_seed_counts_tables_and_rows(dataset: Dataset, tmp_path: Path) -> None:
    stats = build_seed(bundle_of(dataset), tmp_path / "seed.db")
    assert stats.tables == 2
    assert stats.rows == {"notes": 2, "users": 1}
    assert stats.statements == 6  # 2 ddl + 1 index + 3 inserts
    assert stats.failed == []
    assert stats.foreign_keys is True
    assert stats.bytes == (tmp_path / "seed.db").stat().st_size
    conn = sqlite3.connect(tmp_path / "seed.db")
    assert conn.execute("SELECT body FROM notes ORDER BY id").fetchall() == [("first",), ("second",)]
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "delete"


def test_seed_is_byte_for_byte_deterministic(dataset: Dataset, tmp_path: Path) -> None:
    bundle = bundle_of(dataset)
    build_seed(bundle, tmp_path / "a.db")
    build_seed(bundle, tmp_path / "b.db")
    assert (tmp_path / "a.db").read_bytes() == (tmp_path / "b.db").read_bytes()


def test_failing_ddl_is_recorded_and_build_goes_on(dataset: Dataset, tmp_path: Path) -> None:
    tables = dataset.files["gen_db.jsonl"][0]["db_schema"]["tables"]
    tables.append({"name": "tags", "ddl": "CREATE TABLE tags (id INTEGER PRIMARY KEY,, name)"})
    stats = build_seed(bundle_of(dataset), tmp_path / "seed.db")
    (failure,) = stats.failed
    assert failure.stage == "ddl"
    assert failure.table == "tags"
    assert failure.error == 'near ",": syntax error'
    assert stats.rows == {"notes": 2, "users": 1}


def test_failing_insert_is_recorded(dataset: Dataset, tmp_path: Path) -> None:
    inserts = dataset.files["gen_sample.jsonl"][0]["sample_data"]["tables"][1]["insert_statements"]
    inserts.insert(0, "INSERT INTO notes (id, user_id, body) VALUES (9, 42, 'orphan')")
    inserts.append("INSERT INTO notes (id, user_id, body) VALUES (1, 1, 'dup id')")
    stats = build_seed(bundle_of(dataset), tmp_path / "seed.db")
    assert [(f.stage, f.table, f.error) for f in stats.failed] == [
        ("insert", "notes", "FOREIGN KEY constraint failed"),
        ("insert", "notes", "UNIQUE constraint failed: notes.id"),
    ]
    assert stats.rows["notes"] == 2


def test_foreign_key_setting_is_explicit_and_recorded(dataset: Dataset) -> None:
    inserts = dataset.files["gen_sample.jsonl"][0]["sample_data"]["tables"][1]["insert_statements"]
    inserts.append("INSERT INTO notes (id, user_id, body) VALUES (9, 42, 'orphan')")
    bundle = bundle_of(dataset)
    on = build_seed(bundle, None, foreign_keys=True)
    off = build_seed(bundle, None, foreign_keys=False)
    assert (on.foreign_keys, len(on.failed), on.rows["notes"]) == (True, 1, 2)
    assert (off.foreign_keys, len(off.failed), off.rows["notes"]) == (False, 0, 3)


def test_strict_mode_refuses_and_leaves_nothing(dataset: Dataset, tmp_path: Path) -> None:
    inserts = dataset.files["gen_sample.jsonl"][0]["sample_data"]["tables"][1]["insert_statements"]
    inserts.append("INSERT INTO nowhere VALUES (1)")
    target = tmp_path / "out" / "seed.db"
    with pytest.raises(SeedError) as info:
        build_seed(bundle_of(dataset), target, strict=True)
    assert str(info.value) == (
        "scenario 'quick_notes_personal': 1 seed statement(s) failed; first: insert of table "
        "'notes': no such table: nowhere: INSERT INTO nowhere VALUES (1)"
    )
    assert info.value.scenario == "quick_notes_personal"
    assert list(target.parent.iterdir()) == []


def test_rebuild_replaces_existing_seed_atomically(dataset: Dataset, tmp_path: Path) -> None:
    target = tmp_path / "out" / "seed.db"
    target.parent.mkdir()
    target.write_bytes(b"old")
    build_seed(bundle_of(dataset), target)
    assert target.read_bytes().startswith(b"SQLite format 3\x00")
    assert [p.name for p in target.parent.iterdir()] == ["seed.db"]


def test_multi_statement_ddl_string_runs(dataset: Dataset) -> None:
    tables = dataset.files["gen_db.jsonl"][0]["db_schema"]["tables"]
    tables.append({"name": "a", "ddl": "CREATE TABLE a (x INTEGER); CREATE TABLE b (y INTEGER);"})
    stats = build_seed(bundle_of(dataset), None)
    assert stats.failed == []
    assert {"a", "b"} <= set(stats.rows)
