"""Run generated code in throwaway containers: a module's tools, and verifiers.

Generated modules are untrusted and need the environment stack (fastapi, sqlalchemy), which the
host tool does not install. So each probe is one container of the base image (`awm/base:<v>`,
which has the stack and `awm_server`) running `python -m awm_server probe` (see
`awm_server.probe`): no network, read-only root, a tmpfs for scratch, no capabilities, uid 10001,
memory and pids limits, a wall-clock timeout. The module, the seed and the calls are mounted
read-only; results (and databases the caller wants back) come out through a second mount.

Generated verifiers run the same way (`verify`: `python -m awm_server probe-verifiers`), each in
the image's own verifier sandbox with its limits, in a container that imports no module: no
generated code ever runs in this process.

Containers carry the runtime's owner labels (run id `gen-...`) and `awm.role=synth-probe`:
those of a run that was killed are removed by the next run on the host (`reap_probe_leftovers`)
or by `awm env gc`.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import stat
import tempfile
import uuid
from pathlib import Path
from typing import Any, BinaryIO, Protocol

import docker
import docker.errors
import requests
from pydantic import BaseModel, Field

from awm.builder.build.base_image import ensure_base_image
from awm.core.errors import SynthesisError
from awm.core.labels import LABEL_ROLE, owner_labels
from awm.runtime.base import Resources
from awm.runtime.docker_backend import engine_client, remove_orphans, sandbox_options

__all__ = [
    "PROBE_ROLE",
    "DockerProber",
    "FileProber",
    "ProbeCall",
    "ProbeResult",
    "ProbeRun",
    "Prober",
    "VerifierJob",
    "VerifierVerdict",
    "reap_probe_leftovers",
]

log = logging.getLogger("awm")

PROBE_ROLE = "synth-probe"
_LOG_TAIL = 3000


class ProbeRun(BaseModel):
    """Calls made in order on a fresh copy of the seed; `keep_db` returns the database after."""

    id: str
    calls: list[dict[str, Any]] = Field(default_factory=list)  # {"tool", "arguments"}
    keep_db: bool = False


class ProbeCall(BaseModel):
    """One tool call's outcome, as the MCP tool would have answered it."""

    run: str
    index: int
    tool: str
    is_error: bool
    status_code: int | None = None
    text: str = ""
    exception: str | None = None  # the route raised: type, message, the module's lines


class ProbeResult(BaseModel):
    """What one probe found."""

    import_error: str | None = None
    tools: list[str] = Field(default_factory=list)
    calls: list[ProbeCall] = Field(default_factory=list)
    dbs: dict[str, Path] = Field(default_factory=dict)  # run id -> database after the run
    exit_code: int | None = None
    log_tail: str = ""
    error: str | None = None  # the probe itself did not finish (timeout, crash), with why

    def calls_of(self, run: str) -> list[ProbeCall]:
        return [c for c in self.calls if c.run == run]


class VerifierJob(BaseModel):
    """One verifier call: `function(initial, final[, final_answer])` on databases named in `files`."""

    id: str
    code: str
    function: str
    initial: str  # a key of the files given to `verify`
    final: str
    final_answer: str | None = None
    pass_answer: bool = True  # the code flavour takes the final answer; the sql flavour does not
    timeout_s: float = 30.0


class VerifierVerdict(BaseModel):
    """What a verifier returned, or the error that stopped it."""

    value: Any = None
    error: str | None = None
    traceback: str | None = None


class Prober(Protocol):
    """Runs generated code in a sandbox: a module's tools, and verifiers. `DockerProber` is one."""

    def probe(self, scenario: str, code: str, seed: Path, runs: list[ProbeRun], out_dir: Path) -> ProbeResult: ...

    def verify(self, scenario: str, jobs: list[VerifierJob], files: dict[str, Path]) -> dict[str, VerifierVerdict]: ...


def reap_probe_leftovers(client: docker.DockerClient) -> list[str]:
    """Remove probe containers whose owning process on this host is gone (a killed run)."""
    return remove_orphans(client, [f"{LABEL_ROLE}={PROBE_ROLE}"])


