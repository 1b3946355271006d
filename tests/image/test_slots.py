"""A 16-slot container of an example scenario: 16 concurrent clients, each replaying a reference
solution in its own slot, against a one-slot container of the same image as the reference."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import pytest

from awm.builder.build.batch import BuildResult
from awm.builder.catalog.solutions import load_solutions
from awm.runtime.env import Env
from tests.helpers import EXAMPLES, dump_tables

pytestmark = pytest.mark.docker

SID = "pantrypal_recipe_planner"
SLOTS = 16
SOLUTIONS = load_solutions(EXAMPLES)[SID]
TASKS = sorted(SOLUTIONS)


def _task(slot: int) -> int:
    return TASKS[slot % len(TASKS)]


def _verdicts(env: Env) -> list[str]:
    return [env.verify(j, SOLUTIONS[j].final_answer)["result"] for j in TASKS]


def test_sixteen_slots_replay_in_isolation(
    example_images: dict[str, BuildResult], start_env: Callable[..., Env], tmp_path: Path
) -> None:
    one = start_env(example_images[SID].tag)
    many = start_env(example_images[SID].tag, env={"AWM_SLOTS": str(SLOTS)})
    slots = [many.slot_handle(k) for k in range(SLOTS)]
    try:
        _replay_in_isolation(one, many, slots, tmp_path)
    finally:
        for env in slots:
            env.stop()  # a slot handle: its clients only


def _replay_in_isolation(one: Env, many: Env, slots: list[Env], tmp_path: Path) -> None:
    # Every slot lists exactly the one-slot container's tools (names, descriptions, schemas).
    reference_tools = [t.model_dump(mode="json") for t in one.client.list_tools()]
    for env in slots:
        assert [t.model_dump(mode="json") for t in env.client.list_tools()] == reference_tools

    # The reference: in the one-slot container, what each task's solution makes every verifier say.
    expected: dict[int, list[str]] = {}
    for idx in TASKS:
        one.client.call_tools([(c.tool, c.arguments) for c in SOLUTIONS[idx].calls])
        expected[idx] = _verdicts(one)
        one.reset()
    assert all(expected[idx][TASKS.index(idx)] == "complete" for idx in TASKS)

    async def replay(env: Env, idx: int) -> list[bool]:
        async with env.aclient as client:
            results = await client.call_tools([(c.tool, c.arguments) for c in SOLUTIONS[idx].calls])
        return [r.is_error for r in results]

    async def replay_all() -> list[list[bool]]:
        return await asyncio.gather(*(replay(env, _task(k)) for k, env in enumerate(slots)))

    assert [env.verify(_task(k))["result"] for k, env in enumerate(slots)] == ["others"] * SLOTS
    errors = asyncio.run(replay_all())
    assert errors == [[False] * len(SOLUTIONS[_task(k)].calls) for k in range(SLOTS)]
    # Each slot holds its own episode's writes and nobody else's: every verifier says what it
    # says after that one solution alone in a one-slot container.
    for k, env in enumerate(slots):
        assert _verdicts(env) == expected[_task(k)], f"slot {k}"

    # Resetting one slot restores it and leaves the others' data as it was.
    before = {k: dump_tables(env.snapshot(tmp_path / f"before-{k}.db")) for k, env in enumerate(slots)}
    seed = dump_tables(one.snapshot(tmp_path / "seed.db"))  # `one` was reset above
    slots[3].reset()
    after = {k: dump_tables(env.snapshot(tmp_path / f"after-{k}.db")) for k, env in enumerate(slots)}
    assert after[3] == seed
    assert {k: v for k, v in after.items() if k != 3} == {k: v for k, v in before.items() if k != 3}
    # The unprefixed endpoints are slot 0.
    assert dump_tables(many.snapshot(tmp_path / "unprefixed.db")) == after[0]
    assert slots[5].client.info()["awm.runtime"]["slot"] == 5
    assert slots[5].client.health()["slot"] == 5
