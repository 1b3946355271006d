"""Run a seed's SQL (dataset input, untrusted) in a limited child process, never in this one.

The child is a fresh `python -I -m awm.builder.catalog.sqlbox`, not a fork nor multiprocessing:
a fresh interpreter inherits none of this process's memory (API keys, tokens, open databases),
`close_fds` gives it no descriptor but its pipes, `-I` ignores PYTHON* variables and the user's
site folder, and its environment is empty but for TMPDIR. It is started by `subprocess` rather
than multiprocessing's 'spawn' context because spawn re-imports the parent's `__main__` (the CLI,
or pytest) and passes its `sys.path`.

A child serves many seeds, one at a time (starting one costs ~40 ms, more than a typical seed):
each thread that runs seed SQL takes an idle child from a pool for its limits, or starts one, and
gives it back after the job. Every job gets a new database (a new connection, in memory or a new
file) in a new private folder that the parent made and removes, so nothing a seed creates (temp
tables, files, settings) is there for the next one; what is process-wide is either out of the
SQL's reach (the authorizer) or set again by every job (heap limit, temp folder). A child that
misses its deadline, dies, stops a seed for any limit or grew in memory is not reused: a seed's
failure is its own, and the next seed gets a new child. Idle children exit when this process
does (they read end-of-file; `atexit` also closes them).

Defences, the child's first (the parent's are the backstop):
- rlimits the child sets on itself before it runs any SQL: CPU seconds (re-armed per job, see
  `_arm_cpu`), address space, file size;
- a private working folder per job (its cwd and SQLite's temp folder): the seed is written there
  and the parent moves it into place; the folder is removed on every exit path (SIGTERM
  included);
- on the connection: no attached databases (`SQLITE_LIMIT_ATTACHED` 0, which also stops
  `VACUUM INTO`), an authorizer refusing ATTACH/DETACH, `load_extension()` and every PRAGMA but
  an allow-list, extension loading off, temporary tables in memory, a heap limit, a
  progress-handler deadline and `max_page_count` (the seed size limit);
- the parent's wall clock: a child that has not answered by the deadline (plus start-up grace)
  is killed.

A seed that passes every limit gives the same database whatever the limits are (a seed that
hits one is stopped, never kept with a statement missing), so the limits are not part of a
seed's identity (`SEED_FORMAT`, `awm.builder.catalog.seed.seed_digest`).

Settings (environment of the `awm` process): AWM_SEED_MAX_MB (seed size limit, default 64),
AWM_SEED_DEADLINE_S (time for one scenario's seed SQL, default 30).
"""

from __future__ import annotations

import atexit
import json
import math
import os
import resource
import selectors
import shutil
import signal
import sqlite3
import struct
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
from typing import IO, Any

__all__ = [
    "DEADLINE_SETTING",
    "MAX_MB_SETTING",
    "SEED_FILE",
    "SEED_FORMAT",
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
# What a seed database holds for given statements and settings: change it whenever this module
# or awm.builder.catalog.seed changes that (pragmas, order, vacuum...), so cached images rebuild.
SEED_FORMAT = "awm.seed/2"
# A child serves at most this many seeds: it bounds the CPU hard limit (see `_arm_cpu`) and what
# a long life could leak; one start (~40 ms) is then under 1 ms per seed.
JOBS_PER_CHILD = 64
# A child whose address space grew this much over its start after a job is not reused: freed
# memory the allocator keeps would count against the next seed's RLIMIT_AS.
GROWTH_LIMIT = 64 * MIB

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
        "folder": str(folder),
        "statements": list(statements),
        "checks": list(checks),
        "foreign_keys": foreign_keys,
        "to_file": to_file,
    }
    payload = json.dumps(job).encode()
    box = _POOL.take(limits)
    while True:
        try:
            raw = box.exchange(payload, limits.deadline_s + START_GRACE_S)
        except TimeoutError:
            box.close()
            return _aborted("deadline", f"deadline of {limits.deadline_s:g} s exceeded; the process was killed")
        except BaseException:  # SystemExit (SIGTERM), KeyboardInterrupt, a bug: the child goes too
            box.close()
            raise
        if raw is not None:
            break
        code = box.close()
        if box.served == 0:
            return _aborted("crash", _death(code, limits, box.last_words))
        # A child that served other seeds died before answering: it may have died while idle
        # (killed from outside), so this seed is blamed only once it killed a child of its own.
        box = _POOL.take(limits, fresh=True)
    box.served += 1
    answer = json.loads(raw)
    if answer.pop("retire"):
        box.close()
    else:
        _POOL.give(box)
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


