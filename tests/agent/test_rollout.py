"""The rollout API on real environments of the example images, over real MCP."""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import pickle
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import pytest

from awm.agent.catalog import Catalog, EpisodeKey
from awm.agent.rollout import Outcome, RolloutConfig, Rollouts, rollouts, strip_think
from awm.builder.catalog.loader import load_catalog
from awm.builder.catalog.solutions import Solution, load_solutions
from awm.core.errors import EnvStartTimeout, EnvUnavailable, InvalidInput
from awm.core.labels import LABEL_OWNER, Owner
from awm.runtime import DockerBackend, Env
from tests.helpers import EXAMPLES

pytestmark = pytest.mark.docker
SOLUTIONS = load_solutions(EXAMPLES)
KEYS = [EpisodeKey(sid, idx) for sid in sorted(SOLUTIONS) for idx in sorted(SOLUTIONS[sid])]
PANTRY = "pantrypal_recipe_planner"


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("catalog")


@pytest.fixture(scope="module")
def runtime(images: dict[str, str], cache: Path) -> Iterator[Rollouts]:
    with Rollouts(RolloutConfig(envs_per_image=2, max_open_images=3, catalog_cache=cache)) as rt:
        yield rt


def _replay(episode: Any, solution: Solution, protocol: str) -> None:
    for call in solution.calls:
        if protocol == "awm":
            text = episode.call("call_tool", {"tool_name": f"mcp_tool_mcp_server_{call.tool}",
                                              "arguments": json.dumps(call.arguments)})
        else:
            text = episode.call(call.tool, call.arguments)
        assert not text.startswith("Error"), text


@pytest.mark.parametrize("protocol", ["native", "awm"])
@pytest.mark.parametrize("key", KEYS, ids=str)
def test_reference_solution_gets_full_reward_and_doing_nothing_gets_none(
    runtime: Rollouts, key: EpisodeKey, protocol: str,
) -> None:
    solution = SOLUTIONS[key.scenario][key.task_idx]
    with runtime.episode(key, protocol=protocol) as episode:
        if protocol == "awm":
            assert episode.call("list_tools").startswith("Available MCP Tools (")
        _replay(episode, solution, protocol)
        outcome = episode.finish(solution.final_answer)
    assert (outcome.result, outcome.reward) == ("complete", 1.0)
    assert outcome.tool_calls == len(solution.calls) + (protocol == "awm")
    idle = runtime.episode(key, protocol=protocol).start().finish("I have done it.")
    assert (idle.result, idle.reward, idle.tool_calls) == ("others", 0.0, 0)


def test_messages_start_from_the_task_in_either_protocol(runtime: Rollouts) -> None:
    key = EpisodeKey(PANTRY, 2)
    task = runtime.scenario(PANTRY).task(2)
    native, awm = runtime.episode(key), runtime.episode(key, protocol="awm", system_prompt="MY PROMPT")
    assert [m["role"] for m in native.messages()] == ["system", "user"]
    assert native.messages()[1]["content"] == awm.messages()[1]["content"] == task
    assert awm.messages()[0]["content"] == "MY PROMPT"  # replaced byte for byte
    assert "submit_answer" in runtime.episode(key, submit_answer=True).messages()[0]["content"]
    assert "submit_answer" not in native.messages()[0]["content"]


def test_model_mistakes_come_back_as_text_and_are_flagged(runtime: Rollouts) -> None:
    with runtime.episode(EpisodeKey(PANTRY, 1)) as episode:
        replies = {
            "unknown tool": episode.call("no_such_tool", {}),
            "bad json": episode.call("get_recipe", '{"recipe_id": 8'),
            "not an object": episode.call("get_recipe", "[8]"),
            "schema violation": episode.call("get_recipe", {"recipe_id": "eight"}),
            "404": episode.call("get_recipe", {"recipe_id": 99999}),
        }
        fine = episode.call("get_recipe", {"recipe_id": 8})
        outcome = episode.finish()
    assert {k: v.startswith("Error: ") for k, v in replies.items()} == dict.fromkeys(replies, True)
    assert "no_such_tool" in replies["unknown tool"]
    assert "JSON" in replies["bad json"]
    assert "404" in replies["404"]
    assert json.loads(fine)["id"] == 8
    assert [s["is_error"] for s in episode.trajectory] == [True] * 5 + [False]
    assert (outcome.tool_calls, outcome.tool_errors) == (6, 5)
    with runtime.episode(EpisodeKey(PANTRY, 1), protocol="awm") as awm:
        unknown = awm.call("search_web", {"q": "x"})
        assert unknown == "Error: Unknown tool 'search_web'. Only 'list_tools' and 'call_tool' are available."
        assert awm.trajectory[-1]["is_error"] is True


