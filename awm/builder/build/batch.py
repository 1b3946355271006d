"""Build scenario images: render, `docker build` on the shared base, check, tag; many at once.

An image is tagged `awm/<scenario>:<digest>` (digest of its inputs) and `awm/<scenario>:latest`.
A scenario whose digest already has an image is not rebuilt (`cached`). The digest is known
without running the scenario's seed SQL (`awm.builder.build.render.plan`), so a cached scenario
costs no seed: its counts come from the image's labels, and its failed statements, when it has
any, from the manifest in the image (read from a created, never started, container).

Every new scenario is checked before it is tagged: its environment module is imported by the
image's own `check` command (no network, read-only, non-root) and its tools listed, so a module
that crashes or blocks on import fails the build with the scenario's name and the exception.
`build_images` does that for the whole batch in one container (`awm.builder.build.checker`: the stack is
imported once, one fork per scenario); `build_bundle` alone, or when that checker is not
available, starts the new image itself with `check`.

The digest tag is the commit point of a build: an image is built untagged and tagged only once
it passed its check. So a build killed at any moment never leaves a digest tag on an unchecked
image, and the next run rebuilds exactly what was not finished.

With `smoke`, each image is then smoke-tested (`awm.builder.build.smoke`). An image that cannot start is
*quarantined*: kept, tagged `awm/<scenario>:quarantined`, never tagged `:latest`, and reported;
`awm images prune` removes it. Labels cannot be added to an existing image, so the tag is the
mark, and the smoke result itself is kept on the host per image id (`awm.builder.build.smoke`).

`build_images` runs `jobs` scenarios at a time in threads: a build is mostly waiting on the
engine (context upload, layer commit, tagging), so threads overlap well even on two cores. A
failing scenario never stops the others.
"""

from __future__ import annotations

import fnmatch
import io
import logging
import os
import tarfile
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Any

import docker
import docker.errors
import requests

from awm.builder.build.base_image import ensure_base_image
from awm.builder.build.checker import BatchChecker, CheckerUnavailable
from awm.builder.build.options import BuildOptions
from awm.builder.build.render import BuildContext, plan
from awm.builder.build.report import BuildResult, ReportWriter, Status
from awm.builder.build.smoke import SmokeResult, load_record, save_record, smoke_test
from awm.builder.catalog.loader import Catalog
from awm.builder.catalog.models import Problem, ScenarioBundle, Severity
from awm.core.errors import AWMError, DatasetError, ImageBuildError, ScenarioNotFound
from awm.core.labels import (
    LABEL_ROLE,
    LABEL_RUN_ID,
    LABEL_SCENARIO,
    LABEL_SCENARIO_BYTES,
    LABEL_SEED_FAILED,
    LABEL_SEED_ROWS,
    LABEL_SEED_TABLES,
    owner_labels,
)
from awm.core.naming import LATEST_TAG, QUARANTINE_TAG, image_ref, image_repo, normalise
from awm.runtime.base import Resources
from awm.runtime.docker_backend import engine_client, remove_orphans, sandbox_options
from awm_server.checkresult import find_result, new_key
from awm_server.contract import MANIFEST_FILE, SCENARIO_DIR, ScenarioManifest

__all__ = [
    "BUILD_RUN_PREFIX",
    "SMOKE_AUTO_LIMIT",
    "BuildOptions",
    "BuildResult",
    "build_bundle",
    "build_images",
    "default_jobs",
    "excluded_results",
    "new_build_run_id",
    "reap_leftovers",
    "select_bundles",
]

log = logging.getLogger("awm")

SMOKE_AUTO_LIMIT = 20
"""`awm build` smoke-tests by default when it selects at most this many scenarios."""

# The short-lived containers of a build (check, smoke) carry the runtime's owner labels under a
# run id starting with this prefix, so that those of a build that was killed (SIGKILL: no
# cleanup) are found and removed by the next build on the same host.
BUILD_RUN_PREFIX = "build-"


