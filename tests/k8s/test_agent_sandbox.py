"""AgentSandboxBackend: the claim flow against the fake API and a scripted claim controller."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml

from awm.core.errors import EnvStartTimeout
from awm.runtime.agent_sandbox import AgentSandboxBackend
from awm.runtime.base import Timeouts
from awm.runtime.k8s_manifests import ScenarioImage, render
from awm.runtime.k8s_objects import ANNOTATION_OWNER, LABEL_LEASE, LABEL_SCENARIO
from awm.runtime.pool import EnvPool
from tests.k8s.checks import validate_sandbox
from tests.k8s.conftest import CRDS, container_status, kill
from tests.k8s.fake_api import FakeKube, Obj

SCENARIO = "pantrypal_recipe_planner"
IMAGE = f"registry.example.com/awm/{SCENARIO}@sha256:" + "cd" * 32
EXT = "extensions.agents.x-k8s.io/v1beta1"


def claim_controller(fake: FakeKube, event: str, claim: Obj) -> None:
    """Plays agent-sandbox: binds a claim to a sandbox of its warm pool, or says why not."""
    if event != "create":
        return
    name, pool = claim["metadata"]["name"], claim["spec"]["warmPoolRef"]["name"]
    if fake.get_object("sandboxwarmpools", pool) is None:
        fake.update("sandboxclaims", name, {"status": {"conditions": [
            {"type": "Ready", "status": "False", "reason": "WarmPoolNotFound",
             "message": f'SandboxWarmPool "{pool}" not found'}]}})
        return
    claim_ref = {"apiVersion": EXT, "kind": "SandboxClaim", "name": name, "uid": claim["metadata"]["uid"]}
    sandbox = fake.create_object("agents.x-k8s.io/v1beta1", "sandboxes", {
        "apiVersion": "agents.x-k8s.io/v1beta1", "kind": "Sandbox",
        "metadata": {"name": name, "ownerReferences": [claim_ref]}, "spec": {}})
    sandbox_ref = {"apiVersion": "agents.x-k8s.io/v1beta1", "kind": "Sandbox", "name": name,
                   "uid": sandbox["metadata"]["uid"]}
    fake.create_object("v1", "pods", {
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "ownerReferences": [sandbox_ref]},
        "spec": {"containers": [{"name": "env", "image": IMAGE}]},
        "status": {"phase": "Running", "podIP": "127.0.0.1",
                   "containerStatuses": container_status(IMAGE, {"running": {}}, ready=True)}})
    fake.pod_logs[name] = "warm sandbox ready\n"
    fake.update("sandboxclaims", name, {"status": {
        "conditions": [{"type": "Ready", "status": "True", "reason": "SandboxReady", "message": ""}],
        "sandbox": {"name": name, "podIPs": ["127.0.0.1"]}}})


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[FakeKube]:
    """The fake API holding the objects `awm k8s render` writes for one scenario."""
    fake = FakeKube()
    fake.claim_controller = claim_controller
    for path in render([ScenarioImage(SCENARIO, IMAGE)], tmp_path, warm=2):
        if path.suffix == ".yaml" and path.name != "kustomization.yaml":
            for doc in yaml.safe_load_all(path.read_text()):
                plural = {"SandboxTemplate": "sandboxtemplates", "SandboxWarmPool": "sandboxwarmpools"}[doc["kind"]]
                fake.create_object(EXT, plural, doc)
    yield fake
    fake.close()


@pytest.fixture
def sandboxes(cluster: FakeKube, env_server: int) -> Iterator[AgentSandboxBackend]:
    backend = AgentSandboxBackend(cluster.client(), connect="pod-ip", server_port=env_server, claim_ttl_s=3600)
    yield backend
    backend.close()


def test_start_claims_a_warm_sandbox_of_the_scenario(cluster: FakeKube, sandboxes: AgentSandboxBackend) -> None:
    env = sandboxes.start(IMAGE)
    [claim] = cluster.list_objects("sandboxclaims")
    [lease] = cluster.list_objects("leases")
    spec, meta = claim["spec"], claim["metadata"]
    assert spec["warmPoolRef"] == {"name": "awm-pantrypal-recipe-planner"}
    assert "env" not in spec  # per-claim env would force a cold start
    shutdown = datetime.fromisoformat(spec["lifecycle"]["shutdownTime"].replace("Z", "+00:00"))
    assert 3500 < (shutdown - datetime.now(UTC)).total_seconds() <= 3600
    assert meta["ownerReferences"][0]["uid"] == lease["metadata"]["uid"]
    assert meta["labels"][LABEL_LEASE] == lease["metadata"]["name"]
    assert meta["labels"][LABEL_SCENARIO] == SCENARIO
    assert ANNOTATION_OWNER in meta["annotations"]
    if CRDS.is_dir():
        sent = {k: v for k, v in claim.items() if k != "status"}
        sent["metadata"] = {k: meta[k] for k in ("name", "labels", "annotations", "ownerReferences")}
        validate_sandbox(sent, CRDS)
    assert env.base_url.startswith("http://127.0.0.1:")
    assert env.healthy()
    assert env.token is None
    assert env.protections == frozenset()
    assert sandboxes.logs(env.id) == "warm sandbox ready\n"
    [record] = sandboxes.list()
    assert (record.id, record.scenario, record.status) == (env.id, SCENARIO, "Ready")
    env.stop()
    # the claim's sandbox and pod go with it
    assert cluster.list_objects("sandboxclaims") == cluster.list_objects("sandboxes") == []
    assert cluster.list_objects("pods") == []
    assert sandboxes.state(env.id) == "removed"


def test_the_pool_holds_claims_across_episodes(cluster: FakeKube, sandboxes: AgentSandboxBackend) -> None:
    with EnvPool(sandboxes, IMAGE, size=2) as pool:
        ids = set()
        for _ in range(5):
            with pool.lease() as env:
                ids.add(env.id)
                env.reset()
        assert len(ids) <= 2
        assert pool.metrics.resets == 5
        assert len(cluster.list_objects("sandboxclaims")) == 2
        assert sum(1 for m, u in cluster.requests if m == "POST" and "sandboxclaims" in u) == 2
    assert cluster.list_objects("sandboxclaims") == []


def test_a_claim_without_a_warm_pool_says_so(cluster: FakeKube, sandboxes: AgentSandboxBackend) -> None:
    other = "registry.example.com/awm/not_rendered@sha256:" + "00" * 32
    with pytest.raises(EnvStartTimeout, match="WarmPoolNotFound") as info:
        sandboxes.start(other, timeouts=Timeouts(start_s=0.5))
    assert "awm k8s render" in (info.value.hint or "")
    assert cluster.list_objects("sandboxclaims") == []


def test_claims_take_no_env_or_token(sandboxes: AgentSandboxBackend) -> None:
    with pytest.raises(ValueError, match="cold start"):
        sandboxes.start(IMAGE, env={"X": "1"})
    with pytest.raises(ValueError, match="cold start"):
        sandboxes.start(IMAGE, control_token="secret")


def test_gc_releases_the_claims_of_a_dead_process(cluster: FakeKube, env_server: int) -> None:
    dead = AgentSandboxBackend(cluster.client(), connect="pod-ip", server_port=env_server)
    alive = AgentSandboxBackend(cluster.client(), connect="pod-ip", server_port=env_server)
    try:
        gone = dead.start(IMAGE).id
        kept = alive.start(IMAGE).id
        kill(dead)
        cluster.update("leases", dead.lease.name, {"spec": {"renewTime": "2020-01-01T00:00:00.000000Z"}})
        assert alive.gc() == [gone]
        assert [c["metadata"]["name"] for c in cluster.list_objects("sandboxclaims")] == [kept]
        assert [p["metadata"]["name"] for p in cluster.list_objects("pods")] == [kept]
    finally:
        alive.close()
