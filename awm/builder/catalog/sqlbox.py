"""Run a seed's SQL (dataset input, untrusted) in a limited child process, never in this one.

The child is a fresh `python -I -m awm.builder.catalog.sqlbox`, not a fork nor multiprocessing:
a fresh interpreter inherits none of this process's memory (API keys, tokens, open databases),
`close_fds` gives it no descriptor but its pipes, `-I` ignores PYTHON* variables and the user's
site folder, and its environment is empty but for TMPDIR. It is started by `subprocess` rather
than multiprocessing's 'spawn' context because spawn re-imports the parent's `__main__` (the CLI,
or pytest) and passes its `sys.path`.

Defences, the child's first (the parent's are the backstop):
- rlimits the child sets on itself before it runs any SQL: CPU seconds, address space, file size;
- a private working folder the parent made (its cwd and TMPDIR): the seed is written there and
  the parent moves it into place; the folder is removed on every exit path (SIGTERM included);
- on the connection: no attached databases (`SQLITE_LIMIT_ATTACHED` 0, which also stops
  `VACUUM INTO`), an authorizer refusing ATTACH/DETACH, `load_extension()` and every PRAGMA but
  an allow-list, extension loading off, temporary tables in memory, a heap limit, a
  progress-handler deadline and `max_page_count` (the seed size limit);
- the parent's wall clock: a child that has not answered by the deadline (plus start-up grace)
  is killed.

Settings (environment of the `awm` process): AWM_SEED_MAX_MB (seed size limit, default 64),
AWM_SEED_DEADLINE_S (time for one scenario's seed SQL, default 30).
"""

from __future__ import annotations

import json
import math
import os
import resource
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

__all__ = [
    "DEADLINE_SETTING",
    "MAX_MB_SETTING",
    "SEED_FILE",
    "BoxAbort",
    "BoxFailure",
    "BoxResult",
    "SeedLimits",
    "private_folder",
    "run_seed_sql",
]

MAX_MB_SETTING = "AWM_SEED_MAX_MB"
DEADLINE_SETTING = "AWM_SEED_DEADLINE_S"
SEED_FILE = "seed.db"
MIB = 1024 * 1024
START_GRACE_S = 10.0  # interpreter start-up and the final VACUUM, on top of the SQL deadline

# Read-only introspection; `foreign_keys` only to read it or restate the chosen setting.
ALLOWED_PRAGMAS = frozenset({
    "foreign_key_check", "foreign_key_list", "foreign_keys", "index_info", "index_list",
    "index_xinfo", "integrity_check", "quick_check", "table_info", "table_list", "table_xinfo",
})
REFUSED_FUNCTIONS = frozenset({"load_extension", "fts3_tokenizer"})

# One statement: (stage, table, sql).
Statement = tuple[str, str, str]


@dataclass(frozen=True)
class SeedLimits:
    """What one scenario's seed SQL may use."""

    max_bytes: int = 64 * MIB
    deadline_s: float = 30.0

    @property
    def memory_bytes(self) -> int:
        """The child's address space (RLIMIT_AS): an in-memory seed lives in the heap."""
        return max(1024 * MIB, 2 * self.max_bytes + 256 * MIB)

    @classmethod
    def from_env(cls) -> SeedLimits:
        """Defaults, with AWM_SEED_MAX_MB and AWM_SEED_DEADLINE_S applied when set.

        Raises:
            ValueError: a setting that is not a positive number.
        """
        mb = _positive(MAX_MB_SETTING)
        deadline = _positive(DEADLINE_SETTING)
        default = cls()
        return cls(
            max_bytes=int(mb * MIB) if mb is not None else default.max_bytes,
            deadline_s=deadline if deadline is not None else default.deadline_s,
        )


def _positive(name: str) -> float | None:
    raw = os.environ.get(name)
    if raw is None or not raw.strip():
        return None
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not value > 0 or math.isinf(value):
        raise ValueError(f"{name} must be a positive number, got {raw!r}")
    return value


@dataclass
class BoxFailure:
    """A statement that failed: its SQLite error, or why the sandbox refused it."""

    stage: str
    table: str
    sql: str
    error: str


