"""Run untrusted verifier code in a child process with resource limits and a wall-clock timeout.

Verifiers are LLM-written Python. They never run in the server's process: each call starts a
fresh interpreter (`python -I`, isolated from the environment and the working directory) with
limits on CPU time, address space, file size, open files and new processes, an empty
environment (no control token), a private scratch directory, and only copies of the databases.
A verifier that hangs, allocates without bound, crashes or prints garbage yields an error result;
the caller keeps running.

    outcome = run_verifier(code, "verify_task_completion",
                           [seed_copy, final_copy, None], limits=Limits(timeout_s=10))
"""

from __future__ import annotations

import json
import os
import resource
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = ["Limits", "Outcome", "grade", "run_verifier"]

# The child: exec the source in a fresh namespace, call the function, print one marked JSON
# line. The verifier's own prints go to stderr, and the mark is random per run, so nothing it
# prints is mistaken for the result.
_CHILD = r"""
import json, sys, traceback
out = sys.stdout
sys.stdout = sys.stderr
payload = json.loads(sys.stdin.read())
MARK = payload.pop("mark")
def emit(obj):
    out.write(MARK + json.dumps(obj, default=repr) + "\n")
    out.flush()
try:
    ns = {"__name__": "verifier"}
    exec(compile(payload["code"], payload["filename"], "exec"), ns)
    fn = ns.get(payload["function"])
    if not callable(fn):
        emit({"error": "verifier defines no function " + payload["function"]})
    else:
        emit({"value": fn(*payload["args"])})
except MemoryError:
    emit({"error": "MemoryError: the verifier exceeded its memory limit"})
except BaseException as exc:
    tb = traceback.format_exception(type(exc), exc, exc.__traceback__)
    emit({"error": (type(exc).__name__ + ": " + str(exc))[:2000], "traceback": "".join(tb)[-4000:]})
"""


@dataclass(frozen=True)
class Limits:
    """Resource limits of one verifier run."""

    timeout_s: float = 30.0  # wall clock
    memory_bytes: int = 256 * 1024 * 1024  # address space
    file_size_bytes: int = 64 * 1024 * 1024  # largest file it may write
    open_files: int = 64
    processes: int = 0  # new processes or threads it may start (not enforced for root)


@dataclass
class Outcome:
    """What a verifier run gave: its raw return value, or the error that stopped it."""

    value: Any = None
    error: str | None = None
    traceback: str | None = None
    stderr: str = ""
    duration_ms: float = 0.0
    timed_out: bool = False
    exit_code: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _limit(limits: Limits) -> None:
    # Runs in the child between fork and exec.
    cpu = int(limits.timeout_s) + 1
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
    resource.setrlimit(resource.RLIMIT_AS, (limits.memory_bytes, limits.memory_bytes))
    resource.setrlimit(resource.RLIMIT_FSIZE, (limits.file_size_bytes, limits.file_size_bytes))
    resource.setrlimit(resource.RLIMIT_NOFILE, (limits.open_files, limits.open_files))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    resource.setrlimit(resource.RLIMIT_NPROC, (limits.processes, limits.processes))


def run_verifier(
    code: str,
    function: str,
    args: list[Any],
    *,
    limits: Limits = Limits(),
    filename: str = "<verifier>",
    python: str = sys.executable,
) -> Outcome:
    """Call `function(*args)` defined by `code` in a limited child process.

    Args:
        code: the verifier source.
        function: the name of the function to call.
        args: JSON-able positional arguments (file paths, the final answer).
        limits: resource limits and the wall-clock timeout.
        filename: shown in tracebacks, e.g. "gen_verifier.pure_code.jsonl:12".
        python: the interpreter to run the child with.

    Returns:
        An `Outcome` with the function's return value, or an error; never raises for faults
        of the verifier itself.
    """
    mark = f"@@awm-result-{secrets.token_hex(8)}@@"
    payload = json.dumps(
        {"code": code, "function": function, "args": args, "filename": filename, "mark": mark}
    )
    start = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="awm-verify-") as scratch:
        proc = subprocess.Popen(
            [python, "-I", "-c", _CHILD],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=scratch,
            env={"PATH": "/usr/bin:/bin", "HOME": scratch, "TMPDIR": scratch, "LANG": "C.UTF-8"},
            preexec_fn=lambda: _limit(limits),
            start_new_session=True,  # so a timeout kills anything it managed to start
            text=True,
        )
        timed_out = False
        try:
            stdout, stderr = proc.communicate(payload, timeout=limits.timeout_s)
        except subprocess.TimeoutExpired:
            timed_out = True
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            stdout, stderr = proc.communicate()
    outcome = Outcome(
        stderr=stderr[-4000:],
        duration_ms=round((time.monotonic() - start) * 1000, 3),
        timed_out=timed_out,
        exit_code=proc.returncode,
    )
    if timed_out:
        outcome.error = f"verifier timed out after {limits.timeout_s:g}s and was killed"
        return outcome
    marked = [line for line in stdout.split("\n") if line.startswith(mark)]
    if not marked:
        outcome.error = _describe_death(proc.returncode, stderr)
        return outcome
    data = json.loads(marked[-1][len(mark) :])
    outcome.value = data.get("value")
    outcome.error = data.get("error")
    outcome.traceback = data.get("traceback")
    return outcome


def _describe_death(code: int | None, stderr: str) -> str:
    if code is not None and code < 0:
        sig = signal.Signals(-code).name
        why = {
            "SIGXCPU": "it exceeded its CPU time limit",
            "SIGKILL": "it was killed (memory or CPU limit)",
            "SIGSEGV": "it crashed",
            "SIGXFSZ": "it exceeded its file size limit",
        }.get(sig, "it was stopped by a signal")
        return f"verifier process died with {sig}: {why}"
    tail = stderr.strip().splitlines()[-1:] or ["no output"]
    return f"verifier process exited with code {code} without a result: {tail[0][:500]}"


def grade(value: Any, flavour: str = "code") -> str:
    """The code flavour's verdict: "complete" only for `{"result": "complete"}`, else "others"."""
    if flavour != "code":
        return "evidence"
    if isinstance(value, dict) and value.get("result") == "complete":
        return "complete"
    return "others"
