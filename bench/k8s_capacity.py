"""On paper, with numbers: what 1,000 and 10,000 concurrent episodes over 1,000 scenarios cost on
Kubernetes, for each way of running them. No cluster is needed (none can run on these machines):
the inputs are the per-environment memory and start time this project measured on real
containers (`bench/results/pool.json`) and published figures, each named with its source.

    .venv/bin/python bench/k8s_capacity.py            # writes bench/results/k8s_capacity.json

Strategies:
- pool, reset in place (`EnvPool` over `KubernetesBackend`): a pod per pool slot, kept; an
  episode ends with an in-place reset (an HTTP call to the pod: no API write).
- pod per episode (`KubernetesBackend.start` per episode): every episode creates and deletes
  a pod, and waits for a cold start.
- agent-sandbox claim per episode: a SandboxClaim per episode on a warm pool that refills.
- agent-sandbox, claims held by the pool (`EnvPool` over `AgentSandboxBackend`): claims made
  once per slot, reset in place per episode; the warm pools only cover replacements.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"

SCENARIOS = 1_000
EPISODES = (1_000, 10_000)
EPISODE_S = 60.0  # assumed mean episode length (tens of tool calls); writes/s scale with 1/this
WARM_PER_SCENARIO = 1  # warm sandboxes kept per scenario by a SandboxWarmPool
POD_REQUEST_MIB = 96  # the memory request of the awm-env PodTemplate (k8s/base/pod-template.yaml)

PUBLISHED: dict[str, dict[str, Any]] = {
    "warm_claim_p50_ms": {"value": [35, 140], "source": "agent-sandbox warm claim latency, p50 (the issue's figure)"},
    "api_writes_per_claim": {"value": 23, "source": "agent-sandbox: API writes per claim (the issue's figure)"},
    "pods_per_node": {"value": 110, "source": "kubelet default --max-pods"},
}
# A bare pod's life as the API server sees it: create, scheduler binding, ~3 kubelet status
# updates (Pending, ContainersReady, Ready), ~4 events (Scheduled, Pulled, Created, Started),
# delete, ~2 termination status updates and the final removal. An estimate from the standard
# pod lifecycle, not a measurement.
WRITES_PER_POD_LIFE = 13


def measured(pool_json: Path) -> dict[str, Any]:
    doc = json.loads(pool_json.read_text())
    by = {(v["what"], v["variant"]): v for v in doc["variants"]}
    return {
        "idle_memory_mib": by[("memory per idle environment", "cgroup memory per idle environment")]["p50"],
        "docker_start_p50_ms": by[("pool acquire (warm)", "DockerBackend.start (SEALED)")]["p50"],
        "warm_acquire_p50_ms": by[("pool acquire (warm)", "EnvPool.acquire (warm, health-checked)")]["p50"],
        "reset_release_p50_ms": by[("pool release", "EnvPool.release (reset in place)")]["p50"],
        "measured_on": doc["date"],
    }


def plan(episodes: int, m: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per strategy for `episodes` concurrent episodes over SCENARIOS scenarios."""
    per_scenario = math.ceil(episodes / SCENARIOS)  # uniform demand; skew needs more slots
    slots = per_scenario * SCENARIOS
    warm = WARM_PER_SCENARIO * SCENARIOS
    episodes_per_s = episodes / EPISODE_S
    rows = [
        # strategy, pods, API writes per episode, writes to set up, episode start latency
        ("pool, reset in place (KubernetesBackend)", slots, 0, slots * WRITES_PER_POD_LIFE,
         f"{m['warm_acquire_p50_ms']:.2f} ms acquire + {m['reset_release_p50_ms']:.2f} ms reset (measured)"),
        ("pod per episode (KubernetesBackend)", episodes, WRITES_PER_POD_LIFE, 0,
         f">= {m['docker_start_p50_ms'] / 1000:.2f} s cold start (measured on Docker) + scheduling"),
        ("agent-sandbox claim per episode", episodes + warm, PUBLISHED["api_writes_per_claim"]["value"],
         warm * WRITES_PER_POD_LIFE, "35-140 ms warm claim p50 (published), cold when the warm pool is empty"),
        ("agent-sandbox, claims held by the pool", slots + warm, 0,
         slots * PUBLISHED["api_writes_per_claim"]["value"] + warm * WRITES_PER_POD_LIFE,
         f"{m['warm_acquire_p50_ms']:.2f} ms acquire + {m['reset_release_p50_ms']:.2f} ms reset (measured)"),
    ]
    out = []
    for strategy, pods, writes_per_episode, setup_writes, latency in rows:
        out.append({
            "episodes": episodes,
            "strategy": strategy,
            "pods": pods,
            "nodes_at_110_pods": math.ceil(pods / PUBLISHED["pods_per_node"]["value"]),
            "memory_used_gib": round(pods * m["idle_memory_mib"] / 1024, 1),
            "memory_requested_gib": round(pods * POD_REQUEST_MIB / 1024, 1),
            "api_writes_per_episode": writes_per_episode,
            "api_writes_per_s": round(writes_per_episode * episodes_per_s, 1),
            "api_writes_to_set_up": setup_writes,
            "episode_start": latency,
        })
    return out


def table(rows: list[dict[str, Any]]) -> str:
    head = ("| concurrent episodes | strategy | pods | nodes (110 pods each) | memory used / requested (GiB) "
            "| API writes per episode | API writes/s | API writes to set up | episode start |")
    lines = [head, "|" + "---|" * 9]
    for r in rows:
        lines.append(
            f"| {r['episodes']:,} | {r['strategy']} | {r['pods']:,} | {r['nodes_at_110_pods']:,} "
            f"| {r['memory_used_gib']:,} / {r['memory_requested_gib']:,} | {r['api_writes_per_episode']} "
            f"| {r['api_writes_per_s']:,} | {r['api_writes_to_set_up']:,} | {r['episode_start']} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pool-results", type=Path, default=RESULTS / "pool.json")
    parser.add_argument("--out", type=Path, default=RESULTS / "k8s_capacity.json")
    args = parser.parse_args(argv)
    m = measured(args.pool_results)
    rows = [row for n in EPISODES for row in plan(n, m)]
    document = {
        "benchmark": "k8s_capacity",
        "kind": "on paper: computed from measured inputs and published figures, not run on a cluster",
        "assumptions": {
            "scenarios": SCENARIOS,
            "episode_s": EPISODE_S,
            "demand": "uniform over scenarios",
            "warm_sandboxes_per_scenario": WARM_PER_SCENARIO,
            "pod_memory_request_mib": POD_REQUEST_MIB,
            "api_writes_per_pod_life": WRITES_PER_POD_LIFE,
        },
        "measured": m,
        "published": PUBLISHED,
        "rows": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(document, indent=2) + "\n")
    print(table(rows))
    print(f"\nwrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
