"""Checks the manifest tests apply to every object: schemas, Pod Security `restricted`, egress."""

from __future__ import annotations

import copy
import shutil
import subprocess
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import yaml

Obj = dict[str, Any]

# The oldest Kubernetes the manifests support (Pod Security admission is GA from 1.25, and the
# base relies on its namespace labels) and the newest kubernetes-validate ships.
OLDEST = "1.25.0"
NEWEST = kubernetes_validate.latest_version()
SANDBOX_GROUPS = ("agents.x-k8s.io/", "extensions.agents.x-k8s.io/")
_VOLUMES_ALLOWED = {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim",
                    "projected", "secret"}


def kustomize(folder: Path) -> list[Obj]:
    kubectl = shutil.which("kubectl")
    assert kubectl, "kubectl (with kustomize) is needed: it is at /usr/bin/kubectl on the project's machines"
    proc = subprocess.run([kubectl, "kustomize", str(folder)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return [d for d in yaml.safe_load_all(proc.stdout) if d]


def validate_core(obj: Obj) -> None:
    """Strict schema validation (unknown fields rejected) for the oldest and newest version."""
    for version in (OLDEST, NEWEST):
        kubernetes_validate.validate(obj, version, strict=True)


def _closed(schema: Any) -> Any:
    """A CRD schema that rejects unknown fields, as `kubectl --validate=strict` would."""
    if isinstance(schema, dict):
        out = {k: _closed(v) for k, v in schema.items()}
        if (out.get("type") == "object" and "properties" in out and "additionalProperties" not in out
                and not out.get("x-kubernetes-preserve-unknown-fields")):
            out["additionalProperties"] = False
        return out
    if isinstance(schema, list):
        return [_closed(v) for v in schema]
    return schema


@cache
def crd_schemas(crd_dir: Path) -> dict[tuple[str, str], Obj]:
    """(apiVersion, kind) -> the closed v1beta1 openAPIV3Schema of each agent-sandbox CRD."""
    out = {}
    for path in sorted(crd_dir.glob("*.yaml")):
        crd = yaml.safe_load(path.read_text())
        group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
        for version in crd["spec"]["versions"]:
            if version["name"] == "v1beta1":
                out[(f"{group}/v1beta1", kind)] = _closed(copy.deepcopy(version["schema"]["openAPIV3Schema"]))
    return out


def validate_sandbox(obj: Obj, crd_dir: Path) -> None:
    schema = crd_schemas(crd_dir)[(obj["apiVersion"], obj["kind"])]
    jsonschema.validate(obj, schema)
    # the pod inside a SandboxTemplate is a core PodSpec: validate it as one
    if obj["kind"] == "SandboxTemplate":
        pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "check"}, **obj["spec"]["podTemplate"]}
        pod["metadata"] = {"name": "check", **obj["spec"]["podTemplate"].get("metadata", {})}
        validate_core(pod)


def validate(obj: Obj, crd_dir: Path) -> None:
    if obj["apiVersion"].startswith(SANDBOX_GROUPS):
        validate_sandbox(obj, crd_dir)
    else:
        validate_core(obj)


def pod_specs(obj: Obj) -> Iterator[Obj]:
    """Every pod spec an object carries."""
    kind = obj["kind"]
    if kind == "Pod":
        yield obj["spec"]
    elif kind == "PodTemplate":
        yield obj["template"]["spec"]
    elif kind in ("DaemonSet", "Deployment", "StatefulSet", "ReplicaSet", "Job"):
        yield obj["spec"]["template"]["spec"]
    elif kind == "CronJob":
        yield obj["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    elif kind == "SandboxTemplate" or kind == "Sandbox":
        yield obj["spec"]["podTemplate"]["spec"]


def restricted_violations(spec: Obj) -> list[str]:
    """What a pod spec breaks of the Pod Security Standards' `restricted` profile (none: [])."""
    bad = []
    pod_sc = spec.get("securityContext") or {}
    for flag in ("hostNetwork", "hostPID", "hostIPC"):
        if spec.get(flag):
            bad.append(f"{flag} is set")
    for volume in spec.get("volumes") or []:
        kinds = set(volume) - {"name"}
        if not kinds <= _VOLUMES_ALLOWED:
            bad.append(f"volume {volume['name']} is of a forbidden type {sorted(kinds - _VOLUMES_ALLOWED)}")
    containers = [*(spec.get("initContainers") or []), *(spec.get("containers") or []),
                  *(spec.get("ephemeralContainers") or [])]
    if pod_sc.get("runAsUser") == 0:
        bad.append("the pod runs as uid 0")
    for c in containers:
        sc, name = c.get("securityContext") or {}, c["name"]
        if sc.get("privileged"):
            bad.append(f"{name} is privileged")
        if sc.get("allowPrivilegeEscalation") is not False:
            bad.append(f"{name} does not set allowPrivilegeEscalation: false")
        caps = sc.get("capabilities") or {}
        if "ALL" not in (caps.get("drop") or []):
            bad.append(f"{name} does not drop ALL capabilities")
        if set(caps.get("add") or []) - {"NET_BIND_SERVICE"}:
            bad.append(f"{name} adds capabilities {caps['add']}")
        if not (sc.get("runAsNonRoot") if "runAsNonRoot" in sc else pod_sc.get("runAsNonRoot")):
            bad.append(f"{name} may run as root (runAsNonRoot not true)")
        if sc.get("runAsUser") == 0:
            bad.append(f"{name} runs as uid 0")
        seccomp = (sc.get("seccompProfile") or pod_sc.get("seccompProfile") or {}).get("type")
        if seccomp not in ("RuntimeDefault", "Localhost"):
            bad.append(f"{name} has no RuntimeDefault/Localhost seccomp profile")
        if any(p.get("hostPort") for p in c.get("ports") or []):
            bad.append(f"{name} uses a hostPort")
        if sc.get("procMount") not in (None, "Default"):
            bad.append(f"{name} unmasks /proc")
    return bad


def _selects(selector: Obj, labels: dict[str, str]) -> bool:
    wanted = selector.get("matchLabels") or {}
    return all(labels.get(k) == v for k, v in wanted.items()) and not selector.get("matchExpressions")


def egress_violations(objects: list[Obj], env_labels: dict[str, str]) -> list[str]:
    """Why pods with `env_labels` could open a connection under these NetworkPolicies ([]: none).

    NetworkPolicies add up: egress is denied only if some policy selecting the pod has Egress
    in its policyTypes, and allowed wherever any selecting policy has an egress rule.
    """
    policies = [o for o in objects if o["kind"] == "NetworkPolicy" and _selects(o["spec"]["podSelector"], env_labels)]
    if not any("Egress" in (p["spec"].get("policyTypes") or []) for p in policies):
        return ["no NetworkPolicy selecting environment pods restricts egress"]
    opened = [p for p in policies if p["spec"].get("egress")]
    return [f"{p['metadata']['name']} allows egress: {p['spec']['egress']}" for p in opened]
