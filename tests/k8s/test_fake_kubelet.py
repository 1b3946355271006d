"""EnvPool over KubernetesBackend, with a fake kubelet that runs each pod's real image under Docker.

The API is the in-test fake; the node is Docker: each pod becomes a container of the image the
project built, with the pod's own security context, limits and memory-backed /tmp translated to
Docker's options (uid, read-only root, dropped capabilities, no-new-privileges, tmpfs), on an
internal network; its address is written back as the pod IP, its exit as the pod's status.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Iterator

import docker
import docker.errors
import httpx
import pytest
import requests

from awm.builder.catalog.solutions import load_solutions
from awm.core.errors import EnvUnavailable
from awm.runtime import tokens
from awm.runtime.client import list_mcp_tools
from awm.runtime.k8s_backend import KubernetesBackend
from awm.runtime.pool import EnvPool
from tests.helpers import EXAMPLES
from tests.k8s.conftest import container_status
from tests.k8s.fake_api import FakeKube, Obj

pytestmark = pytest.mark.docker
SCENARIO = "pantrypal_recipe_planner"
LABEL = "awm.test.fake-kubelet"


def remove(client: docker.DockerClient, container: str) -> None:
    """Remove a container; one already gone, or going, is fine."""
    try:
        client.api.remove_container(container, force=True)
    except docker.errors.NotFound:
        pass
    except docker.errors.APIError as exc:
        if exc.status_code != 409:  # 409: its removal is already in progress
            raise


def docker_options(pod_spec: Obj) -> dict[str, object]:
    """What a container runtime makes of the pod's security context, limits and volumes."""
    [container] = pod_spec["containers"]
    sc = {**pod_spec.get("securityContext", {}), **container["securityContext"]}
    volumes = {v["name"]: v for v in pod_spec["volumes"]}
    tmpfs = {}
    for mount in container["volumeMounts"]:
        empty = volumes[mount["name"]]["emptyDir"]
        assert empty["medium"] == "Memory"
        tmpfs[mount["mountPath"]] = f"rw,size={empty['sizeLimit'].replace('Mi', 'm')},mode=1777"
    limits = container["resources"]["limits"]
    return {
        "user": f"{sc['runAsUser']}:{sc['runAsGroup']}",
        "read_only": sc["readOnlyRootFilesystem"],
        "cap_drop": sc["capabilities"]["drop"],
        "security_opt": ["no-new-privileges"] if sc["allowPrivilegeEscalation"] is False else [],
        "tmpfs": tmpfs,
        "mem_limit": limits["memory"].replace("Mi", "m"),
        "nano_cpus": int(float(limits["cpu"]) * 1e9),
    }


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
                remove(self.client, self.container(name))
                return
            if name in self.deleted:
                return
            spec = pod["spec"]["containers"][0]
            container = self.client.containers.run(
                spec["image"], name=self.container(name), detach=True, network=self.network,
                environment={e["name"]: e["value"] for e in spec.get("env", [])}, labels={LABEL: self.run},
                **docker_options(pod["spec"]),
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
        except (docker.errors.DockerException, requests.RequestException):
            return  # removed with its pod: nothing to report
        terminated = {"terminated": {"exitCode": code, "reason": "Error"}}
        fake.update("pods", name, {"status": {"phase": "Failed",
                                              "containerStatuses": container_status(image, terminated)}})


@pytest.fixture
def kubelet(docker_client: docker.DockerClient) -> Iterator[DockerKubelet]:
    run = uuid.uuid4().hex[:8]
    network = docker_client.networks.create(f"awm-k8s-test-{run}", driver="bridge", internal=True)
    yield DockerKubelet(docker_client, network.name, run)
    for c in docker_client.containers.list(ignore_removed=True, all=True, filters={"label": f"{LABEL}={run}"}):
        remove(docker_client, c.id)
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
                # Someone who may read pods sees the token's hash only, which opens nothing.
                [token_hash] = [e["value"] for e in fake.get_object("pods", env.id)["spec"]["containers"][0]["env"]
                                if e["name"] == tokens.TOKEN_HASH_VAR]
                for headers in ({"Authorization": f"Bearer {token_hash}"}, {}):
                    assert httpx.post(f"{env.base_url}/_awm/reset", headers=headers).status_code == 401
                # Code in the pod runs as uid 10001 on a read-only root, as the pod spec says.
                probe = docker_client.containers.get(kubelet.container(env.id)).exec_run(
                    ["/opt/awm/venv/bin/python", "-c", "import os; print(os.getuid()); open('/opt/awm/x', 'w')"])
                assert probe.exit_code != 0
                assert "10001" in probe.output.decode().splitlines()
                assert "Read-only file system" in probe.output.decode()
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
