"""`awm k8s apply` (server-side apply) and `awm k8s status` against the fake API."""

from __future__ import annotations

from pathlib import Path

from awm.runtime.k8s_backend import KubernetesBackend
from awm.runtime.k8s_manifests import ScenarioImage, apply_folder, cluster_status, render
from tests.k8s.conftest import ROOT
from tests.k8s.fake_api import FakeKube

IMAGE = "registry.example.com/awm/gofundme@sha256:" + "ef" * 32


def test_apply_is_server_side_and_idempotent(tmp_path: Path) -> None:
    fake = FakeKube()
    client = fake.client()
    applied = apply_folder(ROOT / "k8s", client)
    assert "PodTemplate/awm-env" in applied
    assert "NetworkPolicy/awm-env-isolation" in applied
    patches = [u for m, u in fake.requests if m == "PATCH"]
    assert len(patches) == len(applied)
    assert all("fieldManager=awm" in u for u in patches)
    assert fake.get_object("podtemplates", "awm-env") is not None
    assert fake.get_object("namespaces", "awm", namespace="") is not None  # cluster-scoped
    again = apply_folder(ROOT / "k8s", client)  # a second apply changes nothing, creates nothing
    assert again == applied
    assert len(fake.list_objects("podtemplates")) == 1

    render([ScenarioImage("gofundme", IMAGE)], tmp_path, warm=4)
    assert apply_folder(tmp_path, client) == [
        "ConfigMap/awm-prepull", "SandboxTemplate/awm-gofundme", "SandboxWarmPool/awm-gofundme"]


def test_status_counts_pods_claims_and_pools_by_scenario(tmp_path: Path, env_server: int) -> None:
    from tests.k8s.conftest import unit_kubelet

    fake = FakeKube()
    fake.kubelet = unit_kubelet
    render([ScenarioImage("gofundme", IMAGE)], tmp_path, warm=4)
    apply_folder(tmp_path, fake.client())
    backend = KubernetesBackend(fake.client(), connect="pod-ip", server_port=env_server)
    try:
        backend.start("registry.example.com/awm/pantry:1")
        backend.start("registry.example.com/awm/pantry:1")
        status = cluster_status(fake.client(), "awm")
    finally:
        backend.close()
        fake.close()
    assert status == {
        "gofundme": {"pods": {}, "claims": 0, "warm": 4, "warm_ready": 0},
        "pantry": {"pods": {"Running": 2}, "claims": 0, "warm": None, "warm_ready": None},
    }
