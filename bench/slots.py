"""Dense episodes: memory per concurrent episode with AWM_SLOTS=N, reset+verify throughput, and
tool calls through /mcp (kept sessions) against the direct route, all with the one-slot baseline.

    .venv/bin/python bench/slots.py [--quick]

* memory: for N = 1, 4, 16, 32, one container with AWM_SLOTS=N, idle 3 s after start; its cgroup
  memory (usage minus page cache) / N, and per additional slot (mem(N) - mem(1)) / (N - 1). Two
  example scenarios and a larger module (pantrypal with 150 more routes, so 150 more tools);
* episodes/s: N clients at once, each resetting and verifying its own slot in a loop, against
  one client on a one-slot container;
* tool calls: pantrypal's `get_recipe` through `/mcp`, one MCP session per episode (the official
  client, kept for all calls), and straight to the route over HTTP, interleaved in blocks, on the
  one-slot container and on slot 3 of a 16-slot container.
"""

from __future__ import annotations

import asyncio
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parents[1]))  # tests.helpers: derive_dataset

from common import (
    Target,
    begin_run,
    bench_arguments,
    bench_backend,
    bench_labels,
    ensure_images,
    log,
    print_table,
    results_document,
    sigterm_as_interrupt,
    variant,
    write_results,
)

from awm.builder.catalog.loader import load_catalog
from awm.runtime.base import Resources
from awm.runtime.client import AsyncEnvClient
from awm.runtime.env import Env
from tests.helpers import EXAMPLES, derive_dataset, remove_scenario_images

NAME = "slots"
SLOT_COUNTS = [1, 4, 16, 32]
SCENARIOS = ["pantrypal_recipe_planner", "acme_helpdesk_support_tickets"]
LARGE = "Pantry Large Bench"
EXTRA_ROUTES = 150
COUNTS = {"calls": (300, 40), "loop_s": (6, 2)}
MEM_TARGET = Target("<= 8 MiB per additional slot", {"p50": 8.0})
MCP_TARGET_MS = 1.0
FLEET, FLEET_BUDGET_GIB = 1024, 12.0


def _larger(code: str) -> str:
    head, main = code.split('if __name__ == "__main__":')
    extra = "".join(
        f'\n\n@app.get("/bench_extra_{i}/{{item_id}}", operation_id="bench_extra_{i}", summary="Extra read {i}")\n'
        f"def bench_extra_{i}(item_id: int, limit: int = 10, q: str | None = None):\n"
        f'    return {{"i": {i}, "item_id": item_id, "limit": limit, "q": q}}\n'
        for i in range(EXTRA_ROUTES)
    )
    return head + extra + '\n\nif __name__ == "__main__":' + main


def _container_mib(client: Any, env_id: str) -> float:
    stats = client.api.stats(env_id, stream=False, one_shot=True)["memory_stats"]
    inner = stats.get("stats", {})
    cache = inner.get("cache", inner.get("inactive_file", 0))
    return float((stats["usage"] - cache) / 2**20)


def _start(backend: Any, image: str, slots: int) -> Env:
    env: Env = backend.start(image, labels=bench_labels(NAME), env={"AWM_SLOTS": str(slots)},
                             resources=Resources(memory="1g", tmpfs_size="512m"))
    return env


def _episodes_per_s(env: Env, slots: int, seconds: float) -> float:
    """N threads, each resetting and verifying its own slot in a loop for `seconds`."""
    handles = [env] if slots == 1 else [env.slot_handle(k) for k in range(slots)]
    done = [0] * slots
    stop = time.monotonic() + seconds

    def loop(k: int) -> None:
        while time.monotonic() < stop:
            handles[k].reset()
            handles[k].verify(0)
            done[k] += 1

    threads = [threading.Thread(target=loop, args=(k,)) for k in range(slots)]
    began = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for handle in handles[1:] if slots > 1 else []:
        handle.stop()
    return sum(done) / (time.monotonic() - began)


async def _tool_calls(base_url: str, calls: int) -> dict[str, list[float]]:
    """get_recipe through /mcp (one kept session) and straight to the route, in blocks of 10."""
    samples: dict[str, list[float]] = {"mcp": [], "http": []}
    async with (httpx.AsyncClient(base_url=base_url, timeout=30.0) as http, AsyncEnvClient(base_url) as env,
                env.mcp_session() as session):
        for _ in range(10):  # warm-up (the client's first call lists the tools)
            await session.call_tool("get_recipe", {"recipe_id": 8})
            (await http.get("/recipes/8")).raise_for_status()
        while len(samples["mcp"]) < calls:
            for _ in range(10):
                t = time.perf_counter_ns()
                result = await session.call_tool("get_recipe", {"recipe_id": 8})
                samples["mcp"].append((time.perf_counter_ns() - t) / 1e6)
                if result.isError:
                    raise RuntimeError(f"get_recipe through /mcp failed: {result.content}")
            for _ in range(10):
                t = time.perf_counter_ns()
                (await http.get("/recipes/8")).raise_for_status()
                samples["http"].append((time.perf_counter_ns() - t) / 1e6)
    return samples