@dataclass
class BoxAbort:
    """Why the seed SQL was stopped before its end: `deadline`, `size` or `crash`."""

    kind: str
    detail: str
    statement: BoxFailure | None = None


@dataclass
class BoxResult:
    statements: int
    failed: list[BoxFailure]
    rows: dict[str, int]
    bytes: int  # the database's size (pages x page size; the file's size once moved)
    sqlite_version: str
    abort: BoxAbort | None = None
    db: Path | None = None  # the seed file in the private folder, when one was asked for
    checks: list[bool] = field(default_factory=list)  # per check query: whether it found a row


# ---------------------------------------------------------------------------- parent side


def _exit_on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


@contextmanager
def private_folder(near: Path | None = None) -> Iterator[Path]:
    """A fresh 0700 folder (next to `near` when given, so the result moves by rename), removed
    on every way out: return, exception, KeyboardInterrupt, and SIGTERM, which is turned into
    SystemExit when nobody else handles it (from the main thread only, Python's rule)."""
    main = threading.current_thread() is threading.main_thread()
    if main and signal.getsignal(signal.SIGTERM) in (signal.SIG_DFL, None):
        signal.signal(signal.SIGTERM, _exit_on_sigterm)
    if near is not None:
        near.parent.mkdir(parents=True, exist_ok=True)
        folder = tempfile.mkdtemp(prefix=f".{near.name}.", suffix=".tmp", dir=near.parent)
    else:
        folder = tempfile.mkdtemp(prefix="awm-seed-")
    try:
        yield Path(folder)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def run_seed_sql(
    statements: Sequence[Statement],
    folder: Path,
    *,
    foreign_keys: bool,
    limits: SeedLimits,
    to_file: bool,
    checks: Sequence[str] = (),
) -> BoxResult:
    """Run `statements` in a limited child working in `folder` (see `private_folder`).

    With `to_file`, the seed is written to `folder / SEED_FILE` (vacuumed, journal off);
    otherwise it is built in memory for its statistics. Each of `checks` (a query) is run on
    the result, as guarded as the statements: the answer says whether it found a row. Never
    raises for the SQL's faults: failures and an abort are in the result.
    """
    job = {
        "statements": list(statements),
        "checks": list(checks),
        "foreign_keys": foreign_keys,
        "to_file": to_file,
        "limits": {"max_bytes": limits.max_bytes, "deadline_s": limits.deadline_s,
                   "memory_bytes": limits.memory_bytes},
    }
    cmd = [sys.executable, "-I", "-m", "awm.builder.catalog.sqlbox"]
    env = {"TMPDIR": str(folder), "SQLITE_TMPDIR": str(folder)}
    try:
        # subprocess.run kills the child on any exception, SystemExit and KeyboardInterrupt
        # included, before it re-raises.
        done = subprocess.run(
            cmd, input=json.dumps(job).encode(), capture_output=True, cwd=folder, env=env,
            timeout=limits.deadline_s + START_GRACE_S, close_fds=True, check=False,
        )
    except subprocess.TimeoutExpired:
        return _aborted("deadline", f"deadline of {limits.deadline_s:g} s exceeded; the process was killed")
    if done.returncode != 0:
        return _aborted("crash", _death(done.returncode, limits, done.stderr))
    answer = json.loads(done.stdout)
    abort = answer.pop("abort")
    result = BoxResult(
        statements=answer["statements"],
        failed=[BoxFailure(**f) for f in answer["failed"]],
        rows=answer["rows"],
        bytes=answer["bytes"],
        sqlite_version=answer["sqlite_version"],
        checks=answer["checks"],
    )
    if abort is not None:
        stmt = abort["statement"]
        result.abort = BoxAbort(abort["kind"], abort["detail"], BoxFailure(**stmt) if stmt else None)
    if to_file and result.abort is None:
        result.db = folder / SEED_FILE
    return result


def _aborted(kind: str, detail: str) -> BoxResult:
    return BoxResult(0, [], {}, 0, sqlite3.sqlite_version, abort=BoxAbort(kind, detail))