class FileProber:
    """What every prober shares: the files it hands to `python -m awm_server probe|probe-verifiers`
    (an input folder read-only, an output folder writable) and how it reads what comes back.
    A subclass runs the command in its sandbox (`_run`) and says what it is (`describe`).
    """

    timeout_s: float = 180.0
    tool_timeout_s: float = 10.0

    def describe(self) -> str:
        """Which probe this is, for the report."""
        raise NotImplementedError

    def _run(
        self, scenario: str, command: list[str], src: Path, dst: Path, timeout_s: float | None = None
    ) -> ProbeResult:
        raise NotImplementedError

    def probe(self, scenario: str, code: str, seed: Path, runs: list[ProbeRun], out_dir: Path) -> ProbeResult:
        """Run `runs` against `code` on copies of `seed`; kept databases land in `out_dir`.

        Never raises for the module's faults: they are in the result.

        Raises:
            SynthesisError: the engine refused to run the container (not the module's fault).
        """
        out_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="awm-probe-host-") as tmp:
            src, dst = Path(tmp) / "in", Path(tmp) / "out"
            src.mkdir()
            dst.mkdir()
            (src / "env.py").write_text(code, encoding="utf-8")
            shutil.copyfile(seed, src / "seed.db")
            (src / "runs.json").write_text(json.dumps({"runs": [r.model_dump() for r in runs]}))
            # The sandbox runs as uid 10001: it reads the inputs and writes the results.
            for path in (src, *src.iterdir()):
                path.chmod(0o755 if path.is_dir() else 0o644)
            dst.chmod(0o777)
            result = self._run(scenario, ["probe", "--tool-timeout", f"{self.tool_timeout_s:g}"], src, dst)
            kept = {r.id for r in runs if r.keep_db}
            for line in _lines(dst, "results.jsonl"):
                kind = line.get("kind")
                if kind == "tools":
                    result.tools = list(line.get("tools", []))
                elif kind == "import_error":
                    result.import_error = str(line.get("error"))
                elif kind == "call":
                    result.calls.append(ProbeCall.model_validate(line))
                elif kind == "run" and line.get("run") in kept and str(line["run"]) not in result.dbs:
                    target = out_dir / f"{line['run']}.db"  # named after our own run id, never the sandbox's
                    if _copy_out(dst, line.get("db"), target):
                        result.dbs[str(line["run"])] = target
        if result.error is None and result.exit_code not in (0, None):
            result.error = f"the probe exited with code {result.exit_code}: {_last_line(result.log_tail)}"
        if result.error is None and result.import_error is None and not result.tools:
            result.error = f"the probe produced no result: {_last_line(result.log_tail)}"
        return result

    def verify(self, scenario: str, jobs: list[VerifierJob], files: dict[str, Path]) -> dict[str, VerifierVerdict]:
        """Run each job in the image's verifier sandbox, in one container; verdicts by job id.

        `files` maps the file names the jobs use (`seed.db`) to databases on this host, copied
        in read-only.
        Never raises for the verifiers' faults: a job that gave nothing has an error verdict.

        Raises:
            SynthesisError: the engine refused to run the container.
        """
        if not jobs:
            return {}
        with tempfile.TemporaryDirectory(prefix="awm-probe-host-") as tmp:
            src, dst = Path(tmp) / "in", Path(tmp) / "out"
            src.mkdir()
            dst.mkdir()
            for name, path in files.items():
                if Path(name).name != name or name == "verifiers.json":
                    raise ValueError(f"verifier file name {name!r}: a plain file name other than verifiers.json")
                shutil.copyfile(path, src / name)
            (src / "verifiers.json").write_text(json.dumps({"jobs": [j.model_dump() for j in jobs]}))
            for path in (src, *src.iterdir()):
                path.chmod(0o755 if path.is_dir() else 0o644)
            dst.chmod(0o777)
            # Jobs run one after another, each within its own timeout: the probe gets their sum.
            timeout_s = max(self.timeout_s, sum(j.timeout_s for j in jobs) + 30)
            result = self._run(scenario, ["probe-verifiers"], src, dst, timeout_s)
            lines = {str(line.get("id")): line for line in _lines(dst, "verdicts.jsonl")}
        why = (f"the verifier probe did not finish within {timeout_s:g}s" if result.error
               else f"the verifier probe exited with {result.exit_code}: {_last_line(result.log_tail)}")
        return {j.id: VerifierVerdict.model_validate(lines[j.id]) if j.id in lines
                else VerifierVerdict(error=f"no verdict: {why}") for j in jobs}


