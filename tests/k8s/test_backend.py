"""KubernetesBackend against the in-test fake API (tests/k8s/fake_api.py) and a scripted kubelet."""

from __future__ import annotations

import asyncio
import os
import re
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from awm.core.errors import AWMError, BackendUnavailable, EnvStartTimeout, ImageNotFound
from awm.runtime import tokens
from awm.runtime.base import Backend, Isolation, Protection, Resources, Timeouts
from awm.runtime.k8s_backend import AsyncKubernetesBackend, KubernetesBackend, scenario_of
from awm.runtime.k8s_objects import (
    ANNOTATION_OWNER,
    LABEL_LEASE,
    LABEL_ROLE,
    LABEL_RUN_ID,
    LABEL_SCENARIO,
    default_pod_template,
)
from tests.k8s.conftest import fake_kubectl, kill
from tests.k8s.fake_api import FakeKube

IMAGE = "registry.example.com/awm/pantrypal_recipe_planner:6ee62bf8f7550350"
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")


def eventually(check: Callable[[], bool], what: str, timeout_s: float = 20.0) -> None:
    """Wait for background work (watch, renewal); the bound only stops a broken test hanging."""
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, f"never happened: {what}"
        time.sleep(0.02)


def pod_names(fake: FakeKube) -> list[str]:
    return [p["metadata"]["name"] for p in fake.list_objects("pods")]


def test_start_creates_one_hardened_pod_owned_by_the_lease(fake: FakeKube, backend: KubernetesBackend) -> None:
    assert isinstance(backend, Backend)  # what EnvPool and the CLI speak
    env = backend.start(IMAGE, labels={"team": "rl fleet/\u00e9"})
    [pod] = fake.list_objects("pods")
    [lease] = fake.list_objects("leases")
    meta = pod["metadata"]
    assert meta["name"] == env.id
    assert len(env.id) <= 63
    assert meta["labels"][LABEL_SCENARIO] == "pantrypal_recipe_planner" == env.scenario
    assert meta["labels"][LABEL_LEASE] == lease["metadata"]["name"]
    assert meta["labels"][LABEL_RUN_ID] == backend.run_id
    assert all(LABEL_VALUE.match(v) and len(v) <= 63 for v in meta["labels"].values()), meta["labels"]
    assert meta["annotations"][ANNOTATION_OWNER] == lease["metadata"]["annotations"][ANNOTATION_OWNER]
    assert meta["ownerReferences"] == [{
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "name": lease["metadata"]["name"],
        "uid": lease["metadata"]["uid"], "blockOwnerDeletion": False,
    }]
    # the hardened template, with only the image, limits and environment filled in
    spec, template = pod["spec"], default_pod_template()["template"]["spec"]
    container = spec["containers"][0]
    assert container["image"] == IMAGE
    assert container["securityContext"] == template["containers"][0]["securityContext"]
    assert {k: v for k, v in spec.items() if k != "containers" and k != "volumes"} == {
        k: v for k, v in template.items() if k != "containers" and k != "volumes"
    }
    # the pod holds the hash of its own random token; the handle keeps the token
    env_vars = {e["name"]: e["value"] for e in container["env"]}
    assert env.token
    assert env_vars == {tokens.TOKEN_HASH_VAR: tokens.token_hash(env.token)}
    assert env.token not in str(pod)
    assert env.protections == frozenset({Protection.TOKEN})
    assert env.isolation is Isolation.SEALED
    assert env.healthy()

    [record] = backend.list()
    assert (record.id, record.scenario, record.status, record.base_url) == (
        env.id, "pantrypal_recipe_planner", "Running", env.base_url)
    assert backend.logs(env.id) == f"serving {IMAGE}\nready\n"
    assert backend.is_running(env.id)
    env.stop()
    assert pod_names(fake) == []
    assert backend.state(env.id) == "removed"
    backend.stop(env.id)  # a missing pod is not an error
    assert backend.logs(env.id) == ""


def test_each_environment_gets_its_own_token(backend: KubernetesBackend, fake: FakeKube) -> None:
    a, b = backend.start(IMAGE), backend.start(IMAGE)
    hashes = {p["spec"]["containers"][0]["env"][0]["value"] for p in fake.list_objects("pods")}
    assert a.token != b.token
    assert len(hashes) == 2


