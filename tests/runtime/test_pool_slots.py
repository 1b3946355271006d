"""EnvPool(slots=N): episodes packed N per container, with real containers."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import docker
import pytest

from awm.builder.catalog.solutions import load_solutions
from awm.core.errors import EnvUnavailable
from awm.core.labels import LABEL_RUN_ID
from awm.runtime.docker_backend import DockerBackend
from awm.runtime.pool import EnvPool
from tests.helpers import EXAMPLES

pytestmark = pytest.mark.docker
SOLUTIONS = load_solutions(EXAMPLES)


def test_32_concurrent_episodes_four_per_container(docker_client: docker.DockerClient, images: dict[str, str]) -> None:
    backend = DockerBackend(docker_client)
    pair = {"pantrypal_recipe_planner": images["pantrypal_recipe_planner"],
            "trailhead_campground_reservations": images["trailhead_campground_reservations"]}
    episodes = [(sid, idx) for sid in pair for idx in sorted(SOLUTIONS[sid])]
    episodes = (episodes * 3)[:32]

    def episode(pool: EnvPool, sid: str, idx: int) -> tuple[str, str, str, str]:
        solution = SOLUTIONS[sid][idx]
        with pool.lease(pair[sid]) as env:
            assert env.slot is not None
            before = env.verify(idx)["result"]  # another episode's writes would show here
            results = env.client.call_tools([(c.tool, c.arguments) for c in solution.calls])
            errors = [r.text for r in results if r.is_error]
            after = env.verify(idx, solution.final_answer)["result"]
            return before, after, f"{env.id}/{env.slot}", ";".join(errors)

    with EnvPool(backend, list(pair.values()), size=8, slots=4) as pool:
        assert pool.stats() == {tag: {"target": 8, "idle": 8, "leased": 0, "starting": 0} for tag in pair.values()}
        with ThreadPoolExecutor(16) as workers:
            outcomes = list(workers.map(lambda e: episode(pool, *e), episodes))
        metrics = pool.metrics.summary()
    assert [(b, a, err) for b, a, _, err in outcomes] == [("others", "complete", "")] * 32
    slots_used = {where for _, _, where, _ in outcomes}
    assert len({s.split("/")[0] for s in slots_used}) == 4  # 16 episodes at once in 4 containers
    assert (metrics["acquires"], metrics["resets"], metrics["started"]) == (32, 32, 4)
    run: dict[str, str | list[str] | bool] = {"label": f"{LABEL_RUN_ID}={backend.run_id}"}
    assert docker_client.containers.list(ignore_removed=True, all=True, filters=run) == []


def test_a_dead_container_fails_all_its_slots(docker_client: docker.DockerClient, images: dict[str, str]) -> None:
    backend = DockerBackend(docker_client)
    image = images["acme_helpdesk_support_tickets"]
    with EnvPool(backend, image, size=2, slots=2) as pool:
        a, b = pool.acquire(), pool.acquire()
        assert a.id == b.id
        assert {a.slot, b.slot} == {0, 1}
        docker_client.containers.get(a.id).kill()
        for env in (a, b):
            with pytest.raises(EnvUnavailable) as info:
                env.verify(0)
            assert env.name in str(info.value)
            assert "exited (137)" in str(info.value)
        pool.release(a)
        pool.release(b)
        replacement = pool.acquire(timeout_s=60)
        assert replacement.id != a.id
        assert replacement.verify(0)["result"] == "others"
        pool.release(replacement)
        assert pool.stats()[image]["idle"] == 2


def test_a_failed_slot_reset_retires_its_container_after_its_neighbours(
    docker_client: docker.DockerClient, images: dict[str, str]
) -> None:
    backend = DockerBackend(docker_client)
    image = images["pantrypal_recipe_planner"]
    with EnvPool(backend, image, size=2, slots=2) as pool:
        a, b = pool.acquire(), pool.acquire()
        pool.discard(a)  # must not be reused; b's episode goes on in the same container
        assert b.verify(2)["result"] == "others"
        fresh = pool.acquire(timeout_s=60)  # from the replacement container
        assert fresh.id != a.id
        pool.release(b)  # the last slot of the retired container: it is removed
        pool.release(fresh)
        assert pool.metrics.replaced == 1
        assert pool.stats()[image] == {"target": 2, "idle": 2, "leased": 0, "starting": 0}
