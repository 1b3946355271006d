"""Environments as bare Pods on a Kubernetes cluster, behind the same `Backend` protocol.

Kubernetes schedules; this backend only asks for pods and watches them:

- one Pod per environment, built from the namespace's `awm-env` PodTemplate (the hardened pod
  of `k8s/base`; an identical built-in default when the namespace has none), created under a
  name chosen here, so a create retried after a timeout finds its pod instead of making two;
- one shared watch per backend (list, then watch from that resourceVersion; relist on 410);
- a start fails fast, with the reason and the pod's last events, on image pull errors, crash
  loops, exits and unschedulable pods; it is ready when `/_awm/health` answers at the pod IP
  (inside the cluster) or through `kubectl port-forward` (from a laptop);
- ownership: a `coordination.k8s.io/v1` Lease per backend, renewed while the process lives,
  owns every pod (ownerReferences). `gc()` deletes expired Leases and Kubernetes' garbage
  collector removes their pods; inside the cluster the Lease is owned by the runner pod, so
  a deleted runner takes its environments with it.

Network isolation is the namespace's NetworkPolicy (no egress, ingress from runners only),
enforced by the cluster's CNI where it enforces policies: the runtime cannot observe that, so
`Env.protections` lists only the per-environment control token.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import logging
import os
import re
import shutil
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any, Literal, TypeVar, cast

import httpx
import httpx2
import lightkube
from lightkube.core import decoders
from lightkube.core.exceptions import ApiError, ConfigError
from lightkube.resources.coordination_v1 import Lease
from lightkube.resources.core_v1 import Event, Pod, PodTemplate
from lightkube.types import CascadeType

from awm import __version__
from awm.core.errors import (
    AWMError,
    BackendUnavailable,
    EnvNotFound,
    EnvStartTimeout,
    EnvUnavailable,
    ImageNotFound,
)
from awm.core.labels import DETACHED, Owner, check_user_labels, current_user, new_run_id
from awm.runtime import reaper, tokens
from awm.runtime.base import Backend, EnvRecord, Isolation, Protection, Resources, StartOptions
from awm.runtime.env import Env
from awm.runtime.k8s_objects import (
    ANNOTATION_OWNER,
    ANNOTATION_USER,
    LABEL_LEASE,
    LABEL_ROLE,
    LABEL_RUN_ID,
    LABEL_SCENARIO,
    LABEL_VERSION,
    ROLE_ENV,
    ROLE_OWNER,
    SERVER_PORT,
    TEMPLATE_NAME,
    default_pod_template,
    dns_name,
    env_pod,
    label_value,
)

__all__ = [
    "DEFAULT_NAMESPACE",
    "Api",
    "AsyncKubernetesBackend",
    "KubernetesBackend",
    "OwnerLease",
    "PortForward",
    "collect_expired",
    "create_once",
    "default_client",
    "default_connect",
    "env_when_ready",
    "pod_log",
    "prepare_models",
    "scenario_of",
]

log = logging.getLogger("awm")

DEFAULT_NAMESPACE = "awm"
FIELD_MANAGER = "awm"
_RETRIED = {429, 500, 502, 503, 504}  # throttled or a passing server fault: try again
_PULL_ERRORS = {"ErrImagePull", "ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull"}
_START_ERRORS = {"CrashLoopBackOff", "CreateContainerConfigError", "CreateContainerError", "RunContainerError"}
_K8S_HINT = "check the cluster with `awm k8s status` and `kubectl -n NAMESPACE get events`"
T = TypeVar("T")


_prepared: set[type[Any]] = set()
_prepare_lock = threading.Lock()


def prepare_models(*resources: type[Any]) -> None:
    """Build the decoders of lightkube models once, on this thread.

    msgspec (under lightkube) builds a model's type information on first use and can crash
    the interpreter when two threads do that for the same model at once (seen with 0.22).
    """
    with _prepare_lock:
        for res in resources:
            if res not in _prepared:
                decoders.decode_list(b'{"metadata": {}, "items": []}', res)
                # a model with required fields refuses {}: its decoder is built all the same
                with contextlib.suppress(ValueError):
                    res.from_dict({})
                _prepared.add(res)


def _selector(key: str, value: str) -> dict[str, Any]:
    """A one-label selector, typed as lightkube's `labels=` wants it."""
    return {key: value}


