"""The working database, in process: prepared from the seed, reset in place, snapshotted."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from awm_server.database import WorkingDatabase


@pytest.fixture
def seed(tmp_path: Path) -> Path:
    path = tmp_path / "seed.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT)")
    conn.executemany("INSERT INTO items (name) VALUES (?)", [("a",), ("b",)])
    conn.commit()
    conn.close()
    return path


@pytest.fixture
def db(seed: Path, tmp_path: Path) -> WorkingDatabase:
    working = WorkingDatabase(seed, tmp_path / "work" / "env.db")
    working.prepare()
    return working


@pytest.fixture
def app_conn(db: WorkingDatabase) -> Iterator[sqlite3.Connection]:
    """A connection the app keeps open across resets, as a SQLAlchemy pool does."""
    conn = sqlite3.connect(db.work, timeout=0.1, isolation_level=None)
    yield conn
    conn.close()


def _names(conn: sqlite3.Connection) -> list[str]:
    return [r[0] for r in conn.execute("SELECT name FROM items ORDER BY id")]


def test_prepare_copies_the_seed_and_drops_stale_journals(seed: Path, tmp_path: Path) -> None:
    work = tmp_path / "work" / "env.db"
    work.parent.mkdir()
    (work.parent / "env.db-wal").write_bytes(b"left by an earlier run")
    WorkingDatabase(seed, work).prepare()
    assert sorted(p.name for p in work.parent.iterdir()) == ["env.db"]
    assert work.read_bytes() == seed.read_bytes()


def test_url_points_the_module_at_the_working_copy(db: WorkingDatabase) -> None:
    assert db.url == f"sqlite:///{db.work}"


def test_reset_restores_the_seed_under_an_open_connection(
    db: WorkingDatabase, seed: Path, app_conn: sqlite3.Connection
) -> None:
    inode = db.work.stat().st_ino
    app_conn.execute("INSERT INTO items (name) VALUES ('written by an agent')")
    app_conn.execute("DELETE FROM items WHERE name = 'a'")
    db.reset()
    assert _names(app_conn) == ["a", "b"]  # the same connection sees the seed's rows
    assert db.work.stat().st_ino == inode  # rewritten in place, not swapped
    assert db.resets == 1
    assert _names(sqlite3.connect(f"file:{seed}?mode=ro", uri=True)) == ["a", "b"]  # seed untouched


def test_reset_releases_connections_left_in_a_transaction(db: WorkingDatabase, app_conn: sqlite3.Connection) -> None:
    app_conn.execute("BEGIN IMMEDIATE")
    app_conn.execute("INSERT INTO items (name) VALUES ('never committed')")
    released: list[str] = []

    def release() -> None:  # what disposing the app's engines does to its connections
        released.append("once")
        app_conn.rollback()

    db.reset(release)
    assert released == ["once"]
    assert _names(app_conn) == ["a", "b"]


def test_reset_of_a_locked_database_without_a_release_raises(db: WorkingDatabase, app_conn: sqlite3.Connection) -> None:
    app_conn.execute("BEGIN IMMEDIATE")
    with pytest.raises(sqlite3.OperationalError, match="locked"):
        db.reset()
    assert db.resets == 0
    app_conn.rollback()


def test_snapshot_is_a_consistent_copy_and_replaces_an_old_one(
    db: WorkingDatabase, app_conn: sqlite3.Connection, tmp_path: Path
) -> None:
    app_conn.execute("INSERT INTO items (name) VALUES ('c')")
    dest = tmp_path / "snap.db"
    dest.write_bytes(b"an older snapshot, not a database")
    db.snapshot(dest)
    snap = sqlite3.connect(dest)
    assert _names(snap) == ["a", "b", "c"]
    snap.close()
    assert _names(app_conn) == ["a", "b", "c"]  # the working copy is left as it was
