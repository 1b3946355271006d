"""Build at scale: images per second with the base cached, and bytes added per scenario, against
a naive per-scenario Dockerfile that installs the Python stack itself, measured in one run.

    .venv/bin/python bench/scale.py [--quick] [--n 200] [--naive-n 4] [--sweep-n 60] [--smoke-n 12]
                                   [--keep-images]

What it does:
  1. derives N distinct scenarios from examples/ (builder.variants: new names, one changed seed
     row, tagged tasks), so neither the digest cache nor Docker's layer cache serves any of them;
  2. makes sure the base image exists (it is built once per machine and *not* timed), then
     times `build_images` on all N with the defaults of `awm build` for a large batch (jobs =
     default_jobs(), the import check on, smoke tests off): images/s = N / wall time;
  3. the same on N other scenarios with `--no-check`, to show what the check costs;
  4. a second build of the first N (all cached: the rerun of an unchanged dataset; the digest is
     known without running any seed SQL);
  5. a jobs sweep on smaller batches (check on), and two with smoke tests, which is how the
     default of --jobs was chosen and why smoke tests are opt-in for large batches;
  6. bytes added per scenario: the image's size minus the base's (the engine's count of the
     scenario's layer), and the allocated size of that layer's directory on disk, each divided
     by the scenario's own files (seed.db + module + verifiers, the architecture page's measure);
  7. the naive baseline on a smaller number of scenarios (each build takes tens of seconds): a
     Dockerfile per scenario, FROM the same OS image, that copies the scenario and the wheels
     and pip-installs the locked stack into a venv. Builds have no network here, so it installs
     from the local wheelhouse (`--no-index`), which is faster than a real index would be.
Every image it makes is removed at the end (unless --keep-images).
Timings are reported, never asserted; the run fails only if a build fails.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import docker
import docker.errors

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (
    EXAMPLES,
    bench_arguments,
    docker_client,
    log,
    machine_facts,
    results_document,
    sigterm_as_interrupt,
    summarise,
    write_results,
)

from awm.builder.build.base_image import BASE_DIR, ensure_base_image, ensure_os_image, ensure_wheelhouse
from awm.builder.build.batch import BuildOptions, build_images, default_jobs
from awm.builder.build.render import render
from awm.builder.build.report import BuildResult
from awm.builder.catalog.loader import load_catalog
from awm.builder.catalog.models import ScenarioBundle
from awm.builder.catalog.variants import derive_variants
from awm.core.labels import LABEL_SCENARIO
from awm_server.contract import CONTEXT_DIR, MODULE_FILE, SEED_FILE, VERIFIERS_FILE

PREFIX = "bench scale"  # image names awm/bench_scale_...
NAIVE_REPO = "awm-bench/naive"
TARGET_RATE = 2.0  # images/s on 2 cores (the architecture page (shared/docs/architecture.md), "Performance targets")
TARGET_RATIO = 2.0  # incremental size <= 2 x (seed.db + module + verifiers)
SOURCE = "the architecture page (shared/docs/architecture.md), section 'Performance targets'"

NAIVE_DOCKERFILE = """\
# The naive way: one self-contained Dockerfile per scenario that installs the stack itself.
FROM {os_image}
COPY . /src/
RUN python3 -m venv /opt/awm/venv \\
    && /opt/awm/venv/bin/pip install --no-index --find-links /src/wheels --no-cache-dir \\
        --disable-pip-version-check -r /src/requirements.lock \\
    && mkdir -p /opt/awm/lib && cp -r /src/awm_server /opt/awm/lib/ \\
    && cp -r /src/scenario /opt/awm/scenario && rm -rf /src
ENV PATH=/opt/awm/venv/bin:$PATH PYTHONPATH=/opt/awm/lib AWM_SCENARIO_DIR=/opt/awm/scenario HOME=/tmp
USER 10001:10001
ENTRYPOINT ["/opt/awm/venv/bin/python", "-m", "awm_server"]
CMD ["serve"]
"""


def _own_bytes(bundle: ScenarioBundle, base: str) -> int:
    """seed.db + module + verifiers of a scenario, as rendered into its image."""
    files = render(bundle, base).files
    return sum(len(files[f"{CONTEXT_DIR}/{name}"]) for name in (SEED_FILE, MODULE_FILE, VERIFIERS_FILE))


def _allocated(path: Path) -> int | None:
    """Bytes allocated on disk under `path` (st_blocks), or None when it cannot be read."""
    total = 0
    try:
        for dirpath, dirnames, filenames in os.walk(path):
            for name in dirnames + filenames:
                total += os.lstat(os.path.join(dirpath, name)).st_blocks * 512
        total += os.lstat(path).st_blocks * 512
    except OSError:
        return None
    return total


def _layer_disk_bytes(client: docker.DockerClient, image_id: str) -> int | None:
    """Allocated size of an image's top layer directory (overlay2), or None elsewhere."""
    data = (client.images.get(image_id).attrs.get("GraphDriver") or {}).get("Data") or {}
    upper = data.get("UpperDir")
    return _allocated(Path(upper).parent) if upper else None


