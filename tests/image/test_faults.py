"""Untrusted code misbehaving inside an image: verifiers that hang, eat memory or raise; a module
that crashes on import; a tool whose handler hangs. The server reports each and stays healthy."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import cast

import docker
import pytest

from awm.builder.build.batch import BuildOptions, BuildResult, build_bundle, build_images
from awm.builder.catalog.loader import load_catalog
from awm.core.errors import EnvStartTimeout
from awm.runtime.client import ToolResult
from awm.runtime.env import Env
from tests.helpers import derive_dataset, remove_scenario_images

pytestmark = pytest.mark.docker

LOOPS = """
def verify_task_completion(initial_db_path, final_db_path, final_answer=None):
    while True:
        pass
"""
EATS_MEMORY = """
def verify_task_completion(initial_db_path, final_db_path, final_answer=None):
    blocks = []
    for _ in range(64):
        blocks.append(bytearray(128 * 1024 * 1024))  # 8 GB in total
    return {"result": "complete"}
"""
RAISES = """
def verify_task_completion(initial_db_path, final_db_path, final_answer=None):
    raise RuntimeError("verifier bug: no such column")
"""
SLOW_ROUTE = '''

@app.get("/slow", operation_id="slow_tool", summary="Sleeps", tags=["test"])
def slow_tool(seconds: float = 30.0):
    import time as _t
    _t.sleep(seconds)
    return {"slept": seconds}


@app.get("/boom", operation_id="boom_tool", summary="Crashes", tags=["test"])
def boom_tool():
    raise RuntimeError("handler bug")
'''


def _with_slow_route(code: str) -> str:
    head, main = code.split('if __name__ == "__main__":')
    return head + SLOW_ROUTE + '\n\nif __name__ == "__main__":' + main


@pytest.fixture(scope="module")
def faulty_image(docker_client: docker.DockerClient, tmp_path_factory: pytest.TempPathFactory) -> Iterator[BuildResult]:
    root = derive_dataset(
        tmp_path_factory.mktemp("faulty"),
        "pantrypal_recipe_planner",
        "Faulty Pantry (Test)",
        env_code=_with_slow_route,
        verifiers={0: LOOPS, 1: EATS_MEMORY, 2: RAISES},
    )
    (result,) = build_images(load_catalog(root).bundles.values(), client=docker_client)
    assert result.status in ("built", "cached"), result.error
    yield result
    remove_scenario_images(docker_client, result.scenario)


def test_misbehaving_verifiers_give_error_results(faulty_image: BuildResult, start_env: Callable[..., Env]) -> None:
    env = start_env(faulty_image.tag, env={"AWM_VERIFY_TIMEOUT": "3"})
    cases = {
        0: "verifier timed out after 3s and was killed",
        1: "MemoryError: the verifier exceeded its memory limit",
        2: "RuntimeError: verifier bug: no such column",
    }
    for idx, message in cases.items():
        start = time.monotonic()
        result = env.verify(idx)
        elapsed = time.monotonic() - start
        assert (result["result"], result["reward"]) == ("error", 0.0), result
        assert result["error"] == message
        assert elapsed < 3 + 5, f"task {idx} took {elapsed:.1f}s"
        assert env.client.health()["status"] == "ok"
    assert env.verify(3)["result"] == "others"  # a sound verifier still runs
    assert env.client.call_tool("list_recipes", {"limit": 1}).is_error is False


def test_hanging_tool_times_out_as_tool_error(faulty_image: BuildResult, start_env: Callable[..., Env]) -> None:
    env = start_env(faulty_image.tag, env={"AWM_TOOL_TIMEOUT": "1"})
    start = time.monotonic()
    result = env.client.call_tool("slow_tool", {"seconds": 20})
    assert time.monotonic() - start < 10
    assert result.is_error
    assert "timed out after 1s" in result.text
    assert env.client.call_tool("slow_tool", {"seconds": 0}).is_error is False


def test_a_hung_or_crashing_slot_leaves_the_other_slots_serving(
    faulty_image: BuildResult, start_env: Callable[..., Env]
) -> None:
    env = start_env(faulty_image.tag, env={"AWM_SLOTS": "2", "AWM_TOOL_TIMEOUT": "3"})
    hung, other = env.slot_handle(0), env.slot_handle(1)

    async def hang_in_one_slot_and_work_in_the_other() -> tuple[bool, bool, ToolResult]:
        async with hung.aclient as a, other.aclient as b:
            stuck = asyncio.create_task(a.call_tool("slow_tool", {"seconds": 30}))
            await asyncio.sleep(0.5)  # let the hanging call reach the server first
            answered = await b.call_tool("list_recipes", {"limit": 1})
            # answered while slot 0's call still hangs: the hang holds only its own request
            still_hanging = not stuck.done()
            return still_hanging, answered.is_error, await stuck

    try:
        still_hanging, answered_with_error, timed_out = asyncio.run(hang_in_one_slot_and_work_in_the_other())
        assert still_hanging
        assert answered_with_error is False
        assert timed_out.is_error
        assert "timed out after 3s" in timed_out.text
        # a handler that crashes is a tool error for that call; the slot goes on serving
        crashed = other.client.call_tool("boom_tool", {})
        assert crashed.is_error
        assert other.client.call_tool("list_recipes", {"limit": 1}).is_error is False
        assert hung.client.call_tool("slow_tool", {"seconds": 0}).is_error is False
        assert env.client.health()["status"] == "ok"
    finally:
        for handle in (hung, other):
            handle.stop()  # a slot handle: its clients only


def test_module_crashing_on_import_fails_the_build_with_its_exception(
    docker_client: docker.DockerClient, tmp_path: Path, own_images: Callable[[str], str]
) -> None:
    own_images("broken_desk_test")
    root = derive_dataset(
        tmp_path / "broken",
        "acme_helpdesk_support_tickets",
        "Broken Desk (Test)",
        env_code=lambda code: code.replace("app = FastAPI(", 'raise RuntimeError("boom at import")\napp = FastAPI(', 1),
    )
    bundle = load_catalog(root).bundles["broken_desk_test"]
    from awm.builder.build.base_image import ensure_base_image

    base = ensure_base_image(docker_client)
    result = build_bundle(docker_client, bundle, base, BuildOptions(rebuild=True))
    assert result.status == "failed"
    assert result.error is not None
    assert result.error.startswith(
        "scenario 'broken_desk_test': environment module failed on import: RuntimeError: boom at import"
    )
    with pytest.raises(docker.errors.ImageNotFound):
        docker_client.images.get(cast(str, result.tag))


def test_module_crashing_on_import_fails_the_start_with_its_log(
    docker_client: docker.DockerClient, tmp_path: Path, start_env: Callable[..., Env], own_images: Callable[[str], str]
) -> None:
    own_images("broken_start_test")
    root = derive_dataset(
        tmp_path / "broken",
        "acme_helpdesk_support_tickets",
        "Broken Start (Test)",
        env_code=lambda code: code.replace("app = FastAPI(", "import no_such_module\napp = FastAPI(", 1),
    )
    from awm.builder.build.base_image import ensure_base_image

    result = build_bundle(
        docker_client, load_catalog(root).bundles["broken_start_test"], ensure_base_image(docker_client),
        BuildOptions(check=False),
    )
    assert result.status in ("built", "cached")
    with pytest.raises(EnvStartTimeout) as info:
        start_env(result.tag)
    message = str(info.value)
    assert "exited with code 3" in message
    assert "scenario 'broken_start_test': environment module failed on import: ModuleNotFoundError" in message
    left = docker_client.containers.list(ignore_removed=True, all=True, filters={"ancestor": cast(str, result.tag)})
    assert left == []  # nothing left


def test_module_blocking_at_import_fails_the_build_in_time(
    docker_client: docker.DockerClient, tmp_path: Path, own_images: Callable[[str], str]
) -> None:
    own_images("blocking_desk_test")
    root = derive_dataset(
        tmp_path / "blocking",
        "acme_helpdesk_support_tickets",
        "Blocking Desk (Test)",
        env_code=lambda code: code.replace("app = FastAPI(", "import time\ntime.sleep(3600)\napp = FastAPI(", 1),
    )
    from awm.builder.build.base_image import ensure_base_image

    bundle = load_catalog(root).bundles["blocking_desk_test"]
    result = build_bundle(
        docker_client, bundle, ensure_base_image(docker_client), BuildOptions(rebuild=True, check_timeout_s=3)
    )
    assert result.status == "failed"
    assert result.error == (
        "scenario 'blocking_desk_test': environment module did not finish importing within 3s "
        "(does it start a server or block at import time?)"
    )
    scenario: dict[str, str | list[str] | bool] = {"label": "awm.scenario=blocking_desk_test"}
    assert docker_client.containers.list(ignore_removed=True, all=True, filters=scenario) == []