def main() -> int:
    parser = bench_arguments(NAME, (__doc__ or "").splitlines()[0])
    args = parser.parse_args()
    run = begin_run(args, COUNTS)
    counts, client = run.counts, run.client
    import tempfile

    catalog = load_catalog(EXAMPLES)
    large_root = derive_dataset(Path(tempfile.mkdtemp(prefix="awm-bench-slots-")), "pantrypal_recipe_planner",
                                LARGE, env_code=_larger)
    log("building (or finding cached) the images")
    large_bundle = next(iter(load_catalog(large_root).bundles.values()))
    built = ensure_images(client, [catalog.bundles[s] for s in SCENARIOS] + [large_bundle])
    images = {sid: str(r.tag) for sid, r in built.items()}
    cases = [*SCENARIOS, large_bundle.id]
    backend = bench_backend(client, NAME)
    variants: list[dict[str, Any]] = []
    details: dict[str, Any] = {"memory_mib": {}, "episodes_per_s": {}, "tool_call_ms": {}}
    try:
        with sigterm_as_interrupt():
            for sid in cases:
                mem: dict[int, float] = {}
                for n in SLOT_COUNTS:
                    env = _start(backend, images[sid], n)
                    try:
                        time.sleep(3)
                        mem[n] = _container_mib(client, env.id)
                        log(f"{sid}: {n} slot(s): {mem[n]:.1f} MiB")
                        if sid == SCENARIOS[0] and n in (1, 16):
                            eps = _episodes_per_s(env, n, counts["loop_s"])
                            details["episodes_per_s"][f"{n} slot(s)"] = round(eps, 2)
                            variants.append(variant(f"reset+verify episodes/s, {n} slot(s) [{sid}]", [eps],
                                                    what="episodes per second per container", unit="episodes/s",
                                                    role="baseline" if n == 1 else "measured", raw=False))
                            url = env.base_url if n == 1 else f"{env.base_url}/e/3"
                            calls = asyncio.run(_tool_calls(url, counts["calls"]))
                            where = "one-slot container" if n == 1 else "slot 3 of 16"
                            variants += [
                                variant(f"get_recipe via /mcp, kept session [{where}]", calls["mcp"],
                                        what="tool call", notes="official MCP client, one session"),
                                variant(f"get_recipe straight to the route [{where}]", calls["http"],
                                        what="tool call", role="baseline", notes="httpx keep-alive"),
                            ]
                            mcp_p50, http_p50 = variants[-2]["p50"], variants[-1]["p50"]
                            details["tool_call_ms"][where] = {
                                "mcp_p50": mcp_p50, "http_p50": http_p50, "mcp_p95": variants[-2]["p95"],
                                "http_p95": variants[-1]["p95"], "overhead_p50": round(mcp_p50 - http_p50, 3),
                                "target_met": mcp_p50 - http_p50 <= MCP_TARGET_MS,
                            }
                    finally:
                        env.stop()
                details["memory_mib"][sid] = {str(n): round(v, 2) for n, v in mem.items()}
                for n in SLOT_COUNTS[1:]:
                    extra = (mem[n] - mem[1]) / (n - 1)
                    variants.append(variant(f"MiB per additional slot, N={n} [{sid}]", [extra],
                                            what="memory per additional slot", unit="MiB", target=MEM_TARGET,
                                            raw=False,
                                            notes=f"container {mem[n]:.1f} MiB, {mem[n] / n:.2f} per episode"))
                per_episode_32 = mem[32] / 32
                fleet_gib = FLEET * per_episode_32 / 1024
                details.setdefault("fleet_1024", {})[sid] = {
                    "per_episode_mib_at_32_slots": round(per_episode_32, 2), "gib": round(fleet_gib, 2),
                    "one_slot_containers_gib": round(FLEET * mem[1] / 1024, 2),
                    "target_met": fleet_gib <= FLEET_BUDGET_GIB,
                }
    finally:
        remove_scenario_images(client, large_bundle.id)

    parameters = {"slot_counts": SLOT_COUNTS, "scenarios": cases, "counts": counts,
                  "larger_module": f"pantrypal + {EXTRA_ROUTES} routes (tools)",
                  "memory": "docker stats usage minus page cache, 3 s after start; container limit 1g, tmpfs 512m"}
    document = results_document(NAME, quick=args.quick, machine=run.machine, parameters=parameters,
                                variants=variants, started=run.started, details=details)
    path = write_results(args.out, document)
    print_table(variants)
    print(details)
    print(f"\nwritten to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