def test_finish_is_idempotent_strips_think_blocks_and_releases_once(
    runtime: Rollouts, monkeypatch: pytest.MonkeyPatch,
) -> None:
    pools = runtime.pools()
    released: list[str] = []
    original = pools.release

    async def counting(env: Env, *, discard: bool = False) -> None:
        released.append(env.id)
        await original(env, discard=discard)

    monkeypatch.setattr(pools, "release", counting)
    episode = runtime.episode(EpisodeKey(PANTRY, 0)).start()
    first = episode.finish("<think>plan: say done</think>\nDone.")
    assert episode.finish("something else") is first
    episode.abort()
    assert first.final_answer == "Done."
    assert strip_think("reasoning without an opening tag</think> Answer") == "Answer"
    assert len(released) == 1
    with pytest.raises(RuntimeError, match="finished"):
        episode.call("get_recipe", {"recipe_id": 1})
    submitted = runtime.episode(EpisodeKey(PANTRY, 0), submit_answer=True).start()
    assert submitted.call("submit_answer", {"answer": "<think>x</think>All set."}) == "Answer submitted."
    assert submitted.finish().final_answer == "All set."
    assert len(released) == 2


def test_the_sync_facade_works_inside_a_running_event_loop(runtime: Rollouts) -> None:
    key = EpisodeKey(PANTRY, 0)
    solution = SOLUTIONS[PANTRY][0]

    async def trainer_step() -> tuple[Outcome, Outcome]:
        asyncio.get_running_loop()  # as in TRL's AsyncGRPOTrainer: sync calls from inside a loop
        episode = runtime.episode(key).start()
        _replay(episode, solution, "native")
        sync = episode.finish()
        async with runtime.episode(key) as other:  # and the async twin on the same loop
            for call in solution.calls:
                await other.acall(call.tool, call.arguments)
            return sync, await other.afinish()

    sync, asynchronous = asyncio.run(trainer_step())
    assert sync.reward == asynchronous.reward == 1.0


def test_a_burst_of_eight_episodes_of_one_task_waits_for_four_environments(
    images: dict[str, str], cache: Path, no_leftovers: None,
) -> None:
    key = EpisodeKey(PANTRY, 0)
    solution = SOLUTIONS[PANTRY][0]

    async def one(runtime: Rollouts, replay: bool) -> float:
        async with runtime.episode(key) as episode:
            if replay:
                for call in solution.calls:
                    await episode.acall(call.tool, call.arguments)
            return (await episode.afinish()).reward

    with Rollouts(RolloutConfig(envs_per_image=4, catalog_cache=cache)) as runtime:
        async def burst() -> list[float]:
            return list(await asyncio.gather(*(one(runtime, i % 2 == 0) for i in range(8))))

        rewards = asyncio.run(burst())
        pool = runtime.run(_image_pool(runtime, runtime.scenario(PANTRY).image))
        assert rewards == [1.0, 0.0] * 4
        assert pool.metrics.acquires == 8
        # back-pressure: never more than four environments; the other episodes waited for a release
        assert 1 <= pool.metrics.started <= 4


async def _image_pool(runtime: Rollouts, image: str) -> Any:
    return runtime.pools()._pools[image]


def test_acquire_waits_with_a_timeout(images: dict[str, str], cache: Path, no_leftovers: None) -> None:
    config = RolloutConfig(envs_per_image=1, acquire_timeout_s=3, catalog_cache=cache)
    with Rollouts(config) as runtime:
        holder = runtime.episode(EpisodeKey(PANTRY, 0)).start()
        with pytest.raises(EnvStartTimeout):
            runtime.episode(EpisodeKey(PANTRY, 1)).start()
        assert holder.finish().result == "others"
        assert runtime.episode(EpisodeKey(PANTRY, 1)).start().finish().result == "others"


def test_a_dead_environment_raises_and_its_lease_is_discarded(
    images: dict[str, str], cache: Path, docker_client: docker.DockerClient, no_leftovers: None,
) -> None:
    with Rollouts(RolloutConfig(envs_per_image=1, catalog_cache=cache, tool_timeout_s=5)) as runtime:
        episode = runtime.episode(EpisodeKey(PANTRY, 0)).start()
        env = episode._env
        assert env is not None
        docker_client.containers.get(env.id).kill()
        with pytest.raises(EnvUnavailable):
            episode.call("get_recipe", {"recipe_id": 1})
        with pytest.raises(EnvUnavailable):
            episode.finish()
        with pytest.raises(EnvUnavailable):  # finishing again says the same, nothing is released twice
            episode.finish()
        after = runtime.episode(EpisodeKey(PANTRY, 0)).start()  # a fresh replacement serves the next
        assert after._env is not None
        assert after._env.id != env.id
        assert after.finish().result == "others"


