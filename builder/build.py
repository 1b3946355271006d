"""Build scenario images: render, `docker build` on the shared base, check, tag.

An image is tagged `awm/<scenario>:<digest>` (digest of its inputs) and `awm/<scenario>:latest`.
A scenario whose digest already has an image is not rebuilt. After a build, the image is
started once with `check` (no network, read-only, non-root): it imports the environment module
and lists its tools, so a module that crashes on import fails the build with the scenario's
name and the exception, instead of a container that exits silently later.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable
from typing import Any, Literal

import docker
import docker.errors
import requests
from pydantic import BaseModel, Field

from builder.base_image import ensure_base_image
from builder.models import ScenarioBundle
from builder.render import BuildContext, image_repo, render
from runtime.errors import AWMError, BackendUnavailable, ImageBuildError

__all__ = ["BuildResult", "build_bundle", "build_images", "docker_client"]

log = logging.getLogger("awm")

Status = Literal["built", "cached", "failed"]


class BuildResult(BaseModel):
    scenario: str
    status: Status
    tag: str | None = None
    image_id: str | None = None
    size_bytes: int | None = None
    layer_bytes: int | None = None  # what this scenario adds on top of the base
    scenario_bytes: int | None = None  # its own files (module, seed, tasks, verifiers)
    tools: list[str] = Field(default_factory=list)
    tasks: int = 0
    seed_rows: int = 0
    failed_statements: int = 0
    duration_s: float = 0.0
    error: str | None = None


def docker_client() -> docker.DockerClient:
    """A client for the local engine.

    Raises:
        BackendUnavailable: no engine answers; says how to start one.
    """
    try:
        client = docker.from_env()
        client.ping()
    except docker.errors.DockerException as exc:
        raise BackendUnavailable(
            f"no Docker engine answers ({exc}); start one (`make docker` does it as root on Debian)"
        ) from exc
    return client


CHECK_TIMEOUT_S = 60.0


def _check_image(client: docker.DockerClient, ctx: BuildContext, timeout_s: float) -> list[str]:
    """Start the image once with `check`; return its tool names or raise naming the fault."""
    container = client.containers.run(
        ctx.tag,
        ["check"],
        detach=True,
        network_mode="none",
        read_only=True,
        tmpfs={"/tmp": "rw,size=64m"},
        cap_drop=["ALL"],
        security_opt=["no-new-privileges"],
        mem_limit="512m",
        labels={"awm.scenario": ctx.scenario, "awm.role": "build-check"},
    )
    try:
        try:
            status = container.wait(timeout=timeout_s)
        except requests.exceptions.ConnectionError:  # the SDK's read timeout
            raise ImageBuildError(
                f"scenario {ctx.scenario!r}: environment module did not finish importing within "
                f"{timeout_s:g}s (does it start a server or block at import time?)",
                scenario=ctx.scenario, image=ctx.tag,
            ) from None
        stdout = container.logs(stdout=True, stderr=False).decode(errors="replace")
        stderr = container.logs(stdout=False, stderr=True).decode(errors="replace")
    finally:
        container.remove(force=True)
    if status.get("StatusCode") != 0:
        detail = stderr.strip().removeprefix("awm-server: error: ")
        raise ImageBuildError(
            detail or f"scenario {ctx.scenario!r}: `check` exited with {status.get('StatusCode')}",
            scenario=ctx.scenario, image=ctx.tag,
        )
    data: dict[str, Any] = json.loads(stdout.strip().splitlines()[-1])
    return list(data["tools"])


def build_bundle(
    client: docker.DockerClient,
    bundle: ScenarioBundle,
    base_image: str,
    *,
    rebuild: bool = False,
    check: bool = True,
    check_timeout_s: float = CHECK_TIMEOUT_S,
    strict: bool = False,
    foreign_keys: bool = True,
) -> BuildResult:
    """Build one scenario's image (or find it cached). Never raises for the scenario's faults.

    Returns:
        A `BuildResult` with status built, cached or failed, and the reason when it failed.
    """
    start = time.monotonic()
    result = BuildResult(scenario=bundle.id, status="failed", tasks=len(bundle.tasks))
    try:
        ctx = render(bundle, base_image, foreign_keys=foreign_keys, strict=strict)
        result.tag = ctx.tag
        result.scenario_bytes = ctx.scenario_bytes
        result.seed_rows = ctx.seed_stats.total_rows
        result.failed_statements = len(ctx.seed_stats.failed)
        try:
            image = None if rebuild else client.images.get(ctx.tag)
        except docker.errors.ImageNotFound:
            image = None
        if image is not None:
            status: Status = "cached"
            result.tools = [t["name"] for t in ctx.manifest["tools"]]  # type: ignore[index, union-attr]
        else:
            try:
                image, _logs = client.images.build(
                    fileobj=ctx.tar(), custom_context=True, tag=ctx.tag, rm=True, forcerm=True, pull=False
                )
            except docker.errors.BuildError as exc:
                lines = [str(c.get("stream", c.get("error", ""))).strip() for c in exc.build_log]
                raise ImageBuildError(
                    f"docker build failed: {exc.msg}; last lines: {' | '.join(lines[-5:])}",
                    scenario=bundle.id, image=ctx.tag,
                ) from exc
            if check:
                try:
                    result.tools = _check_image(client, ctx, check_timeout_s)
                except ImageBuildError:
                    client.images.remove(ctx.tag, force=True)
                    raise
            else:
                result.tools = [t["name"] for t in ctx.manifest["tools"]]  # type: ignore[index, union-attr]
            status = "built"
        image.tag(image_repo(bundle.id), "latest")
        image.reload()
        result.image_id = image.id
        result.size_bytes = int(image.attrs["Size"])
        result.layer_bytes = result.size_bytes - int(client.images.get(base_image).attrs["Size"])
        result.status = status
    except AWMError as exc:
        result.error = exc.message
    except docker.errors.APIError as exc:
        result.error = f"Docker engine error: {exc.explanation or exc}"
    result.duration_s = round(time.monotonic() - start, 3)
    return result


def build_images(
    bundles: Iterable[ScenarioBundle],
    *,
    client: docker.DockerClient | None = None,
    rebuild: bool = False,
    check: bool = True,
    strict: bool = False,
    foreign_keys: bool = True,
    on_step: Callable[[str], None] | None = None,
    on_result: Callable[[BuildResult], None] | None = None,
) -> list[BuildResult]:
    """Build the base image if needed, then one image per scenario.

    Args:
        bundles: the scenarios to build.
        client: a Docker client; the local engine by default.
        rebuild: build even when an image with the same digest exists.
        check: start each new image once to import its module (see module docstring).
        strict: refuse scenarios whose seed has failing statements.
        foreign_keys: PRAGMA foreign_keys while seeding.
        on_step: progress messages about the base image.
        on_result: called with each scenario's result as soon as it is known.

    Returns:
        One `BuildResult` per scenario; a failed scenario never stops the others.

    Raises:
        BackendUnavailable: no Docker engine.
        ImageBuildError: the base image could not be built (nothing else can be).
    """
    client = client or docker_client()
    base = ensure_base_image(client, on_step=on_step)
    results = []
    for bundle in bundles:
        result = build_bundle(
            client, bundle, base, rebuild=rebuild, check=check, strict=strict, foreign_keys=foreign_keys
        )
        log.info("%s: %s %s", bundle.id, result.status, result.error or result.tag)
        if on_result:
            on_result(result)
        results.append(result)
    return results