def _build(client: docker.DockerClient, root: Path, *, jobs: int, check: bool,
           smoke: bool = False) -> tuple[list[BuildResult], float]:
    bundles = list(load_catalog(root).bundles.values())
    started = time.perf_counter()
    results = build_images(bundles, BuildOptions(jobs=jobs, check=check, smoke=smoke), client=client)
    elapsed = time.perf_counter() - started
    failed = [f"{r.scenario}: {r.error}" for r in results if r.status == "failed"]
    if failed:
        sys.exit("bench: build failed: " + "; ".join(failed[:3]))
    return results, elapsed


def _rate_entry(what: str, name: str, n: int, seconds: float, *, role: str, target: bool,
                notes: str) -> dict[str, Any]:
    rate = n / seconds
    return {
        "what": what, "variant": name, "role": role, "unit": "images/s", "measured": True,
        "n": n, "p50": round(rate, 3), "p95": None, "p99": None, "mean": round(rate, 3), "min": None,
        "max": None, "seconds": round(seconds, 2),
        "target": (
            {"text": f">= {TARGET_RATE:g} images/s on 2 cores", "bounds": {}, "source": SOURCE} if target else None
        ),
        "target_met": (rate >= TARGET_RATE) if target else None,
        "notes": notes,
    }


def _ratio_entry(what: str, name: str, ratios: list[float], *, role: str, notes: str,
                 extra: dict[str, Any]) -> dict[str, Any]:
    stats = summarise(ratios)
    entry: dict[str, Any] = {"what": what, "variant": name, "role": role, "unit": "x own files", "measured": True,
                             **stats}
    if role == "measured":  # every scenario (max), not only the typical one
        entry["target"] = {"text": f"<= {TARGET_RATIO:g} x (seed.db + module + verifiers)",
                           "bounds": {"max": TARGET_RATIO}, "source": SOURCE}
        entry["target_met"] = stats["max"] is not None and stats["max"] <= TARGET_RATIO
    else:
        entry["target"], entry["target_met"] = None, None
    entry["notes"] = notes
    entry.update(extra)
    return entry


