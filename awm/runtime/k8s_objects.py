"""The Kubernetes objects of an environment, as plain dicts: one definition for every path.

`default_pod_template()` is the hardened environment pod; `k8s/base/pod-template.yaml` holds
the same object (a test keeps the two equal), which admins patch in the cluster (node
selectors, tolerations, runtime class). `env_pod` turns that template into the bare Pod of one
environment; `sandbox_template`, `sandbox_warm_pool` and `sandbox_claim` are the agent-sandbox
objects (`extensions.agents.x-k8s.io/v1beta1`) of one scenario.

Labels live in the `awm.io/` prefix and their values are always valid label values; the
owner's identity (host:pid:start-time) goes into an annotation, since host names need not be.
"""

from __future__ import annotations

import copy
import hashlib
import re
from typing import Any

from awm import __version__
from awm.runtime.base import Resources

__all__ = [
    "ANNOTATION_OWNER",
    "ANNOTATION_USER",
    "API_SANDBOX_EXT",
    "ENV_CONTAINER",
    "LABEL_LEASE",
    "LABEL_ROLE",
    "LABEL_RUNNER",
    "LABEL_RUN_ID",
    "LABEL_SCENARIO",
    "LABEL_VERSION",
    "ROLE_ENV",
    "ROLE_OWNER",
    "SERVER_PORT",
    "TEMPLATE_NAME",
    "default_pod_template",
    "dns_name",
    "env_pod",
    "label_value",
    "quantity",
    "sandbox_claim",
    "sandbox_template",
    "sandbox_warm_pool",
]

# The Kubernetes spelling of awm.core.labels' keys (awm.scenario -> awm.io/scenario, ...).
LABEL_SCENARIO = "awm.io/scenario"
LABEL_VERSION = "awm.io/version"
LABEL_RUN_ID = "awm.io/run-id"
LABEL_ROLE = "awm.io/role"  # "env" on environment pods, "owner" on ownership Leases
LABEL_LEASE = "awm.io/lease"  # the Lease that owns an environment pod or claim
LABEL_RUNNER = "awm.io/runner"  # "true" on pods and namespaces allowed to reach environments
ANNOTATION_OWNER = "awm.io/owner"  # host:pid:start-time, or "detached"
ANNOTATION_USER = "awm.io/user"  # who started it: `awm env stop --all` removes only one's own
ROLE_ENV = "env"
ROLE_OWNER = "owner"

API_SANDBOX_EXT = "extensions.agents.x-k8s.io/v1beta1"
TEMPLATE_NAME = "awm-env"  # the PodTemplate in the namespace, and the env service account
ENV_CONTAINER = "env"
SERVER_PORT = 8000

_LABEL_BAD = re.compile(r"[^A-Za-z0-9._-]")
_DNS_BAD = re.compile(r"[^a-z0-9-]+")


def label_value(value: str) -> str:
    """`value` as a valid label value: at most 63 of [A-Za-z0-9._-], alphanumeric at both ends.

    A value that had to change gets a short hash of the original, so two values never meet.
    """
    clean = _LABEL_BAD.sub("-", value).strip("._-")
    if clean == value and len(value) <= 63:
        return value
    digest = hashlib.sha256(value.encode()).hexdigest()[:8]
    return f"{clean[:54].rstrip('._-')}-{digest}".lstrip("-")


def dns_name(*parts: str, max_len: int = 63) -> str:
    """A DNS-1123 label from `parts` (`_` and other characters become `-`), at most `max_len`.

    Too long a name keeps its start and ends in a hash of the whole, so it stays unique.
    """
    name = "-".join(p for p in (_DNS_BAD.sub("-", part.lower()).strip("-") for part in parts) if p)
    if len(name) <= max_len:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:10]
    return f"{name[: max_len - 11].rstrip('-')}-{digest}"


def quantity(size: str) -> str:
    """A Docker size ("512m", "1g", "256k") as a Kubernetes quantity ("512Mi", "1Gi", "256Ki")."""
    units = {"k": "Ki", "m": "Mi", "g": "Gi", "t": "Ti"}
    size = size.strip()
    if size[-1:].lower() in units and size[:-1].isdigit():
        return size[:-1] + units[size[-1].lower()]
    return size  # bytes, or already a quantity ("512Mi")


def _probe(*, period_s: int, failures: int) -> dict[str, Any]:
    return {
        "httpGet": {"path": "/_awm/health", "port": "http"},
        "periodSeconds": period_s,
        "failureThreshold": failures,
    }


