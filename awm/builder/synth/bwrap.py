"""Probe generated code without a Docker engine: the same probe, inside a bubblewrap sandbox.

Many GPU clusters (Slurm) have no container engine. There `gen env` and `gen verifier` run the
probe of `awm_server` (`python -m awm_server probe|probe-verifiers`, as in the probe container)
under `bwrap` (Debian's `bubblewrap`):

* its own namespaces (no network but an empty loopback, own pids, ipc, uts, mounts), every
  capability dropped, a new session, killed with its parent;
* a file system of read-only binds only: `/usr` (and the `/bin`, `/lib` links), the Python
  installation and the environment that hold the environment stack (fastapi, sqlalchemy,
  pydantic, mcp, fastapi-mcp, `awm_server`), the probe's input folder; writable are a private
  output folder (of which only regular files are copied back: no links, no fifos) and a private
  `/tmp`; nothing else of the host is visible (no home, no `/etc`, no sockets);
* rlimits set before `bwrap` starts: address space, CPU seconds, file size, open files, and
  processes (`processes`: the processes and threads the sandbox may run at once, a fork bomb
  stops there); and a wall-clock timeout that kills the whole process group.

Who the code runs as outside, which decides whether the process limit holds (the kernel does not
apply RLIMIT_NPROC to processes whose real uid is root):

* **as root** (CI, a cluster's build node): bwrap sets the sandbox up as root, without a user
  namespace, and the code runs as a dedicated uid (`SANDBOX_UID_BASE` + a slot per concurrent
  probe: a uid no login, system or container uses, so it owns no file and no process of the
  host, and the limit counts the probe's own processes only). Were a user namespace used, the
  sandbox's uid would be root outside.
* **as an ordinary user**: bwrap makes a user namespace (uid 10001 inside, the user outside).
  RLIMIT_NPROC counts every process of that user, so the limit is the user's current count
  plus `processes` (see `_tasks_of`).
* **as root where bwrap cannot set up without a user namespace** (a container without
  CAP_SYS_ADMIN): the code runs in a user namespace as root outside, with no process limit;
  a warning says so and `describe()` names the missing protection (`missing`).

The generated code never runs in this process. The host's Python must have the environment
stack (the versions the images pin); `available()` says whether it does.
"""

from __future__ import annotations

import functools
import importlib.util
import itertools
import logging
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from awm.builder.synth.probe import FileProber, ProbeResult, ProbeRun
from awm.core.errors import SynthesisError

__all__ = ["SANDBOX_UID_BASE", "STACK", "BubblewrapProber", "available"]

log = logging.getLogger("awm")

STACK = ("fastapi", "sqlalchemy", "pydantic", "mcp", "fastapi_mcp", "uvicorn", "awm_server")
# Above the ranges systemd gives to logins, dynamic users and containers (up to 1879048191),
# below its "foreign" range (2147352576): no account or container of the host has these uids.
SANDBOX_UID_BASE = 1_900_000_000
_LOG_TAIL = 3000
_NAMESPACE_UID = 10001  # the uid inside the user namespace, when there is one
# Run with CAP_SETUID and CAP_SETGID only, before anything generated is imported (-I -S: no
# site, no .pth file, no environment): leave root for good, then run the probe.
_DROP = ("import os, sys; u = int(sys.argv[1]); os.setgroups([]); os.setresgid(u, u, u); "
         "os.setresuid(u, u, u); os.execv(sys.argv[2], sys.argv[2:])")
# What Python raises when fork/clone or a thread start meets the process limit (EAGAIN).
_LIMIT_SIGNS = ("BlockingIOError: [Errno 11]", "can't start new thread")

_slots_lock = threading.Lock()
_slots: set[int] = set()


def available() -> str | None:
    """Why the bubblewrap probe cannot run here (None: it can)."""
    if shutil.which("bwrap") is None:
        return "bwrap is not installed (Debian/Ubuntu: apt-get install bubblewrap)"
    missing = [m for m in STACK if importlib.util.find_spec(m) is None]
    if missing:
        return f"this Python lacks the environment stack ({', '.join(missing)}): install awm with its test extra"
    return None


