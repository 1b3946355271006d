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
  request, renamed into place when complete); each result is one JSON line on its stdout,
  which the host follows. A child's own output goes to files, so a module that prints cannot
  garble the protocol.

It needs the engine on this host (bind mounts of host paths); `BatchChecker.supported` says
whether it is. When the checker container dies (say, the memory limit kills it), pending and
later checks raise `CheckerUnavailable` and the build falls back to starting each image.
"""

from __future__ import annotations

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
from awm.runtime.base import Resources
from awm.runtime.docker_backend import sandbox_options
from awm.core.labels import owner_labels

__all__ = ["BatchChecker", "CheckerUnavailable"]

log = logging.getLogger("awm")

_MOUNT = "/awm-check"
_OUTPUT_TAIL = 64 * 1024

# Runs inside the base image's venv. Pure standard library apart from awm_server itself.
_ZYGOTE = r'''
import json, os, signal, sys, time, traceback
import awm_server.__main__ as entry
import awm_server.environment  # noqa: F401  the whole stack: fastapi, sqlalchemy, mcp, ...
ROOT, LIMIT = sys.argv[1], int(sys.argv[2])
TAIL = %(tail)d

def tail(path, n):
    try:
        with open(path, "rb") as f:
            f.seek(0, 2); size = f.tell(); f.seek(max(0, size - n))
            return f.read().decode("utf-8", "replace")
    except OSError:
        return ""

def emit(obj):
    sys.stdout.write(json.dumps(obj) + "\n"); sys.stdout.flush()

def child(req):
    out = os.open("/tmp/c%%s.out" %% req, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    err = os.open("/tmp/c%%s.err" %% req, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.dup2(out, 1); os.dup2(err, 2)
    sys.stdout = os.fdopen(1, "w", buffering=1); sys.stderr = os.fdopen(2, "w", buffering=1)
    os.environ["AWM_SCENARIO_DIR"] = os.path.join(ROOT, req, "scenario")
    try:
        code = entry.main(["check"])
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    except BaseException:
        traceback.print_exc(); code = 1
    sys.stdout.flush(); sys.stderr.flush()
    os._exit(code if isinstance(code, int) else 1)

running, seen = {}, set()
emit({"ready": True})
while True:
    for pid, (req, deadline) in list(running.items()):
        done, status = os.waitpid(pid, os.WNOHANG)
        timed_out = False
        if not done and time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL); done, status = os.waitpid(pid, 0); timed_out = True
        if done:
            del running[pid]
            emit({"req": req, "timeout": timed_out,
                  "code": os.waitstatus_to_exitcode(status),
                  "stdout": tail("/tmp/c%%s.out" %% req, TAIL), "stderr": tail("/tmp/c%%s.err" %% req, TAIL)})
            for suffix in ("out", "err"):
                try: os.unlink("/tmp/c%%s.%%s" %% (req, suffix))
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
        pid = os.fork()
        if pid == 0:
            child(name)
        running[pid] = (name, time.monotonic() + timeout)
    time.sleep(0.005)
''' % {"tail": _OUTPUT_TAIL}


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
            for name, data in ctx.files.items():
                if not name.startswith("scenario/"):
                    continue
                path = partial / name
                path.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
                path.write_bytes(data)
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
        stdout = str(data.get("stdout", "")).strip()
        try:
            return list(json.loads(stdout.splitlines()[-1])["tools"])
        except (ValueError, KeyError, IndexError):
            raise ImageBuildError(
                f"scenario {ctx.scenario!r}: `check` printed no tool list: {stdout[-300:]!r}",
                scenario=ctx.scenario, image=ctx.tag,
            ) from None

    def close(self) -> None:
        """Stop the checker container and remove its folder."""
        if self._dir is not None:
            try:
                (self._dir / "STOP").write_text("")
            except OSError:
                pass
        if self._container is not None:
            try:
                self._container.wait(timeout=5)
            except Exception:  # still busy or gone: removal below ends it either way
                pass
            try:
                self._container.remove(force=True)
            except docker.errors.APIError:
                pass
        if self._reader is not None:
            self._reader.join(timeout=5)
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> BatchChecker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()