class DockerProber(FileProber):
    """Probes in containers of the base image.

    Args:
        client: a Docker client (the local engine by default).
        image: the image to run; `ensure_base_image(client)` by default (built if missing).
        timeout_s: wall-clock limit of one probe container.
        tool_timeout_s: limit of one tool call inside it.
        run_id: the run id its containers are labelled with.

    Raises:
        BackendUnavailable: no Docker engine answers.
    """

    def __init__(
        self,
        client: docker.DockerClient | None = None,
        *,
        image: str | None = None,
        timeout_s: float = 180.0,
        tool_timeout_s: float = 10.0,
        run_id: str | None = None,
        memory: str = "1g",
    ) -> None:
        client = client or engine_client("the env and verifier stages run generated code in containers")
        self.client = client
        self.image = image or ensure_base_image(client)
        self.timeout_s = timeout_s
        self.tool_timeout_s = tool_timeout_s
        self.run_id = run_id or f"gen-{uuid.uuid4().hex[:10]}"
        self.memory = memory
        reap_probe_leftovers(client)

    def describe(self) -> str:
        return f"docker (a container of {self.image})"

    def _run(
        self, scenario: str, command: list[str], src: Path, dst: Path, timeout_s: float | None = None
    ) -> ProbeResult:
        return self._container(scenario, command, src, dst, timeout_s)

    def _container(
        self, scenario: str, command: list[str], src: Path, dst: Path, timeout_s: float | None = None
    ) -> ProbeResult:
        result = ProbeResult()
        timeout_s = timeout_s or self.timeout_s
        try:
            container = self.client.containers.run(
                self.image,
                [command[0], "--dir", "/x", "--out", "/y", *command[1:]],
                detach=True,
                **sandbox_options(Resources(memory=self.memory), network=False),
                volumes={str(src): {"bind": "/x", "mode": "ro"}, str(dst): {"bind": "/y", "mode": "rw"}},
                labels={**owner_labels(self.run_id, scenario), LABEL_ROLE: PROBE_ROLE},
            )
        except docker.errors.DockerException as exc:
            raise SynthesisError(f"scenario {scenario!r}: cannot start the probe container: {exc}",
                                 scenario=scenario, image=self.image) from exc
        try:
            try:
                status = container.wait(timeout=timeout_s)
                result.exit_code = int(status.get("StatusCode", -1))
            except requests.exceptions.ConnectionError:  # the SDK's read timeout
                result.error = f"the probe did not finish within {timeout_s:g}s (a tool or the import hangs)"
                container.kill()
            result.log_tail = container.logs(stdout=True, stderr=True).decode(errors="replace")[-_LOG_TAIL:]
        finally:
            try:
                container.remove(force=True)
            except docker.errors.DockerException as exc:
                log.warning("could not remove probe container %s: %s", container.short_id, exc)
        return result


# The output folder is the sandbox's to write: the host takes from it only regular files under
# plain names, opened without following links (a link there would point the host at its own
# files), and no more than this much of a results file.
_MAX_RESULTS = 64 << 20


def _open_sandbox_file(folder: Path, name: object) -> BinaryIO | None:
    """`folder/name` opened for reading when it is a regular file there, else None."""
    if not isinstance(name, str) or name in ("", ".", "..") or Path(name).name != name:
        return None
    try:
        fd = os.open(folder / name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:  # missing, or a link (ELOOP)
        return None
    file = os.fdopen(fd, "rb")
    if not stat.S_ISREG(os.fstat(fd).st_mode):  # a fifo or a device would block or never end
        file.close()
        return None
    return file


def _copy_out(folder: Path, name: object, target: Path) -> bool:
    """Copy a regular file the sandbox wrote to `target`; False when there is none by that name."""
    source = _open_sandbox_file(folder, name)
    if source is None:
        return False
    with source, target.open("wb") as out:
        shutil.copyfileobj(source, out)
    return True


def _lines(folder: Path, name: str) -> list[dict[str, Any]]:
    """The complete JSON lines of a results file (a killed probe may leave half a line)."""
    source = _open_sandbox_file(folder, name)
    if source is None:
        return []
    with source:
        data = source.read(_MAX_RESULTS)
    out = []
    for text in data.decode("utf-8", errors="replace").splitlines():
        try:
            value = json.loads(text)
        except ValueError:
            continue
        if isinstance(value, dict):
            out.append(value)
    return out


def _last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1][:500] if lines else "no output"
