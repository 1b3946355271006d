"""Pool benchmark: warm `acquire()` vs starting a container; memory per idle environment; how
many environments run at once within a memory budget.

    .venv/bin/python bench/pool.py [--quick]

* acquire: an `EnvPool` of the pantrypal example (size 4, SEALED, the product defaults); each
  sample times `pool.acquire()` (health check included) of a warm environment; `release()`
  (reset in place) is timed too, as context. Baseline in the same run: `DockerBackend.start`
  of the same image, the cost an acquire saves.
* memory and density: start `--fleet` environments at once (default 40), wait until idle, read
  each container's memory (cgroup usage minus page cache) and the host's MemAvailable before
  and after; the number that fits a stated budget is budget / mean per-environment memory,
  and the run itself proves that many (the fleet) do run at once, all answering health.
"""

from __future__ import annotations

import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import docker

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (
    EXAMPLES,
    Target,
    Timer,
    begin_run,
    bench_arguments,
    bench_backend,
    bench_labels,
    ensure_images,
    log,
    print_table,
    results_document,
    variant,
    write_results,
)

from awm.builder.catalog.loader import load_catalog
from awm.runtime.base import StartOptions
from awm.runtime.pool import EnvPool

NAME = "pool"
SCENARIO = "pantrypal_recipe_planner"
ACQUIRE_TARGET = Target("p50 <= 20 ms", {"p50": 20.0})
MEMORY_TARGET = Target("<= 80 MB RSS per idle environment", {"p50": 80.0})
BUDGET_GIB = 16.0  # the stated budget: two thirds of this 24 GiB machine


def _mem_available() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no MemAvailable in /proc/meminfo")


def _container_mib(client: docker.DockerClient, env_id: str) -> float:
    stats = client.api.stats(env_id, stream=False, one_shot=True)["memory_stats"]
    inner = stats.get("stats", {})
    cache = inner.get("cache", inner.get("inactive_file", 0))
    return float((stats["usage"] - cache) / 2**20)


def main() -> int:
    parser = bench_arguments(NAME, __doc__ or "")
    parser.add_argument("--fleet", type=int, default=40, help="environments started at once")
    args = parser.parse_args()
    run = begin_run(args, {"acquire": (300, 30), "start": (20, 5), "fleet": (args.fleet, 6)})
    started, client, machine = run.started, run.client, run.machine
    bundle = load_catalog(EXAMPLES).bundles[SCENARIO]
    image = str(ensure_images(client, [bundle])[SCENARIO].tag)
    n_acquire, n_start, fleet = run.counts["acquire"], run.counts["start"], run.counts["fleet"]
    options = StartOptions(labels=bench_labels(NAME))
    backend = bench_backend(client, NAME)

    log(f"acquire: pool of 4, {n_acquire} acquire/release cycles")
    acquire_ms: list[float] = []
    release_ms: list[float] = []
    with EnvPool(backend, image, size=4, options=options) as pool:
        for _ in range(5):  # warm-up
            pool.release(pool.acquire())
        for _ in range(n_acquire):
            t = Timer()
            env = pool.acquire()
            acquire_ms.append(t.ms())
            t = Timer()
            pool.release(env)
            release_ms.append(t.ms())
        metrics = pool.metrics.summary()

    log(f"baseline: {n_start} container starts")
    start_ms: list[float] = []
    for _ in range(n_start):
        t = Timer()
        env = backend.start(image, options)
        start_ms.append(t.ms())
        env.stop()

    log(f"density: {fleet} environments at once")
    available_before = _mem_available()
    with ThreadPoolExecutor(4) as workers:
        envs = list(workers.map(lambda _: backend.start(image, options), range(fleet)))
    try:
        time.sleep(5)  # idle
        healthy = sum(env.healthy() for env in envs)
        per_env = [_container_mib(client, env.id) for env in envs]
        available_after = _mem_available()
    finally:
        with ThreadPoolExecutor(4) as workers:
            list(workers.map(lambda e: e.stop(), envs))
    if healthy != fleet:
        sys.exit(f"bench: only {healthy} of {fleet} environments answered health")
    host_mib_each = (available_before - available_after) / 2**20 / fleet
    mean_mib = sum(per_env) / len(per_env)
    fits = int(BUDGET_GIB * 1024 / max(mean_mib, host_mib_each))

    variants = [
        variant("EnvPool.acquire (warm, health-checked)", acquire_ms, what="pool acquire (warm)",
                target=ACQUIRE_TARGET),
        variant("DockerBackend.start (SEALED)", start_ms, what="pool acquire (warm)", role="baseline",
                notes="what an acquire from a warm pool saves"),
        variant("EnvPool.release (reset in place)", release_ms, what="pool release", role="context"),
        variant("cgroup memory per idle environment", per_env, what="memory per idle environment",
                unit="MiB", target=MEMORY_TARGET,
                notes="docker stats memory_stats.usage minus page cache, after 5 s idle"),
        variant("host MemAvailable drop per environment", [host_mib_each], what="memory per idle environment",
                unit="MiB", role="context", notes="includes the engine's per-container overhead"),
    ]
    document = results_document(
        NAME,
        quick=args.quick,
        machine=machine,
        parameters={"scenario": SCENARIO, "pool_size": 4, "acquire_cycles": n_acquire, "starts": n_start,
                    "fleet": fleet, "budget_gib": BUDGET_GIB, "isolation": "SEALED (default)"},
        variants=variants,
        started=started,
        density={"ran_at_once": fleet, "all_healthy": True, "budget_gib": BUDGET_GIB,
                 "mean_mib_per_env": round(mean_mib, 1), "host_mib_per_env": round(host_mib_each, 1),
                 "fit_within_budget": fits},
        pool_metrics=metrics,
    )
    write_results(args.out, document)
    print_table(variants)
    print(f"\n{fleet} environments ran at once, all healthy; {mean_mib:.1f} MiB each (cgroup), "
          f"{host_mib_each:.1f} MiB each (host); within {BUDGET_GIB:g} GiB: {fits} environments")
    return 0


if __name__ == "__main__":
    sys.exit(main())
