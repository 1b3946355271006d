"""Environments as hardened containers on a Docker engine.

Ports are assigned by the engine (or the container's own address is used), never probed. A
start that fails removes its container and raises an error carrying the container's last log
lines. Containers carry the labels of `awm.core.labels`; see `awm.runtime.base.Isolation` for the
network modes and `Protection` for what each stops. Environments share two bridge networks
with inter-container traffic off (`awm-internal`, internal; `awm-published`, with a route out),
so none reaches another; one network per environment would exhaust the engine's address pools
(about 30 networks by default). The egress guard (SEALED, and PUBLISHED where possible) is a
set of iptables rules in the container's own network namespace, installed with `nsenter` before
any environment code runs (the server waits for a signal that the runtime sends once the guard
is in place). Installing it needs root on the engine's host; without, a warning says so and
`Env.isolation`/`Env.protections` say what the environment got. Every environment gets its own
random control token; the container holds only its hash (see `awm.runtime.tokens`).
"""

from __future__ import annotations

import builtins
import contextlib
import logging
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import replace
from functools import wraps
from typing import Any, TypeVar, cast

import docker
import docker.errors
import httpx
import requests
from docker.models.containers import Container

from awm.core.errors import (
    AWMError,
    BackendUnavailable,
    EngineError,
    EnvNotFound,
    EnvStartTimeout,
    EnvUnavailable,
    ImageNotFound,
)
from awm.core.labels import (
    LABEL_OWNER,
    LABEL_RUN_ID,
    LABEL_SCENARIO,
    LABEL_USER,
    Owner,
    check_user_labels,
    new_run_id,
    owner_labels,
)
from awm.runtime import reaper, tokens
from awm.runtime.base import EnvRecord, Isolation, Protection, Protections, Resources, StartOptions
from awm.runtime.env import Env

__all__ = [
    "INTERNAL_NETWORK",
    "LABEL_ISOLATION",
    "LABEL_PROTECTIONS",
    "PUBLISHED_NETWORK",
    "DockerBackend",
    "engine_client",
    "engine_error",
    "isolation_network",
    "remove_orphans",
    "sandbox_options",
]

log = logging.getLogger("awm")

SERVER_PORT = 8000
INTERNAL_NETWORK = "awm-internal"  # SEALED and INTERNAL
PUBLISHED_NETWORK = "awm-published"  # PUBLISHED
_NO_ICC = "com.docker.network.bridge.enable_icc"  # "false": no traffic between its containers
LABEL_ISOLATION = "awm.isolation"  # the mode it got
LABEL_PROTECTIONS = "awm.protections"  # what it got, comma-separated `Protection` values

# Rejects every connection the environment opens (to the host and other environments too);
# replies on connections opened *to* it, and loopback, still flow.
_GUARD_RULES = """*filter
:INPUT ACCEPT [0:0]
:FORWARD DROP [0:0]
:OUTPUT DROP [0:0]
-A OUTPUT -o lo -j ACCEPT
-A OUTPUT -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT
-A OUTPUT -p tcp -j REJECT --reject-with tcp-reset
-A OUTPUT -j REJECT
COMMIT
"""


def engine_client(purpose: str = "", *, max_pool_size: int = 10) -> docker.DockerClient:
    """A client of the local Docker engine, checked to answer.

    Args:
        purpose: why an engine is needed, said first in the error.
        max_pool_size: HTTP connections kept to the engine; at least the number of threads.

    Raises:
        BackendUnavailable: no engine answers; says how to start one.
    """
    try:
        client = docker.from_env(max_pool_size=max_pool_size)
        client.ping()
    except _SDK_ERRORS as exc:
        why = f"{purpose}, and " if purpose else ""
        where = os.environ.get("DOCKER_HOST") or "the default socket"
        raise BackendUnavailable(f"{why}no Docker engine answers at {where} ({exc})") from exc
    return client


# What the Docker SDK raises: its own errors, and requests' when the engine goes away mid-session.
_SDK_ERRORS = (docker.errors.DockerException, requests.exceptions.RequestException)