def _limits_json(limits: SeedLimits) -> dict[str, Any]:
    return {"max_bytes": limits.max_bytes, "deadline_s": limits.deadline_s, "memory_bytes": limits.memory_bytes}


class _Box:
    """One child serving seed jobs, one at a time, to whichever thread holds it.

    Its home folder (cwd, TMPDIR, stderr file) is private and removed by `close`; jobs work in
    their own folders. Frames both ways are an 8-byte big-endian length and JSON.
    """

    def __init__(self, limits: SeedLimits) -> None:
        self.limits = limits
        self.owner = os.getpid()
        self.served = 0  # jobs answered
        self.last_words = b""  # the end of its stderr, once closed
        self.home = Path(tempfile.mkdtemp(prefix="awm-seedbox-"))
        self._stderr: IO[bytes] = open(self.home / "stderr", "w+b")  # noqa: SIM115 (closed by close())
        env = {"TMPDIR": str(self.home), "SQLITE_TMPDIR": str(self.home)}
        try:
            self.proc: subprocess.Popen[bytes] = subprocess.Popen(
                [sys.executable, "-I", "-m", "awm.builder.catalog.sqlbox", json.dumps(_limits_json(limits))],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._stderr, cwd=self.home, env=env,
                close_fds=True, bufsize=0,
            )
        except BaseException:
            self._stderr.close()
            shutil.rmtree(self.home, ignore_errors=True)
            raise
        assert self.proc.stdin is not None
        assert self.proc.stdout is not None
        self._in = self.proc.stdin.fileno()
        self._out = self.proc.stdout.fileno()
        os.set_blocking(self._in, False)

    def exchange(self, payload: bytes, timeout: float) -> bytes | None:
        """Send one job and wait for its answer; None when the child died first.

        Raises:
            TimeoutError: no answer within `timeout` seconds (the child is left to `close`).
        """
        end = time.monotonic() + timeout
        pending = memoryview(struct.pack(">Q", len(payload)) + payload)
        received = bytearray()
        with selectors.DefaultSelector() as sel:
            sel.register(self._in, selectors.EVENT_WRITE)
            sel.register(self._out, selectors.EVENT_READ)
            while True:
                left = end - time.monotonic()
                if left <= 0:
                    raise TimeoutError
                for key, _ in sel.select(left):
                    if key.fd == self._in:
                        try:
                            sent = os.write(self._in, pending[: 1 << 16])
                        except BlockingIOError:
                            continue
                        except BrokenPipeError:
                            return None
                        pending = pending[sent:]
                        if not pending:
                            sel.unregister(self._in)
                        continue
                    chunk = os.read(self._out, 1 << 20)
                    if not chunk:
                        return None
                    received += chunk
                    if len(received) >= 8:
                        (size,) = struct.unpack(">Q", received[:8])
                        if len(received) >= 8 + size:
                            return bytes(received[8: 8 + size])

    def close(self) -> int:
        """Kill the child (whatever it is doing), keep its `last_words`, remove its home; its
        exit code."""
        if self.proc.poll() is None:
            self.proc.kill()
        code = self.proc.wait()
        for pipe in (self.proc.stdin, self.proc.stdout):
            if pipe is not None:
                pipe.close()
        if not self._stderr.closed:
            self._stderr.seek(0, os.SEEK_END)
            self._stderr.seek(max(0, self._stderr.tell() - 4096))
            self.last_words = self._stderr.read()
            self._stderr.close()
        shutil.rmtree(self.home, ignore_errors=True)
        return code


