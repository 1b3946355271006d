"""One scenario, loaded: its files, working database, environment app, reset gate and MCP bridge.

The scenario folder (written by `awm build` into the image) is defined in `awm_server.contract`.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
from starlette.types import ASGIApp, Receive, Scope, Send

from awm_server import landlock, seccomp
from awm_server.contract import (
    MANIFEST_FILE,
    MODULE_FILE,
    SEED_FILE,
    TASKS_FILE,
    VERIFIERS_FILE,
    ResetResult,
    ScenarioManifest,
    VerifierSandbox,
    VerifyResult,
)
from awm_server.database import WorkingDatabase
from awm_server.envmodule import MODULE_NAME, EnvModule, load_env_module
from awm_server.gate import Gate
from awm_server.mcp_bridge import McpBridge
from awm_server.sandbox import Limits, grade, run_verifier
from awm_server.settings import Settings

__all__ = ["Environment", "ScenarioFiles", "grade_databases"]

_log = logging.getLogger(__name__)

REWARDS = {"complete": 1.0, "others": 0.0, "error": 0.0}


class ScenarioFiles:
    """The read-only files of a scenario directory."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.module = root / MODULE_FILE
        self.seed = root / SEED_FILE
        self.manifest = ScenarioManifest.model_validate_json((root / MANIFEST_FILE).read_bytes())
        self.tasks: list[str] = json.loads((root / TASKS_FILE).read_text())
        self.verifiers: dict[str, dict[str, dict[str, str]]] = json.loads(
            (root / VERIFIERS_FILE).read_text()
        )

    @property
    def scenario(self) -> str:
        return self.manifest.scenario


def grade_databases(
    files: ScenarioFiles,
    task_idx: int,
    final_db: Path,
    *,
    final_answer: str | None = None,
    flavour: str = "code",
    limits: Limits = Limits(),
    scratch_root: Path | None = None,
) -> VerifyResult:
    """Run a task's verifier on read-only copies of the seed and of `final_db`.

    The copies and the verifier's scratch folder live in a temporary folder under
    `scratch_root` (the system's temp folder by default), removed when the verifier is done.
    """
    if not 0 <= task_idx < len(files.tasks):
        raise LookupError(
            f"scenario {files.scenario!r} has {len(files.tasks)} tasks; no task {task_idx}"
        )
    verifier = files.verifiers.get(flavour, {}).get(str(task_idx))
    if verifier is None:
        raise LookupError(f"scenario {files.scenario!r}: task {task_idx} has no {flavour} verifier")
    with tempfile.TemporaryDirectory(prefix="awm-grade-", dir=scratch_root, ignore_cleanup_errors=True) as tmp:
        initial = Path(tmp) / "initial.db"
        final = Path(tmp) / "final.db"
        shutil.copyfile(files.seed, initial)
        if final_db != final:
            shutil.copyfile(final_db, final)
        for path in (initial, final):
            path.chmod(0o444)
        args: list[Any] = [str(initial), str(final)]
        if flavour == "code":
            args.append(final_answer)
        outcome = run_verifier(
            verifier["code"],
            verifier["function"],
            args,
            limits=limits,
            filename=f"{files.scenario}/verifier_{flavour}_{task_idx}.py",
            readable=[str(initial), str(final)],
            scratch_root=Path(tmp),
        )
    result = "error" if outcome.error else grade(outcome.value, flavour)
    return VerifyResult(
        scenario=files.scenario,
        task_idx=task_idx,
        flavour=flavour,  # type: ignore[arg-type]  # callers accept code or sql only
        result=result,  # type: ignore[arg-type]
        reward=REWARDS.get(result),
        value=outcome.value,
        error=outcome.error,
        timed_out=outcome.timed_out,
        duration_ms=outcome.duration_ms,
        sandbox=VerifierSandbox(landlock_abi=outcome.landlock_abi, seccomp=outcome.seccomp),
    )


class _GatedApp:
    """The environment app behind the reset gate: each HTTP request holds it shared."""

    def __init__(self, app: ASGIApp, gate: Gate) -> None:
        self.app = app
        self.gate = gate

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        async with self.gate.shared():
            await self.app(scope, receive, send)