def _cpus() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def default_jobs() -> int:
    """How many scenarios to build at once: the usable CPUs, between 2 and 8.

    Measured on 2 cores (bench/scale.py; four runs of a jobs sweep on a shared machine, import
    check on): jobs=1 about 1.8-2.0 images/s, 2 to 8 between 2.4 and 3.7 with no consistent
    winner (jobs=2: 3.7, 3.3, 3.2, 2.4; jobs=4: 3.6, 1.8, 3.0, 3.4). With smoke tests jobs=2 was
    faster in both runs (0.44 and 0.56 images/s against 0.41 and 0.39 for 4). Once the checker
    imports the stack only once, the engine's layer commits and the smoke tests' servers and
    verifiers are CPU-bound, so threads beyond the CPUs only queue.
    """
    return max(2, min(8, _cpus()))


def new_build_run_id() -> str:
    """A run id for the containers of one build (`build-<hex>`)."""
    return f"{BUILD_RUN_PREFIX}{uuid.uuid4().hex[:10]}"


def reap_leftovers(client: docker.DockerClient) -> list[str]:
    """Remove check and smoke containers left by builds on this host that were killed.

    Only containers of a build run (run id `build-...`) whose owning process no longer runs on
    this host are removed; those of builds still running, and every other container, stay.

    Returns:
        The ids of the removed containers.
    """
    return remove_orphans(
        client, [LABEL_RUN_ID], lambda labels: labels[LABEL_RUN_ID].startswith(BUILD_RUN_PREFIX)
    )


def _check_image(
    client: docker.DockerClient, ctx: BuildContext, image_id: str, timeout_s: float, run_id: str
) -> list[str]:
    """Start the image once with `check`; return its tool names or raise naming the fault.

    The key of `awm_server.checkresult` goes in on stdin, never in the arguments or the
    environment, so only the line `check` itself writes after the import counts.
    """
    key = new_key()
    container = client.containers.create(
        image_id,
        ["check", "--key-stdin"],
        stdin_open=True,
        **sandbox_options(Resources(tmpfs_size="64m"), network=False),
        labels={**owner_labels(run_id, ctx.scenario), LABEL_ROLE: "build-check"},
    )
    try:
        stdin = client.api.attach_socket(str(container.id), params={"stdin": 1, "stream": 1})
        sock = getattr(stdin, "_sock", stdin)  # the SDK hands out a SocketIO over the socket
        try:
            container.start()
            sock.sendall(f"{key}\n".encode())
        finally:
            sock.close()
            stdin.close()
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
    tools = find_result(stdout, key)
    if tools is None:
        raise ImageBuildError(
            f"scenario {ctx.scenario!r}: `check` exited without reporting the module's tools: the module "
            "ended the process or took over its output during the import",
            scenario=ctx.scenario, image=ctx.tag,
        )
    return tools


def _warnings(result: BuildResult) -> list[str]:
    """The report's one-line notes about a usable image: seed failures and smoke issues."""
    out = []
    if result.failed_sql:
        first = result.failed_sql[0]
        out.append(
            f"{len(result.failed_sql)} seed statement(s) failed, first: {first.stage} of table "
            f"{first.table!r}: {first.error}"
        )
    if result.smoke is not None and result.smoke.status != "failed":
        out.extend(result.smoke.issues())
    return out


class _Images:
    """The engine's awm images, listed once per batch: tag -> (image id, size), and their labels."""

    def __init__(self, client: docker.DockerClient) -> None:
        self.client = client
        self.tags: dict[str, tuple[str, int]] = {}
        self.labels: dict[str, dict[str, str]] = {}
        self.lock = threading.Lock()
        for item in client.api.images(filters={"label": LABEL_SCENARIO}):
            self.labels[item["Id"]] = dict(item.get("Labels") or {})
            for tag in item.get("RepoTags") or []:
                self.tags[tag] = (item["Id"], int(item["Size"]))

    def get(self, tag: str) -> tuple[str, int] | None:
        with self.lock:
            return self.tags.get(tag)