def _death(code: int, limits: SeedLimits, stderr: bytes) -> str:
    tail = stderr.decode(errors="replace").strip().splitlines()[-1:] or [""]
    if code == -signal.SIGXCPU:
        return f"CPU limit of {math.ceil(limits.deadline_s) + 1} s exceeded"
    if code == -signal.SIGXFSZ:
        return f"file size limit of {limits.max_bytes // MIB} MiB exceeded"
    if code < 0:
        return f"the seed SQL process was killed by signal {-code} (out of memory?) {tail[0]}".rstrip()
    if "MemoryError" in tail[0]:
        return f"memory limit of {limits.memory_bytes // MIB} MiB exceeded"
    return f"the seed SQL process failed (exit {code}): {tail[0]}"


# ----------------------------------------------------------------------------- child side


def _limit_self(limits: dict[str, Any]) -> None:
    def cap(which: int, soft: int, hard: int) -> None:
        _, current = resource.getrlimit(which)
        if current != resource.RLIM_INFINITY:
            soft, hard = min(soft, current), min(hard, current)
        resource.setrlimit(which, (soft, hard))

    cpu = math.ceil(limits["deadline_s"]) + 1
    cap(resource.RLIMIT_CPU, cpu, cpu + 2)
    cap(resource.RLIMIT_AS, limits["memory_bytes"], limits["memory_bytes"])
    # The database cannot pass max_page_count; the slack is for its rollback journal.
    fsize = limits["max_bytes"] + 8 * MIB
    cap(resource.RLIMIT_FSIZE, fsize, fsize)
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails, not kills


class _Guard:
    """The connection's authorizer and progress handler, with the reason of the last refusal."""

    def __init__(self, foreign_keys: bool, deadline_at: float) -> None:
        self.foreign_keys = foreign_keys
        self.deadline_at = deadline_at
        self.refusal: str | None = None
        self.expired = False

    def authorize(self, action: int, arg1: str | None, arg2: str | None, db: str | None,
                  source: str | None) -> int:
        reason = None
        if action in (sqlite3.SQLITE_ATTACH, sqlite3.SQLITE_DETACH):
            reason = "ATTACH, DETACH and VACUUM INTO (which attaches) are not allowed in seed SQL"
        elif action == sqlite3.SQLITE_FUNCTION and (arg2 or "").lower() in REFUSED_FUNCTIONS:
            reason = f"function {arg2}() is not allowed in seed SQL"
        elif action == sqlite3.SQLITE_PRAGMA:
            name = (arg1 or "").lower()
            if name not in ALLOWED_PRAGMAS:
                reason = f"PRAGMA {arg1} is not allowed in seed SQL (allowed: {', '.join(sorted(ALLOWED_PRAGMAS))})"
            elif name == "foreign_keys" and arg2 is not None and _truth(arg2) != self.foreign_keys:
                chosen = "ON" if self.foreign_keys else "OFF"
                reason = (f"PRAGMA foreign_keys = {arg2} conflicts with the seed's setting ({chosen}; "
                          "chosen with --foreign-keys/--no-foreign-keys)")
        if reason is None:
            return sqlite3.SQLITE_OK
        self.refusal = reason
        return sqlite3.SQLITE_DENY

    def next_statement(self) -> None:
        self.refusal = None

    def progress(self) -> int:
        if time.monotonic() > self.deadline_at:
            self.expired = True
            return 1  # interrupts the statement
        return 0


def _truth(value: str) -> bool | None:
    v = value.strip().strip("'\"").lower()
    return True if v in ("1", "on", "true", "yes") else False if v in ("0", "off", "false", "no") else None


def _execute(conn: sqlite3.Connection, sql: str) -> None:
    try:
        conn.execute(sql)
    except sqlite3.ProgrammingError as exc:
        # Some generated DDL strings hold several statements; run them as one script.
        if "one statement at a time" not in str(exc):
            raise
        conn.executescript(sql)


