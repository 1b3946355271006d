"""Opt-in: the backends on a real cluster. Runs only with AWM_K8S_LIVE=1 (`make k8s-live`).

A KUBECONFIG that happens to exist never starts it: a person who has a cluster says so. Setup
(kind, on a laptop):

    kind create cluster
    kind load docker-image awm/base:latest awm/pantrypal_recipe_planner:latest
    kubectl apply -k k8s/overlays/kind
    make k8s-live            # AWM_K8S_IMAGE=... to use another image

From outside the cluster pods are reached through `kubectl port-forward`. With
AWM_K8S_LIVE_SANDBOX=1 (agent-sandbox installed) the claim flow runs too, on the objects of
`awm k8s render` applied by the test; claimed sandboxes are reached the same way (their pod
IPs inside the cluster, a port-forward to their pod outside it).
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from awm.runtime.client import list_mcp_tools
from awm.runtime.k8s_backend import KubernetesBackend, scenario_of
from awm.runtime.pool import EnvPool

pytestmark = [
    pytest.mark.k8s,
    pytest.mark.skipif(os.environ.get("AWM_K8S_LIVE") != "1",
                       reason="live cluster tests run only with AWM_K8S_LIVE=1 (`make k8s-live`)"),
]
IMAGE = os.environ.get("AWM_K8S_IMAGE", "awm/pantrypal_recipe_planner:latest")
NAMESPACE = os.environ.get("AWM_K8S_NAMESPACE", "awm")


@pytest.fixture
def backend() -> Iterator[KubernetesBackend]:
    b = KubernetesBackend(namespace=NAMESPACE)
    yield b
    b.close()


def test_a_pool_of_pods_leases_resets_and_verifies(backend: KubernetesBackend) -> None:
    with EnvPool(backend, IMAGE, size=1, acquire_timeout_s=300) as pool:
        for _ in range(2):
            with pool.lease() as env:
                assert asyncio.run(list_mcp_tools(env.mcp_url))
                assert env.verify(0)["result"] in ("others", "complete", "error")
    deadline = time.monotonic() + 120  # the cluster deletes pods gracefully
    while backend.list(run_id=backend.run_id):
        assert time.monotonic() < deadline, "the pool's pods were not deleted"
        time.sleep(1)


def test_an_unpullable_image_fails_fast(backend: KubernetesBackend) -> None:
    from awm.core.errors import ImageNotFound

    with pytest.raises(ImageNotFound, match="pull"):
        backend.start("registry.invalid/awm/no_such_scenario:0")


@pytest.mark.skipif(os.environ.get("AWM_K8S_LIVE_SANDBOX") != "1",
                    reason="set AWM_K8S_LIVE_SANDBOX=1 too (a cluster with agent-sandbox installed)")
def test_agent_sandbox_claims(tmp_path: Path) -> None:
    import lightkube

    from awm.runtime.agent_sandbox import AgentSandboxBackend
    from awm.runtime.k8s_manifests import ScenarioImage, apply_folder, render

    render([ScenarioImage(scenario_of(IMAGE), IMAGE)], tmp_path, namespace=NAMESPACE, warm=1)
    apply_folder(tmp_path, lightkube.Client(namespace=NAMESPACE, field_manager="awm"))
    backend = AgentSandboxBackend(namespace=NAMESPACE)
    try:
        with EnvPool(backend, IMAGE, size=1, acquire_timeout_s=300) as pool, pool.lease() as env:
            assert env.healthy()
    finally:
        backend.close()