def test_the_namespace_pod_template_wins_over_the_built_in_one(fake: FakeKube, env_server: int) -> None:
    template = default_pod_template()
    template["template"]["spec"]["nodeSelector"] = {"awm.io/pool": "environments"}
    template["template"]["spec"]["runtimeClassName"] = "gvisor"
    fake.create_object("v1", "podtemplates", template)
    backend = KubernetesBackend(fake.client(), connect="pod-ip", server_port=env_server)
    try:
        backend.start(IMAGE)
        [pod] = fake.list_objects("pods")
        assert pod["spec"]["nodeSelector"] == {"awm.io/pool": "environments"}
        assert pod["spec"]["runtimeClassName"] == "gvisor"
    finally:
        backend.close()


def test_a_create_retried_after_a_timeout_finds_its_pod(fake: FakeKube, backend: KubernetesBackend) -> None:
    fake.inject("POST", "/pods", status=0)  # the pod is created, the answer never arrives
    env = backend.start(IMAGE)
    creates = [u for m, u in fake.requests if m == "POST" and "/pods" in u]
    assert len(creates) == 2  # the retry got 409: the pod it made before
    assert pod_names(fake) == [env.id]


def test_throttling_and_server_faults_are_retried(fake: FakeKube, backend: KubernetesBackend) -> None:
    fake.inject("POST", "/pods", status=429, times=2, retry_after="0")
    fake.inject("POST", "/pods", status=500, times=1)
    env = backend.start(IMAGE)
    assert pod_names(fake) == [env.id]


def test_refusals_become_clear_errors(fake: FakeKube, backend: KubernetesBackend) -> None:
    fake.inject("POST", "/pods", status=403)
    with pytest.raises(BackendUnavailable, match=r"refused creating pod .* 403") as info:
        backend.start(IMAGE)
    assert "rbac.yaml" in (info.value.hint or "")
    fake.inject("POST", "/pods", status=500, times=10)
    with pytest.raises(BackendUnavailable, match="500"):
        backend.start(IMAGE)
    assert pod_names(fake) == []


def test_published_isolation_is_refused(backend: KubernetesBackend) -> None:
    with pytest.raises(BackendUnavailable, match="PUBLISHED"):
        backend.start(IMAGE, isolation=Isolation.PUBLISHED)


@pytest.mark.parametrize(
    ("image", "error", "reason", "event"),
    [
        ("registry.example.com/awm/missing:1", ImageNotFound, "ImagePullBackOff", "Failed to pull image"),
        ("registry.example.com/awm/crashing:1", EnvStartTimeout, "CrashLoopBackOff", "Back-off restarting"),
        ("registry.example.com/awm/huge:1", EnvStartTimeout, "unschedulable", "Insufficient memory"),
    ],
)
def test_a_start_that_cannot_succeed_fails_fast_with_the_reason_and_events(
    fake: FakeKube, backend: KubernetesBackend, image: str, error: type[AWMError], reason: str, event: str
) -> None:
    with pytest.raises(error) as info:  # the start timeout is a minute: failing needs no timeout
        backend.start(image)
    message = str(info.value)
    assert reason in message
    assert event in message
    assert image in message
    assert info.value.scenario == scenario_of(image)
    if "crashing" in image:
        assert "RuntimeError: broken module" in message  # the pod's last log lines
    assert pod_names(fake) == []  # the failed pod is deleted


def test_a_pod_that_never_answers_times_out_and_is_deleted(fake: FakeKube, backend: KubernetesBackend) -> None:
    with pytest.raises(EnvStartTimeout, match=r"did not answer within 0\.3s"):
        backend.start("registry.example.com/awm/hanging:1", timeouts=Timeouts(start_s=0.3))
    assert pod_names(fake) == []


def test_the_watch_relists_after_410(fake: FakeKube, backend: KubernetesBackend) -> None:
    a, b = backend.start(IMAGE), backend.start(IMAGE)
    relists = backend.watch.relists
    # While the watch is away its history is compacted, and one pod disappears unseen.
    fake.compact()
    with fake.cond:
        key = next(k for k in fake.objects if k[1] == "pods" and k[3] == a.id)
        fake.objects.pop(key)
    fake.drop_watches()
    eventually(lambda: backend.watch.relists > relists, "a relist after 410")
    eventually(lambda: backend.watch.get(a.id) is None and backend.watch.get(b.id) is not None,
               "the cache reflects the relist")
    expired = [u for m, u in fake.requests if "watch=true" in u]
    assert expired  # watches ran from resourceVersions throughout
    c = backend.start(IMAGE)  # and the watch goes on serving starts
    assert backend.watch.get(c.id) is not None


