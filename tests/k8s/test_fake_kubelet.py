"""EnvPool over KubernetesBackend, with a fake kubelet that runs each pod's real image under Docker.

The API is the in-test fake; the node is Docker: each pod becomes a hardened container of the
image the project built (uid 10001, read-only root, tmpfs /tmp, no capabilities) on an internal
network, its address written back as the pod IP, its exit written back as the pod's status.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
import uuid
from collections.abc import Iterator

import docker
import docker.errors
import pytest

from awm.builder.catalog.solutions import load_solutions
from awm.core.errors import EnvUnavailable
from awm.runtime.base import Resources
from awm.runtime.client import list_mcp_tools
from awm.runtime.docker_backend import sandbox_options
from awm.runtime.k8s_backend import KubernetesBackend
from awm.runtime.pool import EnvPool
from tests.helpers import EXAMPLES
from tests.k8s.conftest import container_status
from tests.k8s.fake_api import FakeKube, Obj

pytestmark = pytest.mark.docker
SCENARIO = "pantrypal_recipe_planner"
LABEL = "awm.test.fake-kubelet"


class DockerKubelet:
    """Runs pods as containers; reports their IPs and exits into the fake API."""

    def __init__(self, client: docker.DockerClient, network: str, run: str) -> None:
        self.client, self.network, self.run = client, network, run
        self.lock = threading.Lock()
        self.deleted: set[str] = set()

    def container(self, pod: str) -> str:
        return f"k8s-{self.run}-{pod}"

    def __call__(self, fake: FakeKube, event: str, pod: Obj) -> None:
        name = pod["metadata"]["name"]
        with self.lock:  # one pod's create and delete in order, as one kubelet would
            if event == "delete":
                self.deleted.add(name)
                with contextlib.suppress(docker.errors.NotFound):
                    self.client.containers.get(self.container(name)).remove(force=True)
                return
            if name in self.deleted:
                return
            spec = pod["spec"]["containers"][0]
            limits = spec["resources"]["limits"]
            container = self.client.containers.run(
                spec["image"], name=self.container(name), detach=True, network=self.network,
                environment={e["name"]: e["value"] for e in spec.get("env", [])}, labels={LABEL: self.run},
                **sandbox_options(Resources(memory=limits["memory"].replace("Mi", "m"))),
            )
            container.reload()
        ip = container.attrs["NetworkSettings"]["Networks"][self.network]["IPAddress"]
        fake.update("pods", name, {"status": {
            "phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}],
            "containerStatuses": container_status(spec["image"], {"running": {}}, ready=True),
        }})
        threading.Thread(target=self._watch_exit, args=(fake, name, container, spec["image"]), daemon=True).start()

    def _watch_exit(self, fake: FakeKube, name: str, container: docker.models.containers.Container, image: str) -> None:
        try:
            code = container.wait()["StatusCode"]
        except docker.errors.NotFound:
            return
        terminated = {"terminated": {"exitCode": code, "reason": "Error"}}
        fake.update("pods", name, {"status": {"phase": "Failed",
                                              "containerStatuses": container_status(image, terminated)}})


@pytest.fixture
def kubelet(docker_client: docker.DockerClient) -> Iterator[DockerKubelet]:
    run = uuid.uuid4().hex[:8]
    network = docker_client.networks.create(f"awm-k8s-test-{run}", driver="bridge", internal=True)
    yield DockerKubelet(docker_client, network.name, run)
    for c in docker_client.containers.list(all=True, filters={"label": f"{LABEL}={run}"}):
        c.remove(force=True)
    network.remove()


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
    while docker_client.containers.list(all=True, filters={"label": f"{LABEL}={kubelet.run}"}):
        assert time.monotonic() < deadline, "containers of deleted pods were left"
        time.sleep(0.1)
