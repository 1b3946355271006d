"""The main job on a dataset, end to end: build images, start one, replay a task, grade, reset.

It is what `awm demo` (and `make demo`) runs; every step reports through `say`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from awm.builder.build.batch import build_images
from awm.builder.catalog.loader import load_catalog
from awm.builder.catalog.solutions import load_solutions
from awm.core.errors import AWMError
from awm.core.naming import image_ref
from awm.runtime.docker_backend import DockerBackend, engine_client

__all__ = ["run_demo"]


def _short(text: str, limit: int) -> str:
    try:
        text = json.dumps(json.loads(text), separators=(",", ":"))
    except ValueError:
        text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def run_demo(
    dataset: Path,
    *,
    scenario: str | None = None,
    task_idx: int = 0,
    say: Callable[[str], None] = lambda _: None,
) -> dict[str, object]:
    """Build every scenario of `dataset`, then exercise one image with a reference solution.

    Returns:
        What happened: build statuses and the verify results before, after and post-reset.

    Raises:
        AWMError: a step failed; the message names it.
    """
    catalog = load_catalog(dataset)
    say(f"1. catalog {dataset}: {len(catalog.bundles)} scenarios load, {len(catalog.excluded)} excluded")
    client = engine_client()
    say("2. build images (the base image is made once per machine; unchanged scenarios are cached)")
    results = build_images(
        catalog.bundles.values(),
        client=client,
        on_step=lambda m: say(f"   base: {m}"),
        on_result=lambda r: say(f"   {r.status:7} {r.scenario} {r.error or r.tag}"),
    )
    if any(r.status == "failed" for r in results):
        raise AWMError("some images failed to build; see above")

    solutions = load_solutions(dataset)
    sid = catalog.get(scenario).id if scenario else next(s for s in sorted(catalog.bundles) if s in solutions)
    solution = solutions.get(sid, {}).get(task_idx)
    if solution is None:
        raise AWMError(f"no reference solution for {sid} task {task_idx} in {dataset}/solutions.json")
    bundle = catalog.bundles[sid]
    image = image_ref(sid)
    say(f"3. start {image} (read-only, non-root, no capabilities, memory and pids limits)")
    with DockerBackend(client).start(image) as env:
        tools = env.client.list_tools()
        say(f"   MCP at {env.mcp_url} (network: {env.isolation.value}): {len(tools)} tools "
            f"({', '.join(t.name for t in tools[:4])}, ...)")
        say(f"4. task {task_idx}: {bundle.tasks[task_idx]}")
        before = env.verify(task_idx)
        say(f"   verify before acting: {before['result']}")
        calls = [(c.tool, c.arguments) for c in solution.calls]
        for (name, args), result in zip(calls, env.client.call_tools(calls), strict=True):
            error = "ERROR " if result.is_error else ""
            say(f"   {name}({_short(json.dumps(args), 60)}) -> {error}{_short(result.text, 70)}")
        after = env.verify(task_idx, solution.final_answer)
        say(f"5. verify after the reference solution: {after['result']} (reward {after['reward']}, "
            f"{after['duration_ms']:.0f} ms)")
        reset = env.reset()
        say(f"6. reset in place: {reset['duration_ms']:.1f} ms")
        again = env.verify(task_idx)
        say(f"   verify after reset: {again['result']}")
    say("7. container removed")
    if (before["result"], after["result"], again["result"]) != ("others", "complete", "others"):
        raise AWMError(f"unexpected grades for {sid} task {task_idx}: {before['result']}, "
                       f"{after['result']}, {again['result']}")
    return {
        "builds": {r.scenario: r.status for r in results},
        "scenario": sid,
        "task_idx": task_idx,
        "before": before,
        "after": after,
        "after_reset": again,
    }