def test_the_lease_is_renewed_while_the_process_lives(fake: FakeKube, env_server: int) -> None:
    backend = KubernetesBackend(fake.client(), connect="pod-ip", server_port=env_server, lease_duration_s=1)
    try:
        backend.start(IMAGE)
        [lease] = fake.list_objects("leases")
        first = lease["spec"]["renewTime"]
        assert lease["spec"]["leaseDurationSeconds"] == 1
        eventually(lambda: fake.list_objects("leases")[0]["spec"]["renewTime"] != first, "a renewal")
    finally:
        backend.close()


def test_gc_deletes_expired_leases_and_their_pods_follow(fake: FakeKube, env_server: int) -> None:
    dead = KubernetesBackend(fake.client(), connect="pod-ip", server_port=env_server, lease_duration_s=30)
    alive = KubernetesBackend(fake.client(), connect="pod-ip", server_port=env_server, lease_duration_s=30)
    try:
        gone = {dead.start(IMAGE).id, dead.start(IMAGE).id}
        kept = alive.start(IMAGE).id
        detached = alive.start(IMAGE, detached=True).id
        # The first process dies (SIGKILL): nothing renews its Lease any more.
        kill(dead)
        old = (datetime.now(UTC) - timedelta(minutes=5)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        fake.update("leases", dead.lease.name, {"spec": {"renewTime": old}})
        assert set(alive.gc()) == gone  # the alive backend's own Lease is never collected
        assert alive.gc() == []
        assert set(pod_names(fake)) == {kept, detached}
        assert [le["metadata"]["name"] for le in fake.list_objects("leases")] == [alive.lease.name]
        assert gone.isdisjoint(pod_names(fake))
    finally:
        alive.close()
    assert pod_names(fake) == [detached]  # a detached pod has no owner: only `stop` ends it


def test_closing_the_backend_removes_its_pods_through_the_lease(fake: FakeKube, env_server: int) -> None:
    backend = KubernetesBackend(fake.client(), connect="pod-ip", server_port=env_server)
    backend.start(IMAGE)
    backend.start(IMAGE)
    backend.close()
    assert pod_names(fake) == []
    assert fake.list_objects("leases") == []


def test_list_filters_by_run_and_owner(fake: FakeKube, backend: KubernetesBackend) -> None:
    mine = backend.start(IMAGE, run_id="run-a")
    backend.start(IMAGE, run_id="run-b")
    assert [r.id for r in backend.list(run_id="run-a")] == [mine.id]
    assert len(backend.list(all_owners=False)) == 2
    fake.update("pods", mine.id, {"metadata": {"annotations": {ANNOTATION_OWNER: "elsewhere:1:1"}}})
    assert len(backend.list(all_owners=False)) == 1
    assert len(backend.list()) == 2
    assert all(p["metadata"]["labels"][LABEL_ROLE] == "env" for p in fake.list_objects("pods"))


def test_the_async_backend_runs_the_same_calls(fake: FakeKube, backend: KubernetesBackend) -> None:
    async def main() -> None:
        abackend = AsyncKubernetesBackend(backend)
        env = await abackend.start(IMAGE)
        assert [r.id for r in await abackend.list()] == [env.id]
        assert "ready" in await abackend.logs(env.id)
        await abackend.stop(env.id)
        assert await abackend.list() == []
        assert await abackend.gc() == []

    asyncio.run(main())
    assert pod_names(fake) == []


def test_no_api_at_all_is_backend_unavailable(env_server: int) -> None:
    fake = FakeKube()
    fake.inject("POST", "/leases", status=0, times=100)  # every request to create the Lease times out
    backend = KubernetesBackend(fake.client(), connect="pod-ip", server_port=env_server, api_retries=2)
    with pytest.raises(BackendUnavailable, match="no answer from the Kubernetes API"):
        backend.start(IMAGE)


def test_scenario_of_image_references() -> None:
    assert scenario_of("awm/gofundme:latest") == "gofundme"
    assert scenario_of("registry.example.com:5000/awm/gofundme@sha256:" + "0" * 64) == "gofundme"
    assert scenario_of("gofundme") == "gofundme"


def test_a_lease_lost_during_a_stall_is_made_anew(fake: FakeKube, backend: KubernetesBackend) -> None:
    lost = backend.start(IMAGE)
    old_uid = backend.lease.uid
    with fake.cond:  # gc by another process after a stall: the Lease and its pods are gone
        key = next(k for k in fake.objects if k[1] == "leases")
        fake._delete(key)
    assert pod_names(fake) == []
    backend.lease.renew()
    [lease] = fake.list_objects("leases")
    assert lease["metadata"]["uid"] == backend.lease.uid != old_uid
    env = backend.start(IMAGE)  # new pods belong to the new Lease, not to a deleted owner
    [pod] = fake.list_objects("pods")
    assert pod["metadata"]["ownerReferences"][0]["uid"] == backend.lease.uid
    assert env.id != lost.id


def test_from_outside_the_cluster_pods_are_reached_through_a_port_forward(
    fake: FakeKube, env_server: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # kubectl's part (the tunnel) needs a cluster; what the backend does with it is tested here
    fake_kubectl(tmp_path, f'echo "$@" > {tmp_path}/args\necho "Forwarding from 127.0.0.1:{env_server} -> 8000"\n'
                           'exec sleep 600\n')
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
    backend = KubernetesBackend(fake.client(), connect="port-forward")
    try:
        env = backend.start(IMAGE)
        assert env.base_url == f"http://127.0.0.1:{env_server}"
        assert env.healthy()
        assert (tmp_path / "args").read_text().split() == [
            "port-forward", "-n", "awm", f"pod/{env.id}", ":8000", "--address", "127.0.0.1"]
        [forward] = backend._forwards.values()
        env.stop()
        assert forward.proc.poll() is not None
        assert backend._forwards == {}
    finally:
        backend.close()


def test_a_port_forward_that_kubectl_gave_up_is_opened_again(
    fake: FakeKube, env_server: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # kubectl port-forward exits on some errors (a lost connection to the pod): the first one
    # here exits at once, after its first line; the next one stays.
    fake_kubectl(tmp_path, f'echo run >> {tmp_path}/runs\n'
                           f'echo "Forwarding from 127.0.0.1:{env_server} -> 8000"\n'
                           f'[ "$(wc -l < {tmp_path}/runs)" -gt 1 ] && exec sleep 600\nexit 1\n')
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
    backend = KubernetesBackend(fake.client(), connect="port-forward")
    try:
        env = backend.start(IMAGE)
        [first] = backend._forwards.values()
        first.proc.wait(10)
        with backend.reach(env.id) as url:
            assert url == f"http://127.0.0.1:{env_server}"
        [second] = backend._forwards.values()
        assert second is not first
        assert second.proc.poll() is None
        assert (tmp_path / "runs").read_text().count("run") == 2
    finally:
        backend.close()
    assert second.proc.poll() is not None  # close() ends the tunnels it kept


def test_a_failing_port_forward_is_reported(
    fake: FakeKube, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_kubectl(tmp_path, 'echo "error: unable to forward port: pods \\"x\\" is forbidden" >&2\nexit 1\n')
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
    backend = KubernetesBackend(fake.client(), connect="port-forward")
    try:
        with pytest.raises(BackendUnavailable, match=r"port-forward to pod .* failed: error: unable to forward"):
            backend.start(IMAGE)
        assert pod_names(fake) == []
    finally:
        backend.close()


def test_in_the_cluster_the_runner_pod_owns_the_lease(
    fake: FakeKube, env_server: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    runner = fake.create_object("v1", "pods", {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "trainer-0"},
                                               "spec": {"containers": [{"name": "t", "image": "trainer"}]}})
    for var, value in (("AWM_POD_NAME", "trainer-0"), ("AWM_POD_UID", runner["metadata"]["uid"]),
                       ("AWM_POD_NAMESPACE", "awm")):
        monkeypatch.setenv(var, value)
    backend = KubernetesBackend(fake.client(), connect="pod-ip", server_port=env_server)
    try:
        env = backend.start(IMAGE)
        [lease] = fake.list_objects("leases")
        assert lease["metadata"]["ownerReferences"] == [
            {"apiVersion": "v1", "kind": "Pod", "name": "trainer-0", "uid": runner["metadata"]["uid"]}]
        kill(backend)
        with fake.cond:  # the trainer pod is deleted (preempted, finished, killed)
            fake._delete(("v1", "pods", "awm", "trainer-0"))
        assert fake.list_objects("leases") == []
        assert env.id not in pod_names(fake)
        assert pod_names(fake) == []
    finally:
        backend.close()


def test_limits_come_from_the_template_unless_asked(fake: FakeKube, backend: KubernetesBackend) -> None:
    backend.start(IMAGE)
    backend.start(IMAGE, resources=Resources(memory="1g", cpus=2, tmpfs_size="64m"))
    first, second = (p["spec"] for p in sorted(fake.list_objects("pods"), key=lambda p: p["metadata"]["uid"]))
    template = default_pod_template()["template"]["spec"]
    limits = {(p["containers"][0]["resources"]["limits"]["memory"], p["volumes"][0]["emptyDir"]["sizeLimit"])
              for p in (first, second)}
    assert limits == {(template["containers"][0]["resources"]["limits"]["memory"], "256Mi"), ("1Gi", "64Mi")}