def scenario_of(image: str) -> str:
    """The scenario id an image reference names: registry/awm/<id>:<tag> or ...@sha256:..."""
    last = image.split("@", 1)[0].rsplit("/", 1)[-1]
    return last.split(":", 1)[0]


def _now() -> datetime:
    return datetime.now(UTC)


def _micro_time(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _parse_time(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if not value:
        return None
    return datetime.fromisoformat(str(value).replace("Z", "+00:00"))


class Api:
    """Calls to the API server with retries on 429/5xx and transport errors, errors mapped."""

    def __init__(self, client: lightkube.Client, namespace: str, retries: int) -> None:
        self.client = client
        self.namespace = namespace
        self.retries = retries

    def call(self, what: str, fn: Callable[[], T], *, allow: tuple[int, ...] = ()) -> T:
        """`fn()`; ApiErrors with a status in `allow` are re-raised for the caller to handle."""
        delay = 0.05
        for attempt in range(self.retries + 1):
            try:
                return fn()
            except ApiError as exc:
                code = exc.status.code or 0
                if code in allow:
                    raise
                if code in _RETRIED and attempt < self.retries:
                    retry_after = exc.response.headers.get("Retry-After") if exc.response is not None else None
                    time.sleep(min(float(retry_after), 5.0) if retry_after and retry_after.isdigit() else delay)
                    delay = min(delay * 2, 2.0)
                    continue
                hint = ("the runner needs the Role of k8s/base/rbac.yaml (`kubectl apply -k k8s/`)"
                        if code in (401, 403) else _K8S_HINT)
                raise BackendUnavailable(
                    f"Kubernetes API refused {what} in namespace {self.namespace}: {code} {exc.status.message}",
                    hint=hint,
                ) from exc
            except (httpx2.TransportError, httpx2.TimeoutException) as exc:
                if attempt < self.retries:
                    time.sleep(delay)
                    delay = min(delay * 2, 2.0)
                    continue
                raise BackendUnavailable(
                    f"no answer from the Kubernetes API ({what}): {exc}",
                    hint="check KUBECONFIG / the in-cluster service account and that the API server is up",
                ) from exc
        raise AssertionError("unreachable")


class OwnerLease:
    """The Lease that owns one backend's pods and claims, renewed on a thread while it lives.

    In the cluster (AWM_POD_NAME and AWM_POD_UID set from the downward API, the runner pod in
    the environments' namespace) the Lease is in turn owned by the runner pod.
    """

    def __init__(self, api: Api, run_id: str, duration_s: int) -> None:
        self.api = api
        self.name = dns_name("awm-owner", run_id, uuid.uuid4().hex[:6])
        self.duration_s = duration_s
        self.uid: str | None = None
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._run_id = run_id

    def ensure(self) -> str:
        """Create the Lease on first use; return its uid (for ownerReferences)."""
        with self._lock:
            if self.uid is not None:
                return self.uid
            now = _micro_time(_now())
            metadata: dict[str, Any] = {
                "name": self.name,
                "labels": {LABEL_ROLE: ROLE_OWNER, LABEL_RUN_ID: label_value(self._run_id)},
                "annotations": {ANNOTATION_OWNER: str(Owner.current())},
            }
            pod_name, pod_uid = os.environ.get("AWM_POD_NAME"), os.environ.get("AWM_POD_UID")
            if pod_name and pod_uid and os.environ.get("AWM_POD_NAMESPACE") == self.api.namespace:
                metadata["ownerReferences"] = [
                    {"apiVersion": "v1", "kind": "Pod", "name": pod_name, "uid": pod_uid}
                ]
            lease = cast(Lease, Lease.from_dict({
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": metadata,
                "spec": {
                    "holderIdentity": str(Owner.current())[:128],
                    "leaseDurationSeconds": self.duration_s,
                    "acquireTime": now,
                    "renewTime": now,
                },
            }))
            created = self.api.call(
                f"creating Lease {self.name}",
                lambda: self.api.client.create(lease, namespace=self.api.namespace),
            )
            assert created.metadata is not None
            assert created.metadata.uid is not None
            self.uid = created.metadata.uid
            if self._thread is None:
                self._thread = threading.Thread(target=self._renew_loop, name=f"awm-lease-{self.name}", daemon=True)
                self._thread.start()
            reaper.track(f"lease/{self.name}", self.release)
            return self.uid

    def owner_reference(self) -> dict[str, Any]:
        return {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "name": self.name,
            "uid": self.ensure(),
            "blockOwnerDeletion": False,
        }

    def renew(self) -> None:
        """Renew the Lease; make a new one if it is gone (a stall let `gc` take it, and its pods)."""
        patch = {"spec": {"renewTime": _micro_time(_now())}}
        try:
            self.api.call(
                f"renewing Lease {self.name}",
                lambda: self.api.client.patch(Lease, self.name, patch, namespace=self.api.namespace),
                allow=(404,),
            )
        except ApiError:
            log.warning("Lease %s is gone (it expired, and its environments with it); making a new one", self.name)
            with self._lock:
                self.uid = None
            self.ensure()

    def _renew_loop(self) -> None:
        while not self._stop.wait(self.duration_s / 3):
            try:
                self.renew()
            except AWMError as exc:  # a stall longer than the lease: gc may have taken our pods
                log.warning("could not renew Lease %s: %s", self.name, exc)

    def release(self) -> None:
        """Stop renewing and delete the Lease: the garbage collector removes what it owns."""
        reaper.untrack(f"lease/{self.name}")
        self._stop.set()
        if self.uid is None:
            return
        with contextlib.suppress(ApiError):
            self.api.call(
                f"deleting Lease {self.name}",
                lambda: self.api.client.delete(
                    Lease, self.name, namespace=self.api.namespace, cascade=CascadeType.BACKGROUND
                ),
                allow=(404,),
            )
        self.uid = None


def collect_expired(api: Api, keep: str, owned: Callable[[str], list[str]]) -> list[str]:
    """Delete every expired owner Lease but `keep`; return what each owned (`owned(lease)`).

    Kubernetes' garbage collector then removes those objects: the Lease is their owner.
    """
    leases = api.call(
        "listing owner Leases",
        lambda: list(api.client.list(Lease, namespace=api.namespace, labels=_selector(LABEL_ROLE, ROLE_OWNER))),
    )
    now = _now()
    removed: list[str] = []
    for lease in leases:
        spec, name = lease.spec, lease.metadata.name if lease.metadata else None
        if spec is None or name is None or name == keep:
            continue
        renewed = _parse_time(spec.renewTime) or _parse_time(spec.acquireTime)
        if renewed is not None and renewed + timedelta(seconds=spec.leaseDurationSeconds or 0) > now:
            continue
        objects = api.call(f"listing what Lease {name} owns", partial(owned, name))
        try:
            api.call(
                f"deleting expired Lease {name}",
                partial(api.client.delete, Lease, name, namespace=api.namespace, cascade=CascadeType.BACKGROUND),
                allow=(404,),
            )
        except ApiError:
            continue  # another gc was first
        log.info("deleted expired Lease %s; its %d environment(s) follow", name, len(objects))
        removed += objects
    return removed


def default_client() -> lightkube.Client:
    """A client from KUBECONFIG, else the in-cluster service account.

    Raises:
        BackendUnavailable: neither is there.
    """
    try:
        return lightkube.Client(field_manager=FIELD_MANAGER)
    except ConfigError as exc:
        raise BackendUnavailable(
            f"no Kubernetes configuration: {exc}",
            hint="set KUBECONFIG (or run in a pod with the awm-runner service account)",
        ) from exc


def pod_log(api: Api, pod: str, tail: int) -> str:
    """The last `tail` lines of a pod's log; empty when it has none yet or is gone."""
    try:
        lines = api.call(
            f"reading the log of pod {pod}",
            lambda: list(api.client.log(pod, namespace=api.namespace, tail_lines=tail)),
            allow=(400, 404),  # 400: the container has not started yet
        )
    except ApiError:
        return ""
    return "".join(line if line.endswith("\n") else line + "\n" for line in lines)


def create_once(api: Api, what: str, name: str, create: Callable[[], object]) -> None:
    """Create an object under a name chosen here: a 409 means an earlier attempt made it.

    That attempt timed out on our side after the server had taken it, so the object is ours.
    """
    try:
        api.call(what, create, allow=(409,))
    except ApiError:
        log.info("%s already exists: a retried create found it", name)


def env_when_ready(
    backend: Backend, name: str, image: str, scenario: str, opts: StartOptions, wait: Callable[[], str],
    *, token: str | None, protections: frozenset[Protection],
) -> Env:
    """The handle of a created pod or claim once `wait()` gives its URL; removed if that fails."""
    try:
        base_url = wait()
    except BaseException:
        backend.stop(name)
        raise
    return Env(
        backend=backend,
        env_id=name,
        name=name,
        image=image,
        scenario=scenario,
        base_url=base_url,
        token=token,
        request_timeout_s=opts.timeouts.request_s,
        isolation=opts.isolation,
        protections=protections,
    )


class _PodWatch:
    """One watch over this backend's pods: a cache of them, and a condition to wait on."""

    def __init__(self, api: Api, selector: dict[str, Any]) -> None:
        self.api = api
        self.selector = selector
        self.pods: dict[str, dict[str, Any]] = {}
        self.cond = threading.Condition()
        self.relists = 0
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        with self.cond:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="awm-k8s-watch", daemon=True)
                self._thread.start()

    def stop(self) -> None:
        with self.cond:
            self._stopped.set()
            self.cond.notify_all()

    def _relist(self) -> str:
        listing = self.api.client.list(Pod, namespace=self.api.namespace, labels=self.selector)
        pods = {p.metadata.name: p.to_dict() for p in listing if p.metadata and p.metadata.name}
        with self.cond:
            self.pods = pods
            self.relists += 1
            self.cond.notify_all()
        return listing.resourceVersion

    def _run(self) -> None:
        backoff = 0.05
        while not self._stopped.is_set():
            try:
                version = self._relist()
                for kind, pod in self.api.client.watch(
                    Pod, namespace=self.api.namespace, labels=self.selector, resource_version=version
                ):
                    name = pod.metadata.name if pod.metadata else None
                    with self.cond:
                        if name is not None:
                            if kind == "DELETED":
                                self.pods.pop(name, None)
                            else:
                                self.pods[name] = pod.to_dict()
                        self.cond.notify_all()
                    if self._stopped.is_set():
                        return
                    backoff = 0.05
            except ApiError as exc:
                if exc.status.code == 410:  # our resourceVersion is too old: list again
                    log.info("pod watch: resourceVersion expired, relisting")
                    continue
                log.warning("pod watch failed (%s); relisting", exc)
            except Exception as exc:  # the client was closed, or a transport error
                if self._stopped.is_set():
                    return
                log.warning("pod watch failed (%s); relisting", exc)
            time.sleep(backoff)
            backoff = min(backoff * 2, 5.0)

    def get(self, name: str) -> dict[str, Any] | None:
        with self.cond:
            return self.pods.get(name)

    def wait(self, timeout_s: float) -> None:
        with self.cond:
            self.cond.wait(timeout_s)


def _drain(proc: subprocess.Popen[str]) -> None:
    """Read a process's output to its end, then close it."""
    assert proc.stdout is not None
    with proc.stdout:
        for _ in proc.stdout:
            pass


def default_connect() -> Literal["pod-ip", "port-forward"]:
    """How to reach pods from here: at their IP inside the cluster, else through kubectl."""
    return "pod-ip" if os.environ.get("KUBERNETES_SERVICE_HOST") else "port-forward"


class PortForward:
    """A running `kubectl port-forward` to one pod's server: `url` on 127.0.0.1 until `close()`."""

    def __init__(self, proc: subprocess.Popen[str], url: str) -> None:
        self.proc, self.url = proc, url
        # kubectl writes a line per connection: keep reading, or it blocks once the pipe is full
        self._drain = threading.Thread(target=_drain, args=(proc,), name="awm-forward", daemon=True)
        self._drain.start()

    @classmethod
    def open(cls, namespace: str, pod: str, remote_port: int, local_port: int = 0) -> PortForward:
        """Forward 127.0.0.1:`local_port` (any free one when 0) to `remote_port` of `pod`.

        Raises:
            BackendUnavailable: kubectl is missing, or it could not forward (its message says why).
        """
        kubectl = shutil.which("kubectl")
        if kubectl is None:
            raise BackendUnavailable(
                "reaching pods from outside the cluster needs kubectl (for its port-forward)",
                hint="install kubectl, or run in the cluster with connect='pod-ip'",
            )
        proc = subprocess.Popen(
            [kubectl, "port-forward", "-n", namespace, f"pod/{pod}", f"{local_port or ''}:{remote_port}",
             "--address", "127.0.0.1"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        assert proc.stdout is not None
        line = proc.stdout.readline()  # "Forwarding from 127.0.0.1:PORT -> 8000", or an error and EOF
        match = re.search(r"127\.0\.0\.1:(\d+)", line)
        if match is None:
            proc.kill()
            rest = proc.communicate()[0]
            raise BackendUnavailable(f"kubectl port-forward to pod {pod} failed: {(line + rest).strip()}",
                                     container_id=pod, hint=_K8S_HINT)
        return cls(proc, f"http://127.0.0.1:{match.group(1)}")

    def alive(self) -> bool:
        return self.proc.poll() is None

    def wait(self) -> int:
        """Block until kubectl exits (the pod went away, or the tunnel broke); its exit code."""
        return self.proc.wait()

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait()
        self._drain.join(5)


def _failure(pod: dict[str, Any]) -> tuple[type[AWMError], str] | None:
    """Why a starting pod will never become ready, or None while it still may."""
    status = pod.get("status") or {}
    phase = status.get("phase")
    for cond in status.get("conditions") or []:
        if (cond.get("type"), cond.get("status"), cond.get("reason")) == ("PodScheduled", "False", "Unschedulable"):
            return EnvStartTimeout, f"is unschedulable: {cond.get('message', '')}"
    for cs in status.get("containerStatuses") or []:
        state = cs.get("state") or {}
        waiting, terminated = state.get("waiting") or {}, state.get("terminated") or {}
        if waiting.get("reason") in _PULL_ERRORS:
            return ImageNotFound, f"cannot pull its image ({waiting['reason']}): {waiting.get('message', '')}"
        if waiting.get("reason") in _START_ERRORS:
            return EnvStartTimeout, f"cannot start ({waiting['reason']}): {waiting.get('message', '')}"
        if terminated:
            return EnvStartTimeout, (f"exited with code {terminated.get('exitCode')} "
                                     f"({terminated.get('reason', 'no reason given')})")
    if phase in ("Failed", "Succeeded"):
        return EnvStartTimeout, f"ended ({phase}: {status.get('reason') or status.get('message') or 'no reason given'})"
    return None


class KubernetesBackend:
    """Start environment images as pods in a namespace of a Kubernetes cluster.

    Args:
        client: a lightkube client; `lightkube.Client()` (KUBECONFIG, else the in-cluster
            service account) when None.
        namespace: where environment pods run (the base install's namespace by default).
        run_id: the session label of everything this backend starts (a new one when None).
        connect: how to reach a pod: "pod-ip" (in the cluster; the default there) or
            "port-forward" (`kubectl port-forward`; the default elsewhere).
        lease_duration_s: how long the owner Lease lives without renewal.
        server_port: the environment server's port in the pod.
        api_retries: retries of an API call refused with 429/5xx or lost in transport.

    A client passed in stays the caller's: close it after `close()`, which ends the watch.

    Raises:
        BackendUnavailable: no cluster configuration was found.

    Example:
        >>> with EnvPool(KubernetesBackend(), "registry.example.com/awm/gofundme@sha256:...", size=8) as pool:
        ...     with pool.lease() as env:
        ...         env.verify(3)
    """

    def __init__(
        self,
        client: lightkube.Client | None = None,
        *,
        namespace: str = DEFAULT_NAMESPACE,
        run_id: str | None = None,
        connect: Literal["pod-ip", "port-forward"] | None = None,
        lease_duration_s: int = 60,
        server_port: int = SERVER_PORT,
        api_retries: int = 5,
    ) -> None:
        prepare_models(Pod, Lease, Event, PodTemplate)
        self._owns_client = client is None
        if client is None:
            client = default_client()
        self.client = client
        self.namespace = namespace
        self.run_id = run_id or new_run_id()
        self.connect = connect or default_connect()
        self.server_port = server_port
        self.api = Api(client, namespace, api_retries)
        self.lease = OwnerLease(self.api, self.run_id, lease_duration_s)
        self.watch = _PodWatch(self.api, {LABEL_LEASE: self.lease.name})
        self._template: dict[str, Any] | None = None
        self._forwards: dict[str, PortForward] = {}  # pod -> its kept forward
        self._owned: set[str] = set()  # pods of this backend's Lease still tracked by the reaper

    # -- starting -------------------------------------------------------------------------

    def pod_template(self) -> dict[str, Any]:
        """The namespace's `awm-env` PodTemplate, or the identical built-in one when it has none."""
        if self._template is None:
            try:
                found = self.api.call(
                    f"reading PodTemplate {TEMPLATE_NAME}",
                    lambda: self.client.get(PodTemplate, TEMPLATE_NAME, namespace=self.namespace),
                    allow=(404,),
                )
                self._template = found.to_dict()
            except ApiError:
                log.info("namespace %s has no PodTemplate %s; using the built-in one", self.namespace, TEMPLATE_NAME)
                self._template = default_pod_template()
        return self._template

    def start(self, image: str, options: StartOptions | None = None, **overrides: Any) -> Env:
        """Create the environment's pod and wait until its server answers.

        Raises:
            ImageNotFound: the cluster cannot pull the image (the pod is deleted).
            EnvStartTimeout: it crashed, exited, is unschedulable or did not answer in time;
                the message has the reason, the pod's last events and log lines.
            BackendUnavailable: the API refused or did not answer; PUBLISHED isolation.
        """
        opts = replace(options or StartOptions(), **overrides)
        if opts.isolation is Isolation.PUBLISHED:
            raise BackendUnavailable(
                "Isolation.PUBLISHED is a Docker mode: on Kubernetes pods are reached at their IP "
                "or through a port-forward",
                image=image,
                hint="start with the default isolation",
            )
        if "AWM_CONTROL_TOKEN" in opts.env:
            raise ValueError("pass the token as control_token=..., not in env: the pod gets only its hash")
        user_labels = {k: label_value(v) for k, v in check_user_labels(opts.labels).items()}
        scenario = scenario_of(image)
        token = opts.control_token or tokens.new_token()
        run_id = opts.run_id or self.run_id
        name = dns_name("awm", scenario, uuid.uuid4().hex[:10])
        labels = {
            **user_labels,
            LABEL_SCENARIO: label_value(scenario),
            LABEL_VERSION: label_value(__version__),
            LABEL_RUN_ID: label_value(run_id),
        }
        owner_refs: list[dict[str, Any]] = []
        if not opts.detached:
            labels[LABEL_LEASE] = self.lease.name
            owner_refs = [self.lease.owner_reference()]
            self.watch.start()
        pod = env_pod(
            self.pod_template(),
            name=name,
            image=image,
            labels=labels,
            annotations={ANNOTATION_OWNER: DETACHED if opts.detached else str(Owner.current()),
                         ANNOTATION_USER: current_user()},
            env={**opts.env, tokens.TOKEN_HASH_VAR: tokens.token_hash(token)},
            owner_references=owner_refs,
            # the template's limits stand unless the caller asked for others
            resources=None if opts.resources == Resources() else opts.resources,
        )
        create_once(self.api, f"creating pod {name} ({image})", name,
                    lambda: self.client.create(cast(Pod, Pod.from_dict(pod)), namespace=self.namespace))
        if not opts.detached:
            self._owned.add(name)
            reaper.track(name, lambda: self.stop(name))

        def ready() -> str:
            if opts.detached:  # later `awm env reset/verify NAME --backend k8s` commands need the token
                tokens.save(self.token_key(name), token)
            return self._wait_ready(name, image, scenario, opts)

        return env_when_ready(self, name, image, scenario, opts, ready, token=token,
                              protections=frozenset({Protection.TOKEN}))

    def _wait_ready(self, name: str, image: str, scenario: str, opts: StartOptions) -> str:
        timeout_s = opts.timeouts.start_s
        deadline = time.monotonic() + timeout_s
        detached = opts.detached
        with httpx.Client(timeout=2.0, verify=False) as http:  # plain http to the pod
            while time.monotonic() < deadline:
                pod = self._pod(name, cached=not detached)
                if pod is not None:
                    failure = _failure(pod)
                    if failure is not None:
                        error_type, why = failure
                        raise self._start_error(error_type, name, image, scenario, why)
                    ip = (pod.get("status") or {}).get("podIP")
                    if ip and (pod.get("status") or {}).get("phase") == "Running":
                        url = self._url(name, ip)
                        try:
                            if url and http.get(f"{url}/_awm/health").status_code == 200:
                                return url
                        except httpx.TransportError:
                            pass
                if detached:
                    time.sleep(0.2)
                else:
                    self.watch.wait(0.05)
        raise self._start_error(EnvStartTimeout, name, image, scenario, f"did not answer within {timeout_s:g}s")

    def _start_error(self, error_type: type[AWMError], name: str, image: str, scenario: str, why: str) -> AWMError:
        events = self.events(name)
        logs = self.logs(name, 30).rstrip()
        message = f"environment {image} (pod {self.namespace}/{name}) {why}"
        if events:
            message += "\nlast events:\n" + "\n".join(f"  {e}" for e in events)
        if logs:
            message += f"\nlast log lines:\n{logs}"
        return error_type(message, scenario=scenario, image=image, container_id=name, hint=_K8S_HINT)

    def _url(self, name: str, ip: str) -> str:
        if self.connect == "pod-ip":
            return f"http://{ip}:{self.server_port}"
        kept = self._forwards.get(name)
        if kept is None or not kept.alive():  # kept until `stop`; kubectl may give up on errors
            if kept is not None:
                log.info("kubectl port-forward to pod %s ended (exit %s); opening a new one",
                         name, kept.proc.returncode)
                kept.close()
            kept = self._forwards[name] = self.port_forward(name)
        return kept.url

    def port_forward(self, name: str, local_port: int = 0) -> PortForward:
        """Forward 127.0.0.1:`local_port` (any free one when 0) to pod `name`'s server."""
        return PortForward.open(self.namespace, name, self.server_port, local_port)

    @contextlib.contextmanager
    def reach(self, env_id: str) -> Iterator[str]:
        """The base URL of a running environment's server, for the length of the block.

        In the cluster that is the pod's IP; outside it, a port-forward opened for the block
        (or the one this backend keeps for a pod it started).

        Raises:
            EnvNotFound: no such pod. EnvUnavailable: it is not running or has no IP yet.
        """
        pod = self._pod(env_id, cached=False)
        if pod is None:
            raise EnvNotFound(f"no environment pod {self.namespace}/{env_id}", container_id=env_id)
        status = pod.get("status") or {}
        if status.get("phase") != "Running" or not status.get("podIP"):
            raise EnvUnavailable(f"environment pod {self.namespace}/{env_id} is {status.get('phase') or 'Pending'}",
                                 container_id=env_id, hint=_K8S_HINT)
        if self.connect == "pod-ip" or env_id in self._forwards:
            yield self._url(env_id, status["podIP"])
            return
        forward = self.port_forward(env_id)
        try:
            yield forward.url
        finally:
            forward.close()

    def token_key(self, env_id: str) -> str:
        """Where a detached pod's token is kept (`awm.runtime.tokens`): namespace and name."""
        return f"k8s_{self.namespace}_{env_id}"

    def _pod(self, name: str, *, cached: bool = True) -> dict[str, Any] | None:
        if cached:
            return self.watch.get(name)
        try:
            found = self.api.call(
                f"reading pod {name}", lambda: self.client.get(Pod, name, namespace=self.namespace), allow=(404,)
            )
        except ApiError:
            return None
        return dict(found.to_dict())

    # -- the rest of the protocol ---------------------------------------------------------

    def stop(self, env_id: str) -> None:
        reaper.untrack(env_id)
        self._owned.discard(env_id)
        tokens.forget(self.token_key(env_id))
        forward = self._forwards.pop(env_id, None)
        if forward is not None:
            forward.close()
        with contextlib.suppress(ApiError):
            self.api.call(
                f"deleting pod {env_id}",
                lambda: self.client.delete(Pod, env_id, namespace=self.namespace, grace_period=1),
                allow=(404,),
            )

    def logs(self, env_id: str, tail: int = 100) -> str:
        return pod_log(self.api, env_id, tail)

    def events(self, env_id: str, last: int = 10) -> builtins.list[str]:
        """The pod's last events, oldest first: "Reason: message"."""
        found = self.api.call(
            f"listing events of pod {env_id}",
            lambda: list(self.client.list(Event, namespace=self.namespace, fields={"involvedObject.name": env_id})),
        )

        def when(e: Event) -> str:
            return str(e.lastTimestamp or e.eventTime or (e.metadata.creationTimestamp if e.metadata else "") or "")

        return [f"{e.reason}: {e.message}" for e in sorted(found, key=when)[-last:]]

    def state(self, env_id: str) -> str:
        """The pod's phase ("Running", "Pending", "Failed"...), or "removed"."""
        pod = self._pod(env_id, cached=False)
        if pod is None:
            return "removed"
        if (pod.get("metadata") or {}).get("deletionTimestamp"):
            return "Terminating"
        return str((pod.get("status") or {}).get("phase") or "Pending")

    def is_running(self, env_id: str) -> bool:
        return self.state(env_id) == "Running"

    def list(self, *, run_id: str | None = None, all_owners: bool = True) -> builtins.list[EnvRecord]:
        selector: dict[str, Any] = {LABEL_ROLE: ROLE_ENV}
        if run_id:
            selector[LABEL_RUN_ID] = label_value(run_id)
        pods = self.api.call(
            "listing environment pods", lambda: list(self.client.list(Pod, namespace=self.namespace, labels=selector))
        )
        me = str(Owner.current())
        out = []
        for p in pods:
            pod = p.to_dict()
            meta, status = pod.get("metadata") or {}, pod.get("status") or {}
            labels, annotations = meta.get("labels") or {}, meta.get("annotations") or {}
            if not all_owners and annotations.get(ANNOTATION_OWNER) != me:
                continue
            ip = status.get("podIP")
            out.append(EnvRecord(
                id=meta["name"],
                name=meta["name"],
                image=next((c["image"] for c in pod["spec"]["containers"]), ""),
                scenario=labels.get(LABEL_SCENARIO),
                status=str(status.get("phase") or "Pending"),
                run_id=labels.get(LABEL_RUN_ID),
                owner=annotations.get(ANNOTATION_OWNER),
                base_url=f"http://{ip}:{self.server_port}" if ip else None,
                protections=frozenset({Protection.TOKEN}),  # the network is the namespace's policies
                user=annotations.get(ANNOTATION_USER),
                token_key=self.token_key(meta["name"]),
            ))
        return out

    def gc(self) -> builtins.list[str]:
        """Delete expired owner Leases (of any process); return the pods that go with them.

        Kubernetes' garbage collector removes the pods (and claims) an expired Lease owns.
        """
        def owned(lease: str) -> builtins.list[str]:
            pods = self.client.list(Pod, namespace=self.namespace, labels=_selector(LABEL_LEASE, lease))
            return [p.metadata.name for p in pods if p.metadata and p.metadata.name]

        removed = collect_expired(self.api, self.lease.name, owned)
        self._forget_stale_tokens()
        return removed

    def _forget_stale_tokens(self) -> None:
        """Drop the kept tokens of this namespace's detached pods that are gone."""
        prefix = self.token_key("")
        kept = {key for key in tokens.saved() if key.startswith(prefix)}  # listed first, as in DockerBackend.gc
        if not kept:
            return
        live = {self.token_key(r.id) for r in self.list()}
        for key in kept - live:
            tokens.forget(key)

    def close(self) -> None:
        """Delete this backend's Lease (its pods follow) and stop the watch."""
        for forward in self._forwards.values():  # only the tunnels: detached pods stay
            forward.close()
        self._forwards.clear()
        for name in list(self._owned):  # deleting the Lease deletes them
            reaper.untrack(name)
        self._owned.clear()
        self.lease.release()
        self.watch.stop()
        if self._owns_client:
            self.client.close()  # ends the watch's open request


class AsyncKubernetesBackend:
    """The same backend for asyncio code: each call runs the sync one on a thread.

    The API calls are short and the waits are on the shared watch, so a thread per call in
    flight costs little; `EnvPool`/`AsyncEnvPool` take the sync backend directly.
    """

    def __init__(self, backend: KubernetesBackend | None = None, **kwargs: Any) -> None:
        self.sync = backend or KubernetesBackend(**kwargs)

    @property
    def run_id(self) -> str:
        return self.sync.run_id

    async def start(self, image: str, options: StartOptions | None = None, **overrides: Any) -> Env:
        return await asyncio.to_thread(self.sync.start, image, options, **overrides)

    async def stop(self, env_id: str) -> None:
        await asyncio.to_thread(self.sync.stop, env_id)

    async def logs(self, env_id: str, tail: int = 100) -> str:
        return await asyncio.to_thread(self.sync.logs, env_id, tail)

    async def list(self, *, run_id: str | None = None, all_owners: bool = True) -> builtins.list[EnvRecord]:
        return await asyncio.to_thread(self.sync.list, run_id=run_id, all_owners=all_owners)

    async def gc(self) -> builtins.list[str]:
        return await asyncio.to_thread(self.sync.gc)

    async def aclose(self) -> None:
        await asyncio.to_thread(self.sync.close)

