"""Seed SQL attacks the host, and the sandbox holds: crafted scenarios in the dataset's format.

Every test writes a scenario whose seed SQL tries one thing (attach a host file, write one with
`VACUUM INTO`, loop forever, grow past the size limit) and checks the host afterwards.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from awm.builder.build.render import render
from awm.builder.catalog import sqlbox
from awm.builder.catalog.loader import load_catalog, summarise
from awm.builder.catalog.models import ScenarioBundle
from awm.builder.catalog.seed import SeedLimits, build_seed, seed_checks
from awm.core.errors import SeedError
from tests.builder.conftest import Dataset

SID = "quick_notes_personal"
SECRET = "HOST-SECRET-7f3c9a"
FOREVER = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c"


def examples(dataset: Dataset, *sql: str) -> None:
    """Add statements to the `examples` of the scenario's `notes` table (run after its DDL)."""
    tables = dataset.files["gen_db.jsonl"][0]["db_schema"]["tables"]
    tables[1].setdefault("examples", []).extend(sql)


def bundle_of(dataset: Dataset, sid: str = SID) -> ScenarioBundle:
    return load_catalog(dataset.write()).bundles[sid]


@pytest.fixture
def secret_db(tmp_path: Path) -> Path:
    """A host SQLite file holding a secret row, as a user's own database would."""
    path = tmp_path / "host-secrets.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE secrets (value TEXT)")
    conn.execute("INSERT INTO secrets VALUES (?)", (SECRET,))
    conn.commit()
    conn.close()
    return path


@pytest.fixture
def canary() -> Iterator[Path]:
    """A path in the host's /tmp, outside every folder the tool makes."""
    path = Path("/tmp") / f"awm-canary-{uuid.uuid4().hex}.db"
    yield path
    path.unlink(missing_ok=True)


def test_attach_of_a_host_path_is_refused_and_creates_no_file(dataset: Dataset, tmp_path: Path) -> None:
    target = tmp_path / "attached-by-seed.db"  # ATTACH would create it
    examples(dataset, f"ATTACH DATABASE '{target}' AS x", "CREATE TABLE x.planted (a)")
    stats = build_seed(bundle_of(dataset), tmp_path / "out" / "seed.db")
    attach, create = stats.failed
    assert attach.sql.startswith("ATTACH")
    assert attach.error.startswith("refused: ATTACH")
    assert create.error == "unknown database x"
    assert not target.exists()
    assert stats.rows == {"notes": 2, "users": 1}  # the rest of the seed is built


def test_vacuum_into_is_refused_and_creates_no_file(dataset: Dataset, canary: Path, tmp_path: Path) -> None:
    examples(dataset, f"VACUUM INTO '{canary}'")
    for path in (None, tmp_path / "seed.db"):
        stats = build_seed(bundle_of(dataset), path)
        (failure,) = stats.failed
        assert failure.error.startswith("refused: ATTACH, DETACH and VACUUM INTO")
        assert not canary.exists()


def test_pragmas_outside_the_allow_list_are_refused(dataset: Dataset) -> None:
    examples(dataset, "PRAGMA journal_mode = WAL", "PRAGMA foreign_keys = OFF", "PRAGMA foreign_keys = ON",
             "PRAGMA table_info(notes)", "SELECT load_extension('/tmp/evil.so')")
    stats = build_seed(bundle_of(dataset), None, foreign_keys=True)
    errors = {f.sql: f.error for f in stats.failed}
    assert errors["PRAGMA journal_mode = WAL"].startswith("refused: PRAGMA journal_mode is not allowed")
    assert "conflicts with the seed's setting (ON" in errors["PRAGMA foreign_keys = OFF"]
    assert errors["SELECT load_extension('/tmp/evil.so')"].startswith("refused: function load_extension()")
    assert len(errors) == 3  # restating the chosen setting and reading table_info are fine


def test_a_planted_host_secret_never_reaches_the_seed(
    dataset: Dataset, secret_db: Path, tmp_path: Path
) -> None:
    examples(
        dataset,
        f"ATTACH DATABASE '{secret_db}' AS host",
        "INSERT INTO notes (user_id, body) SELECT 1, value FROM host.secrets",
        "CREATE TABLE stolen AS SELECT * FROM host.secrets",
        f"ATTACH 'file:{secret_db}?mode=ro' AS host2",
    )
    seed = tmp_path / "seed.db"
    stats = build_seed(bundle_of(dataset), seed)
    assert [f.error.split(":")[0] for f in stats.failed] == ["refused", "no such table", "no such table", "refused"]
    assert SECRET.encode() not in seed.read_bytes()
    assert "stolen" not in stats.rows
    assert sqlite3.connect(secret_db).execute("SELECT value FROM secrets").fetchall() == [(SECRET,)]


def test_an_infinite_recursive_cte_is_stopped_by_the_deadline(dataset: Dataset, tmp_path: Path) -> None:
    examples(dataset, FOREVER)
    target = tmp_path / "out" / "seed.db"
    with pytest.raises(SeedError) as info:
        build_seed(bundle_of(dataset), target, limits=SeedLimits(deadline_s=1))
    message = str(info.value)
    assert message.startswith(f"scenario {SID!r}: seed SQL stopped: deadline of 1 s exceeded (infinite recursive CTE?)")
    assert "at example of table 'notes': WITH RECURSIVE c(x)" in message
    assert message.endswith("raise the deadline with AWM_SEED_DEADLINE_S=<seconds>")
    assert info.value.scenario == SID
    assert list(target.parent.iterdir()) == []  # the private folder is gone too


