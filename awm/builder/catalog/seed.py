"""Build a scenario's SQLite seed database from its schema and sample data.

Order, as the original pipeline: per table its DDL, its indexes and its example statements, then
every insert of the sample data, one statement at a time. A failing statement is recorded with
its SQL error and the build goes on; `strict=True` turns any failure into `SeedError`.

`PRAGMA foreign_keys` changes which inserts fail, so it is explicit (ON by default, like the
original pipeline) and recorded in the stats. The file is byte-for-byte deterministic for the
same input and SQLite version: it is written to a temporary file, vacuumed, then renamed into
place, so a reader never sees a half-built seed and an interrupted build leaves nothing behind.
"""

from __future__ import annotations

import os
import sqlite3
import tempfile
from collections.abc import Iterator
from pathlib import Path

from awm.builder.catalog.models import FailedStatement, ScenarioBundle, SeedStats
from awm.core.errors import SeedError

__all__ = ["build_seed", "seed_statements"]

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


def _execute(conn: sqlite3.Connection, sql: str) -> None:
    try:
        conn.execute(sql)
    except sqlite3.ProgrammingError as exc:
        # Some generated DDL strings hold several statements; run them as one script.
        if "one statement at a time" not in str(exc):
            raise
        conn.executescript(sql)


def build_seed(
    bundle: ScenarioBundle,
    path: Path | None = None,
    *,
    foreign_keys: bool = True,
    strict: bool = False,
) -> SeedStats:
    """Build the seed database of `bundle` at `path` and return its statistics.

    Args:
        bundle: the scenario.
        path: where to write the database; None builds it in memory (statistics only).
        foreign_keys: the `PRAGMA foreign_keys` setting while seeding.
        strict: raise `SeedError` when any statement fails, leaving `path` untouched.

    Returns:
        Tables, rows per table, every failed statement with its error, and the settings used.

    Raises:
        SeedError: in strict mode, naming the scenario and the first failing statement.
    """
    tmp: Path | None = None
    if path is None:
        target = ":memory:"
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        tmp = Path(name)
        target = str(tmp)
    try:
        conn = sqlite3.connect(target, isolation_level=None)
        try:
            stats = _fill(conn, bundle, foreign_keys)
            if strict and stats.failed:
                first = stats.failed[0]
                raise SeedError(
                    f"scenario {bundle.id!r}: {len(stats.failed)} seed statement(s) failed; "
                    f"first: {first.stage} of table {first.table!r}: {first.error}: "
                    f"{_shorten(first.sql)}",
                    scenario=bundle.id,
                )
            if tmp is not None:
                conn.execute("PRAGMA journal_mode = DELETE")
                conn.execute("VACUUM")
        finally:
            conn.close()
        if tmp is not None and path is not None:
            os.replace(tmp, path)
            tmp = None
            stats.bytes = path.stat().st_size
        return stats
    finally:
        if tmp is not None:
            tmp.unlink(missing_ok=True)


def _fill(conn: sqlite3.Connection, bundle: ScenarioBundle, foreign_keys: bool) -> SeedStats:
    # Each statement commits on its own, so a failure undoes only itself; without fsync and
    # with the journal in memory that costs microseconds. Durability comes from the rename.
    conn.execute("PRAGMA synchronous = OFF")
    conn.execute("PRAGMA journal_mode = MEMORY")
    conn.execute(f"PRAGMA foreign_keys = {'ON' if foreign_keys else 'OFF'}")
    failed: list[FailedStatement] = []
    count = 0
    for stage, table, sql in seed_statements(bundle):
        count += 1
        try:
            _execute(conn, sql)
        except sqlite3.Error as exc:
            failed.append(FailedStatement(stage=stage, table=table, sql=sql, error=str(exc)))  # type: ignore[arg-type]
        if conn.in_transaction:  # a statement that opened a transaction must not hold it
            conn.execute("COMMIT")
    tables = [
        r[0]
        for r in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' "
            "AND name NOT LIKE 'sqlite_%' ORDER BY name"
        )
    ]
    rows = {t: conn.execute(f'SELECT count(*) FROM "{t}"').fetchone()[0] for t in tables}
    return SeedStats(
        foreign_keys=foreign_keys,
        tables=len(tables),
        rows=rows,
        statements=count,
        failed=failed,
        sqlite_version=sqlite3.sqlite_version,
    )


def _shorten(sql: str, limit: int = 160) -> str:
    one_line = " ".join(sql.split())
    return one_line if len(one_line) <= limit else one_line[: limit - 3] + "..."
