"""Agent harness: per-step overhead of `awm eval`'s loop, and episodes per second.

    .venv/bin/python bench/agent.py [--quick]

A scripted OpenAI-compatible model (tests/agent/scripted.py: real HTTP on 127.0.0.1, the real
`openai` client) replays each task's reference solution and answers instantly, so what is timed
is the harness: the chat request and its parsing, the MCP tool call in the environment, the
bookkeeping of the trajectory.

1. Per step, on one pantrypal environment (default isolation), its 6 tasks in the `native`
   protocol, reset in place before each episode; rounds alternate the two variants:
   * **one MCP session per episode**: `awm eval`'s loop (`awm.agent.loop.run_episode` in
     `run_in_environment`'s single session);
   * **a fresh MCP session per call**: the same loop, but every tool call (and the tool list)
     opens its own session, as the original agent did.
   A sample is one episode's wall time less the time inside the chat requests, divided by its
   steps (model turns): the harness's own cost per step. The scripted server's latency (Python's
   http.server, ~40 ms per request from delayed ACKs) is left out, as a real model's would be;
   it is recorded as a context row. The "tool call only" rows divide the time spent in tool
   calls by the number of calls.
2. Episodes per second of `awm eval` (`run_eval`) over the 18 example tasks (3 scenarios x 6) in
   the `awm` protocol with `--concurrency` 1, 4 and 16: the wall time of the whole run, pool
   starts included (environments start on demand, one pool per image, at most two open).
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common import (
    EXAMPLES,
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
from mcp.types import TextContent, Tool

from awm.agent.evaluate import EvalConfig, run_eval, select_items
from awm.agent.llm import LLMConfig
from awm.agent.loop import EpisodeResult, McpTools, run_episode
from awm.agent.run import EpisodeOptions
from awm.builder.catalog.loader import load_catalog
from awm.builder.catalog.solutions import load_solutions
from awm.runtime import Env, open_mcp_session
from tests.agent.scripted import ScriptedModel, replay

NAME = "agent"
SCENARIO = "pantrypal_recipe_planner"
COUNTS = {"rounds": (6, 1), "concurrency_tasks": (18, 6)}
CONCURRENCY = (1, 4, 16)


class FreshSessionTools(McpTools):
    """The original agent's way: a new MCP session (initialize handshake) for every call."""

    def __init__(self, url: str, headers: dict[str, str] | None) -> None:
        super().__init__(None, url=url)  # type: ignore[arg-type]  # no session of its own
        self.headers = headers

    async def tools(self) -> list[Tool]:
        async with open_mcp_session(str(self.url), headers=self.headers) as session:
            return list((await session.list_tools()).tools)

    async def call(self, name: str, arguments: dict[str, Any]) -> tuple[str, bool]:
        async with open_mcp_session(str(self.url), headers=self.headers) as session:
            result = await session.call_tool(name, arguments)
        texts = [c.text for c in result.content if isinstance(c, TextContent)]
        return "\n".join(texts), bool(result.isError)


async def _episode(env: Env, llm: LLMConfig, task: str, fresh: bool) -> EpisodeResult:
    headers = {"Authorization": f"Bearer {env.token}"} if env.token else None
    client = llm.client()
    try:
        if fresh:
            return await run_episode(client, llm, FreshSessionTools(env.mcp_url, headers), task, protocol_name="native")
        async with open_mcp_session(env.mcp_url, headers=headers) as session:
            return await run_episode(client, llm, McpTools(session, url=env.mcp_url), task, protocol_name="native")
    finally:
        await client.close()


def per_step(env: Env, model: ScriptedModel, tasks: list[str], rounds: int) -> dict[str, dict[str, list[float]]]:
    llm = LLMConfig(model="scripted", api_url=model.url, max_retries=0)
    samples: dict[str, dict[str, list[float]]] = {k: {"step": [], "tool": [], "llm": []} for k in ("session", "fresh")}
    for r in range(rounds + 1):  # round 0 warms both up and is not recorded
        order = ("session", "fresh") if r % 2 else ("fresh", "session")
        for kind in order:
            for task in tasks:
                env.reset()
                result = asyncio.run(_episode(env, llm, task, kind == "fresh"))
                if result.end_reason != "answer" or result.tool_errors:
                    sys.exit(f"bench: an episode failed ({kind}): {result.end_reason} {result.error}")
                if r:
                    samples[kind]["step"].append((result.total_s - result.llm_s) * 1000 / result.iterations)
                    samples[kind]["llm"].append(result.llm_s * 1000 / result.iterations)
                    samples[kind]["tool"].append(result.tool_s * 1000 / max(1, result.tool_calls))
    return samples


