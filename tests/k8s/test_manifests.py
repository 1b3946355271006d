"""The k8s/ kustomize tree, its overlays and `awm k8s render` output, checked without a cluster."""

from __future__ import annotations

import re
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml
from typer.testing import CliRunner

from awm.core.errors import InvalidInput
from awm.runtime.k8s_manifests import ScenarioImage, render
from awm.runtime.k8s_objects import (
    LABEL_RUNNER,
    default_pod_template,
    dns_name,
    env_pod,
    label_value,
    sandbox_claim,
)
from tests.k8s.checks import (
    Obj,
    egress_violations,
    kustomize,
    pod_specs,
    restricted_violations,
    validate,
    validate_sandbox,
)
from tests.k8s.conftest import CRDS, ROOT

K8S = ROOT / "k8s"
FOLDERS = [K8S, K8S / "overlays" / "kind", K8S / "overlays" / "production"]
DNS_1123 = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
ENV_LABELS = default_pod_template()["template"]["metadata"]["labels"]
DIGEST = "sha256:" + "ab" * 32


@pytest.fixture(scope="module")
def crds() -> Path:
    if not CRDS.is_dir():
        pytest.skip(f"the agent-sandbox CRDs are not at {CRDS} (the shared vendor folder beside the checkout)")
    return CRDS


def check_all(objects: list[Obj], crds: Path) -> None:
    """Every check that applies to any rendered or kustomized object."""
    assert objects
    for obj in objects:
        validate(obj, crds)
        name = obj["metadata"]["name"]
        assert DNS_1123.match(name), name
        assert len(name) <= 63, name
        for spec in pod_specs(obj):
            assert restricted_violations(spec) == [], (obj["kind"], name)