def engine_error(
    exc: Exception, doing: str, *, image: str | None = None, container_id: str | None = None
) -> AWMError:
    """A Docker SDK error as this project's error: what was being done, and the engine's words.

    Args:
        exc: what the SDK raised.
        doing: what was being done, e.g. "stopping abc123", said first in the message.
    """
    if isinstance(exc, docker.errors.ImageNotFound):
        return ImageNotFound(f"{doing}: image {image or ''} not found ({exc.explanation})".replace(" ()", ""),
                             image=image, container_id=container_id)
    if isinstance(exc, docker.errors.APIError):
        return EngineError(f"{doing}: the Docker engine refused: {exc.explanation or exc}",
                           image=image, container_id=container_id)
    if isinstance(exc, requests.exceptions.RequestException):  # the engine went away or hangs
        return BackendUnavailable(f"{doing}: no Docker engine answers ({exc})", image=image, container_id=container_id)
    return EngineError(f"{doing}: {exc}", image=image, container_id=container_id)


_Method = TypeVar("_Method", bound=Callable[..., Any])


def _engine_errors(doing: str, about: str = "container_id") -> Callable[[_Method], _Method]:
    """Raise a backend method's Docker SDK errors as `engine_error`s (none leave the runtime raw).

    `doing` may hold `{}`: the method's first argument, an image or a container id (`about`).
    """

    def decorate(method: _Method) -> _Method:
        @wraps(method)
        def wrapper(self: DockerBackend, *args: Any, **kwargs: Any) -> Any:
            try:
                return method(self, *args, **kwargs)
            except _SDK_ERRORS as exc:
                subject = str(args[0]) if args else None
                raise engine_error(exc, doing.format(subject), **{about: subject}) from exc

        return cast(_Method, wrapper)

    return decorate


def sandbox_options(resources: Resources | None = None, *, network: bool = True) -> dict[str, Any]:
    """`containers.run` options every container of this project gets.

    Read-only root with a tmpfs /tmp, uid 10001, no capabilities, no-new-privileges, memory,
    CPU and pids limits; with `network=False` no network at all (build checks, probes).
    """
    r = resources or Resources()
    options: dict[str, Any] = {
        "read_only": True,
        "tmpfs": {"/tmp": f"rw,size={r.tmpfs_size},mode=1777"},
        "cap_drop": ["ALL"],
        "security_opt": ["no-new-privileges"],
        "user": "10001:10001",
        "mem_limit": r.memory,
        "pids_limit": r.pids,
        "nano_cpus": int(r.cpus * 1e9),
    }
    if not network:
        options["network_mode"] = "none"
    return options


def isolation_network(client: docker.DockerClient, isolation: Isolation) -> str:
    """The shared network of `isolation`, made on first use; checked to keep neighbours apart.

    Raises:
        BackendUnavailable: a network of that name exists without those settings.
    """
    internal = isolation is not Isolation.PUBLISHED
    name = INTERNAL_NETWORK if internal else PUBLISHED_NETWORK
    try:
        network = client.networks.get(name)
    except docker.errors.NotFound:
        try:
            network = client.networks.create(
                name, driver="bridge", internal=internal, options={_NO_ICC: "false"},
                labels={"awm.network": name}, check_duplicate=True,
            )
        except docker.errors.APIError as exc:
            if exc.status_code != 409:  # 409: another process made it first
                raise
            network = client.networks.get(name)
    attrs = network.attrs
    if bool(attrs.get("Internal")) is not internal or (attrs.get("Options") or {}).get(_NO_ICC) != "false":
        raise BackendUnavailable(
            f"the Docker network {name} exists without the settings that keep environments apart "
            f"(internal={str(internal).lower()}, {_NO_ICC}=false); remove it with `docker network rm {name}` "
            "once no container uses it, and start again (it is made anew)"
        )
    return name


def remove_orphans(
    client: docker.DockerClient,
    labels: list[str] | None = None,
    select: Callable[[dict[str, str]], bool] = lambda _labels: True,
) -> list[str]:
    """Remove containers (with all of `labels`) whose owning process on this host is gone.

    Containers of live owners, of other hosts and detached ones stay. Returns the removed ids.
    """
    removed = []
    owned: dict[str, str | list[str] | bool] = {"label": [LABEL_OWNER, *(labels or [])]}
    for container in client.containers.list(ignore_removed=True, all=True, filters=owned):
        container_labels = container.labels or {}
        owner = Owner.parse(container_labels.get(LABEL_OWNER, ""))
        if owner is None or not owner.is_local() or owner.is_alive() or not select(container_labels):
            continue
        try:
            container.remove(force=True)
        except docker.errors.NotFound:
            continue
        image = (container.attrs.get("Config") or {}).get("Image", "")
        log.info("removed %s (%s), its owner %s is gone", container.name, image, owner)
        removed.append(str(container.id))
    return removed


