"""AgentSandboxBackend from outside the cluster: a claimed sandbox reached through a port-forward.

agent-sandbox names a Sandbox's pod after the Sandbox, unless the Sandbox adopted a pod of a
warm pool, which keeps its own name and is named by the Sandbox's `agents.x-k8s.io/pod-name`
annotation: the forward must go to that pod. kubectl is a script here (its tunnel needs a real
API server); what the backend does with it is what is tested.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import cast

import pytest

from awm.runtime.agent_sandbox import POD_NAME_ANNOTATION, AgentSandboxBackend
from awm.runtime.k8s_objects import dns_name
from tests.k8s.conftest import container_status, fake_kubectl
from tests.k8s.fake_api import FakeKube, Obj

SCENARIO = "pantrypal_recipe_planner"
IMAGE = f"registry.example.com/awm/{SCENARIO}@sha256:" + "cd" * 32
EXT = "extensions.agents.x-k8s.io/v1beta1"
SANDBOXES = "agents.x-k8s.io/v1beta1"


def adopting_controller(fake: FakeKube, event: str, claim: Obj) -> None:
    """Binds each claim to a Sandbox that adopted a warm pod named otherwise."""
    if event != "create":
        return
    name = claim["metadata"]["name"]
    pod = f"warm-{name[-6:]}-x7k2p"
    fake.create_object(SANDBOXES, "sandboxes", {
        "apiVersion": SANDBOXES, "kind": "Sandbox", "spec": {},
        "metadata": {"name": name, "annotations": {POD_NAME_ANNOTATION: pod}}})
    fake.create_object("v1", "pods", {
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": pod},
        "spec": {"containers": [{"name": "env", "image": IMAGE}]},
        "status": {"phase": "Running", "podIP": "10.9.8.7",
                   "containerStatuses": container_status(IMAGE, {"running": {}}, ready=True)}})
    fake.pod_logs[pod] = "adopted warm pod serving\n"
    fake.update("sandboxclaims", name, {"status": {
        "conditions": [{"type": "Ready", "status": "True", "reason": "SandboxReady", "message": ""}],
        "sandbox": {"name": name, "podIPs": ["10.9.8.7"]}}})


@pytest.fixture
def fake() -> FakeKube:
    api = FakeKube()
    api.claim_controller = adopting_controller
    api.create_object(EXT, "sandboxwarmpools", {
        "apiVersion": EXT, "kind": "SandboxWarmPool", "metadata": {"name": dns_name("awm", SCENARIO)},
        "spec": {"replicas": 1, "sandboxTemplateRef": {"name": dns_name("awm", SCENARIO)}}})
    return api


def test_a_claim_is_reached_through_a_port_forward_to_its_adopted_pod(
    fake: FakeKube, env_server: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_kubectl(tmp_path, f'echo "$@" >> {tmp_path}/args\n'
                           f'echo "Forwarding from 127.0.0.1:{env_server} -> 8000"\nexec sleep 600\n')
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
    backend = AgentSandboxBackend(fake.client(), connect="port-forward")
    try:
        env = backend.start(IMAGE)
        # 10.9.8.7 is nowhere: the environment answers only through the forward
        assert env.base_url == f"http://127.0.0.1:{env_server}"
        assert env.healthy()
        pod = cast(Obj, fake.get_object("sandboxes", env.id))["metadata"]["annotations"][POD_NAME_ANNOTATION]
        assert (tmp_path / "args").read_text().split() == [
            "port-forward", "-n", "awm", f"pod/{pod}", ":8000", "--address", "127.0.0.1"]
        assert backend.logs(env.id) == "adopted warm pod serving\n"  # the adopted pod's, by the same name
        [forward] = backend._forwards.values()
        env.stop()
        assert not forward.alive()
        assert backend._forwards == {}
        assert fake.get_object("sandboxclaims", env.id) is None
    finally:
        backend.close()
        fake.close()