def _fill(job: dict[str, Any], started: float) -> dict[str, Any]:
    limits = job["limits"]
    guard = _Guard(job["foreign_keys"], started + limits["deadline_s"])
    deadline = f"deadline of {limits['deadline_s']:g} s exceeded"
    conn = sqlite3.connect(SEED_FILE if job["to_file"] else ":memory:", isolation_level=None)
    # Each statement commits on its own, so a failure undoes only itself; without fsync and
    # with the journal in memory that costs microseconds. Durability comes from the rename.
    conn.execute("PRAGMA synchronous = OFF")
    conn.execute("PRAGMA journal_mode = MEMORY")
    conn.execute("PRAGMA temp_store = MEMORY")
    conn.execute(f"PRAGMA foreign_keys = {'ON' if job['foreign_keys'] else 'OFF'}")
    page_size = conn.execute("PRAGMA page_size").fetchone()[0]
    conn.execute(f"PRAGMA max_page_count = {max(1, limits['max_bytes'] // page_size)}")
    conn.execute(f"PRAGMA hard_heap_limit = {limits['memory_bytes'] // 2}")
    if hasattr(conn, "enable_load_extension"):  # absent when Python is built without it
        conn.enable_load_extension(False)
    conn.setlimit(sqlite3.SQLITE_LIMIT_ATTACHED, 0)
    conn.set_authorizer(guard.authorize)
    conn.set_progress_handler(guard.progress, 1000)

    failed: list[dict[str, str]] = []
    abort: dict[str, Any] | None = None
    count = 0
    for stage, table, sql in job["statements"]:
        count += 1
        guard.next_statement()
        try:
            _execute(conn, sql)
        except sqlite3.Error as exc:
            failure = {"stage": stage, "table": table, "sql": sql, "error": str(exc)}
            if guard.expired:
                abort = {"kind": "deadline", "detail": deadline, "statement": failure}
                break
            if getattr(exc, "sqlite_errorcode", 0) & 0xFF == sqlite3.SQLITE_FULL:
                abort = {"kind": "size", "detail": f"over the size limit of {_mib(limits['max_bytes'])}",
                         "statement": failure}
                break
            if guard.refusal is not None:
                failure["error"] = f"refused: {guard.refusal}"
            failed.append(failure)
        if conn.in_transaction:  # a statement that opened a transaction must not hold it
            try:
                conn.execute("COMMIT")
            except sqlite3.Error as exc:  # deferred constraints are checked here
                failed.append({"stage": stage, "table": table, "sql": sql, "error": f"at commit: {exc}"})
                conn.execute("ROLLBACK")

    rows: dict[str, int] = {}
    size = 0
    answers: list[bool] = []
    if abort is None:
        try:
            answers = [_found(conn, query) for query in job["checks"]]
            rows, size = _finish(conn, job["to_file"], page_size)
        except sqlite3.Error:
            if not guard.expired:
                raise
        if guard.expired:
            abort = {"kind": "deadline", "detail": deadline, "statement": None}
    conn.close()
    return {"statements": count, "failed": failed, "rows": rows, "bytes": size,
            "sqlite_version": sqlite3.sqlite_version, "abort": abort, "checks": answers}


def _found(conn: sqlite3.Connection, query: str) -> bool:
    try:
        return conn.execute(query).fetchone() is not None
    except sqlite3.Error:  # no such table, say; an interrupt shows as the deadline abort
        return False


def _finish(conn: sqlite3.Connection, to_file: bool, page_size: int) -> tuple[dict[str, int], int]:
    """Rows per table and the database's size; a file is vacuumed with its journal off."""
    # The dataset's statements are done: what follows is this module's own SQL.
    conn.set_authorizer(None)
    tables = [r[0] for r in conn.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name")]
    rows = {t: conn.execute(f'SELECT count(*) FROM "{_quote(t)}"').fetchone()[0] for t in tables}
    if to_file:
        conn.execute("PRAGMA journal_mode = DELETE")
        conn.setlimit(sqlite3.SQLITE_LIMIT_ATTACHED, 1)  # VACUUM attaches its scratch copy
        conn.execute("VACUUM")
    return rows, conn.execute("PRAGMA page_count").fetchone()[0] * page_size


def _quote(name: str) -> str:
    return name.replace('"', '""')


def _mib(n: int) -> str:
    return f"{n / MIB:g} MiB"


def _child_main() -> None:
    started = time.monotonic()
    data = sys.stdin.buffer.read()
    job = json.loads(data)
    _limit_self(job["limits"])
    del data
    out = _fill(job, started)
    sys.stdout.buffer.write(json.dumps(out).encode())


if __name__ == "__main__":
    _child_main()
