"""Build a scenario's SQLite seed database from its schema and sample data.

Order, as the original pipeline: per table its DDL, its indexes and its example statements, then
every insert of the sample data, one statement at a time. A failing statement is recorded with
its SQL error and the build goes on; `strict=True` turns any failure into `SeedError`.

The SQL is dataset input: it runs only in `awm.builder.catalog.sqlbox`'s limited child process,
never in this one. A statement the sandbox refuses (ATTACH, a PRAGMA outside its allow-list) is
a failed statement like any other; running past the deadline or the size limit stops the seed
with `SeedError`, strict or not, since the database would be incomplete.

`PRAGMA foreign_keys` changes which inserts fail, so it is explicit (ON by default, like the
original pipeline) and recorded in the stats. The file is byte-for-byte deterministic for the
same input and SQLite version: it is built and vacuumed in a private folder, then renamed into
place, so a reader never sees a half-built seed and an interrupted build leaves nothing behind.

So a seed is known by what makes it (`seed_digest`): its statements in order, the settings and
the seed code's format version; an image cache keyed on that needs no SQL run to be consulted.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
from collections.abc import Iterator, Sequence
from pathlib import Path

from awm.builder.catalog.models import FailedStatement, ScenarioBundle, SeedStats
from awm.builder.catalog.sqlbox import (
    DEADLINE_SETTING,
    MAX_MB_SETTING,
    MIB,
    SEED_FORMAT,
    BoxAbort,
    SeedLimits,
    private_folder,
    run_seed_sql,
)
from awm.core.errors import SeedError

__all__ = ["SeedLimits", "build_seed", "seed_checks", "seed_digest", "seed_statements"]

Stage = str  # "ddl" | "index" | "example" | "insert"


def seed_statements(bundle: ScenarioBundle) -> Iterator[tuple[Stage, str, str]]:
    """Yield (stage, table, sql) in the order the seed is built."""
    for table in bundle.db_schema.tables:
        yield "ddl", table.name, table.ddl
        for sql in table.indexes:
            yield "index", table.name, sql
        for sql in table.examples:
            yield "example", table.name, sql
    for sample in bundle.sample.tables if bundle.sample else []:
        for sql in sample.insert_statements:
            yield "insert", sample.table_name, sql


def seed_digest(bundle: ScenarioBundle, *, foreign_keys: bool = True, strict: bool = False) -> str:
    """The sha256 of everything that decides the seed `build_seed` makes, without running it.

    That is every statement in order (with its stage and table, which are in the failure
    records), `foreign_keys`, `strict`, `SEED_FORMAT` and SQLite's version (which writes the
    file). The limits are not in it: a seed that passes them is the same whatever they are,
    and one that does not is never kept (see `awm.builder.catalog.sqlbox`).
    """
    head = {"format": SEED_FORMAT, "sqlite": sqlite3.sqlite_version, "foreign_keys": foreign_keys,
            "strict": strict}
    hasher = hashlib.sha256(json.dumps(head, sort_keys=True).encode() + b"\n")
    for statement in seed_statements(bundle):
        # One JSON array per line: no statement's text can pass for a boundary between two.
        hasher.update(json.dumps(statement).encode() + b"\n")
    return hasher.hexdigest()


def build_seed(
    bundle: ScenarioBundle,
    path: Path | None = None,
    *,
    foreign_keys: bool = True,
    strict: bool = False,
    limits: SeedLimits | None = None,
) -> SeedStats:
    """Build the seed database of `bundle` at `path` and return its statistics.

    Args:
        bundle: the scenario.
        path: where to write the database; None builds it in memory (statistics only).
        foreign_keys: the `PRAGMA foreign_keys` setting while seeding.
        strict: raise `SeedError` when any statement fails, leaving `path` untouched.
        limits: size and time limits; by default from AWM_SEED_MAX_MB and AWM_SEED_DEADLINE_S.

    Returns:
        Tables, rows per table, every failed statement with its error, the settings used, the
        database's size and its limit.

    Raises:
        SeedError: naming the scenario, when the SQL runs past the deadline or the size limit
            or its process dies, and in strict mode when a statement fails.
    """
    return _seed(bundle, path, foreign_keys, strict, limits, ())[0]


def seed_checks(
    bundle: ScenarioBundle,
    checks: Sequence[str],
    *,
    foreign_keys: bool = True,
    limits: SeedLimits | None = None,
) -> tuple[SeedStats, list[bool]]:
    """Build the seed in memory and run each query of `checks` on it, in the same sandbox.

    Returns:
        The statistics, and per check whether it found a row (False when it fails).

    Raises:
        SeedError: as `build_seed`.
    """
    return _seed(bundle, None, foreign_keys, False, limits, checks)


def _seed(
    bundle: ScenarioBundle,
    path: Path | None,
    foreign_keys: bool,
    strict: bool,
    limits: SeedLimits | None,
    checks: Sequence[str],
) -> tuple[SeedStats, list[bool]]:
    if limits is None:
        try:
            limits = SeedLimits.from_env()
        except ValueError as exc:
            raise SeedError(f"scenario {bundle.id!r}: {exc}", scenario=bundle.id) from exc
    with private_folder(path) as folder:
        box = run_seed_sql(
            list(seed_statements(bundle)), folder,
            foreign_keys=foreign_keys, limits=limits, to_file=path is not None, checks=checks,
        )
        if box.abort is not None:
            raise SeedError(_stopped(bundle.id, box.abort, limits), scenario=bundle.id)
        failed = [FailedStatement(**vars(f)) for f in box.failed]
        stats = SeedStats(
            foreign_keys=foreign_keys,
            tables=len(box.rows),
            rows=box.rows,
            statements=box.statements,
            failed=failed,
            sqlite_version=box.sqlite_version,
            bytes=box.bytes,
            max_bytes=limits.max_bytes,
        )
        if strict and failed:
            first = failed[0]
            raise SeedError(
                f"scenario {bundle.id!r}: {len(failed)} seed statement(s) failed; "
                f"first: {first.stage} of table {first.table!r}: {first.error}: "
                f"{_shorten(first.sql)}",
                scenario=bundle.id,
            )
        if path is not None and box.db is not None:
            os.replace(box.db, path)
            stats.bytes = path.stat().st_size
    return stats, box.checks


def _stopped(scenario: str, abort: BoxAbort, limits: SeedLimits) -> str:
    """One line: the scenario, why its seed SQL was stopped, where, and the setting to change."""
    s = abort.statement
    where = f" at {s.stage} of table {s.table!r}: {_shorten(s.sql)}" if s else ""
    if abort.kind == "size":
        return (f"scenario {scenario!r}: the seed database is over its size limit of "
                f"{limits.max_bytes / MIB:g} MiB{where}; raise the limit with {MAX_MB_SETTING}=<MiB>")
    if abort.kind == "deadline":
        return (f"scenario {scenario!r}: seed SQL stopped: {abort.detail} (infinite recursive CTE?)"
                f"{where}; raise the deadline with {DEADLINE_SETTING}=<seconds>")
    return f"scenario {scenario!r}: seed SQL stopped: {abort.detail}{where}"


def _shorten(sql: str, limit: int = 160) -> str:
    one_line = " ".join(sql.split())
    return one_line if len(one_line) <= limit else one_line[: limit - 3] + "..."
