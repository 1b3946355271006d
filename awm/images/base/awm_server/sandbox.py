"""Run untrusted verifier code in a child process: confined by Landlock, limited, bounded.

Verifiers are LLM-written Python. They never run in the server's process: each call starts a
fresh interpreter (`python -I`, isolated from the environment and the working directory) with
an empty environment (no control token) and a private scratch folder (its cwd, HOME and
TMPDIR), removed when the call ends. Before the verifier's code runs, the child confines
itself with Landlock (`awm_server.landlock`): it can read the Python runtime and the database
copies it was given, write only its scratch folder, not connect or bind TCP, and not signal
or reach processes outside itself; then it installs a seccomp filter (`awm_server.seccomp`):
no sockets of any family (UDP and pathname unix sockets are beyond Landlock), no io_uring,
ptrace, namespaces or mounts. rlimits bound CPU time, address space, file size, open
files and new processes; its stdout and stderr are read up to `Limits.output_bytes` in all,
and a verifier that prints more is stopped. A verifier that hangs, allocates without bound,
crashes or floods its output yields an error result; the caller keeps running.

    outcome = run_verifier(code, "verify_task_completion",
                           [seed_copy, final_copy, None], limits=Limits(timeout_s=10))
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import secrets
import selectors
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["Limits", "Outcome", "grade", "run_verifier"]

# Where `awm_server` is importable from: the child imports the Landlock and seccomp bindings
# from there (before confining itself: the folder need not stay readable).
_LIB = str(Path(__file__).resolve().parent.parent)

# The child: read the payload, confine itself, say how (first marked line), then exec the
# source in a fresh namespace, call the function and print one marked JSON line. The
# verifier's own prints go to stderr, and the mark is random per run, so nothing it prints
# is mistaken for the result; the sandbox line is written before its code runs.
_CHILD = r"""
import json, os, sys, traceback
out = sys.stdout
sys.stdout = sys.stderr
payload = json.loads(sys.stdin.read())
MARK = payload.pop("mark")
def emit(obj):
    out.write(MARK + json.dumps(obj, default=repr) + "\n")
    out.flush()
try:  # if the container runs out of memory, the kernel kills a verifier before the server
    with open("/proc/self/oom_score_adj", "w") as f:
        f.write("1000")
except OSError:
    pass
sys.path.insert(0, payload["lib"])
from awm_server import landlock, seccomp
del sys.path[0]
runtime = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix,
           "/usr", "/lib", "/lib64", "/etc/ld.so.cache", "/etc/localtime", "/dev/urandom"}
try:
    abi = landlock.confine(read=sorted(runtime) + payload["read"], write=[os.getcwd(), "/dev/null"])
except OSError as exc:
    emit({"error": "the verifier sandbox could not be set up: " + str(exc)})
    sys.exit(0)
try:  # where the kernel cannot, the verifier runs without it, as /_awm/info says
    seccomp.install()
    filtered = True
except OSError as exc:
    print("awm: verifier sandbox without seccomp: " + str(exc), file=sys.stderr)
    filtered = False
emit({"landlock_abi": abi, "seccomp": filtered})
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
    output_bytes: int = 1024 * 1024  # stdout and stderr together; more stops the verifier


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
    landlock_abi: int | None = None  # as the child reported it before any verifier code ran
    seccomp: bool | None = None  # whether its seccomp filter was installed (reported likewise)
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


@dataclass
class _Output:
    stdout: bytes
    stderr: bytes
    timed_out: bool
    overflowed: bool