def throughput(model: ScriptedModel, backend: Any, tasks: int) -> dict[int, dict[str, float]]:
    items = select_items([str(EXAMPLES)])
    if tasks < len(items):
        items = [i for i in items if i.task_idx < tasks // 3]
    out: dict[int, dict[str, float]] = {}
    for concurrency in CONCURRENCY:
        with tempfile.TemporaryDirectory(prefix="awm-bench-agent-") as tmp:
            config = EvalConfig(out=Path(tmp), llm=LLMConfig(model="scripted", api_url=model.url),
                                options=EpisodeOptions(protocol="awm"), concurrency=concurrency)
            began = time.perf_counter()
            results = asyncio.run(run_eval(items, config, backend=backend))
            wall = time.perf_counter() - began
        rewards = [line["reward"] for line in results.values()]
        if len(rewards) != len(items) or min(rewards) < 1.0:
            sys.exit(f"bench: awm eval at concurrency {concurrency} did not complete every task: {rewards}")
        out[concurrency] = {"episodes": len(items), "wall_s": round(wall, 3),
                            "episodes_per_s": round(len(items) / wall, 3)}
        log(f"concurrency {concurrency}: {len(items)} episodes in {wall:.1f} s")
    return out


def main() -> int:
    args = bench_arguments(NAME, __doc__.splitlines()[0]).parse_args()
    run = begin_run(args, COUNTS)
    catalog = load_catalog(EXAMPLES)
    ensure_images(run.client, list(catalog.bundles.values()))
    solutions = load_solutions(EXAMPLES)
    by_task = {catalog.get(sid).tasks[i]: s for sid, per in solutions.items() for i, s in per.items()}
    tasks = list(catalog.get(SCENARIO).tasks)
    backend = bench_backend(run.client, NAME)
    with sigterm_as_interrupt(), ScriptedModel(replay(by_task, native=True)) as native_model:
        with backend.start(f"awm/{SCENARIO}:latest", labels=bench_labels(NAME)) as env:
            log(f"per step: {run.counts['rounds']} rounds x {len(tasks)} tasks x 2 variants")
            steps = per_step(env, native_model, tasks, run.counts["rounds"])
        with ScriptedModel(replay(by_task)) as awm_model:
            rates = throughput(awm_model, backend, run.counts["concurrency_tasks"])
    what = "harness time per agent step (chat request time excluded), scripted model"
    variants = [
        variant("one MCP session per episode (awm eval)", steps["session"]["step"], what=what),
        variant("fresh MCP session per call (original agent)", steps["fresh"]["step"], what=what, role="baseline"),
        variant("tool call only, one session", steps["session"]["tool"], what="tool call time per call",
                role="context"),
        variant("tool call only, fresh session per call", steps["fresh"]["tool"], what="tool call time per call",
                role="context"),
        variant("scripted model's chat request (excluded above)", steps["session"]["llm"] + steps["fresh"]["llm"],
                what="chat request time per step", role="context"),
    ]
    for concurrency, rate in rates.items():
        variants.append(variant(f"awm eval, concurrency {concurrency}", [rate["episodes_per_s"]],
                                what="episodes per second (18 example tasks, pool starts included)",
                                unit="episodes/s", role="context", raw=False))
    print_table(variants)
    parameters = {"scenario": SCENARIO, "protocol_per_step": "native", "protocol_throughput": "awm",
                  **run.counts, "concurrency": list(CONCURRENCY)}
    document = results_document(NAME, quick=args.quick, machine=run.machine, parameters=parameters,
                                variants=variants, started=run.started, throughput=rates)
    path = write_results(args.out, document)
    log(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