def test_keys_round_trip_through_pickle_json_and_text() -> None:
    key = EpisodeKey(PANTRY, 4)
    assert pickle.loads(pickle.dumps(key)) == key
    assert EpisodeKey.parse(key.to_json()) == key
    assert EpisodeKey.parse(str(key)) == key
    assert EpisodeKey.parse(json.loads(key.to_json())) == key
    assert len(pickle.dumps(key)) < 200
    assert EpisodeKey.from_row({"awm_key": str(key), "prompt": []}) == key
    assert EpisodeKey.from_row({"extra_info": {"scenario": PANTRY, "task_idx": 4}}) == key
    assert EpisodeKey.from_row({"task_idx": 4}, scenario=PANTRY) == key
    with pytest.raises(InvalidInput, match="task_idx"):
        EpisodeKey(PANTRY, -1)
    with pytest.raises(InvalidInput, match="not a scenario id"):
        EpisodeKey("PantryPal Recipe Planner", 0)
    with pytest.raises(InvalidInput, match="names no task"):
        EpisodeKey.from_row({"prompt": "hello"})


class _NoStarts(DockerBackend):
    def start(self, image: str, options: Any = None, **overrides: Any) -> Env:
        raise AssertionError(f"the catalog started {image}")


def test_the_catalog_needs_no_running_environment_once_an_image_was_read(
    runtime: Rollouts, cache: Path, docker_client: docker.DockerClient,
) -> None:
    for sid in SOLUTIONS:
        runtime.scenario(sid)  # read (and cached) once
    owner = f"{LABEL_OWNER}={Owner.current()}"
    before = docker_client.containers.list(ignore_removed=True, all=True, filters={"label": owner})
    fresh = Catalog(cache_dir=cache, backend=_NoStarts())
    dataset = load_catalog(EXAMPLES)
    for sid in SOLUTIONS:
        entry = fresh.get(sid)
        assert list(entry.tasks) == list(dataset.get(sid).tasks)
        assert entry.tool_names() == runtime.scenario(sid).tool_names()
    assert Catalog(dataset=EXAMPLES, cache_dir=cache, backend=_NoStarts()).get(PANTRY).tasks == \
        tuple(dataset.get(PANTRY).tasks)
    assert len(docker_client.containers.list(ignore_removed=True, all=True, filters={"label": owner})) == len(before)
    entry = fresh.get(PANTRY)
    assert entry.awm_text().startswith(f"Available MCP Tools ({len(entry.tools)} tools):\n{'=' * 80}\n\n"
                                       f"1. mcp_tool_mcp_server_list_recipes\n")
    assert [t["function"]["name"] for t in entry.openai_tools()] == entry.tool_names()
    assert entry.openai_tools()[1]["function"]["parameters"]["required"] == ["recipe_id"]
    assert [t["name"] for t in entry.mcp_tools()] == entry.tool_names()
    calls: list[tuple[str, dict[str, Any]]] = []

    def record(name: str, args: dict[str, Any]) -> str:
        calls.append((name, args))
        return "ok"

    get_recipe = entry.python_tools(record)[1]
    assert get_recipe(recipe_id=8) == "ok"
    assert calls == [("get_recipe", {"recipe_id": 8})]
    with pytest.raises(InvalidInput, match=f"{PANTRY}.*no task 99"):
        entry.task(99)


def _child_episode(key: EpisodeKey, cache: str) -> tuple[int, str, float]:
    import os

    runtime = rollouts(RolloutConfig(catalog_cache=Path(cache), envs_per_image=1))
    outcome = runtime.episode(key).start().finish("nothing")
    runtime.close()
    return os.getpid(), outcome.result, outcome.reward


def test_a_spawned_worker_gets_the_key_by_pickle_and_makes_its_own_pool(
    images: dict[str, str], cache: Path,
) -> None:
    import os

    context = multiprocessing.get_context("spawn")
    with context.Pool(1) as pool:
        pid, result, reward = pool.apply(_child_episode, (EpisodeKey(PANTRY, 3), str(cache)))
    assert pid != os.getpid()
    assert (result, reward) == ("others", 0.0)
