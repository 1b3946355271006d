"""Fixtures of the Kubernetes tests: the fake API, a stand-in environment server, a kubelet."""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, cast

import docker
import pytest

from awm.runtime import reaper
from awm.runtime.agent_sandbox import AgentSandboxBackend
from awm.runtime.k8s_backend import KubernetesBackend
from tests.helpers import EXAMPLES
from tests.k8s.fake_api import FakeKube, Obj

if TYPE_CHECKING:
    from tests.k8s.docker_kubelet import DockerKubelet

ROOT = Path(__file__).resolve().parents[2]
CRDS = ROOT.parent / "shared" / "vendor" / "agent-sandbox" / "crds"


class _Server(BaseHTTPRequestHandler):
    """Answers the control routes as a healthy server would: the unit tests' environment server."""

    def _ok(self) -> None:
        answer = {"ok": True, "resets": 1, "duration_ms": 0.1} if self.path == "/_awm/reset" else {"status": "ok"}
        body = json.dumps(answer).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = _ok

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture(scope="session")
def env_server() -> Iterator[int]:
    """A local HTTP server standing in for every pod's environment server; yields its port."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Server)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def container_status(image: str, state: Obj, *, ready: bool = False, restarts: int = 0) -> list[Obj]:
    """`status.containerStatuses` of a one-container pod, with the fields a kubelet always sets."""
    return [{"name": "env", "image": image, "imageID": "", "ready": ready, "restartCount": restarts,
             "state": state}]


def unit_kubelet(fake: FakeKube, event: str, pod: Obj) -> None:
    """Plays the node: runs pods at 127.0.0.1, or fails them as their image name asks.

    ".../missing..." cannot be pulled, ".../crashing..." crash-loops, ".../huge..." fits no
    node, ".../hanging..." stays Pending; anything else runs and is Ready.
    """
    if event != "create":
        return
    name, image = pod["metadata"]["name"], pod["spec"]["containers"][0]["image"]
    fake.pod_logs[name] = f"serving {image}\nready\n"
    if "huge" in image:
        fake.add_event(name, "FailedScheduling", "0/3 nodes are available: 3 Insufficient memory.")
        fake.update("pods", name, {"status": {"conditions": [
            {"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
             "message": "0/3 nodes are available: 3 Insufficient memory."}]}})
        return
    fake.add_event(name, "Scheduled", f"Successfully assigned awm/{name} to node-1")
    if "missing" in image:
        fake.add_event(name, "Failed", f'Failed to pull image "{image}": not found')
        waiting = {"reason": "ImagePullBackOff", "message": f'Back-off pulling image "{image}"'}
        fake.update("pods", name, {"status": {"containerStatuses": container_status(image, {"waiting": waiting})}})
        return
    if "crashing" in image:
        fake.pod_logs[name] = "Traceback (most recent call last):\nRuntimeError: broken module\n"
        fake.add_event(name, "BackOff", "Back-off restarting failed container env")
        waiting = {"reason": "CrashLoopBackOff", "message": "back-off 10s restarting failed container"}
        fake.update("pods", name, {"status": {"containerStatuses": container_status(image, {"waiting": waiting})}})
        return
    if "hanging" in image:
        return
    fake.update("pods", name, {"status": {
        "phase": "Running", "podIP": "127.0.0.1", "podIPs": [{"ip": "127.0.0.1"}],
        "conditions": [{"type": "Ready", "status": "True"}],
        "containerStatuses": container_status(image, {"running": {}}, ready=True),
    }})


def fake_kubectl(folder: Path, script: str) -> Path:
    """A `kubectl` in `folder` that runs this shell script; its path."""
    kubectl = folder / "kubectl"
    kubectl.write_text("#!/bin/sh\n" + script)
    kubectl.chmod(0o755)
    return kubectl


def kill(backend: KubernetesBackend | AgentSandboxBackend) -> None:
    """What SIGKILL does to a process's backend: nothing renews its Lease, nothing cleans up."""
    backend.lease._stop.set()
    if isinstance(backend, KubernetesBackend):
        backend.watch.stop()
    for name in [*backend._owned, f"lease/{backend.lease.name}"]:
        reaper.untrack(name)


@pytest.fixture
def fake() -> Iterator[FakeKube]:
    api = FakeKube()
    api.kubelet = unit_kubelet
    yield api
    api.close()


@pytest.fixture
def backend(fake: FakeKube, env_server: int) -> Iterator[KubernetesBackend]:
    b = KubernetesBackend(fake.client(), connect="pod-ip", server_port=env_server, api_retries=3)
    yield b
    b.close()


@pytest.fixture(scope="session")
def images(docker_client: docker.DockerClient) -> dict[str, str]:
    """scenario id -> image tag, for every example (built by the project's builder, cached)."""
    from awm.builder.build.batch import BuildResult, build_images
    from awm.builder.catalog.loader import load_catalog

    results: list[BuildResult] = build_images(load_catalog(EXAMPLES).bundles.values(), client=docker_client)
    failed = [f"{r.scenario}: {r.error}" for r in results if r.status == "failed"]
    assert not failed, failed
    return {r.scenario: str(r.tag) for r in results}


@pytest.fixture
def kubelet(docker_client: docker.DockerClient) -> Iterator[DockerKubelet]:
    """A fake kubelet running pods as Docker containers of their real image (docker_kubelet.py)."""
    from tests.k8s.docker_kubelet import LABEL, DockerKubelet, remove

    run = uuid.uuid4().hex[:8]
    network = docker_client.networks.create(f"awm-k8s-test-{run}", driver="bridge", internal=True)
    yield DockerKubelet(docker_client, cast(str, network.name), run)
    for c in docker_client.containers.list(ignore_removed=True, all=True, filters={"label": f"{LABEL}={run}"}):
        remove(docker_client, cast(str, c.id))
    network.remove()