def _package_root(module: str) -> Path:
    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None:
        raise SynthesisError(f"the bubblewrap probe needs {module} in this Python")
    return Path(spec.origin).resolve().parent.parent


def _tasks_of(uid: int) -> int:
    """Processes and threads (the kernel's RLIMIT_NPROC count) whose real uid is `uid`, as /proc shows them.

    /proc may show fewer than the kernel counts (another pid namespace, hidepid): then a
    limit made from this count is lower than meant, and a probe fails rather than a host.
    """
    count = 0
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/status", encoding="ascii", errors="replace") as fh:
                fields = dict(line.split(":", 1) for line in fh if ":" in line)
        except OSError:  # it ended meanwhile
            continue
        if int(fields.get("Uid", "-1 ").split()[0]) == uid:
            count += int(fields.get("Threads", "1").strip())
    return count


def _copy_back(private: Path, dst: Path) -> None:
    """Copy the regular files the sandbox wrote to `dst`: links, fifos and folders stay behind,
    so reading the results cannot follow a link to a host file or block on a fifo."""
    for entry in os.scandir(private):
        if entry.is_file(follow_symlinks=False):
            shutil.copyfile(entry.path, dst / entry.name, follow_symlinks=False)


def _sandbox(bwrap: str, argv: list[str], src: Path, dst: Path, uid: int | None) -> list[str]:
    """bwrap running `argv` on `src` (read-only at /x) and `dst` (writable at /y), as `uid` outside
    (bwrap sets up as root, without a user namespace) or in a user namespace (`uid` None)."""
    binds: list[str] = []
    for top in ("bin", "sbin", "lib", "lib64", "lib32"):  # merged /usr: links; else real folders
        path = Path("/") / top
        if path.is_symlink():
            binds += ["--symlink", os.readlink(path), str(path)]
        elif path.is_dir():
            binds += ["--ro-bind", str(path), str(path)]
    readable = {Path("/usr"), Path(sys.base_prefix).resolve(), Path(sys.prefix).resolve(),
                *(_package_root(m) for m in STACK)}
    # a bind of a parent covers its children
    bound = sorted(p for p in readable if not any(parent in readable for parent in p.parents))
    # bwrap makes the folders leading to a bind with the host's modes (/root: 0700): open them
    # to the sandbox's uid. /tmp is the private tmpfs, made writable for all below.
    folders = sorted({str(a) for p in bound for a in p.parents} - {"/", "/tmp"})
    for folder in folders:
        binds += ["--perms", "0755", "--dir", folder]
    for path in bound:
        binds += ["--ro-bind", str(path), str(path)]
    if uid is None:
        identity = ["--unshare-all", "--cap-drop", "ALL",
                    "--unshare-user", "--uid", str(_NAMESPACE_UID), "--gid", str(_NAMESPACE_UID)]
    else:  # no user namespace: bwrap, as root, mounts; the drop leaves root before the probe
        identity = ["--unshare-ipc", "--unshare-pid", "--unshare-net", "--unshare-uts", "--unshare-cgroup-try",
                    "--cap-drop", "ALL", "--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID"]
        argv = [sys.executable, "-I", "-S", "-c", _DROP, str(uid), *argv]
    return [
        bwrap, *identity, "--die-with-parent", "--new-session",
        # the private /tmp first: binds below may lie under /tmp (a checkout or venv there)
        "--perms", "1777", "--tmpfs", "/tmp", *binds, "--dev", "/dev", "--proc", "/proc",
        "--ro-bind", str(src), "/x", "--bind", str(dst), "/y", "--chdir", "/tmp",
        "--clearenv", "--setenv", "PATH", "/usr/bin:/bin", "--setenv", "HOME", "/tmp",
        "--setenv", "PYTHONDONTWRITEBYTECODE", "1", *argv,
    ]


