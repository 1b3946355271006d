"""The import check of many new images, done by one long-lived container per build.

Checking an image means running its `check` command: import the environment module and list
its tools. Started once per image, that costs a container start and a fresh Python importing
FastAPI, SQLAlchemy, pydantic, mcp and fastapi-mcp, about a second of CPU, which on two cores
caps a build at about one image per second. A scenario image is the base image plus the
scenario's files and nothing else, so `BatchChecker` runs the same `check` code on the same
base image, against each scenario's files:

* one container from the base image (no network, read-only, non-root, no capabilities, a
  memory limit) runs a small Python program that imports the stack once, then forks one child
  per scenario; the child runs the image's own `awm_server` `check` entry point on that
  scenario's files, with a wall-clock limit (the parent kills it on time);
* the files reach it through a read-only bind mount of a host folder (one sub-folder per
  request, renamed into place when complete); each result is one JSON line on the parent's
  stdout, which the host follows.

Nothing the checked module writes is taken for a result. The parent gives each child a random
key on stdin (read by `check --key-stdin` before the import; `awm_server.checkresult`) and a
pipe of its own as stdout; it accepts only the line that carries that key, and the exit code.
The child keeps no other descriptor: not the parent's stdout (the host's channel) nor another
check's pipe. The parent makes itself non-dumpable, which its children inherit, so a check
cannot reopen the parent's stdout through /proc/1/fd or read another process's memory.

It needs the engine on this host (bind mounts of host paths); `BatchChecker.supported` says
whether it is. When the checker container dies (say, the memory limit kills it), pending and
later checks raise `CheckerUnavailable` and the build falls back to starting each image.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import os
import shutil
import tempfile
import threading
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import docker
import docker.errors

from awm.builder.build.render import BuildContext
from awm.core.errors import AWMError, ImageBuildError
from awm.core.labels import owner_labels
from awm.runtime.base import Resources
from awm.runtime.docker_backend import sandbox_options

__all__ = ["BatchChecker", "CheckerUnavailable"]

log = logging.getLogger("awm")

_MOUNT = "/awm-check"
_OUTPUT_TAIL = 64 * 1024  # of a check's stderr, for the error message
_RESULT_TAIL = 1024 * 1024  # of its stdout, where the keyed result line is the last

# Runs inside the base image's venv. Pure standard library apart from awm_server itself.
_ZYGOTE = r'''
import ctypes, json, os, select, signal, sys, time, traceback
import awm_server.__main__ as entry
import awm_server.environment  # noqa: F401  the stack: fastapi, pydantic, mcp, fastapi-mcp, ...
# What `check` itself imports before the module (as the server does), and the parts of
# SQLAlchemy every environment module imports (declarative ORM, the SQLite dialect). Imported
# in each child instead, they were most of a check's time (about 250 ms of CPU of 350).
import awm_server.app, awm_server.slots, sqlalchemy, sqlalchemy.dialects.sqlite, sqlalchemy.orm  # noqa: F401,E401
from awm_server.checkresult import find_result, new_key
ROOT, LIMIT = sys.argv[1], int(sys.argv[2])
TAIL, OUT = @TAIL@, @OUT@
# Not dumpable (PR_SET_DUMPABLE 0), inherited by every fork: /proc/<pid>/fd and the memory of
# this process and of each check are closed to the others (same uid, no CAP_SYS_PTRACE), so a
# check cannot reopen this process's stdout (the host's channel) or read another check's key.
if ctypes.CDLL(None, use_errno=True).prctl(4, 0, 0, 0, 0) != 0:
    sys.exit("prctl(PR_SET_DUMPABLE, 0) failed: %s" % os.strerror(ctypes.get_errno()))

def tail(path, n):
    try:
        with open(path, "rb") as f:
            f.seek(0, 2); size = f.tell(); f.seek(max(0, size - n))
            return f.read().decode("utf-8", "replace")
    except OSError:
        return ""

def emit(obj):
    sys.stdout.write(json.dumps(obj) + "\n"); sys.stdout.flush()

def child(req, key, result_w):
    # stdin: the key (read by `check` before the import); stdout: a pipe to this parent only;
    # stderr: a file. Nothing else stays open: not the host's channel, not other checks' pipes.
    os.setpgid(0, 0)
    key_r, key_w = os.pipe()
    os.write(key_w, (key + "\n").encode()); os.close(key_w)
    err = os.open("/tmp/c%s.err" % req, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.dup2(key_r, 0); os.dup2(result_w, 1); os.dup2(err, 2)
    os.closerange(3, 1 << 16)
    sys.stdout = os.fdopen(1, "w", buffering=1); sys.stderr = os.fdopen(2, "w", buffering=1)
    os.environ["AWM_SCENARIO_DIR"] = os.path.join(ROOT, req, "scenario")
    try:
        code = entry.main(["check", "--key-stdin"])
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    except BaseException:
        traceback.print_exc(); code = 1
    sys.stdout.flush(); sys.stderr.flush()
    os._exit(code if isinstance(code, int) else 1)

def read_some(state):
    try:
        chunk = os.read(state["fd"], 1 << 16)
    except BlockingIOError:
        return False
    state["out"] += chunk
    del state["out"][:-OUT]
    return bool(chunk)

running, seen = {}, set()
emit({"ready": True})
while True:
    fds = {state["fd"]: state for state in running.values()}
    for fd in (select.select(list(fds), [], [], 0.005)[0] if fds else time.sleep(0.005) or []):
        read_some(fds[fd])
    for pid, state in list(running.items()):
        done, status = os.waitpid(pid, os.WNOHANG)
        timed_out = False
        if not done and time.monotonic() > state["deadline"]:
            os.kill(pid, signal.SIGKILL); done, status = os.waitpid(pid, 0); timed_out = True
        if done:
            del running[pid]
            while read_some(state):  # what is left in the pipe; never wait for its end
                pass
            os.close(state["fd"])
            try: os.killpg(pid, signal.SIGKILL)  # anything the module started
            except OSError: pass
            req = state["req"]
            emit({"req": req, "timeout": timed_out, "code": os.waitstatus_to_exitcode(status),
                  "tools": find_result(state["out"].decode("utf-8", "replace"), state["key"]),
                  "stderr": tail("/tmp/c%s.err" % req, TAIL)})
            try: os.unlink("/tmp/c%s.err" % req)
            except OSError: pass
    if os.path.exists(os.path.join(ROOT, "STOP")) and not running:
        break
    for name in sorted(os.listdir(ROOT), key=lambda n: (len(n), n)):
        if len(running) >= LIMIT:
            break
        if not name.isdigit() or name in seen:
            continue
        seen.add(name)
        try:
            with open(os.path.join(ROOT, name, "timeout")) as f:
                timeout = float(f.read())
        except (OSError, ValueError):
            timeout = 60.0
        key, (result_r, result_w) = new_key(), os.pipe()
        pid = os.fork()
        if pid == 0:
            child(name, key, result_w)
        os.close(result_w)
        os.set_blocking(result_r, False)
        running[pid] = {"req": name, "deadline": time.monotonic() + timeout, "key": key, "fd": result_r,
                        "out": bytearray()}
'''.replace("@TAIL@", str(_OUTPUT_TAIL)).replace("@OUT@", str(_RESULT_TAIL))


class CheckerUnavailable(AWMError):
    """The batch checker cannot check (not started, not supported, or its container died)."""


class BatchChecker:
    """Checks scenarios' files on the base image in one container; see the module docstring.

    Args:
        client: the Docker client (of an engine on this host).
        base_image: the base image tag the scenario images are built on.
        run_id: the run id the container is labelled with (so a killed build's is reaped).
        concurrency: scenarios checked at once (forked children).
        memory_per_check_mb: the container's memory limit is this times `concurrency`, plus
            what the parent holds.

    Example:
        >>> with BatchChecker(client, "awm/base:abc", run_id="build-1") as checker:
        ...     tools = checker.check(ctx, timeout_s=60)
    """

    def __init__(
        self,
        client: docker.DockerClient,
        base_image: str,
        *,
        run_id: str,
        concurrency: int = 2,
        memory_per_check_mb: int = 512,
    ) -> None:
        self.client = client
        self.base_image = base_image
        self.run_id = run_id
        self.concurrency = max(1, concurrency)
        self.memory_mb = memory_per_check_mb * self.concurrency + 256
        self._dir: Path | None = None
        self._container: Any = None
        self._reader: threading.Thread | None = None
        self._lock = threading.Lock()
        self._pending: dict[str, Future[dict[str, Any]]] = {}
        self._counter = itertools.count(1)
        self._alive = False
        self._started = False
        self._death = "the checker was not started"

    @staticmethod
    def supported(client: docker.DockerClient) -> bool:
        """Whether the engine runs on this host (unix socket), so that bind mounts work."""
        return str(client.api.base_url).startswith("http+docker://")

    def start(self) -> BatchChecker:
        """Start the checker container now (else the first `check` starts it)."""
        with self._lock:
            if not self._started:
                self._started = True
                self._start_locked()
        return self

    def _start_locked(self) -> None:
        self._dir = Path(tempfile.mkdtemp(prefix="awm-check-"))
        self._dir.chmod(0o755)  # the container's uid 10001 reads it
        self._container = self.client.containers.run(
            self.base_image,
            entrypoint=["/opt/awm/venv/bin/python", "-c", _ZYGOTE, _MOUNT, str(self.concurrency)],
            command=[],
            detach=True,
            **sandbox_options(
                Resources(memory=f"{self.memory_mb}m", pids=64 * self.concurrency, cpus=float(os.cpu_count() or 1)),
                network=False,
            ),
            volumes={str(self._dir): {"bind": _MOUNT, "mode": "ro"}},
            labels={**owner_labels(self.run_id), "awm.role": "build-checker"},
        )
        self._alive = True
        self._reader = threading.Thread(target=self._follow, name="awm-checker", daemon=True)
        self._reader.start()
        log.info("started the batch checker %s on %s", self._container.short_id, self.base_image)

    def _follow(self) -> None:
        """Read the container's stdout; hand each result to the check waiting for it."""
        buffer = b""
        try:
            for chunk in self._container.logs(stream=True, follow=True, stdout=True, stderr=False):
                buffer += chunk
                while b"\n" in buffer:
                    line, buffer = buffer.split(b"\n", 1)
                    self._dispatch(line)
        except Exception as exc:  # the engine went away: same as the container dying
            log.debug("checker log stream ended: %s", exc)
        with self._lock:
            self._alive = False
            try:
                self._container.reload()
                logs = self._container.logs(stdout=False, stderr=True, tail=10).decode(errors="replace").strip()
                state = self._container.attrs.get("State", {})
                self._death = (f"the checker container exited ({state.get('ExitCode')}, "
                               f"OOMKilled={state.get('OOMKilled')}): {logs[-500:]}")
            except docker.errors.APIError:
                self._death = "the checker container is gone"
            pending, self._pending = self._pending, {}
        for future in pending.values():
            future.set_exception(CheckerUnavailable(self._death))

    def _dispatch(self, line: bytes) -> None:
        try:
            data = json.loads(line)
        except ValueError:
            log.debug("checker: %s", line[:200])
            return
        if "req" not in data:
            return
        with self._lock:
            future = self._pending.pop(str(data["req"]), None)
        if future is not None:
            future.set_result(data)

    def check(self, ctx: BuildContext, timeout_s: float) -> list[str]:
        """Run `check` on a rendered scenario; its tool names.

        Raises:
            ImageBuildError: the module failed on import, or did not import in time (the same
                messages as a check in the scenario's own image).
            CheckerUnavailable: the checker is not running; check the image itself instead.
        """
        with self._lock:
            if not self._started:
                self._started = True
                try:
                    self._start_locked()
                except (docker.errors.APIError, OSError) as exc:
                    self._death = f"the checker could not start: {exc}"
                    log.info("%s; checking each image instead", self._death)
            if not self._alive or self._dir is None:
                raise CheckerUnavailable(self._death)
            req = str(next(self._counter))
            future: Future[dict[str, Any]] = Future()
            self._pending[req] = future
        partial = self._dir / f"{req}.partial"
        try:
            for name, content in ctx.files.items():
                if not name.startswith("scenario/"):
                    continue
                path = partial / name
                path.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
                path.write_bytes(content)
                path.chmod(0o644)
            (partial / "timeout").write_text(f"{timeout_s:g}")
            for folder in (partial, partial / "scenario"):
                folder.chmod(0o755)
            partial.rename(self._dir / req)  # complete: the checker may take it now
            try:
                # the checker enforces timeout_s; this only guards against a stuck checker
                data = future.result(timeout=timeout_s + 60)
            except TimeoutError:
                raise CheckerUnavailable(f"the checker did not answer within {timeout_s + 60:g}s") from None
        finally:
            with self._lock:
                self._pending.pop(req, None)
            shutil.rmtree(partial, ignore_errors=True)
            shutil.rmtree(self._dir / req, ignore_errors=True)
        if data.get("timeout"):
            raise ImageBuildError(
                f"scenario {ctx.scenario!r}: environment module did not finish importing within "
                f"{timeout_s:g}s (does it start a server or block at import time?)",
                scenario=ctx.scenario, image=ctx.tag,
            )
        code = data.get("code")
        if code != 0:
            detail = str(data.get("stderr", "")).strip().removeprefix("awm-server: error: ")
            if code is not None and code < 0:
                detail = f"scenario {ctx.scenario!r}: `check` was killed by signal {-code} (out of memory?) {detail}"
            raise ImageBuildError(
                detail or f"scenario {ctx.scenario!r}: `check` exited with {code}",
                scenario=ctx.scenario, image=ctx.tag,
            )
        tools = data.get("tools")
        if not isinstance(tools, list):  # the zygote found no line carrying this check's key
            raise ImageBuildError(
                f"scenario {ctx.scenario!r}: `check` exited without reporting the module's tools: the module "
                "ended the process or took over its output during the import",
                scenario=ctx.scenario, image=ctx.tag,
            )
        return [str(t) for t in tools]

    def close(self) -> None:
        """Stop the checker container and remove its folder."""
        if self._dir is not None:
            with contextlib.suppress(OSError):
                (self._dir / "STOP").write_text("")
        if self._container is not None:
            with contextlib.suppress(Exception):  # still busy or gone: removal below ends it either way
                self._container.wait(timeout=5)
            with contextlib.suppress(docker.errors.APIError):
                self._container.remove(force=True)
        if self._reader is not None:
            self._reader.join(timeout=5)
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> BatchChecker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()
