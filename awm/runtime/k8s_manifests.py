"""`awm k8s render|apply|status`: the per-scenario objects for a cluster, applied and observed.

`render` writes a kustomize folder: for each scenario a digest-pinned agent-sandbox
SandboxTemplate + SandboxWarmPool, the list of images for node pre-pulling (a ConfigMap
`awm-prepull` and `prepull.txt`) and a `kustomization.yaml`, so `kubectl kustomize DIR` and
`kubectl apply -k DIR` work as well as `awm k8s apply DIR`. The base install (`k8s/`) is
applied once, separately.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import docker
import docker.errors
import lightkube
import yaml
from lightkube import codecs
from lightkube.core.exceptions import ApiError
from lightkube.resources.core_v1 import Pod

from awm.core.errors import BackendUnavailable, ImageNotFound, InvalidInput
from awm.runtime.agent_sandbox import SandboxClaim, SandboxWarmPool
from awm.runtime.k8s_backend import FIELD_MANAGER, Api, scenario_of
from awm.runtime.k8s_objects import LABEL_ROLE, LABEL_SCENARIO, ROLE_ENV, dns_name, sandbox_template, sandbox_warm_pool

__all__ = ["ScenarioImage", "apply_folder", "cluster_status", "render", "resolve_images"]

log = logging.getLogger("awm")


@dataclass(frozen=True)
class ScenarioImage:
    scenario: str
    image: str  # pinned: ...@sha256:<manifest digest>, or the build-digest tag awm/<id>:<digest>


def _pinned(client: docker.DockerClient, scenario: str, registry: str | None) -> str:
    """The pinned reference of a scenario's current image (`awm/<id>:latest` in the engine)."""
    try:
        image = client.images.get(f"awm/{scenario}:latest")
    except docker.errors.ImageNotFound as exc:
        raise ImageNotFound(f"scenario {scenario} has no image awm/{scenario}:latest in the engine",
                            scenario=scenario, image=f"awm/{scenario}:latest") from exc
    repo = f"{registry}/awm/{scenario}" if registry else f"awm/{scenario}"
    for digest in image.attrs.get("RepoDigests") or []:
        if digest.startswith(f"{repo}@sha256:"):
            return str(digest)  # pushed: the registry's manifest digest
    tags = [t.rsplit(":", 1)[1] for t in image.tags if t.startswith(f"awm/{scenario}:") and not t.endswith(":latest")]
    if not tags:
        raise ImageNotFound(f"image awm/{scenario}:latest has no build-digest tag; rebuild it with `awm build`",
                            scenario=scenario, image=f"awm/{scenario}:latest")
    if registry:
        log.warning("%s is not pushed to %s: pinned by its build-digest tag; `awm images push --registry %s`",
                    scenario, registry, registry)
    return f"{repo}:{sorted(tags)[0]}"


def resolve_images(refs: Sequence[str], *, registry: str | None = None,
                   client: docker.DockerClient | None = None) -> list[ScenarioImage]:
    """Scenario images from scenario ids and image references.

    A reference pinned by `@sha256:` is taken as it is; everything else names a scenario whose
    current image is looked up in the local engine (`client`) and pinned.
    """
    out: list[ScenarioImage] = []
    scenarios: list[str] = []
    for ref in refs:
        if "@sha256:" in ref:
            out.append(ScenarioImage(scenario_of(ref), ref))
        else:
            scenarios.append(scenario_of(ref))
    if scenarios:
        if client is None:
            from awm.runtime.docker_backend import engine_client

            client = engine_client("resolving images to pin")
        out += [ScenarioImage(s, _pinned(client, s, registry)) for s in scenarios]
    return out


