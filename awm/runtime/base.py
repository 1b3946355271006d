"""The `Backend` protocol and the options every backend understands.

A backend starts an image as an isolated, hardened environment and returns an `Env`; the
Docker backend runs containers on an engine, the Kubernetes backend runs pods. Everything
above it (the pool, the CLI, the testcontainers module) speaks only this protocol.
"""

from __future__ import annotations

import builtins
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    from awm.runtime.env import Env

__all__ = [
    "Backend",
    "EnvRecord",
    "Isolation",
    "Protection",
    "Protections",
    "Resources",
    "StartOptions",
    "Timeouts",
]


class Isolation(StrEnum):
    """Which network an environment gets; `Protection` lists what each one stops.

    SEALED (default): the internal network `awm-internal` (no route beyond the engine's host,
    inter-container traffic off, so no neighbour is reachable) plus an egress guard in the
    container's own network namespace that rejects every connection it opens, to the host
    included; the host still connects in. The guard needs root on the engine's host: without
    it the environment runs as INTERNAL, with a warning.
    INTERNAL: the internal network only (the host's own addresses stay reachable; other
    environments do not).
    PUBLISHED: the network `awm-published` (inter-container traffic off, a route out) with the
    server port published on 127.0.0.1, plus the egress guard where root allows (a warning
    says when it could not be installed). For `awm env start --port` and machines where the
    host cannot reach container addresses (Docker Desktop).
    """

    SEALED = "sealed"
    INTERNAL = "internal"
    PUBLISHED = "published"


class Protection(StrEnum):
    """One protection an environment got; `Env.protections` holds the set it really has."""

    INTERNAL_NETWORK = "internal_network"  # no route beyond the engine's host
    NO_NEIGHBOURS = "no_neighbours"  # other environments' addresses are unreachable from it
    EGRESS_GUARD = "egress_guard"  # it opens no connection at all, to the host included
    TOKEN = "token"  # its control plane needs its own random token (the container holds a hash)


Protections = frozenset[Protection]


@dataclass(frozen=True)
class Resources:
    """Limits of one environment container or pod."""

    memory: str = "512m"
    cpus: float = 1.0
    pids: int = 256
    tmpfs_size: str = "256m"  # the writable /tmp: working database and verifier scratch


@dataclass(frozen=True)
class Timeouts:
    start_s: float = 60.0  # until /_awm/health answers
    request_s: float = 60.0  # one control-plane or MCP request


@dataclass(frozen=True)
class StartOptions:
    """Everything about how to start an environment, beyond its image."""

    env: dict[str, str] = field(default_factory=dict)
    # The control plane's bearer token; a random one per environment when None. The container
    # gets only its sha256 (AWM_CONTROL_TOKEN_SHA256), the token stays with the `Env` handle.
    control_token: str | None = None
    labels: dict[str, str] = field(default_factory=dict)  # the user's; awm.* is refused
    resources: Resources = field(default_factory=Resources)
    timeouts: Timeouts = field(default_factory=Timeouts)
    isolation: Isolation = Isolation.SEALED
    host_port: int | None = None  # PUBLISHED only: a fixed port on 127.0.0.1 (engine picks if None)
    # SEALED and PUBLISHED: install the egress guard where root allows. False leaves it out
    # (SEALED then runs as INTERNAL), e.g. to test what the network alone stops.
    egress_guard: bool = True
    run_id: str | None = None  # the session label; the backend's own when None
    # No owning process: not removed when this process exits, nor by `gc`; `awm env stop` is
    # how it ends. For environments started from the command line.
    detached: bool = False


@dataclass(frozen=True)
class EnvRecord:
    """An environment as a backend lists it (it may belong to another process)."""

    id: str
    name: str
    image: str
    scenario: str | None
    status: str
    run_id: str | None
    owner: str | None
    base_url: str | None
    isolation: Isolation | None = None  # None: not started by this project's runtime
    protections: Protections = frozenset()
    user: str | None = None  # who started it (awm.user); None for environments from before the label
    token_key: str | None = None  # where its token is kept if it was started detached (`awm.runtime.tokens`)


@runtime_checkable
class Backend(Protocol):
    """Starts, lists and removes environments. Implementations: DockerBackend, KubernetesBackend."""

    run_id: str

    def start(self, image: str, options: StartOptions | None = None, **overrides: object) -> Env:
        """Start `image` and return once its server answers; clean up and raise on failure."""
        ...

    def stop(self, env_id: str) -> None:
        """Remove an environment; a missing one is not an error."""
        ...

    def logs(self, env_id: str, tail: int = 100) -> str: ...

    def is_running(self, env_id: str) -> bool: ...

    def list(self, *, run_id: str | None = None, all_owners: bool = True) -> builtins.list[EnvRecord]: ...

    def gc(self) -> builtins.list[str]:
        """Remove environments whose owning process is gone; return their ids."""
        ...
