"""A seed is known by what makes it: the image digest covers its SQL, settings and format, not
its bytes, and is computed without running any SQL."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from typing import Any

import pytest

from awm.builder.build.render import plan, render
from awm.builder.catalog import seed as seed_module
from awm.builder.catalog import sqlbox
from awm.builder.catalog.loader import load_catalog
from awm.builder.catalog.models import ScenarioBundle
from awm.builder.catalog.seed import SeedLimits, seed_digest
from tests.builder.conftest import Dataset

SID = "quick_notes_personal"
BASE = "awm/base:test"


def bundle_of(dataset: Dataset) -> ScenarioBundle:
    return load_catalog(dataset.write()).bundles[SID]


def inserts(dataset: Dataset, table: int = 1) -> list[str]:
    statements: list[str] = dataset.files["gen_sample.jsonl"][0]["sample_data"]["tables"][table]["insert_statements"]
    return statements


def digests(bundle: ScenarioBundle, **options: bool) -> tuple[str, str]:
    return seed_digest(bundle, **options), plan(bundle, BASE, **options).digest


@pytest.fixture
def no_sql(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any attempt to run seed SQL fails the test."""
    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("seed SQL was run")

    monkeypatch.setattr(sqlbox, "run_seed_sql", refuse)
    monkeypatch.setattr(seed_module, "run_seed_sql", refuse)


def test_the_digest_needs_no_sql_and_is_the_rendered_image_s(dataset: Dataset, no_sql: None,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    bundle = bundle_of(dataset)
    planned = plan(bundle, BASE)
    assert planned.digest == plan(bundle_of(dataset), BASE).digest  # stable across loads
    monkeypatch.undo()  # now let the seed run, as a new image's build does
    ctx = render(bundle, BASE)
    assert ctx.digest == planned.digest
    assert ctx.tag == planned.tag
    assert ctx.manifest.image_digest == planned.digest
    assert ctx.manifest.seed.rows == {"notes": 2, "users": 1}


Edit = Callable[[Dataset], None]


def _change_a_row(d: Dataset) -> None:
    inserts(d)[-1] = inserts(d)[-1].replace("second", "second!")


def _swap_two_inserts(d: Dataset) -> None:
    rows = inserts(d)
    rows[0], rows[1] = rows[1], rows[0]


def _move_text_between_statements(d: Dataset) -> None:
    # The same characters in total, split differently between two statements.
    rows = inserts(d)
    rows[0], rows[1] = rows[0] + rows[1][:6], rows[1][6:]


def _change_an_index(d: Dataset) -> None:
    d.files["gen_db.jsonl"][0]["db_schema"]["tables"][1]["indexes"] = ["CREATE INDEX ix_notes_body ON notes(body)"]


def _move_an_insert_to_another_table(d: Dataset) -> None:
    # Same SQL, another table (and stage order): the failure records would differ.
    tables = d.files["gen_sample.jsonl"][0]["sample_data"]["tables"]
    tables[0]["insert_statements"].append(tables[1]["insert_statements"].pop())


def _add_an_example(d: Dataset) -> None:
    d.files["gen_db.jsonl"][0]["db_schema"]["tables"][1]["examples"] = ["SELECT 1"]


@pytest.mark.parametrize("edit", [_change_a_row, _swap_two_inserts, _move_text_between_statements,
                                  _change_an_index, _move_an_insert_to_another_table, _add_an_example])
def test_any_change_of_the_seed_sql_changes_the_digest(dataset: Dataset, no_sql: None, edit: Edit) -> None:
    before = digests(bundle_of(dataset))
    edit(dataset)
    after = digests(bundle_of(dataset))
    assert after[0] != before[0]
    assert after[1] != before[1]


def test_options_change_the_digest(dataset: Dataset, no_sql: None) -> None:
    bundle = bundle_of(dataset)
    seen = {digests(bundle, foreign_keys=fk, strict=strict)
            for fk in (True, False) for strict in (True, False)}
    assert len({s for s, _ in seen}) == 4
    assert len({d for _, d in seen}) == 4


def test_the_seed_format_and_sqlite_version_change_the_digest(
    dataset: Dataset, no_sql: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    bundle = bundle_of(dataset)
    before = digests(bundle)
    # What a change of the seed code comes with (see sqlbox.SEED_FORMAT).
    monkeypatch.setattr(seed_module, "SEED_FORMAT", sqlbox.SEED_FORMAT + "-next")
    assert digests(bundle)[0] != before[0]
    assert digests(bundle)[1] != before[1]
    monkeypatch.undo()
    monkeypatch.setattr(sqlite3, "sqlite_version", "9.99.0")
    assert digests(bundle)[0] != before[0]
    assert digests(bundle)[1] != before[1]


def test_limits_are_not_in_the_digest(dataset: Dataset, monkeypatch: pytest.MonkeyPatch) -> None:
    # A seed that passes the limits is the same under any limits (one that does not fails).
    bundle = bundle_of(dataset)
    before = plan(bundle, BASE).digest
    monkeypatch.setenv("AWM_SEED_MAX_MB", "2")
    monkeypatch.setenv("AWM_SEED_DEADLINE_S", "3")
    assert plan(bundle, BASE).digest == before
    small = render(bundle, BASE)
    monkeypatch.undo()
    assert render(bundle, BASE).files == small.files
    assert small.seed_stats.max_bytes == 2 * 2**20
    assert SeedLimits.from_env().max_bytes == 64 * 2**20