def _cached_seed(
    client: docker.DockerClient, known: _Images | None, image_id: str, result: BuildResult, run_id: str
) -> None:
    """Fill `result`'s seed summary from a cached image: its labels, and its manifest when the
    labels do not say it all (failed statements, or an image without the counts)."""
    labels = known.labels.get(image_id) if known is not None else None
    if labels is None:
        labels = dict(client.images.get(image_id).attrs["Config"].get("Labels") or {})
    if LABEL_SCENARIO_BYTES in labels:
        result.scenario_bytes = int(labels[LABEL_SCENARIO_BYTES])
    if labels.get(LABEL_SEED_FAILED) == "0" and LABEL_SEED_TABLES in labels and LABEL_SEED_ROWS in labels:
        result.seed_tables = int(labels[LABEL_SEED_TABLES])
        result.seed_rows = int(labels[LABEL_SEED_ROWS])
        return
    seed = _image_manifest(client, image_id, result.scenario, run_id).seed
    result.seed_tables = seed.tables
    result.seed_rows = sum(seed.rows.values())
    result.failed_sql = list(seed.failed_statements)
    result.failed_statements = len(seed.failed_statements)


def _image_manifest(client: docker.DockerClient, image_id: str, scenario: str, run_id: str) -> ScenarioManifest:
    """The manifest.json of an image, copied out of a container that is created, never started."""
    container = client.api.create_container(
        image_id, network_disabled=True, labels={**owner_labels(run_id, scenario), LABEL_ROLE: "build-read"},
    )
    try:
        stream, _ = client.api.get_archive(container["Id"], f"{SCENARIO_DIR}/{MANIFEST_FILE}")
        with tarfile.open(fileobj=io.BytesIO(b"".join(stream))) as tar:
            member = tar.extractfile(MANIFEST_FILE)
            if member is None:
                raise ImageBuildError(f"scenario {scenario!r}: image {image_id} has no {MANIFEST_FILE}",
                                      scenario=scenario)
            return ScenarioManifest.model_validate_json(member.read())
    finally:
        client.api.remove_container(container["Id"], force=True)


