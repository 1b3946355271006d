"""EnvPool over KubernetesBackend, with a fake kubelet that runs each pod's real image under Docker.

The API is the in-test fake; the node is Docker (tests/k8s/docker_kubelet.py).
"""

from __future__ import annotations

import asyncio
import time
from typing import cast

import docker
import httpx
import pytest

from awm.builder.catalog.solutions import load_solutions
from awm.core.errors import EnvUnavailable
from awm.runtime import tokens
from awm.runtime.client import list_mcp_tools
from awm.runtime.k8s_backend import KubernetesBackend
from awm.runtime.pool import EnvPool
from tests.helpers import EXAMPLES
from tests.k8s.docker_kubelet import LABEL, DockerKubelet
from tests.k8s.fake_api import FakeKube, Obj

pytestmark = pytest.mark.docker
SCENARIO = "pantrypal_recipe_planner"


def test_env_pool_over_kubernetes_runs_the_real_image(
    docker_client: docker.DockerClient, images: dict[str, str], kubelet: DockerKubelet
) -> None:
    fake = FakeKube()
    fake.kubelet = kubelet
    image = images[SCENARIO]
    solution = load_solutions(EXAMPLES)[SCENARIO]
    idx = sorted(solution)[0]
    backend = KubernetesBackend(fake.client(), connect="pod-ip")
    try:
        with EnvPool(backend, image, size=2) as pool:
            assert len(fake.list_objects("pods")) == 2
            with pool.lease() as env:
                tools = asyncio.run(list_mcp_tools(env.mcp_url, headers=None))
                assert len(tools) > 3
                assert env.verify(idx)["result"] == "others"
                env.client.call_tools([(c.tool, c.arguments) for c in solution[idx].calls])
                assert env.verify(idx, solution[idx].final_answer)["result"] == "complete"
                first = env.id
                # Someone who may read pods sees the token's hash only, which opens nothing.
                pod_spec = cast(Obj, fake.get_object("pods", env.id))["spec"]
                [token_hash] = [e["value"] for e in pod_spec["containers"][0]["env"]
                                if e["name"] == tokens.TOKEN_HASH_VAR]
                for headers in ({"Authorization": f"Bearer {token_hash}"}, {}):
                    assert httpx.post(f"{env.base_url}/_awm/reset", headers=headers).status_code == 401
                # Code in the pod runs as uid 10001 on a read-only root, as the pod spec says.
                probe = docker_client.containers.get(kubelet.container(env.id)).exec_run(
                    ["/opt/awm/venv/bin/python", "-c", "import os; print(os.getuid()); open('/opt/awm/x', 'w')"])
                assert probe.exit_code != 0
                output = cast(bytes, probe.output).decode()  # exec_run without stream: one bytes
                assert "10001" in output.splitlines()
                assert "Read-only file system" in output
            with pool.lease() as env:  # reset in place: the same pod, a clean database
                if env.id == first:
                    assert env.verify(idx)["result"] == "others"

            # A container dies under a leased environment: named, thrown away, replaced.
            env = pool.acquire()
            docker_client.containers.get(kubelet.container(env.id)).kill()
            deadline = time.monotonic() + 30
            while backend.state(env.id) != "Failed":
                assert time.monotonic() < deadline, "the kubelet never reported the exit"
                time.sleep(0.05)
            with pytest.raises(EnvUnavailable, match=f"{env.name}.*Failed"):
                env.verify(idx)
            pool.release(env)
            assert pool.metrics.reset_failures == 1
            assert pool.metrics.replaced == 1
            a, b = pool.acquire(timeout_s=60), pool.acquire(timeout_s=60)
            assert env.id not in (a.id, b.id)
            assert a.healthy()
            assert b.healthy()
            pool.release(a)
            pool.release(b)
            names = {p["metadata"]["name"] for p in fake.list_objects("pods")}
            assert env.id not in names
            assert len(names) == 2
    finally:
        backend.close()
        fake.close()
    assert fake.list_objects("pods") == []
    assert fake.list_objects("leases") == []
    deadline = time.monotonic() + 30  # the kubelet removes containers on its own threads
    while docker_client.containers.list(ignore_removed=True, all=True, filters={"label": f"{LABEL}={kubelet.run}"}):
        assert time.monotonic() < deadline, "containers of deleted pods were left"
        time.sleep(0.1)