def default_pod_template() -> dict[str, Any]:
    """The hardened environment pod, as the `awm-env` PodTemplate of `k8s/base` holds it."""
    restricted = {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "runAsUser": 10001,
        "runAsGroup": 10001,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    return {
        "apiVersion": "v1",
        "kind": "PodTemplate",
        "metadata": {"name": TEMPLATE_NAME, "labels": {LABEL_ROLE: ROLE_ENV}},
        "template": {
            "metadata": {"labels": {LABEL_ROLE: ROLE_ENV}},
            "spec": {
                "serviceAccountName": TEMPLATE_NAME,
                "automountServiceAccountToken": False,
                "enableServiceLinks": False,
                "restartPolicy": "Never",  # a crashed episode's state is gone: the pool replaces it
                "priorityClassName": "awm-env",
                "activeDeadlineSeconds": 86400,  # a backstop should every owner-based cleanup fail
                "terminationGracePeriodSeconds": 5,
                "securityContext": {
                    "runAsNonRoot": True,
                    "runAsUser": 10001,
                    "runAsGroup": 10001,
                    "fsGroup": 10001,
                    "seccompProfile": {"type": "RuntimeDefault"},
                },
                "containers": [
                    {
                        "name": ENV_CONTAINER,
                        "image": "awm/base:latest",  # replaced by each environment's image
                        "imagePullPolicy": "IfNotPresent",
                        "ports": [{"name": "http", "containerPort": SERVER_PORT, "protocol": "TCP"}],
                        "resources": {
                            # measured: ~63 MiB per idle one-slot environment (bench/results/pool.json)
                            "requests": {"cpu": "50m", "memory": "96Mi"},
                            "limits": {"cpu": "1", "memory": "512Mi"},
                        },
                        "securityContext": restricted,
                        "startupProbe": _probe(period_s=1, failures=120),
                        "readinessProbe": _probe(period_s=5, failures=3),
                        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
                    }
                ],
                # The working database and verifier scratch: memory-backed, counted in the limit.
                "volumes": [{"name": "tmp", "emptyDir": {"medium": "Memory", "sizeLimit": "256Mi"}}],
            },
        },
    }


def _with_image(template: dict[str, Any], image: str, resources: Resources | None) -> dict[str, Any]:
    """The template's pod (metadata + spec), its `env` container running `image`."""
    pod = copy.deepcopy(template["template"])
    containers = pod["spec"]["containers"]
    container = next((c for c in containers if c["name"] == ENV_CONTAINER), None)
    if container is None:
        raise ValueError(f"the pod template has no container named {ENV_CONTAINER!r}")
    container["image"] = image
    if resources is not None:
        container["resources"].setdefault("limits", {}).update(
            {"cpu": f"{resources.cpus:g}", "memory": quantity(resources.memory)}
        )
        for volume in pod["spec"].get("volumes", []):
            if volume["name"] == "tmp" and "emptyDir" in volume:
                volume["emptyDir"]["sizeLimit"] = quantity(resources.tmpfs_size)
    return dict(pod)


def env_pod(
    template: dict[str, Any],
    *,
    name: str,
    image: str,
    labels: dict[str, str],
    annotations: dict[str, str],
    env: dict[str, str],
    owner_references: list[dict[str, Any]],
    resources: Resources | None = None,
) -> dict[str, Any]:
    """The bare Pod of one environment, built from a PodTemplate object (a dict)."""
    pod = _with_image(template, image, resources)
    metadata = pod.setdefault("metadata", {})
    metadata["name"] = name
    metadata["labels"] = {**metadata.get("labels", {}), **labels, LABEL_ROLE: ROLE_ENV}
    metadata["annotations"] = {**metadata.get("annotations", {}), **annotations}
    if owner_references:
        metadata["ownerReferences"] = owner_references
    container = next(c for c in pod["spec"]["containers"] if c["name"] == ENV_CONTAINER)
    container["env"] = [*container.get("env", []), *({"name": k, "value": v} for k, v in sorted(env.items()))]
    return {"apiVersion": "v1", "kind": "Pod", **pod}


def _scenario_labels(scenario: str) -> dict[str, str]:
    return {LABEL_SCENARIO: label_value(scenario), LABEL_VERSION: label_value(__version__)}


def sandbox_template(scenario: str, image: str, template: dict[str, Any] | None = None) -> dict[str, Any]:
    """The agent-sandbox SandboxTemplate of one scenario: the hardened pod running `image`.

    The namespace's own NetworkPolicies govern (`Unmanaged`); claims may not inject env vars,
    which would force a cold start and could override the hardening.
    """
    pod = _with_image(template or default_pod_template(), image, None)
    pod["metadata"]["labels"] = {**pod["metadata"].get("labels", {}), **_scenario_labels(scenario)}
    return {
        "apiVersion": API_SANDBOX_EXT,
        "kind": "SandboxTemplate",
        "metadata": {"name": dns_name("awm", scenario), "labels": _scenario_labels(scenario)},
        "spec": {
            "podTemplate": pod,
            "networkPolicyManagement": "Unmanaged",
            "envVarsInjectionPolicy": "Disallowed",
        },
    }


def sandbox_warm_pool(scenario: str, replicas: int) -> dict[str, Any]:
    """The SandboxWarmPool keeping `replicas` ready sandboxes of the scenario's template."""
    name = dns_name("awm", scenario)
    return {
        "apiVersion": API_SANDBOX_EXT,
        "kind": "SandboxWarmPool",
        "metadata": {"name": name, "labels": _scenario_labels(scenario)},
        "spec": {"replicas": replicas, "sandboxTemplateRef": {"name": name}},
    }


def sandbox_claim(
    name: str,
    scenario: str,
    *,
    labels: dict[str, str],
    annotations: dict[str, str],
    owner_references: list[dict[str, Any]],
    shutdown_time: str,
) -> dict[str, Any]:
    """A SandboxClaim on the scenario's warm pool, deleted at `shutdown_time` (RFC 3339) at the latest."""
    metadata: dict[str, Any] = {
        "name": name,
        "labels": {**labels, **_scenario_labels(scenario)},
        "annotations": annotations,
    }
    if owner_references:
        metadata["ownerReferences"] = owner_references
    return {
        "apiVersion": API_SANDBOX_EXT,
        "kind": "SandboxClaim",
        "metadata": metadata,
        "spec": {
            "warmPoolRef": {"name": dns_name("awm", scenario)},
            "lifecycle": {"shutdownTime": shutdown_time, "shutdownPolicy": "Delete"},
        },
    }