def build_bundle(
    client: docker.DockerClient,
    bundle: ScenarioBundle,
    base_image: str,
    options: BuildOptions | None = None,
    *,
    backend: Any = None,
    base_size: int | None = None,
    run_id: str | None = None,
    checker: BatchChecker | None = None,
    known: _Images | None = None,
) -> BuildResult:
    """Build one scenario's image (or find it cached), optionally smoke-test it.

    Never raises for the scenario's faults: they are in the result.

    Args:
        client: the Docker client.
        bundle: the scenario.
        base_image: the base image tag (see `ensure_base_image`).
        options: rebuild, check, strict, smoke... (`BuildOptions`; selection and `jobs` do not
            apply to one scenario). With `check`, the module is imported before the new image
            is tagged: by `checker` when given, else in the new image itself.
        backend: the runtime backend the smoke test starts containers with (a
            `DockerBackend` on `client` by default).
        base_size: the base image's size in bytes (looked up when not given).
        run_id: the run id the check container is labelled with (`build-...`).
        checker: a `BatchChecker` to check the scenario's files with before building, instead
            of starting the new image (the image is started when the checker is unavailable).
        known: the batch's listing of images, to avoid one lookup per scenario (internal).

    Returns:
        A `BuildResult`: built, cached, quarantined, or failed with `stage` and `error`.
    """
    start = time.monotonic()
    opts = options or BuildOptions()
    run_id = run_id or new_build_run_id()
    result = BuildResult(
        scenario=bundle.id, status="failed", tasks=len(bundle.tasks),
        problems=[p.message for p in bundle.problems],
    )
    stage = "seed"
    try:
        planned = plan(bundle, base_image, foreign_keys=opts.foreign_keys, strict=opts.strict)
        result.tag = planned.tag
        repo = image_repo(bundle.id)
        manifest_tools = planned.manifest.tool_names

        stage = "engine"
        found = None if opts.rebuild else _lookup(client, known, planned.tag)
        status: Status
        if found is not None:
            status = "cached"
            image_id, size = found
            _cached_seed(client, known, image_id, result, run_id)
            result.tools = manifest_tools
        else:
            stage = "seed"
            ctx = planned.render()
            result.scenario_bytes = ctx.scenario_bytes
            result.seed_tables = ctx.seed_stats.tables
            result.seed_rows = ctx.seed_stats.total_rows
            result.failed_sql = list(ctx.seed_stats.failed)
            result.failed_statements = len(ctx.seed_stats.failed)
            tools: list[str] | None = None
            if opts.check and checker is not None:
                stage = "check"  # on the files, before building (see builder.checker)
                try:
                    tools = checker.check(ctx, opts.check_timeout_s)
                except CheckerUnavailable as exc:
                    log.info("%s: %s; checking the image itself", bundle.id, exc.message)
            stage = "build"
            image_id = _docker_build(client, ctx)
            if opts.check and tools is None:
                stage = "check"
                try:
                    tools = _check_image(client, ctx, image_id, opts.check_timeout_s, run_id)
                except BaseException:
                    # Untagged, so nothing else uses it; the next run builds it afresh.
                    _remove_quietly(client, image_id)
                    raise
            result.tools = tools if tools is not None else manifest_tools
            stage = "engine"
            client.api.tag(image_id, repo, ctx.digest)  # the commit point (module docstring)
            size = int(client.images.get(image_id).attrs["Size"])
            status = "built"
        # The mark is on the image, whatever brought it here: a rebuild that gives the same image
        # (the engine's layer cache) is as quarantined as a cached one, smoke test or not.
        marked = _lookup(client, known, image_ref(bundle.id, QUARANTINE_TAG))
        quarantined = marked is not None and marked[0] == image_id

        if opts.smoke:
            stage = "smoke"
            record = None if (opts.rebuild or status == "built") else load_record(image_id)
            if record is None and not quarantined:
                record = _smoke(client, backend, planned.tag, bundle, opts.smoke_timeout_s, run_id)
                save_record(image_id, record)
            result.smoke = record
            if record is not None and record.status == "failed":
                quarantined = True
        if quarantined and result.smoke is None:
            result.smoke = load_record(image_id)

        stage = "engine"
        if quarantined:
            client.api.tag(image_id, repo, QUARANTINE_TAG)
            latest = _lookup(client, None, image_ref(bundle.id, LATEST_TAG))
            if latest is not None and latest[0] == image_id:
                client.api.remove_image(image_ref(bundle.id, LATEST_TAG))  # only the tag: the image has others
            status = "quarantined"
            result.stage = "smoke"
            why = result.smoke.error if result.smoke and result.smoke.error else "it could not start earlier"
            result.error = (
                f"scenario {bundle.id!r}: quarantined as {image_ref(bundle.id, QUARANTINE_TAG)}: cannot start: {why}"
            )
        else:
            client.api.tag(image_id, repo, LATEST_TAG)
        result.image_id = image_id
        result.size_bytes = size
        if base_size is None:
            base_size = int(client.images.get(base_image).attrs["Size"])
        result.layer_bytes = size - base_size
        result.status = status
    except AWMError as exc:
        result.stage = stage
        result.error = exc.message
    except docker.errors.APIError as exc:
        result.stage = stage
        result.error = f"scenario {bundle.id!r}: Docker engine error during {stage}: {exc.explanation or exc}"
    except requests.exceptions.RequestException as exc:
        result.stage = stage
        result.error = f"scenario {bundle.id!r}: lost the Docker engine during {stage}: {exc}"
    except Exception as exc:  # a bug must not stop the batch either; it is logged in full
        log.exception("scenario %s: unexpected error during %s", bundle.id, stage)
        result.stage = stage
        result.error = f"scenario {bundle.id!r}: unexpected error during {stage}: {type(exc).__name__}: {exc}"
    result.warnings = _warnings(result)
    result.duration_s = round(time.monotonic() - start, 3)
    return result


def _lookup(client: docker.DockerClient, known: _Images | None, tag: str) -> tuple[str, int] | None:
    if known is not None:
        return known.get(tag)
    try:
        attrs = client.images.get(tag).attrs
    except docker.errors.ImageNotFound:
        return None
    return str(attrs["Id"]), int(attrs["Size"])