class Environment:
    """One episode's environment: a working database, the module imported for it, its gate and MCP.

    A container serves `settings.slots` of them (see `awm_server.slots`); `slot` is this one's
    index. With one slot the paths are the historical ones (`work_dir/env.db`, module
    `awm_env`); slot k of several works in `work_dir/e<k>/` with the module `awm_env_e<k>`.
    Slots share the scenario's read-only files and the verifier limiter (`files`, `verifiers`).
    """

    def __init__(
        self,
        settings: Settings,
        *,
        slot: int = 0,
        files: ScenarioFiles | None = None,
        verifiers: anyio.CapacityLimiter | None = None,
    ) -> None:
        self.settings = settings
        self.slot = slot
        self.files = files if files is not None else ScenarioFiles(settings.scenario_dir)
        self.work_dir = settings.work_dir if settings.slots == 1 else settings.work_dir / f"e{slot}"
        self.db = WorkingDatabase(self.files.seed, self.work_dir / "env.db")
        self.db.prepare()
        module_name = MODULE_NAME if settings.slots == 1 else f"{MODULE_NAME}_e{slot}"
        self.env: EnvModule = load_env_module(self.files.module, self.db.url, self.files.scenario, module_name)
        self.gate = Gate()
        self.gated_app = _GatedApp(self.env.app, self.gate)
        self.mcp = McpBridge(self.env.app, self.gated_app, tool_timeout_s=settings.tool_timeout_s,
                             max_sessions=settings.mcp_max_sessions, session_idle_s=settings.mcp_session_idle_s)
        self.started = time.time()
        self.landlock_abi = landlock.abi_version()
        self.seccomp = seccomp.available()
        self.sandbox_missing = landlock.missing(self.landlock_abi) + seccomp.missing(self.seccomp)
        if self.sandbox_missing and slot == 0:
            _log.warning("awm-server: warning: scenario %r: this kernel's Landlock ABI is %d and seccomp is %s, "
                         "so verifiers run without: %s", self.scenario, self.landlock_abi,
                         "available" if self.seccomp else "unavailable", "; ".join(self.sandbox_missing))
        self._verifiers = verifiers if verifiers is not None else anyio.CapacityLimiter(settings.verify_concurrency)
        self._in_use: set[Path] = set()  # scratch entries of verifies in flight: kept on reset

    @property
    def scenario(self) -> str:
        return self.files.scenario

    async def reset(self) -> ResetResult:
        start = time.perf_counter()
        async with self.gate.exclusive(self.settings.reset_drain_timeout_s):
            # Milliseconds of blocking work; running it inline keeps the exclusive section short.
            self.db.reset(self.env.dispose_engines)
            self.clear_scratch()
        return ResetResult(
            ok=True, resets=self.db.resets, duration_ms=round((time.perf_counter() - start) * 1000, 3)
        )

    async def verify(
        self, task_idx: int, final_answer: str | None = None, flavour: str = "code"
    ) -> VerifyResult:
        tmp = Path(tempfile.mkdtemp(prefix="awm-verify-", dir=self.settings.scratch_dir))
        self._in_use.add(tmp)
        try:
            final = tmp / "final.db"
            self.db.snapshot(final)
            return await anyio.to_thread.run_sync(
                lambda: grade_databases(
                    self.files,
                    task_idx,
                    final,
                    final_answer=final_answer,
                    flavour=flavour,
                    limits=self.settings.verifier,
                    scratch_root=tmp,
                ),
                limiter=self._verifiers,
            )
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
            self._in_use.discard(tmp)

    def snapshot_fd(self) -> int:
        """A consistent copy of the working database, as an open file that has no name.

        The copy is unlinked before it is returned (and on any failure), so no temp file can
        outlive the request, whether the client reads it all, goes away or the copy fails.
        """
        fd, name = tempfile.mkstemp(prefix="awm-snapshot-", suffix=".db", dir=self.settings.scratch_dir)
        try:
            os.close(fd)
            self.db.snapshot(Path(name))
            return os.open(name, os.O_RDONLY | os.O_CLOEXEC)
        finally:
            Path(name).unlink(missing_ok=True)  # a failed copy may have removed it already

    def clear_scratch(self) -> None:
        """Remove what verifiers or the app left in the scratch area.

        The scratch area is this slot's working folder with, when the container has one slot,
        `scratch_dir` (the container's /tmp): everything but the working database (and its
        journals) and the folders of verifies in flight. With several slots /tmp is shared by
        episodes in flight, so a slot's reset clears only its own folder.
        """
        work = self.work_dir
        keep = {*self._in_use, self.db.work}
        shared = [self.settings.scratch_dir] if self.settings.scratch_dir and self.settings.slots == 1 else []
        for area in [work, *shared]:
            if not area.is_dir():
                continue
            for entry in area.iterdir():
                if entry in keep or entry.name.startswith(self.db.work.name + "-"):
                    continue
                if entry == work or any(entry in k.parents for k in keep):
                    continue  # holds something kept (cleared as its own area)
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry, ignore_errors=True)
                else:
                    entry.unlink(missing_ok=True)

    def info(self) -> dict[str, Any]:
        return {
            **self.files.manifest.model_dump(mode="json"),
            "awm.runtime": {
                "uptime_s": round(time.time() - self.started, 3),
                "resets": self.db.resets,
                "in_flight": self.gate.in_flight,
                "mcp_sessions": self.mcp.session_count,
                **({"slot": self.slot, "slots": self.settings.slots} if self.settings.slots > 1 else {}),
                "tool_timeout_s": self.settings.tool_timeout_s,
                "verify_timeout_s": self.settings.verifier.timeout_s,
                "control_token": self.settings.control_token_sha256 is not None,
                "control_plane": (
                    "guarded: every /_awm route but health needs the bearer token"
                    if self.settings.control_token_sha256 is not None
                    else "unguarded: no AWM_CONTROL_TOKEN(_SHA256) was given, so anyone who "
                    "reaches this port can reset, verify and snapshot"
                ),
                "pid": os.getpid(),
                "uid": os.getuid(),
            },
            "sandbox": {"landlock_abi": self.landlock_abi, "seccomp": self.seccomp, "missing": self.sandbox_missing},
        }

    def tools(self) -> list[dict[str, Any]]:
        return [t.model_dump(mode="json", exclude_none=True) for t in self.mcp.tools]