class DockerBackend:
    """Start environment images as containers on the local Docker engine.

    Args:
        client: a docker SDK client; `docker.from_env()` when None.
        run_id: the session label of everything this backend starts (a new one when None).

    Raises:
        BackendUnavailable: no engine answers.

    Example:
        >>> backend = DockerBackend()
        >>> with backend.start("awm/pantrypal_recipe_planner:latest") as env:
        ...     env.verify(0)["result"]
        'others'
    """

    def __init__(self, client: docker.DockerClient | None = None, *, run_id: str | None = None) -> None:
        self.client = client or engine_client()
        self.run_id = run_id or new_run_id()
        self._checked_networks: set[str] = set()

    # -- starting -------------------------------------------------------------------------

    @_engine_errors("starting {}", about="image")
    def start(self, image: str, options: StartOptions | None = None, **overrides: Any) -> Env:
        """Start `image` and wait until its server answers.

        Args:
            image: an environment image, e.g. "awm/pantrypal_recipe_planner:latest".
            options: how to start it; defaults are hardened and SEALED.
            **overrides: fields of `StartOptions` to change, e.g. `env={...}`, `labels={...}`.

        Raises:
            ImageNotFound: the image is not in the engine.
            EnvStartTimeout: the server did not answer in time or the container exited; the
                container is removed and its last log lines are in the message.
            BackendUnavailable: the egress guard failed to install where it should have.
            ValueError: `env` holds AWM_CONTROL_TOKEN (pass `control_token` instead).
        """
        opts = replace(options or StartOptions(), **overrides)
        user_labels = check_user_labels(opts.labels)
        try:
            scenario = (self.client.images.get(image).labels or {}).get(LABEL_SCENARIO)
        except docker.errors.ImageNotFound as exc:
            guess = image.split("/", 1)[-1].split(":", 1)[0]
            raise ImageNotFound(
                f"image {image} not found; build it with `awm build DATASET --only {guess}`", image=image
            ) from exc
        if "AWM_CONTROL_TOKEN" in opts.env:
            raise ValueError("pass the token as control_token=..., not in env: the container gets only its hash")
        token = opts.control_token or tokens.new_token()
        guard = self._guard_planned(opts, image)
        isolation = Isolation.INTERNAL if opts.isolation is Isolation.SEALED and not guard else opts.isolation
        protections = _protections(isolation, guard)
        labels = {
            **user_labels,
            **owner_labels(opts.run_id or self.run_id, scenario, detached=opts.detached),
            LABEL_ISOLATION: isolation.value,
            LABEL_PROTECTIONS: ",".join(sorted(protections)),
        }
        environment = {**opts.env, tokens.TOKEN_HASH_VAR: tokens.token_hash(token)}
        if guard:
            environment["AWM_AWAIT_SEAL"] = "1"
        network: dict[str, Any] = {"network": self._network(isolation)}
        if isolation is Isolation.PUBLISHED:
            network["ports"] = {f"{SERVER_PORT}/tcp": ("127.0.0.1", opts.host_port)}
        name = f"awm-{scenario or 'env'}-{uuid.uuid4().hex[:10]}"
        try:
            container: Container = self.client.containers.run(
                image,
                name=name[:120],
                detach=True,
                environment=environment,
                labels=labels,
                **sandbox_options(opts.resources),
                **network,
            )
        except docker.errors.APIError as exc:
            raise engine_error(exc, f"starting {image}", image=image) from exc
        # The SDK types both as optional (a model may be built without attributes); the engine
        # always sends them for a container it has just run.
        env_id, env_name = str(container.id), str(container.name)
        if not opts.detached:
            reaper.track(env_id, lambda: self.stop(env_id))
        try:
            if opts.detached:  # later `awm env reset/verify NAME` commands need the token
                tokens.save(env_id, token)
            if guard:
                self._seal(container, image)
            base_url = self._wait_ready(container, image, opts, awaits_seal=guard)
        except BaseException:
            self.stop(env_id)
            raise
        return Env(
            backend=self,
            env_id=env_id,
            name=env_name,
            image=image,
            scenario=scenario,
            base_url=base_url,
            token=token,
            request_timeout_s=opts.timeouts.request_s,
            isolation=isolation,
            protections=protections,
        )

    def _network(self, isolation: Isolation) -> str:
        name = INTERNAL_NETWORK if isolation is not Isolation.PUBLISHED else PUBLISHED_NETWORK
        if name not in self._checked_networks:
            isolation_network(self.client, isolation)
            self._checked_networks.add(name)
        return name

    def _guard_planned(self, opts: StartOptions, image: str) -> bool:
        """Whether to install the egress guard; warns when the mode wants one that cannot be had."""
        if opts.isolation is Isolation.INTERNAL or not opts.egress_guard:
            return False
        if self.can_seal():
            return True
        consequence = (
            "it runs as INTERNAL: the host's own addresses stay reachable from it"
            if opts.isolation is Isolation.SEALED
            else "it is published with a route out: it can open connections beyond this host"
        )
        log.warning(
            "%s: no egress guard (installing it needs root on the engine's host, nsenter and "
            "iptables-restore); %s. Other environments stay unreachable.", image, consequence,
        )
        return False

    def can_seal(self) -> bool:
        """Whether the egress guard can be installed: root, a local engine, nsenter, iptables."""
        local = str(self.client.api.base_url).startswith("http+docker://")  # the unix socket
        return local and os.geteuid() == 0 and all(shutil.which(t) for t in ("nsenter", "iptables-restore"))

    def _seal(self, container: Container, image: str) -> None:
        """Install the egress guard in the container's network namespace (`can_seal` said yes)."""
        container.reload()
        pid = container.attrs["State"]["Pid"]
        if not pid:
            return  # it already exited; _wait_ready reports why
        cmd = ["nsenter", f"--target={pid}", "--net", "iptables-restore"]
        proc = subprocess.run(cmd, input=_GUARD_RULES, capture_output=True, text=True, timeout=30)
        if proc.returncode != 0:
            raise BackendUnavailable(
                f"cannot seal {image}: iptables-restore in its network namespace failed: "
                f"{proc.stderr.strip()}; start with egress_guard=False to run without it",
                image=image,
                container_id=container.id,
            )

    def _wait_ready(self, container: Container, image: str, opts: StartOptions, *, awaits_seal: bool) -> str:
        timeout_s = opts.timeouts.start_s
        deadline = time.monotonic() + timeout_s
        base_url = None
        with httpx.Client(timeout=2.0, verify=False) as http:  # plain http to the container
            polls = 0
            while time.monotonic() < deadline:
                # An inspect costs milliseconds: look at the container's state only every few
                # polls, and each time until its address is known.
                if base_url is None or polls % 5 == 0:
                    container.reload()
                    if container.status in ("exited", "dead"):
                        break
                    base_url = base_url or _url(container.attrs["NetworkSettings"])
                if awaits_seal and polls % 10 == 0:
                    # The guard is in place: let the server go on. It queues the signal from its
                    # first milliseconds; the repeats cover one sent before that (and are ignored).
                    with contextlib.suppress(docker.errors.APIError):
                        container.kill(signal="SIGUSR1")
                if base_url is not None:
                    try:
                        if http.get(f"{base_url}/_awm/health").status_code == 200:
                            return base_url
                    except httpx.TransportError:
                        pass
                polls += 1
                time.sleep(0.01)
        container.reload()
        logs = container.logs(tail=30).decode(errors="replace").rstrip()
        state = container.attrs.get("State", {})
        why = (
            f"exited with code {state.get('ExitCode')}"
            if container.status in ("exited", "dead")
            else f"did not answer within {timeout_s:g}s"
        )
        error = EnvStartTimeout(
            f"environment {image} (container {container.short_id}) {why}; last log lines:\n{logs}",
            image=image,
            container_id=container.id,
        )
        error.add_note(f"logs of {container.short_id}:\n{logs}")
        raise error

    # -- the rest of the protocol ---------------------------------------------------------

    @_engine_errors("removing environment {}")
    def stop(self, env_id: str) -> None:
        reaper.untrack(env_id)
        tokens.forget(env_id)
        try:
            self.client.api.remove_container(env_id, force=True)
        except docker.errors.NotFound:
            pass
        except docker.errors.APIError as exc:
            if exc.status_code != 409:  # 409: removal already in progress
                raise

    @_engine_errors("reading the log of environment {}")
    def logs(self, env_id: str, tail: int = 100) -> str:
        try:
            return str(self.client.api.logs(env_id, tail=tail).decode(errors="replace"))
        except docker.errors.NotFound:
            return ""

    @_engine_errors("inspecting environment {}")
    def state(self, env_id: str) -> str:
        """The container's state, e.g. "running", "exited (137)", or "removed"."""
        try:
            state = self.client.api.inspect_container(env_id)["State"]
        except docker.errors.NotFound:
            return "removed"
        return state["Status"] if state["Status"] == "running" else f"{state['Status']} ({state['ExitCode']})"

    def is_running(self, env_id: str) -> bool:
        return self.state(env_id) == "running"

    @contextlib.contextmanager
    def reach(self, env_id: str) -> Iterator[str]:
        """The base URL of a running environment's server (the same shape as KubernetesBackend's).

        Raises:
            EnvNotFound: no such container. EnvUnavailable: it is not running or has no address.
        """
        try:
            attrs = self.client.api.inspect_container(env_id)
        except docker.errors.NotFound as exc:
            raise EnvNotFound(f"no environment container {env_id}", container_id=env_id) from exc
        except (docker.errors.APIError, requests.RequestException) as exc:
            raise engine_error(exc, f"inspecting environment {env_id}", container_id=env_id) from exc
        url = _url(attrs.get("NetworkSettings") or {})
        if attrs["State"]["Status"] != "running" or url is None:
            raise EnvUnavailable(f"environment {attrs['Name'].lstrip('/')} has no reachable address "
                                 f"(status {attrs['State']['Status']})", container_id=env_id)
        yield url

    @_engine_errors("listing environments")
    def list(self, *, run_id: str | None = None, all_owners: bool = True) -> list[EnvRecord]:
        filters: dict[str, str | builtins.list[str] | bool] = {
            "label": [f"{LABEL_RUN_ID}={run_id}" if run_id else LABEL_RUN_ID]
        }
        out = []
        me = str(Owner.current())
        for c in self.client.containers.list(ignore_removed=True, all=True, filters=filters):
            labels = c.labels or {}
            if not all_owners and labels.get(LABEL_OWNER) != me:
                continue
            out.append(
                EnvRecord(
                    id=str(c.id),  # always sent for a listed container (see `start`)
                    name=str(c.name),
                    image=(c.attrs.get("Config") or {}).get("Image", ""),
                    scenario=labels.get(LABEL_SCENARIO),
                    status=c.status,
                    run_id=labels.get(LABEL_RUN_ID),
                    owner=labels.get(LABEL_OWNER),
                    base_url=_url(c.attrs.get("NetworkSettings") or {}),
                    isolation=_isolation_of(labels),
                    protections=_protections_of(labels),
                    user=labels.get(LABEL_USER),
                    token_key=str(c.id),
                )
            )
        return out

    @_engine_errors("removing orphaned environments")
    def gc(self) -> builtins.list[str]:  # `list` is the method above in this class
        """Remove environments of this host whose owning process is gone; return their ids."""
        removed = remove_orphans(self.client, [LABEL_RUN_ID])
        # listed first: a token is saved only once its container exists; keys with "_" are pods
        kept = {key for key in tokens.saved() if "_" not in key}
        listed = self.client.containers.list(ignore_removed=True, all=True, filters={"label": LABEL_RUN_ID})
        live = {c.id for c in listed}
        for env_id in kept - live:
            tokens.forget(env_id)
        return removed


def _protections(isolation: Isolation, guard: bool) -> Protections:
    got = {Protection.NO_NEIGHBOURS, Protection.TOKEN}
    if isolation is not Isolation.PUBLISHED:
        got.add(Protection.INTERNAL_NETWORK)
    if guard:
        got.add(Protection.EGRESS_GUARD)
    return frozenset(got)


def _url(settings: dict[str, Any]) -> str | None:
    """Where the host reaches the server: the published port, else the internal network's address."""
    bindings = (settings.get("Ports") or {}).get(f"{SERVER_PORT}/tcp")
    if bindings:
        return f"http://127.0.0.1:{bindings[0]['HostPort']}"
    ip = ((settings.get("Networks") or {}).get(INTERNAL_NETWORK) or {}).get("IPAddress")
    return f"http://{ip}:{SERVER_PORT}" if ip else None


def _isolation_of(labels: dict[str, str]) -> Isolation | None:
    try:
        return Isolation(labels.get(LABEL_ISOLATION, ""))
    except ValueError:
        return None  # started by an older version


def _protections_of(labels: dict[str, str]) -> Protections:
    known = {p.value for p in Protection}
    return frozenset(Protection(v) for v in labels.get(LABEL_PROTECTIONS, "").split(",") if v in known)