def _docker_build(client: docker.DockerClient, ctx: BuildContext) -> str:
    """`docker build` of a rendered context, untagged; the new image's id."""
    try:
        image, _logs = client.images.build(
            fileobj=ctx.tar(), custom_context=True, rm=True, forcerm=True, pull=False
        )
    except docker.errors.BuildError as exc:
        lines = [str(c.get("stream", c.get("error", ""))).strip() for c in exc.build_log]
        raise ImageBuildError(
            f"scenario {ctx.scenario!r}: docker build failed: {exc.msg}; last lines: {' | '.join(lines[-5:])}",
            scenario=ctx.scenario, image=ctx.tag,
        ) from exc
    return str(image.id)


def _remove_quietly(client: docker.DockerClient, image_id: str) -> None:
    try:
        client.api.remove_image(image_id, force=True, noprune=False)
    except docker.errors.APIError as exc:
        log.warning("could not remove the failed image %s: %s", image_id, exc)


def _smoke(
    client: docker.DockerClient, backend: Any, tag: str, bundle: ScenarioBundle, timeout_s: float,
    run_id: str,
) -> SmokeResult:
    if backend is None:
        from awm.runtime.docker_backend import DockerBackend

        backend = DockerBackend(client=client, run_id=run_id)
    return smoke_test(backend, tag, bundle, ready_timeout_s=timeout_s)


def _matches(sid: str, patterns: Sequence[str]) -> bool:
    """Whether a scenario id matches any of the ids, display names or glob patterns given."""
    for pattern in patterns:
        if any(ch in pattern for ch in "*?["):
            if fnmatch.fnmatchcase(sid, pattern):
                return True
        elif normalise(pattern) == sid:
            return True
    return False


def select_bundles(
    catalog: Catalog,
    *,
    only: Sequence[str] = (),
    exclude: Sequence[str] = (),
    limit: int | None = None,
) -> tuple[list[ScenarioBundle], dict[str, list[Problem]]]:
    """Choose the scenarios of a build, in id order.

    Args:
        catalog: the loaded dataset.
        only: scenario ids, display names or glob patterns (`shop_*`); empty means all.
        exclude: the same, to leave out.
        limit: at most this many (after `only` and `exclude`).

    Returns:
        The bundles to build, and the scenarios the catalog excluded that the selection names
        (id -> problems), so that a report can list them as failed.

    Raises:
        ScenarioNotFound: an `--only` name (not a pattern) that the dataset does not have, or
            a selection that leaves nothing to build.
        DatasetError: the dataset has no scenario at all.
    """
    for name in only:
        pattern = any(ch in name for ch in "*?[")
        if not pattern and normalise(name) not in catalog.bundles and normalise(name) not in catalog.excluded:
            catalog.get(name)  # raises, naming the dataset
    ids = sorted(set(catalog.bundles) | set(catalog.excluded))
    chosen = [sid for sid in ids if (not only or _matches(sid, only)) and not _matches(sid, exclude)]
    if limit is not None:
        chosen = chosen[: max(0, limit)]
    if not ids:
        fatal = [str(p) for p in catalog.problems if p.severity is Severity.FATAL]
        raise DatasetError(f"nothing to build: {catalog.root} has no scenario"
                           + (f"; first problem: {fatal[0]}" if fatal else ""))
    if not chosen:
        raise ScenarioNotFound(
            f"nothing to build: none of the {len(ids)} scenario(s) of {catalog.root} is left after "
            f"--only {list(only)}, --exclude {list(exclude)}, --limit {limit}"
        )
    bundles = [catalog.bundles[sid] for sid in chosen if sid in catalog.bundles]
    excluded = {sid: catalog.excluded[sid] for sid in chosen if sid in catalog.excluded}
    return bundles, excluded


def excluded_results(excluded: dict[str, list[Problem]]) -> list[BuildResult]:
    """Failed results for scenarios the catalog excluded, with its reasons."""
    out = []
    for sid, problems in sorted(excluded.items()):
        fatal = [p for p in problems if p.severity is Severity.FATAL] or problems
        reasons = "; ".join(str(p) for p in fatal) or "excluded"
        out.append(BuildResult(
            scenario=sid, status="failed", stage="catalog",
            error=f"scenario {sid!r} was excluded from the dataset: {reasons}",
            problems=[p.message for p in problems],
        ))
    return out


