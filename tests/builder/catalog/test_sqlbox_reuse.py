"""One seed child serves many seeds: attacks from a seed on the seeds that come after it.

Each test runs an attacking seed and then an honest one through `run_seed_sql`, as `awm build`
does for consecutive scenarios of one worker, and checks the honest seed's database and result.
Every test uses limits of its own, so it has its own children (the pool is keyed by limits), and
`same_child` shows when the honest seed ran in the very process the attacker used.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from awm.builder.catalog import sqlbox
from awm.builder.catalog.sqlbox import BoxResult, SeedLimits, private_folder, run_seed_sql

FOREVER = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c"
HONEST = [
    ("ddl", "users", "CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT NOT NULL)"),
    ("ddl", "notes", ("CREATE TABLE notes (id INTEGER PRIMARY KEY, user_id INTEGER NOT NULL "
                      "REFERENCES users(id), body TEXT)")),
    ("insert", "users", "INSERT INTO users VALUES (1, 'Ada')"),
    ("insert", "notes", "INSERT INTO notes VALUES (1, 1, 'first')"),
    ("insert", "notes", "INSERT INTO notes VALUES (2, 7, 'no such user')"),  # fails: foreign key
]


def idle_children(limits: SeedLimits) -> list[int]:
    return [box.proc.pid for box in sqlbox._POOL._idle.get(limits, [])]


def run(statements: list[tuple[str, str, str]], limits: SeedLimits, folder: Path, *, to_file: bool = False,
        checks: tuple[str, ...] = ()) -> BoxResult:
    folder.mkdir(parents=True, exist_ok=True)
    return run_seed_sql(statements, folder, foreign_keys=True, limits=limits, to_file=to_file, checks=checks)


def assert_honest(result: BoxResult) -> None:
    """The honest seed came out as it does in a child of its own."""
    assert result.abort is None
    assert result.rows == {"notes": 1, "users": 1}
    assert [(f.sql, f.error) for f in result.failed] == [
        ("INSERT INTO notes VALUES (2, 7, 'no such user')", "FOREIGN KEY constraint failed")
    ]


@pytest.fixture
def limits(request: pytest.FixtureRequest) -> Iterator[SeedLimits]:
    # Limits no other test file uses (the default's size plus a page): children of its own.
    own = SeedLimits(max_bytes=64 * 2**20 + 4096, deadline_s=getattr(request, "param", 20.0))
    yield own
    for box in sqlbox._POOL._idle.pop(own, []):
        box.close()


def test_the_next_seed_runs_in_the_same_child(limits: SeedLimits, tmp_path: Path) -> None:
    assert_honest(run(HONEST, limits, tmp_path / "a"))
    (child,) = idle_children(limits)
    assert_honest(run(HONEST, limits, tmp_path / "b"))
    assert idle_children(limits) == [child]


def test_temp_tables_triggers_and_views_do_not_outlive_their_seed(limits: SeedLimits, tmp_path: Path) -> None:
    attack = [
        ("ddl", "users", "CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT NOT NULL)"),
        ("example", "x", "CREATE TEMP TABLE leftover (x)"),
        ("example", "x", "INSERT INTO leftover VALUES ('from the attacker')"),
        ("example", "x", "CREATE TEMP VIEW notes_view AS SELECT * FROM leftover"),
        # Would rename every user of a later seed, were the temp schema shared.
        ("example", "x", ("CREATE TEMP TRIGGER rename AFTER INSERT ON main.users "
                          "BEGIN UPDATE users SET name = 'pwned'; END")),
    ]
    first = run(attack, limits, tmp_path / "a")
    assert first.failed == []
    (child,) = idle_children(limits)
    checks = ("SELECT 1 FROM sqlite_temp_master", "SELECT 1 FROM leftover", "SELECT 1 FROM users WHERE name = 'pwned'")
    second = run(HONEST, limits, tmp_path / "b", checks=checks)
    assert idle_children(limits) == [child]  # the same process
    assert_honest(second)
    assert second.checks == [False, False, False]


def test_files_do_not_outlive_their_seed(limits: SeedLimits, tmp_path: Path) -> None:
    # The attacker's seed is a file; it tries to leave more, and the next seed tries to read it.
    with private_folder(tmp_path / "a" / "seed.db") as first_folder:
        first = run([
            ("ddl", "secret", "CREATE TABLE secret (value TEXT)"),
            ("insert", "secret", "INSERT INTO secret VALUES ('from the first seed')"),
            ("example", "x", "VACUUM INTO 'planted.db'"),
            ("example", "x", "ATTACH 'planted.db' AS planted"),
        ], limits, first_folder, to_file=True)
        assert [f.error.split(":")[0] for f in first.failed] == ["refused", "refused"]
        assert sorted(p.name for p in first_folder.iterdir()) == ["seed.db"]
        (child,) = idle_children(limits)
        with private_folder(tmp_path / "b" / "seed.db") as second_folder:
            second = run([*HONEST, ("example", "x", f"ATTACH '{first_folder / 'seed.db'}' AS other")],
                         limits, second_folder, to_file=True,
                         checks=("SELECT 1 FROM secret", "SELECT 1 FROM other.secret"))
            assert idle_children(limits) == [child]
            assert second.failed[-1].error.startswith("refused: ATTACH")
            second.failed.pop()
            assert_honest(second)
            assert second.checks == [False, False]
            assert sorted(p.name for p in second_folder.iterdir()) == ["seed.db"]
    # The child's own folder holds nothing but its stderr file.
    box = sqlbox._POOL._idle[limits][0]
    assert [p.name for p in box.home.iterdir()] == ["stderr"]


def test_pragmas_and_connection_settings_do_not_carry_over(limits: SeedLimits, tmp_path: Path) -> None:
    attack = [
        ("example", "x", "PRAGMA foreign_keys = OFF"),
        ("example", "x", "PRAGMA case_sensitive_like = ON"),
        ("example", "x", "PRAGMA recursive_triggers = ON"),
        ("example", "x", "PRAGMA hard_heap_limit = 1"),
        ("example", "x", "PRAGMA soft_heap_limit = 1"),
        ("example", "x", "PRAGMA temp_store_directory = '/tmp'"),
        ("example", "x", "PRAGMA temp_store = FILE"),
        ("example", "x", "PRAGMA max_page_count = 2147483647"),
    ]
    first = run(attack, limits, tmp_path / "a")
    assert all(f.error.startswith("refused: PRAGMA") for f in first.failed)
    assert len(first.failed) == len(attack)
    (child,) = idle_children(limits)
    second = run(HONEST, limits, tmp_path / "b", checks=("SELECT 1 WHERE 'a' LIKE 'A'",))
    assert idle_children(limits) == [child]
    assert_honest(second)  # foreign keys are still on: the bad insert failed
    assert second.checks == [True]  # LIKE is still case-insensitive


def test_a_refusal_in_one_seed_does_not_mark_the_next(limits: SeedLimits, tmp_path: Path) -> None:
    # The guard remembers why it refused a statement; the attacker ends on a refusal so that an
    # honest failure of the next seed would be reported as refused if that memory were shared.
    first = run([("example", "x", "ATTACH 'x.db' AS x")], limits, tmp_path / "a")
    assert first.failed[0].error.startswith("refused")
    second = run([HONEST[1], *HONEST], limits, tmp_path / "b")
    assert second.failed[0].error == "table notes already exists"


def test_an_enormous_allocation_leaves_the_next_seed_its_whole_memory(limits: SeedLimits, tmp_path: Path) -> None:
    # A sort of ~350 MB inside the heap limit: the allocator keeps most of it mapped afterwards,
    # which would count against the next seed's address space limit in the same process.
    big = ("SELECT count(*) FROM (SELECT randomblob(200) AS b FROM (WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL "
           "SELECT x + 1 FROM c WHERE x < 1600000) SELECT x FROM c) ORDER BY b)")
    assert_honest(run(HONEST, limits, tmp_path / "a"))
    (child,) = idle_children(limits)
    first = run([("example", "x", big)], limits, tmp_path / "b")
    assert first.abort is None
    assert first.failed == []
    assert child not in idle_children(limits)  # grown: not reused
    # The next seed allocates nearly the whole heap limit in one piece.
    honest = [*HONEST, ("example", "x", f"SELECT length(randomblob({limits.memory_bytes // 2 - 32 * 2**20}))")]
    assert_honest(run(honest, limits, tmp_path / "c"))


def test_a_seed_that_kills_its_child_fails_alone(limits: SeedLimits, tmp_path: Path) -> None:
    assert_honest(run(HONEST, limits, tmp_path / "a"))
    (child,) = idle_children(limits)
    # Past the heap limit: SQLite's out-of-memory ends the child's interpreter.
    killer = run([("example", "x", f"SELECT length(randomblob({limits.memory_bytes // 2 + 2**20}))")],
                 limits, tmp_path / "b")
    assert killer.abort is not None
    assert killer.abort.kind == "crash"
    assert "memory limit" in killer.abort.detail
    assert child not in idle_children(limits)
    assert_honest(run(HONEST, limits, tmp_path / "c"))


@pytest.mark.parametrize("limits", [1.0], indirect=True)
def test_a_seed_that_hangs_fails_alone(limits: SeedLimits, tmp_path: Path) -> None:
    assert_honest(run(HONEST, limits, tmp_path / "a"))
    (child,) = idle_children(limits)
    hung = run([("example", "x", FOREVER)], limits, tmp_path / "b")
    assert hung.abort is not None
    assert hung.abort.kind == "deadline"
    assert child not in idle_children(limits)  # a stopped seed's child is not reused
    assert_honest(run(HONEST, limits, tmp_path / "c"))


@pytest.mark.parametrize("limits", [60.0], indirect=True)
def test_a_child_killed_by_the_wall_clock_is_replaced(
    limits: SeedLimits, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert_honest(run(HONEST, limits, tmp_path / "a"))
    (child,) = idle_children(limits)
    monkeypatch.setattr(sqlbox, "START_GRACE_S", -59.0)  # the parent's clock: 1 s
    hung = run([("example", "x", FOREVER)], limits, tmp_path / "b")
    assert hung.abort is not None
    assert hung.abort.detail.endswith("the process was killed")
    monkeypatch.setattr(sqlbox, "START_GRACE_S", 10.0)
    with pytest.raises(ProcessLookupError):
        os.kill(child, 0)  # gone, and reaped
    assert_honest(run(HONEST, limits, tmp_path / "c"))


def test_a_child_that_died_while_idle_does_not_fail_the_next_seed(limits: SeedLimits, tmp_path: Path) -> None:
    assert_honest(run(HONEST, limits, tmp_path / "a"))
    (child,) = idle_children(limits)
    os.kill(child, signal.SIGKILL)
    assert_honest(run(HONEST, limits, tmp_path / "b"))
    assert child not in idle_children(limits)


def test_the_cpu_limit_is_re_armed_for_every_job() -> None:
    # In a process limited as a child is (1 s deadline: 2 CPU seconds per job), spend 4.5 CPU
    # seconds in three jobs of 1.5 s: it lives only because each job gets its own budget. The
    # same without re-arming dies of SIGXCPU: the limit is real.
    script = textwrap.dedent("""
        import sys
        from awm.builder.catalog import sqlbox
        limits = {"deadline_s": 1.0, "max_bytes": 2**26, "memory_bytes": 2**30}
        sqlbox._limit_self(limits)
        for _ in range(3):
            if sys.argv[1] == "re-arm":
                sqlbox._arm_cpu(limits)
            end = sqlbox._cpu_used() + 1.5
            while sqlbox._cpu_used() < end:
                pass
        print("survived")
    """)
    re_armed = subprocess.run([sys.executable, "-c", script, "re-arm"], capture_output=True, timeout=120)
    assert re_armed.returncode == 0, re_armed.stderr
    assert re_armed.stdout == b"survived\n"
    once = subprocess.run([sys.executable, "-c", script, "once"], capture_output=True, timeout=120)
    assert once.returncode == -signal.SIGXCPU


def test_a_parent_killed_by_sigkill_leaves_no_child_and_no_folder(tmp_path: Path) -> None:
    # The parent cannot clean up after SIGKILL: its idle child reads end-of-file, exits and
    # removes its own folder.
    script = textwrap.dedent("""
        import sys, time
        from pathlib import Path
        from awm.builder.catalog import sqlbox
        folder = Path(sys.argv[1])
        folder.mkdir()
        sqlbox.run_seed_sql([("ddl", "t", "CREATE TABLE t (a)")], folder, foreign_keys=True,
                            limits=sqlbox.SeedLimits(), to_file=False)
        (box,) = [b for idle in sqlbox._POOL._idle.values() for b in idle]
        print(box.proc.pid, box.home, flush=True)
        time.sleep(600)
    """)
    with subprocess.Popen([sys.executable, "-c", script, str(tmp_path / "job")], stdout=subprocess.PIPE) as parent:
        try:
            assert parent.stdout is not None
            pid, home = parent.stdout.readline().decode().split()
            assert Path(home).is_dir()
        finally:
            parent.send_signal(signal.SIGKILL)
    for _ in range(600):  # up to a minute
        gone = not Path(home).exists() and not _running(int(pid))
        if gone:
            break
        time.sleep(0.1)
    assert not Path(home).exists()
    assert not _running(int(pid))


def _running(pid: int) -> bool:
    """Whether `pid` runs (a zombie, dead but not reaped by its new parent, does not)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False
