"""EnvPool with real containers: concurrent episodes, crashes, async use, failed starts."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

import docker
import pytest
from docker.models.containers import Container

from awm.builder.catalog.solutions import load_solutions
from awm.core.errors import EnvStartTimeout, EnvUnavailable
from awm.core.labels import LABEL_RUN_ID
from awm.runtime.base import StartOptions, Timeouts
from awm.runtime.docker_backend import DockerBackend
from awm.runtime.pool import AsyncEnvPool, EnvPool
from tests.helpers import EXAMPLES

pytestmark = pytest.mark.docker
SOLUTIONS = load_solutions(EXAMPLES)


def _session_containers(client: docker.DockerClient, run_id: str) -> list[Container]:
    return client.containers.list(ignore_removed=True, all=True, filters={"label": f"{LABEL_RUN_ID}={run_id}"})


def test_32_concurrent_episodes_across_two_images(docker_client: docker.DockerClient, images: dict[str, str]) -> None:
    backend = DockerBackend(docker_client)
    pair = {"pantrypal_recipe_planner": images["pantrypal_recipe_planner"],
            "trailhead_campground_reservations": images["trailhead_campground_reservations"]}
    episodes = [(sid, idx) for sid in pair for idx in sorted(SOLUTIONS[sid])]
    episodes = (episodes * 3)[:32]
    assert len(episodes) == 32

    def episode(pool: EnvPool, sid: str, idx: int) -> tuple[str, str, str, str]:
        solution = SOLUTIONS[sid][idx]
        with pool.lease(pair[sid]) as env:
            before = env.verify(idx)["result"]  # another episode's writes would show here
            results = env.client.call_tools([(c.tool, c.arguments) for c in solution.calls])
            errors = [r.text for r in results if r.is_error]
            after = env.verify(idx, solution.final_answer)["result"]
            return before, after, env.id, ";".join(errors)

    with EnvPool(backend, list(pair.values()), size=4) as pool:
        assert pool.stats() == {tag: {"target": 4, "idle": 4, "leased": 0, "starting": 0} for tag in pair.values()}
        with ThreadPoolExecutor(8) as workers:
            outcomes = list(workers.map(lambda e: episode(pool, *e), episodes))
        metrics = pool.metrics.summary()
    assert [(b, a, err) for b, a, _, err in outcomes] == [("others", "complete", "")] * 32
    assert len({env_id for _, _, env_id, _ in outcomes}) == 8  # recycled, not restarted
    assert (metrics["acquires"], metrics["resets"], metrics["started"]) == (32, 32, 8)
    assert metrics["acquire_wait_ms"]["p50"] is not None
    assert _session_containers(docker_client, backend.run_id) == []


def test_killed_while_leased_is_named_and_replaced(docker_client: docker.DockerClient, images: dict[str, str]) -> None:
    backend = DockerBackend(docker_client)
    image = images["acme_helpdesk_support_tickets"]
    with EnvPool(backend, image, size=2) as pool:
        env = pool.acquire()
        docker_client.containers.get(env.id).kill()
        with pytest.raises(EnvUnavailable) as info:
            env.verify(0)
        assert env.name in str(info.value)
        assert "exited (137)" in str(info.value)
        pool.release(env)  # the reset fails: it is thrown away and replaced
        assert pool.metrics.reset_failures == 1
        assert pool.metrics.replaced == 1
        replacement = pool.acquire(timeout_s=60)
        other = pool.acquire(timeout_s=60)
        assert env.id not in (replacement.id, other.id)
        assert replacement.verify(0)["result"] == "others"
        pool.release(replacement)
        pool.release(other)
        assert pool.stats()[image]["idle"] == 2
    assert _session_containers(docker_client, backend.run_id) == []


def test_dead_idle_environment_is_replaced_on_acquire(
    docker_client: docker.DockerClient, images: dict[str, str]
) -> None:
    backend = DockerBackend(docker_client)
    with EnvPool(backend, images["pantrypal_recipe_planner"], size=1) as pool:
        victim = pool.acquire()
        pool.release(victim)
        docker_client.containers.get(victim.id).kill()
        env = pool.acquire(timeout_s=60)
        assert env.id != victim.id
        assert env.healthy()
        assert pool.metrics.unhealthy_on_acquire == 1
        pool.release(env)


def test_async_pool_episodes(docker_client: docker.DockerClient, images: dict[str, str]) -> None:
    backend = DockerBackend(docker_client)
    sid = "pantrypal_recipe_planner"

    async def episode(pool: AsyncEnvPool, idx: int) -> tuple[str, str]:
        solution = SOLUTIONS[sid][idx]
        async with pool.lease() as env:
            before = (await env.aclient.verify(idx))["result"]
            await env.aclient.call_tools([(c.tool, c.arguments) for c in solution.calls])
            after = (await env.aclient.verify(idx, solution.final_answer))["result"]
            return before, after

    async def main() -> list[tuple[str, str]]:
        async with AsyncEnvPool(backend, images[sid], size=2) as pool:
            return await asyncio.gather(*(episode(pool, idx % 6) for idx in range(8)))

    assert asyncio.run(main()) == [("others", "complete")] * 8
    assert _session_containers(docker_client, backend.run_id) == []


def test_failing_image_stops_the_pool_with_its_log(docker_client: docker.DockerClient, images: dict[str, str]) -> None:
    backend = DockerBackend(docker_client)
    options = StartOptions(env={"AWM_SCENARIO_DIR": "/nonexistent"}, timeouts=Timeouts(start_s=20))
    pool = EnvPool(
        backend, images["pantrypal_recipe_planner"], size=2, options=options, max_consecutive_start_failures=2
    )
    with pytest.raises(EnvStartTimeout) as info:
        pool.start(timeout_s=60)
    assert "exited with code 1" in str(info.value)
    assert "/nonexistent" in str(info.value)
    assert _session_containers(docker_client, backend.run_id) == []
    with pytest.raises(RuntimeError, match=r"Cannot acquire from pool: it is closed\."):
        pool.acquire()


def test_acquire_times_out_when_all_are_leased(docker_client: docker.DockerClient, images: dict[str, str]) -> None:
    with EnvPool(DockerBackend(docker_client), images["pantrypal_recipe_planner"], size=1) as pool:
        env = pool.acquire()
        with pytest.raises(EnvStartTimeout, match=r"no environment of .* within 0\.5s"):
            pool.acquire(timeout_s=0.5)
        pool.release(env)
        with pytest.raises(ValueError, match="is not leased from this pool"):
            pool.release(env)