def _naive(client: docker.DockerClient, bundles: list[ScenarioBundle], base: str, work: Path) -> dict[str, Any]:
    """Build the naive image of each bundle; per-image seconds and bytes above the OS image."""
    os_image = ensure_os_image(client)
    wheels = ensure_wheelhouse()
    os_size = int(client.images.get(os_image).attrs["Size"])
    seconds, added, tags = [], [], []
    for i, bundle in enumerate(bundles):
        ctx_dir = work / f"naive-{i}"
        ctx_dir.mkdir(parents=True)
        render(bundle, base).write(ctx_dir)  # scenario/ (and our Dockerfile, replaced below)
        (ctx_dir / "Dockerfile").write_text(NAIVE_DOCKERFILE.format(os_image=os_image))
        shutil.copy2(BASE_DIR / "requirements.lock", ctx_dir / "requirements.lock")
        shutil.copytree(BASE_DIR / "awm_server", ctx_dir / "awm_server",
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        shutil.copytree(wheels, ctx_dir / "wheels")
        tag = f"{NAIVE_REPO}:{bundle.id[:100]}"
        started = time.perf_counter()
        image, _ = client.images.build(path=str(ctx_dir), tag=tag, rm=True, forcerm=True, pull=False,
                                       labels={"awm.bench": "1"})
        seconds.append(time.perf_counter() - started)
        tags.append(tag)
        added.append(int(image.attrs["Size"]) - os_size)
        shutil.rmtree(ctx_dir)
        log(f"naive {i + 1}/{len(bundles)}: {seconds[-1]:.1f} s, {added[-1] / 1e6:.1f} MB above the OS image")
    # The naive image must be a working environment too, or the comparison means nothing.
    out = client.containers.run(tags[0], ["check"], remove=True, network_mode="none", labels={"awm.bench": "1"})
    assert b'"tools"' in out, out
    return {"seconds": seconds, "added": added, "tags": tags, "os_image": os_image}


def main() -> int:
    parser = bench_arguments("scale", __doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200, help="scenarios per timed batch (default 200)")
    parser.add_argument("--naive-n", type=int, default=4, help="scenarios for the naive baseline (default 4)")
    parser.add_argument("--sweep-n", type=int, default=60, help="scenarios per jobs value of the sweep (default 60)")
    parser.add_argument("--smoke-n", type=int, default=12, help="scenarios per jobs value with --smoke (default 12)")
    parser.add_argument("--keep-images", action="store_true", help="do not remove the images made")
    args = parser.parse_args()
    if args.quick:
        args.n, args.naive_n, args.sweep_n, args.smoke_n = 12, 1, 6, 3
    started_at = datetime.now(UTC)
    client = docker_client()
    client.close()
    jobs = default_jobs()
    client = docker.from_env(max_pool_size=32)
    machine = machine_facts(client)
    base = ensure_base_image(client, on_step=log)  # once per machine: not part of any timing
    base_size = int(client.images.get(base).attrs["Size"])
    sweep_jobs = [1, 2, 4, 8]
    smoke_jobs = [2, 4]
    variants: list[dict[str, Any]] = []
    made_prefixes: list[str] = []
    work = Path(tempfile.mkdtemp(prefix="awm-bench-scale-"))
    try:
        with sigterm_as_interrupt():
            # 1-2: the main batch, defaults of `awm build` for a large batch
            main_root = work / "main"
            derive_variants(EXAMPLES, main_root, args.n, prefix=f"{PREFIX} main")
            made_prefixes.append("bench_scale_main_")
            log(f"building {args.n} scenarios, jobs={jobs}, check on (base cached)")
            results, seconds = _build(client, main_root, jobs=jobs, check=True)
            assert all(r.status == "built" for r in results), {r.status for r in results}
            log(f"  {args.n / seconds:.2f} images/s")
            variants.append(_rate_entry(
                "build, base cached", f"awm build, {args.n} new scenarios, jobs={jobs}, import check on (default)",
                args.n, seconds, role="measured", target=True,
                notes="wall time of build_images on N distinct scenarios: render + seed (in a reused SQL "
                      "sandbox child per worker), docker build "
                      "(classic builder), the `check` container of each new image, tagging",
            ))

            # 3: without the check
            nocheck_root = work / "nocheck"
            derive_variants(EXAMPLES, nocheck_root, args.n, prefix=f"{PREFIX} nocheck")
            made_prefixes.append("bench_scale_nocheck_")
            log(f"building {args.n} other scenarios with --no-check")
            _, nocheck_seconds = _build(client, nocheck_root, jobs=jobs, check=False)
            log(f"  {args.n / nocheck_seconds:.2f} images/s")
            variants.append(_rate_entry(
                "build, base cached", f"awm build --no-check, {args.n} new scenarios, jobs={jobs}",
                args.n, nocheck_seconds, role="context", target=False,
                notes="the same without starting each new image once: what the import check costs",
            ))

            # 4: unchanged dataset again
            log("rebuilding the first batch unchanged (all cached)")
            cached, cached_seconds = _build(client, main_root, jobs=jobs, check=True)
            rebuilt = [(r.scenario, r.status, r.tag, r.error) for r in cached if r.status != "cached"]
            if rebuilt:
                sys.exit(f"bench: {len(rebuilt)} unchanged scenario(s) were not cached, e.g. {rebuilt[0]}")
            variants.append(_rate_entry(
                "build, base cached", f"awm build of the same {args.n} scenarios again (all cached)",
                args.n, cached_seconds, role="context", target=False,
                notes="digest from the scenario's files and seed SQL (no SQL is run) + one digest lookup "
                      "per scenario; nothing is built",
            ))

            # 5: jobs sweep
            sweep: dict[int, float] = {}
            for j in sweep_jobs:
                root = work / f"sweep-{j}"
                derive_variants(EXAMPLES, root, args.sweep_n, prefix=f"{PREFIX} sweep{j}")
                made_prefixes.append(f"bench_scale_sweep{j}_")
                _, s = _build(client, root, jobs=j, check=True)
                sweep[j] = args.sweep_n / s
                log(f"  sweep jobs={j}: {sweep[j]:.2f} images/s")
                variants.append(_rate_entry(
                    "build, base cached", f"jobs sweep: jobs={j}, {args.sweep_n} new scenarios, check on",
                    args.sweep_n, s, role="context", target=False, notes="how the default of --jobs was chosen",
                ))

            # 5b: with smoke tests (opt-in for large batches: this is why)
            for j in smoke_jobs:
                root = work / f"smoke-{j}"
                derive_variants(EXAMPLES, root, args.smoke_n, prefix=f"{PREFIX} smoke{j}")
                made_prefixes.append(f"bench_scale_smoke{j}_")
                smoked, s = _build(client, root, jobs=j, check=True, smoke=True)
                failed_smoke = [r.scenario for r in smoked if r.smoke is None or r.smoke.status != "passed"]
                if failed_smoke:
                    sys.exit(f"bench: smoke test did not pass for {failed_smoke[:3]}")
                log(f"  smoke jobs={j}: {args.smoke_n / s:.2f} images/s")
                variants.append(_rate_entry(
                    "build, base cached", f"awm build --smoke, jobs={j}, {args.smoke_n} new scenarios",
                    args.smoke_n, s, role="context", target=False,
                    notes="each image also started, its verifiers run on the seed and its read-only tools "
                          "called with the spec's examples",
                ))

            # 6: bytes per scenario
            bundles = {b.id: b for b in load_catalog(main_root).bundles.values()}
            own = {sid: _own_bytes(b, base) for sid, b in bundles.items()}
            engine_ratio, disk_ratio, layer_bytes, disk_bytes = [], [], [], []
            for r in results:
                assert r.layer_bytes is not None
                assert r.image_id is not None
                layer_bytes.append(r.layer_bytes)
                engine_ratio.append(r.layer_bytes / own[r.scenario])
                d = _layer_disk_bytes(client, r.image_id)
                if d is not None:
                    disk_bytes.append(d)
                    disk_ratio.append(d / own[r.scenario])
            own_values = list(own.values())
            variants.append(_ratio_entry(
                "incremental image size", "awm image: image size - base size (the engine's count)", engine_ratio,
                role="measured",
                notes="per scenario, divided by its seed.db + env.py + verifiers.json; the layer also "
                      "holds tasks.json and manifest.json",
                extra={"layer_bytes": summarise(layer_bytes, 0), "own_bytes": summarise(own_values, 0)},
            ))
            if disk_ratio:
                variants.append(_ratio_entry(
                    "incremental image size", "awm image: its layer's directory on disk (allocated blocks)",
                    disk_ratio, role="context",
                    notes="overlay2 layer directory (diff, link, lower, work) with 4 KiB blocks; image "
                          "configs (a few KB each) not included",
                    extra={"disk_bytes": summarise(disk_bytes, 0)},
                ))

            # 7: the naive baseline
            naive_bundles = list(load_catalog(main_root).bundles.values())[: args.naive_n]
            log(f"naive baseline on {len(naive_bundles)} scenario(s) (pip install per scenario)")
            naive = _naive(client, naive_bundles, base, work)
            total = sum(naive["seconds"])
            variants.append(_rate_entry(
                "build, base cached", f"naive Dockerfile per scenario (pip install from the local "
                f"wheelhouse), {len(naive_bundles)} scenario(s), one at a time",
                len(naive_bundles), total, role="baseline", target=False,
                notes=f"FROM {naive['os_image']}; COPY scenario + wheels; RUN venv + pip install --no-index. "
                      "No network in builds here, so pip reads the local wheelhouse (faster than an index)",
            ))
            naive_ratios = [a / own[b.id] for a, b in zip(naive["added"], naive_bundles, strict=True)]
            variants.append(_ratio_entry(
                "incremental image size", "naive image: image size - OS image size", naive_ratios,
                role="baseline", notes="everything above the shared OS layer is per scenario",
                extra={"added_bytes": summarise(naive["added"], 0)},
            ))
    finally:
        if not args.keep_images:
            _cleanup(client, made_prefixes)
        shutil.rmtree(work, ignore_errors=True)

    document = results_document(
        "scale", quick=args.quick, machine=machine, started=started_at,
        parameters={
            "n": args.n, "naive_n": args.naive_n, "sweep_n": args.sweep_n, "jobs": jobs, "sweep_jobs": sweep_jobs,
            "smoke_n": args.smoke_n, "smoke_jobs": smoke_jobs,
            "check": True, "smoke": False, "base_image": base, "base_size_bytes": base_size,
            "source_dataset": "examples/ (3 scenarios), derived with builder.variants",
        },
        variants=variants,
    )
    path = write_results(args.out, document)
    for v in variants:
        print(f"{v['variant'][:90]:90s} {v['p50']!s:>10} {v['unit']:12s} target met: {v['target_met']}")
    print(f"wrote {path}")
    return 0


def _cleanup(client: docker.DockerClient, prefixes: list[str]) -> None:
    """Remove the images this benchmark made (by their scenario label, and the naive tags)."""
    removed = 0
    for item in client.api.images(filters={"label": LABEL_SCENARIO}):
        if any((item.get("Labels") or {}).get(LABEL_SCENARIO, "").startswith(p) for p in prefixes):
            try:
                client.api.remove_image(item["Id"], force=True)
                removed += 1
            except docker.errors.NotFound:
                pass
    for item in client.api.images(name=NAIVE_REPO):
        try:
            client.api.remove_image(item["Id"], force=True)
            removed += 1
        except docker.errors.NotFound:
            pass
    log(f"removed {removed} image(s) made by this benchmark")


if __name__ == "__main__":
    sys.exit(main())