def build_images(
    bundles: Iterable[ScenarioBundle],
    options: BuildOptions | None = None,
    *,
    client: docker.DockerClient | None = None,
    backend: Any = None,
    report: ReportWriter | None = None,
    on_step: Callable[[str], None] | None = None,
    on_start: Callable[[str], None] | None = None,
    on_result: Callable[[BuildResult], None] | None = None,
) -> list[BuildResult]:
    """Build the base image if needed, then one image per scenario, `jobs` at a time.

    Args:
        bundles: the scenarios to build (already selected: see `select_bundles`).
        options: how to build them (`BuildOptions`; the defaults when None). The checks of
            new scenarios run in one `BatchChecker` container (see module docstring and
            `awm.builder.build.checker`) unless `batch_check` is off.
        client: a Docker client; the local engine by default.
        backend: the runtime backend for smoke tests (a `DockerBackend` by default).
        report: a report writer that receives every result as it is known.
        on_step: progress messages about the base image.
        on_start: called with a scenario id when its build starts (from a worker thread).
        on_result: called with each scenario's result as soon as it is known (in the calling
            thread).

    Returns:
        One `BuildResult` per scenario, in the order given; a failed scenario never stops the
        others.

    Raises:
        BackendUnavailable: no Docker engine.
        ImageBuildError: the base image could not be built (nothing else can be).
        KeyboardInterrupt: passed on after the builds in progress finish and the report is
            written (incomplete); scenarios not started are left for the next run.
    """
    bundles = list(bundles)
    opts = options or BuildOptions()
    jobs = max(1, opts.jobs or default_jobs())
    client = client or engine_client(max_pool_size=max(10, 2 * jobs + 2))
    base = ensure_base_image(client, on_step=on_step)
    if report is not None:
        report.report.base_image = base
    reap_leftovers(client)
    run_id = new_build_run_id()
    if opts.smoke and backend is None:
        from awm.runtime.docker_backend import DockerBackend

        backend = DockerBackend(client=client, run_id=run_id)
    base_size = int(client.images.get(base).attrs["Size"])
    known = _Images(client)
    # One checker container for the batch (started on the first scenario that needs a check).
    checker = BatchChecker(client, base, run_id=run_id, concurrency=_cpus()) if (
        opts.check and opts.batch_check and BatchChecker.supported(client)
    ) else None
    log.info("build %s: %d scenario(s), %d at a time, base %s", run_id, len(bundles), jobs, base)

    def one(bundle: ScenarioBundle) -> BuildResult:
        if on_start:
            on_start(bundle.id)
        return build_bundle(
            client, bundle, base, opts, backend=backend, base_size=base_size, run_id=run_id, checker=checker,
            known=known,
        )

    results: dict[str, BuildResult] = {}
    executor = ThreadPoolExecutor(max_workers=jobs, thread_name_prefix="awm-build")
    pending: dict[Future[BuildResult], str] = {}
    try:
        queue = iter(bundles)
        # Submit a window of work rather than everything, so an interrupt leaves little queued.
        for bundle in queue:
            pending[executor.submit(one, bundle)] = bundle.id
            if len(pending) >= 2 * jobs:
                break
        while pending:
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                pending.pop(future)
                result = future.result()
                results[result.scenario] = result
                log.info("%s: %s %s", result.scenario, result.status, result.error or result.tag)
                if report is not None:
                    report.add(result)
                if on_result:
                    on_result(result)
                nxt = next(queue, None)
                if nxt is not None:
                    pending[executor.submit(one, nxt)] = nxt.id
    except BaseException:
        for future in pending:
            future.cancel()
        executor.shutdown(wait=True, cancel_futures=True)
        # Builds that were running finish (the engine would anyway); keep what they found.
        for future in pending:
            if future.done() and not future.cancelled() and future.exception() is None:
                result = future.result()
                results[result.scenario] = result
                if report is not None:
                    report.add(result)
        if report is not None:
            report.finish(complete=False)
        raise
    finally:
        if checker is not None:
            checker.close()
    executor.shutdown(wait=True)
    return [results[b.id] for b in bundles]
