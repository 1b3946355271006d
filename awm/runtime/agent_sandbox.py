"""Environments as agent-sandbox claims, for clusters running kubernetes-sigs/agent-sandbox >= v1.0.

`awm k8s render` gives each scenario a SandboxTemplate (the hardened pod running the
scenario's digest-pinned image) and a SandboxWarmPool of ready sandboxes. `start` claims one
of them: a `SandboxClaim` on the scenario's warm pool (`extensions.agents.x-k8s.io/v1beta1`),
owned by this backend's Lease like the pods of `KubernetesBackend`, with a shutdown time as a
backstop; it waits for the claim to be Ready and reaches the pod at `status.sandbox.podIPs`.
`EnvPool` holds claims across episodes and resets them in place. From outside the cluster a
claimed sandbox is reached through `kubectl port-forward` to its pod (the Sandbox's
`agents.x-k8s.io/pod-name` annotation when it adopted a warm pod, else the Sandbox's own name).

A claim carries no per-claim environment variables (they would force a cold start), so a
claimed sandbox has no per-environment control token: its control plane is guarded by the
namespace's NetworkPolicy (only runner pods reach port 8000), and `Env.protections` is empty.
"""

from __future__ import annotations

import builtins
import contextlib
import logging
import time
import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, cast

import httpx
import lightkube
from lightkube.core.exceptions import ApiError
from lightkube.generic_resource import GenericNamespacedResource, create_namespaced_resource

from awm.core.errors import BackendUnavailable, EnvStartTimeout
from awm.core.labels import DETACHED, Owner, check_user_labels, new_run_id
from awm.runtime import reaper
from awm.runtime.base import EnvRecord, Isolation, StartOptions
from awm.runtime.env import Env
from awm.runtime.k8s_backend import (
    DEFAULT_NAMESPACE,
    Api,
    OwnerLease,
    PortForward,
    collect_expired,
    create_once,
    default_client,
    default_connect,
    env_when_ready,
    pod_log,
    prepare_models,
    scenario_of,
)
from awm.runtime.k8s_objects import (
    ANNOTATION_OWNER,
    LABEL_LEASE,
    LABEL_RUN_ID,
    LABEL_SCENARIO,
    SERVER_PORT,
    dns_name,
    label_value,
    sandbox_claim,
)

__all__ = [
    "POD_NAME_ANNOTATION",
    "AgentSandboxBackend",
    "Sandbox",
    "SandboxClaim",
    "SandboxTemplate",
    "SandboxWarmPool",
]

log = logging.getLogger("awm")

SandboxClaim = create_namespaced_resource("extensions.agents.x-k8s.io", "v1beta1", "SandboxClaim", "sandboxclaims")
SandboxTemplate = create_namespaced_resource(
    "extensions.agents.x-k8s.io", "v1beta1", "SandboxTemplate", "sandboxtemplates"
)
SandboxWarmPool = create_namespaced_resource(
    "extensions.agents.x-k8s.io", "v1beta1", "SandboxWarmPool", "sandboxwarmpools"
)
Sandbox = create_namespaced_resource("agents.x-k8s.io", "v1beta1", "Sandbox", "sandboxes")
# Set on a Sandbox that adopted a pod of a warm pool (the pod keeps its own name).
POD_NAME_ANNOTATION = "agents.x-k8s.io/pod-name"


def _ready(claim: dict[str, Any]) -> tuple[bool, str]:
    """Whether a claim is Ready, and what its Ready condition says."""
    for cond in (claim.get("status") or {}).get("conditions") or []:
        if cond.get("type") == "Ready":
            return cond.get("status") == "True", f"{cond.get('reason', '')}: {cond.get('message', '')}".strip(": ")
    return False, "no Ready condition yet"


