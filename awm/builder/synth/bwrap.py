"""Probe generated code without a Docker engine: the same probe, inside a bubblewrap sandbox.

Many GPU clusters (Slurm) have no container engine. There `gen env` and `gen verifier` run the
probe of `awm_server` (`python -m awm_server probe|probe-verifiers`, as in the probe container)
under `bwrap` (Debian's `bubblewrap`), unprivileged:

* its own namespaces (`--unshare-all`: no network but an empty loopback, own pids, ipc, uts,
  user), uid 10001, every capability dropped, a new session, killed with its parent;
* a file system of read-only binds only: `/usr` (and the `/bin`, `/lib` links), the Python
  installation and the environment that hold the environment stack (fastapi, sqlalchemy,
  pydantic, mcp, fastapi-mcp, `awm_server`), the probe's input folder; writable are its output
  folder and a private `/tmp`; nothing else of the host is visible (no home, no `/etc`, no
  sockets);
* rlimits set before `bwrap` starts: address space, CPU seconds, file size, open files; and a
  wall-clock timeout that kills the whole process group.

The generated code never runs in this process. The host's Python must have the environment
stack (the versions the images pin); `available()` says whether it does.
"""

from __future__ import annotations

import importlib.util
import os
import resource
import shutil
import signal
import subprocess
import sys
from pathlib import Path

from awm.builder.synth.probe import FileProber, ProbeResult
from awm.core.errors import SynthesisError

__all__ = ["STACK", "BubblewrapProber", "available"]

STACK = ("fastapi", "sqlalchemy", "pydantic", "mcp", "fastapi_mcp", "uvicorn", "awm_server")
_LOG_TAIL = 3000
_SANDBOX_UID = 10001


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


class BubblewrapProber(FileProber):
    """Probes in a bubblewrap sandbox on this host (see the module docstring).

    Args:
        timeout_s: wall-clock limit of one probe.
        tool_timeout_s: limit of one tool call inside it.
        memory_bytes: address-space limit of the sandbox's processes.

    Raises:
        SynthesisError: bwrap or the environment stack is missing.
    """

    def __init__(self, *, timeout_s: float = 180.0, tool_timeout_s: float = 10.0,
                 memory_bytes: int = 4 << 30) -> None:
        why = available()
        if why is not None:
            raise SynthesisError(f"no Docker engine answers and the bubblewrap probe cannot run: {why}")
        self.timeout_s = timeout_s
        self.tool_timeout_s = tool_timeout_s
        self.memory_bytes = memory_bytes
        self.bwrap = str(shutil.which("bwrap"))

    def describe(self) -> str:
        return "bubblewrap (no Docker engine answers: a local sandbox without network, read-only binds)"

    def command(self, command: list[str], src: Path, dst: Path) -> list[str]:
        """The bwrap command line that runs `python -m awm_server <command>` on `src` and `dst`."""
        binds: list[str] = []
        for top in ("bin", "sbin", "lib", "lib64", "lib32"):  # merged /usr: links; else real folders
            path = Path("/") / top
            if path.is_symlink():
                binds += ["--symlink", os.readlink(path), str(path)]
            elif path.is_dir():
                binds += ["--ro-bind", str(path), str(path)]
        readable = {Path("/usr"), Path(sys.base_prefix).resolve(), Path(sys.prefix).resolve(),
                    *(_package_root(m) for m in STACK)}
        for path in sorted(readable):
            if not any(parent in readable for parent in path.parents):  # a bind of a parent covers it
                binds += ["--ro-bind", str(path), str(path)]
        return [
            self.bwrap, "--unshare-all", "--die-with-parent", "--new-session", "--cap-drop", "ALL",
            "--unshare-user", "--uid", str(_SANDBOX_UID), "--gid", str(_SANDBOX_UID),
            # the private /tmp first: binds below may lie under /tmp (a checkout or venv there)
            "--tmpfs", "/tmp", *binds, "--dev", "/dev", "--proc", "/proc",
            "--ro-bind", str(src), "/x", "--bind", str(dst), "/y", "--chdir", "/tmp",
            "--clearenv", "--setenv", "PATH", "/usr/bin:/bin", "--setenv", "HOME", "/tmp",
            "--setenv", "PYTHONDONTWRITEBYTECODE", "1",
            sys.executable, "-m", "awm_server", command[0], "--dir", "/x", "--out", "/y", *command[1:],
        ]

    def _limits(self, cpu_s: float) -> None:
        """In the child, before bwrap: limits that every process of the sandbox inherits."""
        resource.setrlimit(resource.RLIMIT_AS, (self.memory_bytes, self.memory_bytes))
        resource.setrlimit(resource.RLIMIT_CPU, (int(cpu_s) + 1, int(cpu_s) + 2))
        resource.setrlimit(resource.RLIMIT_FSIZE, (512 << 20, 512 << 20))
        resource.setrlimit(resource.RLIMIT_NOFILE, (512, 512))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))

    def _run(
        self, scenario: str, command: list[str], src: Path, dst: Path, timeout_s: float | None = None
    ) -> ProbeResult:
        result = ProbeResult()
        timeout_s = timeout_s or self.timeout_s
        proc = subprocess.Popen(  # a fixed command line; the generated code runs inside bwrap
            self.command(command, src, dst), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=lambda: self._limits(timeout_s),
        )
        try:
            out, _ = proc.communicate(timeout=timeout_s)
            result.exit_code = proc.returncode
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, _ = proc.communicate()
            result.error = f"the probe did not finish within {timeout_s:g}s (a tool or the import hangs)"
        result.log_tail = out.decode(errors="replace")[-_LOG_TAIL:]
        return result