def render(scenarios: Sequence[ScenarioImage], out: Path, *, namespace: str = "awm", warm: int = 1) -> list[Path]:
    """Write the kustomize folder of `scenarios` into `out`; return the files written.

    Raises:
        InvalidInput: no scenarios, a negative warm count, or two scenarios whose names meet.
    """
    if not scenarios:
        raise InvalidInput("nothing to render: give a dataset folder, scenario ids or images")
    if warm < 0:
        raise InvalidInput(f"--warm must be 0 or more, not {warm}")
    names = Counter(dns_name("awm", s.scenario) for s in scenarios)
    clashes = sorted(n for n, k in names.items() if k > 1)
    if clashes:
        raise InvalidInput(f"scenarios map to the same object name: {', '.join(clashes)}")
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    files: list[str] = []
    for s in sorted(scenarios, key=lambda s: s.scenario):
        path = out / f"{dns_name('awm', s.scenario)}.yaml"
        docs = [sandbox_template(s.scenario, s.image), sandbox_warm_pool(s.scenario, warm)]
        path.write_text(yaml.safe_dump_all(docs, sort_keys=False))
        files.append(path.name)
        written.append(path)
    prepull = out / "prepull.txt"
    prepull.write_text("".join(f"{s.image}\n" for s in sorted(scenarios, key=lambda s: s.scenario)))
    kustomization = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "namespace": namespace,
        "resources": files,
        "configMapGenerator": [{"name": "awm-prepull", "files": ["prepull.txt"]}],
        "generatorOptions": {"disableNameSuffixHash": True},
        "labels": [{"pairs": {"app.kubernetes.io/part-of": "awm"}}],
    }
    (out / "kustomization.yaml").write_text(
        "# Written by `awm k8s render`; apply with `awm k8s apply DIR` or `kubectl apply -k DIR`.\n"
        + yaml.safe_dump(kustomization, sort_keys=False)
    )
    return [*written, prepull, out / "kustomization.yaml"]


def build(folder: Path) -> str:
    """`kubectl kustomize folder`: the objects of a kustomize folder as YAML."""
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        raise BackendUnavailable("building a kustomize folder needs kubectl", hint="install kubectl (>= 1.27)")
    proc = subprocess.run([kubectl, "kustomize", str(folder)], capture_output=True, text=True, timeout=120)
    if proc.returncode != 0:
        raise InvalidInput(f"`kubectl kustomize {folder}` failed: {proc.stderr.strip()}", path=str(folder))
    return proc.stdout


def apply_folder(folder: Path, client: lightkube.Client, *, force: bool = False) -> list[str]:
    """Server-side apply every object of a kustomize folder (field manager `awm`); return "Kind/name"s."""
    objects = codecs.load_all_yaml(build(folder))
    api = Api(client, client.namespace, retries=5)
    applied = []
    for obj in objects:
        what = f"{obj.kind}/{obj.metadata.name if obj.metadata else '?'}"
        api.call(f"applying {what}", partial(client.apply, obj, field_manager=FIELD_MANAGER, force=force))
        applied.append(what)
    return applied


def cluster_status(client: lightkube.Client, namespace: str) -> dict[str, dict[str, Any]]:
    """Per scenario: environment pods by phase, claims, and warm pool replicas."""
    api = Api(client, namespace, retries=3)
    status: dict[str, dict[str, Any]] = {}

    def row(scenario: str) -> dict[str, Any]:
        return status.setdefault(scenario, {"pods": Counter(), "claims": 0, "warm": None, "warm_ready": None})

    for pod in api.call("listing pods", lambda: list(client.list(Pod, namespace=namespace,
                                                                   labels={LABEL_ROLE: ROLE_ENV}))):
        labels = (pod.metadata.labels if pod.metadata else None) or {}
        row(labels.get(LABEL_SCENARIO, "?"))["pods"][(pod.status.phase if pod.status else None) or "Pending"] += 1
    try:  # a cluster without agent-sandbox has no such resources (404)
        claims = api.call("listing claims", lambda: list(client.list(SandboxClaim, namespace=namespace)),
                          allow=(404,))
        pools = api.call("listing warm pools", lambda: list(client.list(SandboxWarmPool, namespace=namespace)),
                         allow=(404,))
    except ApiError:
        claims, pools = [], []
    for claim in claims:
        labels = (claim.get("metadata") or {}).get("labels") or {}
        row(labels.get(LABEL_SCENARIO, "?"))["claims"] += 1
    for pool in pools:
        labels = (pool.get("metadata") or {}).get("labels") or {}
        r = row(labels.get(LABEL_SCENARIO, "?"))
        r["warm"] = (pool.get("spec") or {}).get("replicas")
        r["warm_ready"] = (pool.get("status") or {}).get("readyReplicas", 0)
    return {k: {**v, "pods": dict(v["pods"])} for k, v in sorted(status.items())}