class AgentSandboxBackend:
    """Claim warm sandboxes of agent-sandbox's SandboxWarmPools, one claim per environment.

    Args:
        client: a lightkube client; `lightkube.Client()` when None.
        namespace: where the warm pools (from `awm k8s render`) and claims live.
        run_id: the session label of everything this backend claims.
        claim_ttl_s: the claim's shutdown time, from its creation: a backstop should the
            owner Lease and `gc` both fail.
        connect, lease_duration_s, server_port, api_retries: as for `KubernetesBackend`.
    """

    def __init__(
        self,
        client: lightkube.Client | None = None,
        *,
        namespace: str = DEFAULT_NAMESPACE,
        run_id: str | None = None,
        claim_ttl_s: int = 86400,
        connect: Literal["pod-ip", "port-forward"] | None = None,
        lease_duration_s: int = 60,
        server_port: int = SERVER_PORT,
        api_retries: int = 5,
    ) -> None:
        if client is None:
            client = default_client()
        prepare_models(SandboxClaim, Sandbox)
        self.client = client
        self.namespace = namespace
        self.run_id = run_id or new_run_id()
        self.claim_ttl_s = claim_ttl_s
        self.connect = connect or default_connect()
        self.server_port = server_port
        self._forwards: dict[str, PortForward] = {}  # claim -> the forward to its pod, kept until `stop`
        self.api = Api(client, namespace, api_retries)
        self.lease = OwnerLease(self.api, self.run_id, lease_duration_s)
        self._owned: set[str] = set()  # claims of this backend's Lease still tracked by the reaper

    def start(self, image: str, options: StartOptions | None = None, **overrides: Any) -> Env:
        """Claim a warm sandbox of `image`'s scenario and wait until it answers.

        Raises:
            EnvStartTimeout: the claim was not Ready in time (its last condition is in the message).
            BackendUnavailable: the API refused (no warm pool CRDs, RBAC) or did not answer.
        """
        opts = replace(options or StartOptions(), **overrides)
        if opts.env or opts.control_token:
            raise ValueError("agent-sandbox claims take no environment or token: either would force a cold start")
        if opts.isolation is Isolation.PUBLISHED:
            raise BackendUnavailable("Isolation.PUBLISHED is a Docker mode", image=image,
                                     hint="start with the default isolation")
        scenario = scenario_of(image)
        name = dns_name("awm", scenario, uuid.uuid4().hex[:10])
        labels = {
            **{k: label_value(v) for k, v in check_user_labels(opts.labels).items()},
            LABEL_RUN_ID: label_value(opts.run_id or self.run_id),
        }
        owner_refs: list[dict[str, Any]] = []
        if not opts.detached:
            labels[LABEL_LEASE] = self.lease.name
            owner_refs = [self.lease.owner_reference()]
        claim = sandbox_claim(
            name,
            scenario,
            labels=labels,
            annotations={ANNOTATION_OWNER: DETACHED if opts.detached else str(Owner.current())},
            owner_references=owner_refs,
            shutdown_time=(datetime.now(UTC) + timedelta(seconds=self.claim_ttl_s)).strftime("%Y-%m-%dT%H:%M:%SZ"),
        )
        create_once(self.api, f"claiming a sandbox of {scenario}", name,
                    lambda: self.client.create(cast(GenericNamespacedResource, SandboxClaim.from_dict(claim)),
                                               namespace=self.namespace))
        if not opts.detached:
            self._owned.add(name)
            reaper.track(name, lambda: self.stop(name))
        return env_when_ready(self, name, image, scenario, opts,
                              lambda: self._wait_ready(name, image, scenario, opts.timeouts.start_s),
                              token=None, protections=frozenset())

    def _claim(self, name: str) -> dict[str, Any] | None:
        try:
            found = self.api.call(
                f"reading claim {name}",
                lambda: self.client.get(SandboxClaim, name, namespace=self.namespace),
                allow=(404,),
            )
        except ApiError:
            return None
        return dict(found)  # a generic resource is a dict of the object

    def _wait_ready(self, name: str, image: str, scenario: str, timeout_s: float) -> str:
        deadline = time.monotonic() + timeout_s
        why = "was never read back"
        with httpx.Client(timeout=2.0) as http:
            while time.monotonic() < deadline:
                claim = self._claim(name)
                if claim is not None:
                    ready, why = _ready(claim)
                    ips = ((claim.get("status") or {}).get("sandbox") or {}).get("podIPs") or []
                    url = self._url(name, claim, ips[0]) if ready and ips else None
                    if url is not None:
                        try:
                            if http.get(f"{url}/_awm/health").status_code == 200:
                                return url
                        except httpx.TransportError:
                            pass
                time.sleep(0.05)
        raise EnvStartTimeout(
            f"claim {self.namespace}/{name} on warm pool {dns_name('awm', scenario)} ({image}) was not ready "
            f"within {timeout_s:g}s: {why}",
            scenario=scenario, image=image, container_id=name,
            hint="`awm k8s status` shows the warm pools; `awm k8s render` + `awm k8s apply` make them",
        )

    def _url(self, name: str, claim: dict[str, Any], ip: str) -> str | None:
        """Where the claimed sandbox answers from here; None while its pod is not known yet."""
        if self.connect == "pod-ip":
            return f"http://{ip}:{self.server_port}"
        kept = self._forwards.get(name)
        if kept is None or not kept.alive():
            pod = self._pod_of(claim)
            if pod is None:
                return None
            if kept is not None:
                kept.close()
            kept = self._forwards[name] = PortForward.open(self.namespace, pod, self.server_port)
        return kept.url

    def _pod_of(self, claim: dict[str, Any]) -> str | None:
        """The pod of a claim's sandbox: named by the Sandbox's annotation when it adopted a warm
        pod, else the Sandbox's own name."""
        sandbox = ((claim.get("status") or {}).get("sandbox") or {}).get("name")
        if not sandbox:
            return None
        try:
            found = self.api.call(
                f"reading sandbox {sandbox}",
                lambda: self.client.get(Sandbox, sandbox, namespace=self.namespace),
                allow=(404,),
            )
        except ApiError:
            return None
        annotations = (dict(found).get("metadata") or {}).get("annotations") or {}
        return str(annotations.get(POD_NAME_ANNOTATION) or sandbox)

    def stop(self, env_id: str) -> None:
        """Delete the claim: agent-sandbox deletes its sandbox and the warm pool makes a new one."""
        reaper.untrack(env_id)
        self._owned.discard(env_id)
        forward = self._forwards.pop(env_id, None)
        if forward is not None:
            forward.close()
        with contextlib.suppress(ApiError):
            self.api.call(
                f"deleting claim {env_id}",
                lambda: self.client.delete(SandboxClaim, env_id, namespace=self.namespace),
                allow=(404,),
            )

    def logs(self, env_id: str, tail: int = 100) -> str:
        claim = self._claim(env_id)
        pod = self._pod_of(claim) if claim is not None else None
        return pod_log(self.api, pod, tail) if pod else ""

    def state(self, env_id: str) -> str:
        claim = self._claim(env_id)
        if claim is None:
            return "removed"
        return "Ready" if _ready(claim)[0] else "Pending"

    def is_running(self, env_id: str) -> bool:
        return self.state(env_id) == "Ready"

    def list(self, *, run_id: str | None = None, all_owners: bool = True) -> builtins.list[EnvRecord]:
        selector: dict[str, Any] = {LABEL_RUN_ID: label_value(run_id)} if run_id else {LABEL_RUN_ID: None}
        claims = self.api.call(
            "listing claims",
            lambda: builtins.list(self.client.list(SandboxClaim, namespace=self.namespace, labels=selector)),
        )
        me = str(Owner.current())
        out = []
        for c in claims:
            claim = dict(c)
            meta, status = claim.get("metadata") or {}, claim.get("status") or {}
            owner = (meta.get("annotations") or {}).get(ANNOTATION_OWNER)
            if not all_owners and owner != me:
                continue
            ips = (status.get("sandbox") or {}).get("podIPs") or []
            out.append(EnvRecord(
                id=meta["name"],
                name=meta["name"],
                image=claim["spec"]["warmPoolRef"]["name"],
                scenario=(meta.get("labels") or {}).get(LABEL_SCENARIO),
                status="Ready" if _ready(claim)[0] else "Pending",
                run_id=(meta.get("labels") or {}).get(LABEL_RUN_ID),
                owner=owner,
                base_url=f"http://{ips[0]}:{self.server_port}" if ips else None,
            ))
        return out

    def gc(self) -> builtins.list[str]:
        """Delete expired owner Leases; their claims follow. Returns the claims' names."""

        def owned(lease: str) -> builtins.list[str]:
            claims = self.client.list(SandboxClaim, namespace=self.namespace,
                                      labels={LABEL_LEASE: lease})
            return [c.metadata.name for c in claims if c.metadata and c.metadata.name]

        return collect_expired(self.api, self.lease.name, owned)

    def close(self) -> None:
        """Delete this backend's Lease: its claims follow."""
        for forward in self._forwards.values():
            forward.close()
        self._forwards.clear()
        for name in list(self._owned):
            reaper.untrack(name)
        self._owned.clear()
        self.lease.release()