class BubblewrapProber(FileProber):
    """Probes in a bubblewrap sandbox on this host (see the module docstring).

    Args:
        timeout_s: wall-clock limit of one probe.
        tool_timeout_s: limit of one tool call inside it.
        memory_bytes: address-space limit of the sandbox's processes.
        processes: processes and threads the sandbox may run at once. Probing the example
            environments (12 tools each, and their verifiers) peaks at 2; the room above is for
            modules that start a thread pool.
        uid_base: the first of the uids the code runs as when this runs as root (one per
            concurrent probe); a site that uses `SANDBOX_UID_BASE` for something else moves it.

    Attributes:
        drops_to_uid: the code runs as a dedicated uid (`SANDBOX_UID_BASE` + a slot), not as
            this user: set when running as root.
        missing: the protection this host cannot give (None: all of the module docstring's).

    Raises:
        SynthesisError: bwrap or the environment stack is missing.
    """

    def __init__(self, *, timeout_s: float = 180.0, tool_timeout_s: float = 10.0,
                 memory_bytes: int = 4 << 30, processes: int = 128, uid_base: int = SANDBOX_UID_BASE) -> None:
        why = available()
        if why is not None:
            raise SynthesisError(f"no Docker engine answers and the bubblewrap probe cannot run: {why}")
        self.timeout_s = timeout_s
        self.tool_timeout_s = tool_timeout_s
        self.memory_bytes = memory_bytes
        self.processes = processes
        self.uid_base = uid_base
        self.bwrap = str(shutil.which("bwrap"))
        self.drops_to_uid = False
        self.missing: str | None = None
        if os.geteuid() == 0:
            refused = _setup_as_root_refused(self.bwrap)
            self.drops_to_uid = refused is None
            if refused is not None:
                self.missing = (f"no process-count limit, and the sandbox is root outside it: bwrap cannot set "
                                f"up a sandbox as root without a user namespace here ({refused})")
                log.warning("the bubblewrap probe runs with %s", self.missing)

    def describe(self) -> str:
        what = "bubblewrap (no Docker engine answers: a local sandbox without network, read-only binds"
        if self.missing is not None:
            return f"{what}; {self.missing})"
        if self.drops_to_uid:
            return f"{what}, a dedicated uid, at most {self.processes} processes and threads)"
        return f"{what}, at most {self.processes} processes and threads more than this user runs)"

    def command(self, command: list[str], src: Path, dst: Path, uid: int | None = None) -> list[str]:
        """The bwrap command line that runs `python -m awm_server <command>` on `src` and `dst`,
        as `uid` outside (after bwrap set up as root), or in a user namespace (`uid` None)."""
        probe = [sys.executable, "-m", "awm_server", command[0], "--dir", "/x", "--out", "/y", *command[1:]]
        return _sandbox(self.bwrap, probe, src, dst, uid)

    def _limits(self, cpu_s: float, processes: int | None) -> None:
        """In the child, before bwrap: limits that every process of the sandbox inherits."""
        resource.setrlimit(resource.RLIMIT_AS, (self.memory_bytes, self.memory_bytes))
        resource.setrlimit(resource.RLIMIT_CPU, (int(cpu_s) + 1, int(cpu_s) + 2))
        resource.setrlimit(resource.RLIMIT_FSIZE, (512 << 20, 512 << 20))
        resource.setrlimit(resource.RLIMIT_NOFILE, (512, 512))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        if processes is not None:  # never above the hard limit this process was given
            hard = resource.getrlimit(resource.RLIMIT_NPROC)[1]
            processes = processes if hard == resource.RLIM_INFINITY else min(processes, hard)
            resource.setrlimit(resource.RLIMIT_NPROC, (processes, processes))

    @contextmanager
    def _identity(self) -> Iterator[int | None]:
        """The uid the code runs as outside, for one probe (None: this user's, in a user namespace).

        Concurrent probes (`--jobs`, or another `awm gen` on this host) get distinct uids, so a
        fork bomb in one cannot use up the processes of another: RLIMIT_NPROC counts per uid.
        """
        if not self.drops_to_uid:
            yield None
            return
        with _slots_lock:  # the lowest uid that no probe here holds and no process on the host has
            uid = next(u for u in itertools.count(self.uid_base) if u not in _slots and not _tasks_of(u))
            _slots.add(uid)
        try:
            yield uid
        finally:
            # After a timeout the kernel ends the sandbox's processes as its pid namespace goes:
            # wait for that before another probe gets this uid.
            deadline = time.monotonic() + 10
            while _tasks_of(uid) and time.monotonic() < deadline:
                time.sleep(0.05)
            with _slots_lock:
                _slots.discard(uid)

    def _process_limit(self, uid: int | None) -> int | None:
        """RLIMIT_NPROC for one probe: None when root with a user namespace (the kernel ignores it).

        As this user (no other uid to run as) the kernel counts every process of the user, here
        and in other sessions, so the limit is their count now plus `processes`: a fork bomb
        adds at most `processes` to the host. The price: processes the user starts elsewhere
        during the probe use the same room (the probe may then fail for want of threads), and
        concurrent probes share it.
        """
        if self.missing is not None:
            return None
        return _tasks_of(os.getuid() if uid is None else uid) + self.processes

    def probe(self, scenario: str, code: str, seed: Path, runs: list[ProbeRun], out_dir: Path) -> ProbeResult:
        result = super().probe(scenario, code, seed, runs, out_dir)
        texts = [result.import_error or "", result.error or "", *(c.exception or "" for c in result.calls)]
        if self.missing is None and any(sign in text for sign in _LIMIT_SIGNS for text in texts):
            note = (f"scenario {scenario!r}: the module met the probe's limit of {self.processes} processes "
                    "and threads (fork or thread start failed with EAGAIN)")
            if result.import_error is not None:
                result.import_error = f"{result.import_error}\n{note}"
            result.error = note if result.error is None else f"{result.error}; {note}"
        return result

    def _run(
        self, scenario: str, command: list[str], src: Path, dst: Path, timeout_s: float | None = None
    ) -> ProbeResult:
        result = ProbeResult()
        timeout_s = timeout_s or self.timeout_s
        with self._identity() as uid, tempfile.TemporaryDirectory(prefix="sandbox-", dir=dst.parent) as private:
            if uid is not None:
                os.chown(private, uid, uid)  # 0700, the sandbox's own
            processes = self._process_limit(uid)
            proc = subprocess.Popen(  # a fixed command line; the generated code runs inside bwrap
                self.command(command, src, Path(private), uid), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT, cwd="/", start_new_session=True,
                preexec_fn=lambda: self._limits(timeout_s, processes),
            )
            try:
                out, _ = proc.communicate(timeout=timeout_s)
                result.exit_code = proc.returncode
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                out, _ = proc.communicate()
                result.error = f"the probe did not finish within {timeout_s:g}s (a tool or the import hangs)"
            _copy_back(Path(private), dst)
        result.log_tail = out.decode(errors="replace")[-_LOG_TAIL:]
        return result


@functools.cache
def _setup_as_root_refused(bwrap: str) -> str | None:
    """Why bwrap, as root, cannot run a sandbox without a user namespace as a dedicated uid (None: it can)."""
    check = [sys.executable, "-I", "-S", "-c", "import os; print(os.getresuid())"]
    with tempfile.TemporaryDirectory(prefix="awm-bwrap-check-") as tmp:
        try:
            done = subprocess.run(_sandbox(bwrap, check, Path(tmp), Path(tmp), SANDBOX_UID_BASE), cwd="/",
                                  stdin=subprocess.DEVNULL, capture_output=True, timeout=30, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            return str(exc)
    uid = SANDBOX_UID_BASE
    if done.returncode != 0 or done.stdout.decode().strip() != str((uid, uid, uid)):
        lines = (done.stderr or done.stdout).decode(errors="replace").strip().splitlines()
        return lines[-1] if lines else f"exit code {done.returncode}"
    return None