def test_the_parent_kills_a_child_that_outlives_the_wall_clock(
    dataset: Dataset, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The child's own deadline is 60 s; the parent's clock (deadline + grace) is cut to 1 s.
    monkeypatch.setattr(sqlbox, "START_GRACE_S", -59.0)
    examples(dataset, FOREVER)
    with pytest.raises(SeedError, match=r"deadline of 60 s exceeded; the process was killed"):
        build_seed(bundle_of(dataset), None, limits=SeedLimits(deadline_s=60))


def test_the_catalog_returns_and_names_the_looping_scenario(
    dataset: Dataset, monkeypatch: pytest.MonkeyPatch
) -> None:
    examples(dataset, FOREVER)
    monkeypatch.setenv("AWM_SEED_DEADLINE_S", "1")
    rows = {r.id: r for r in summarise(load_catalog(dataset.write()))}
    assert rows["team_notes"].seed_rows == 3
    assert rows["team_notes"].problems == []
    (error,) = [p for p in rows[SID].problems if p.startswith("error:")]
    assert f"scenario {SID!r}: seed SQL stopped: deadline of 1 s exceeded" in error


def test_a_seed_over_the_size_limit_fails_naming_the_setting(
    dataset: Dataset, monkeypatch: pytest.MonkeyPatch
) -> None:
    inserts = dataset.files["gen_sample.jsonl"][0]["sample_data"]["tables"][1]["insert_statements"]
    # 3 MiB of notes, 64 KiB each, one insert at a time as real sample data comes.
    inserts += ["INSERT INTO notes (user_id, body) VALUES (1, hex(randomblob(32768)))"] * 48
    bundle = bundle_of(dataset)
    monkeypatch.setenv("AWM_SEED_MAX_MB", "1")
    with pytest.raises(SeedError) as info:
        render(bundle, "awm/base:test")  # what `awm build` runs first
    message = str(info.value)
    assert message.startswith(
        f"scenario {SID!r}: the seed database is over its size limit of 1 MiB at insert of table 'notes'"
    )
    assert message.endswith("raise the limit with AWM_SEED_MAX_MB=<MiB>")
    monkeypatch.setenv("AWM_SEED_MAX_MB", "8")
    ctx = render(bundle, "awm/base:test")
    assert 3 * 2**20 < ctx.seed_stats.bytes < 8 * 2**20
    assert ctx.seed_stats.max_bytes == 8 * 2**20


def test_size_and_limit_are_in_the_stats(dataset: Dataset, tmp_path: Path) -> None:
    stats = build_seed(bundle_of(dataset), tmp_path / "seed.db", limits=SeedLimits(max_bytes=2**20))
    assert stats.max_bytes == 2**20
    assert stats.bytes == (tmp_path / "seed.db").stat().st_size
    in_memory = build_seed(bundle_of(dataset), None)
    assert in_memory.bytes > 0
    assert in_memory.max_bytes == 64 * 2**20  # the default


def test_a_bad_setting_is_a_clear_error(dataset: Dataset, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWM_SEED_MAX_MB", "lots")
    with pytest.raises(SeedError, match=r"AWM_SEED_MAX_MB must be a positive number, got 'lots'"):
        build_seed(bundle_of(dataset), None)


def test_checks_run_in_the_sandbox(dataset: Dataset) -> None:
    bundle = bundle_of(dataset)
    stats, found = seed_checks(bundle, ["SELECT 1 FROM users WHERE id = 1", "SELECT 1 FROM nowhere"])
    assert found == [True, False]
    assert stats.rows["users"] == 1


# -- signals: nothing is left behind ---------------------------------------------------------


def _awm(args: list[str], tmpdir: Path, **env: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "awm", *args],
        env={**os.environ, "TMPDIR": str(tmpdir), **env},
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )


def _wait_for(found: Any, what: str) -> Any:
    end = time.monotonic() + 60
    while time.monotonic() < end:
        hit = found()
        if hit:
            return hit
        time.sleep(0.05)
    raise AssertionError(f"never saw {what}")


def _seed_children(parent: int) -> list[int]:
    """The seed SQL children of process `parent` (they run `-m awm.builder.catalog.sqlbox`)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            if ppid == parent and b"awm.builder.catalog.sqlbox" in (entry / "cmdline").read_bytes():
                pids.append(int(entry.name))
        except (OSError, ValueError, IndexError):
            continue
    return pids


def _alive(pid: int) -> bool:
    """Whether `pid` still runs (a zombie counts as gone: it holds nothing but its entry)."""
    try:
        return (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


@pytest.mark.parametrize("command", ["seed", "catalog"])
def test_sigterm_leaves_no_temp_folder_and_no_child(dataset: Dataset, tmp_path: Path, command: str) -> None:
    examples(dataset, FOREVER)
    root = dataset.write()
    tmpdir = tmp_path / "tmp"
    out = tmp_path / "out"
    tmpdir.mkdir()
    args = ["seed", str(root), "-o", str(out)] if command == "seed" else ["catalog", str(root)]
    proc = _awm(args, tmpdir, AWM_SEED_DEADLINE_S="600")
    try:
        # The looping scenario's private folder: next to the output (seed) or in TMPDIR (catalog).
        where = out if command == "seed" else tmpdir
        folder = _wait_for(lambda: [p for p in where.glob("*") if p.is_dir()] if where.exists() else [],
                           "the private seed folder")[0]
        (child,) = _wait_for(lambda: _seed_children(proc.pid), "the seed child")
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 128 + signal.SIGTERM, err.decode()
    finally:
        proc.kill()
        proc.communicate()
    assert not folder.exists()
    assert list(tmpdir.iterdir()) == []
    assert not out.exists() or [p for p in out.iterdir() if p.is_dir()] == []
    _wait_for(lambda: not _alive(child), "the seed child gone")