def _collect(proc: subprocess.Popen[bytes], payload: bytes, limits: Limits) -> _Output:
    """Feed the payload, then read stdout and stderr until EOF, the deadline or the size cap.

    On the deadline or the cap the child's process group is killed: memory held here never
    exceeds `limits.output_bytes`, whatever the verifier prints.
    """
    assert proc.stdin is not None
    assert proc.stdout is not None
    assert proc.stderr is not None
    deadline = time.monotonic() + limits.timeout_s
    try:
        proc.stdin.write(payload)
        proc.stdin.close()
    except BrokenPipeError:  # it died at start-up; its stderr says why
        pass
    out_fd, err_fd = proc.stdout.fileno(), proc.stderr.fileno()
    chunks: dict[int, bytearray] = {out_fd: bytearray(), err_fd: bytearray()}
    total = 0
    timed_out = overflowed = False
    with selectors.DefaultSelector() as sel:
        for fd in chunks:
            sel.register(fd, selectors.EVENT_READ)
        while sel.get_map() and total <= limits.output_bytes:
            left = deadline - time.monotonic()
            if left <= 0:
                timed_out = True
                break
            for key, _ in sel.select(left):
                data = os.read(key.fd, min(65536, limits.output_bytes - total + 1))
                if not data:
                    sel.unregister(key.fd)
                chunks[key.fd] += data
                total += len(data)
        overflowed = total > limits.output_bytes
    if not (timed_out or overflowed):
        try:
            proc.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:  # closed its output but kept running
            timed_out = True
    if timed_out or overflowed:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    proc.stdout.close()
    proc.stderr.close()
    return _Output(bytes(chunks[out_fd]), bytes(chunks[err_fd]), timed_out, overflowed)


def run_verifier(
    code: str,
    function: str,
    args: list[Any],
    *,
    limits: Limits = Limits(),
    filename: str = "<verifier>",
    python: str = sys.executable,
    readable: Sequence[str] | None = None,
    scratch_root: Path | None = None,
) -> Outcome:
    """Call `function(*args)` defined by `code` in a confined, limited child process.

    Args:
        code: the verifier source.
        function: the name of the function to call.
        args: JSON-able positional arguments (file paths, the final answer).
        limits: resource limits, the output cap and the wall-clock timeout.
        filename: shown in tracebacks, e.g. "gen_verifier.pure_code.jsonl:12".
        python: the interpreter to run the child with.
        readable: the only files (besides the Python runtime) it may read; by default the
            arguments that name existing files (the database copies).
        scratch_root: where its scratch folder is made (default: the system's temp folder).

    Returns:
        An `Outcome` with the function's return value, or an error; never raises for faults
        of the verifier itself.
    """
    if readable is None:
        readable = [a for a in args if isinstance(a, str) and os.path.isfile(a)]
    mark = f"@@awm-result-{secrets.token_hex(8)}@@"
    payload = json.dumps(
        {"code": code, "function": function, "args": args, "filename": filename, "mark": mark,
         "lib": _LIB, "read": list(readable)}
    ).encode()
    start = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="awm-verify-", dir=scratch_root,
                                     ignore_cleanup_errors=True) as scratch:
        proc = subprocess.Popen(
            [python, "-I", "-c", _CHILD],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=scratch,
            env={"PATH": "/usr/bin:/bin", "HOME": scratch, "TMPDIR": scratch, "LANG": "C.UTF-8"},
            preexec_fn=lambda: _limit(limits),
            start_new_session=True,  # so a timeout kills anything it managed to start
        )
        out = _collect(proc, payload, limits)
    stdout = out.stdout.decode("utf-8", "replace")
    stderr = out.stderr.decode("utf-8", "replace")
    outcome = Outcome(
        stderr=stderr[-4000:],
        duration_ms=round((time.monotonic() - start) * 1000, 3),
        timed_out=out.timed_out,
        exit_code=proc.returncode,
    )
    marked = []
    for line in stdout.split("\n"):
        if line.startswith(mark):
            try:
                marked.append(json.loads(line[len(mark):]))
            except ValueError:  # cut short when it was killed
                continue
    if marked and "landlock_abi" in marked[0]:  # written before any verifier code ran
        confined = marked.pop(0)
        outcome.landlock_abi = confined["landlock_abi"]
        outcome.seccomp = confined["seccomp"]
    if out.timed_out:
        outcome.error = f"verifier timed out after {limits.timeout_s:g}s and was killed"
        return outcome
    if out.overflowed:
        outcome.error = (f"verifier printed more than {limits.output_bytes} bytes (the output limit) "
                         "and was stopped")
        return outcome
    if not marked:
        outcome.error = _describe_death(proc.returncode, stderr)
        return outcome
    data = marked[-1]
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