@pytest.mark.parametrize("folder", FOLDERS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_install_builds_and_validates(folder: Path, crds: Path) -> None:
    objects = kustomize(folder)
    check_all(objects, crds)
    kinds = {o["kind"] for o in objects}
    assert kinds >= {"Namespace", "ServiceAccount", "Role", "RoleBinding", "NetworkPolicy", "PriorityClass",
                     "LimitRange", "ResourceQuota", "PodTemplate", "DaemonSet"}
    assert egress_violations(objects, ENV_LABELS) == []
    [ns] = [o for o in objects if o["kind"] == "Namespace"]
    assert ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    assert all(o["metadata"].get("namespace") == "awm" for o in objects
               if o["kind"] not in ("Namespace", "PriorityClass"))


def test_the_base_pod_template_is_the_built_in_default() -> None:
    on_disk = yaml.safe_load((K8S / "base" / "pod-template.yaml").read_text())
    assert on_disk == default_pod_template()
    [built] = [o for o in kustomize(K8S) if o["kind"] == "PodTemplate"]
    assert built["template"] == default_pod_template()["template"]


def test_the_environment_pod_is_hardened_as_the_issue_asks() -> None:
    spec = default_pod_template()["template"]["spec"]
    [c] = spec["containers"]
    sc = c["securityContext"]
    assert (sc["runAsUser"], sc["readOnlyRootFilesystem"], sc["allowPrivilegeEscalation"]) == (10001, True, False)
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
    assert spec["automountServiceAccountToken"] is False
    assert spec["activeDeadlineSeconds"] > 0
    assert {"name": "tmp", "emptyDir": {"medium": "Memory", "sizeLimit": "256Mi"}} in spec["volumes"]
    assert c["volumeMounts"] == [{"name": "tmp", "mountPath": "/tmp"}]
    for probe in ("startupProbe", "readinessProbe"):
        assert c[probe]["httpGet"] == {"path": "/_awm/health", "port": "http"}
    assert c["resources"]["requests"]
    assert c["resources"]["limits"]


def test_the_runner_role_grants_what_the_backends_use() -> None:
    [role] = [o for o in kustomize(K8S) if o["kind"] == "Role"]
    grants = {(res, verb) for rule in role["rules"] for res in rule["resources"] for verb in rule["verbs"]}
    for verb in ("create", "get", "list", "watch", "delete"):
        assert ("pods", verb) in grants
        assert ("sandboxclaims", verb) in grants
    assert {("pods/log", "get"), ("podtemplates", "get"), ("leases", "create"), ("leases", "patch"),
            ("leases", "delete"), ("sandboxes", "get")} <= grants
    assert not any(verb in ("*", "escalate", "bind", "impersonate") for _, verb in grants)
    sa = {o["metadata"]["name"]: o for o in kustomize(K8S) if o["kind"] == "ServiceAccount"}
    assert sa["awm-env"]["automountServiceAccountToken"] is False


def test_only_runners_reach_environments_and_only_on_8000() -> None:
    [policy] = [o for o in kustomize(K8S) if o["metadata"]["name"] == "awm-env-isolation"]
    [rule] = policy["spec"]["ingress"]
    assert rule["ports"] == [{"protocol": "TCP", "port": 8000}]
    assert rule["from"] == [{"podSelector": {"matchLabels": {LABEL_RUNNER: "true"}}},
                            {"namespaceSelector": {"matchLabels": {LABEL_RUNNER: "true"}}}]


def test_the_production_overlay_pulls_from_the_registry_onto_spot_nodes() -> None:
    objects = kustomize(K8S / "overlays" / "production")
    [template] = [o for o in objects if o["kind"] == "PodTemplate"]
    spec = template["template"]["spec"]
    assert spec["containers"][0]["image"].startswith("registry.example.com/awm/base")
    assert any(t.get("value") == "spot" for t in spec["tolerations"])
    assert spec["runtimeClassName"] == "gvisor"


# -- the checks themselves catch what they are for ------------------------------------------


def test_the_restricted_check_catches_each_weakening() -> None:
    def weakened(change: str) -> list[str]:
        spec = default_pod_template()["template"]["spec"]
        c = spec["containers"][0]
        if change == "privileged":
            c["securityContext"]["privileged"] = True
        elif change == "escalation":
            del c["securityContext"]["allowPrivilegeEscalation"]
        elif change == "caps":
            c["securityContext"]["capabilities"] = {"add": ["SYS_ADMIN"]}
        elif change == "root":
            c["securityContext"]["runAsNonRoot"] = False
        elif change == "seccomp":
            del c["securityContext"]["seccompProfile"]
            del spec["securityContext"]["seccompProfile"]
        elif change == "hostpath":
            spec["volumes"].append({"name": "host", "hostPath": {"path": "/"}})
        elif change == "hostnetwork":
            spec["hostNetwork"] = True
        return restricted_violations(spec)

    for change in ("privileged", "escalation", "caps", "root", "seccomp", "hostpath", "hostnetwork"):
        assert weakened(change), change


def test_the_egress_check_catches_an_opened_door() -> None:
    objects = kustomize(K8S)
    opened = [dict(o) for o in objects]
    for o in opened:
        if o["kind"] == "NetworkPolicy" and o["metadata"]["name"] == "awm-env-isolation":
            o["spec"] = {**o["spec"], "egress": [{"to": [{"ipBlock": {"cidr": "0.0.0.0/0"}}]}]}
    assert egress_violations(opened, ENV_LABELS)
    without = [o for o in objects if o["kind"] != "NetworkPolicy"]
    assert egress_violations(without, ENV_LABELS) == ["no NetworkPolicy selecting environment pods restricts egress"]


def test_strict_validation_rejects_unknown_fields(crds: Path) -> None:
    pod = env_pod(default_pod_template(), name="x", image="awm/x:1", labels={}, annotations={}, env={},
                  owner_references=[])
    pod["spec"]["containers"][0]["securityContex"] = {}  # a typo the API server would prune silently
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(pod, "1.25.0", strict=True)
    claim = sandbox_claim("c", "x", labels={}, annotations={}, owner_references=[],
                          shutdown_time="2030-01-01T00:00:00Z")
    claim["spec"]["warmPool"] = {"name": "x"}
    with pytest.raises(jsonschema.ValidationError):
        validate_sandbox(claim, crds)


# -- awm k8s render ------------------------------------------------------------------------


def test_render_pinned_images_builds_valid_sandbox_objects(tmp_path: Path, crds: Path) -> None:
    long_id = "a_scenario_whose_name_is_much_longer_than_sixty_three_characters_allow_for"
    scenarios = [ScenarioImage("gofundme", f"registry.example.com/awm/gofundme@{DIGEST}"),
                 ScenarioImage(long_id, f"registry.example.com/awm/{long_id}@{DIGEST}")]
    render(scenarios, tmp_path, namespace="rl", warm=3)
    objects = kustomize(tmp_path)
    check_all(objects, crds)
    by_kind: dict[str, list[Obj]] = {}
    for o in objects:
        by_kind.setdefault(o["kind"], []).append(o)
    assert sorted(by_kind) == ["ConfigMap", "SandboxTemplate", "SandboxWarmPool"]
    for t in by_kind["SandboxTemplate"]:
        spec = t["spec"]
        assert spec["networkPolicyManagement"] == "Unmanaged"
        assert spec["podTemplate"]["spec"]["containers"][0]["image"].endswith(DIGEST)
    for pool in by_kind["SandboxWarmPool"]:
        assert pool["spec"]["replicas"] == 3
        assert pool["spec"]["sandboxTemplateRef"]["name"] == pool["metadata"]["name"]
    assert all(o["metadata"]["namespace"] == "rl" for o in objects)
    [prepull] = by_kind["ConfigMap"]
    assert prepull["data"]["prepull.txt"].splitlines() == sorted(s.image for s in scenarios)
    names = [o["metadata"]["name"] for o in by_kind["SandboxTemplate"]]
    assert all(len(n) <= 63 for n in names)
    assert len(set(names)) == 2


def test_render_refuses_clashing_names_and_nothing(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="same object name"):
        render([ScenarioImage("a_b", "awm/a_b@x"), ScenarioImage("a-b", "awm/a-b@x")], tmp_path)
    with pytest.raises(InvalidInput, match="nothing to render"):
        render([], tmp_path)


def test_names_and_label_values_stay_valid() -> None:
    assert dns_name("awm", "Some_Scenario") == "awm-some-scenario"
    long = dns_name("awm", "x" * 100)
    assert len(long) == 63
    assert DNS_1123.match(long)
    assert long != dns_name("awm", "x" * 101)
    for value in ("host.example.com:123:456", "a" * 80, "-leading", "ok_value", "rl fleet/\u00e9"):
        v = label_value(value)
        assert len(v) <= 63, v
        assert re.match(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$", v), v
    assert label_value("ok_value") == "ok_value"


@pytest.mark.docker
def test_render_examples_from_the_engine(tmp_path: Path, crds: Path, images: dict[str, str]) -> None:
    """`awm k8s render examples --out DIR` with the example images the project builds."""
    from awm.cli import app

    result = CliRunner().invoke(app, ["k8s", "render", str(ROOT / "examples"), "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    objects = kustomize(tmp_path)
    check_all(objects, crds)
    templates = [o for o in objects if o["kind"] == "SandboxTemplate"]
    assert {t["metadata"]["labels"]["awm.io/scenario"] for t in templates} == set(images)
    for t in templates:
        image = t["spec"]["podTemplate"]["spec"]["containers"][0]["image"]
        scenario = t["metadata"]["labels"]["awm.io/scenario"]
        assert image == images[scenario]
        assert not image.endswith(":latest")


def test_the_example_trainer_is_a_runner_the_environments_let_in(crds: Path) -> None:
    objects = kustomize(K8S / "examples" / "trainer")
    check_all(objects, crds)
    [job] = objects
    pod = job["spec"]["template"]
    assert pod["spec"]["serviceAccountName"] == "awm-runner"
    assert pod["metadata"]["labels"][LABEL_RUNNER] == "true"
    downward = {e["name"]: e["valueFrom"]["fieldRef"]["fieldPath"] for e in pod["spec"]["containers"][0]["env"]}
    assert downward == {"AWM_POD_NAME": "metadata.name", "AWM_POD_UID": "metadata.uid",
                        "AWM_POD_NAMESPACE": "metadata.namespace"}