class _Pool:
    """Idle children per limits; a thread takes one for a job and gives it back after."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._idle: dict[SeedLimits, list[_Box]] = {}

    def take(self, limits: SeedLimits, *, fresh: bool = False) -> _Box:
        """An idle child for `limits`, or a new one (always with `fresh`)."""
        with self._lock:
            idle = [] if fresh else self._idle.get(limits, [])
            while idle:
                box = idle.pop()
                if box.owner == os.getpid() and box.proc.poll() is None:
                    return box
                if box.owner == os.getpid():
                    box.close()
                # else: a forked copy of this pool; the children are the parent process's
        return _Box(limits)

    def give(self, box: _Box) -> None:
        with self._lock:
            self._idle.setdefault(box.limits, []).append(box)

    def close(self) -> None:
        """Close every idle child of this process (at exit)."""
        with self._lock:
            boxes = [b for idle in self._idle.values() for b in idle if b.owner == os.getpid()]
            self._idle.clear()
        for box in boxes:
            box.close()


_POOL = _Pool()
atexit.register(_POOL.close)


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


def _cpu_budget(limits: dict[str, Any]) -> int:
    """CPU seconds one job may use: its deadline, rounded up, plus one."""
    return math.ceil(float(limits["deadline_s"])) + 1


def _limit_self(limits: dict[str, Any]) -> None:
    def cap(which: int, soft: int, hard: int) -> None:
        _, current = resource.getrlimit(which)
        if current != resource.RLIM_INFINITY:
            soft, hard = min(soft, current), min(hard, current)
        resource.setrlimit(which, (soft, hard))

    # The hard CPU limit can only go down: it covers every job this child may serve (each is
    # stopped at its own budget, `_arm_cpu`) and its start. The soft limit is set per job.
    budget = _cpu_budget(limits)
    cap(resource.RLIMIT_CPU, budget, (JOBS_PER_CHILD + 1) * budget + 2)
    cap(resource.RLIMIT_AS, limits["memory_bytes"], limits["memory_bytes"])
    # The database cannot pass max_page_count; the slack is for its rollback journal.
    fsize = limits["max_bytes"] + 8 * MIB
    cap(resource.RLIMIT_FSIZE, fsize, fsize)
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails, not kills


def _cpu_used() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _arm_cpu(limits: dict[str, Any]) -> None:
    """Give the next job exactly one budget of CPU seconds from now.

    RLIMIT_CPU counts the whole life of the process, so a limit set once would let early seeds
    spend the budget of later ones (and a child that served many small seeds kill a big one).
    The soft limit (SIGXCPU, which kills) is re-armed to what has been used plus one budget;
    the hard limit, which cannot be raised again, is large enough for `JOBS_PER_CHILD` jobs.
    """
    _, hard = resource.getrlimit(resource.RLIMIT_CPU)
    want = math.ceil(_cpu_used()) + _cpu_budget(limits)
    if hard != resource.RLIM_INFINITY:
        want = min(want, hard)
    resource.setrlimit(resource.RLIMIT_CPU, (want, hard))


def _address_space() -> int:
    """The process's virtual size in bytes (VmSize), 0 when /proc does not say."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


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


def _fill(job: dict[str, Any], limits: dict[str, Any], started: float) -> dict[str, Any]:
    guard = _Guard(job["foreign_keys"], started + limits["deadline_s"])
    deadline = f"deadline of {limits['deadline_s']:g} s exceeded"
    folder = job["folder"]
    conn = sqlite3.connect(os.path.join(folder, SEED_FILE) if job["to_file"] else ":memory:",
                           isolation_level=None)
    # SQLite's temp folder is process-wide: every job points it at its own folder.
    conn.execute("PRAGMA temp_store_directory = '{}'".format(folder.replace("'", "''")))
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


def _read_frame(stream: IO[bytes]) -> bytes | None:
    head = stream.read(8)
    if len(head) < 8:
        return None  # the parent closed the pipe (or died): no more jobs
    (size,) = struct.unpack(">Q", head)
    body = stream.read(size)
    return body if len(body) == size else None


def _serve(limits: dict[str, Any], home: str) -> None:
    """Serve jobs until end-of-file, or retire after one that leaves this process changed."""
    baseline = _address_space()
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    for served in range(1, JOBS_PER_CHILD + 1):
        data = _read_frame(stdin)
        if data is None:
            break
        started = time.monotonic()
        job = json.loads(data)
        del data
        _arm_cpu(limits)
        os.chdir(job["folder"])
        out = _fill(job, limits, started)
        os.chdir(home)
        del job
        # A stopped seed (deadline, size) may have used its whole budget or memory; the last
        # job and one after which the process stays much bigger leave the next to a new child.
        out["retire"] = (out["abort"] is not None or served == JOBS_PER_CHILD
                         or _address_space() - baseline > GROWTH_LIMIT)
        answer = json.dumps(out).encode()
        stdout.write(struct.pack(">Q", len(answer)) + answer)
        stdout.flush()
        if out["retire"]:
            break


def _child_main() -> None:
    limits = json.loads(sys.argv[1])
    _limit_self(limits)
    home = os.getcwd()
    try:
        _serve(limits, home)
    except BrokenPipeError:  # the parent is gone
        pass
    finally:
        # The home is the parent's to remove, but a parent killed by SIGKILL cannot: the child
        # then reads end-of-file (or a broken pipe) and removes it on its way out.
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    _child_main()
