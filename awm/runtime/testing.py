"""A testcontainers module for AWM environment images, and pytest fixtures.

    from awm.runtime.testing import AWMContainer

    def test_my_agent_books_a_campsite():
        with AWMContainer("awm/trailhead_campground_reservations:latest") as env:
            client = env.get_client()
            client.call_tool("list_parks", {})
            assert env.verify(0)["result"] == "others"
            env.reset()

`AWMContainer` is a testcontainers `DockerContainer`: the image's port 8000 is published (on
127.0.0.1 when this process shares the engine's network), an HTTP wait strategy waits for `/_awm/health`,
the container runs hardened (read-only root, non-root, no capabilities, memory and pids limits)
on the runtime's `awm-published` network (no traffic between its containers, so environments
cannot reach each other), has its own random control token (the container gets only its hash)
and carries this project's owner labels, so `awm env gc` removes it if the test process dies.
`with_network(...)` puts it on a network of your own instead. On machines without a registry, set
`TESTCONTAINERS_RYUK_DISABLED=true` (testcontainers' reaper image cannot be pulled there).

With `pytest_plugins = ["awm.runtime.testing"]` in a conftest, the `awm_container` fixture starts
one per test: `awm_container("awm/<scenario>:latest")`, stopped after the test.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator
from typing import Any, Self

import docker
from testcontainers.core.container import DockerContainer
from testcontainers.core.wait_strategies import HttpWaitStrategy

from awm.core.labels import check_user_labels, new_run_id, owner_labels
from awm.runtime import tokens
from awm.runtime.base import Isolation
from awm.runtime.client import EnvClient
from awm.runtime.docker_backend import isolation_network, sandbox_options
from awm_server.contract import ResetResult, VerifyResult

__all__ = ["SERVER_PORT", "AWMContainer", "awm_container"]

SERVER_PORT = 8000


class AWMContainer(DockerContainer):
    """An AWM environment image as a testcontainers container.

    Args:
        image: e.g. "awm/pantrypal_recipe_planner:latest".
        control_token: the control plane's bearer token (a random one when None).
        startup_timeout_s: how long to wait for the health endpoint.
        hardened: run read-only, as uid 10001, without capabilities, with limits.
        labels: extra labels (the `awm.` namespace is reserved).
        **kwargs: passed to `DockerContainer`.
    """

    def __init__(
        self,
        image: str,
        *,
        control_token: str | None = None,
        startup_timeout_s: int = 60,
        hardened: bool = True,
        labels: dict[str, str] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(image, **kwargs)
        self.control_token = control_token or tokens.new_token()
        self.with_exposed_ports(SERVER_PORT)
        self.with_env(tokens.TOKEN_HASH_VAR, tokens.token_hash(self.control_token))
        run_labels = {**check_user_labels(labels), **owner_labels(new_run_id())}
        self.with_kwargs(labels=run_labels)
        if hardened:  # with_kwargs replaces, so the labels go again
            options = sandbox_options()
            self.tmpfs.update(options.pop("tmpfs"))
            self.with_kwargs(labels=run_labels, **options)
        self.waiting_for(
            HttpWaitStrategy(SERVER_PORT, "/_awm/health")
            .for_status_code(200)
            .with_startup_timeout(startup_timeout_s)
            .with_poll_interval(0.05)
        )
        self._client: EnvClient | None = None
        self._loopback = False  # published on 127.0.0.1 only (decided at start)

    def get_base_url(self) -> str:
        return f"http://{self.get_container_host_ip()}:{self.get_exposed_port(SERVER_PORT)}"

    def get_mcp_url(self) -> str:
        """The MCP streamable-HTTP endpoint an agent connects to."""
        return f"{self.get_base_url()}/mcp"

    def get_client(self) -> EnvClient:
        """A client of the control plane and of the tools (over MCP)."""
        if self._client is None:
            self._client = EnvClient(self.get_base_url(), token=self.control_token)
        return self._client

    def reset(self) -> ResetResult:
        """Restore the database from the seed, in place."""
        return self.get_client().reset()

    def verify(self, task_idx: int, final_answer: str | None = None, flavour: str = "code") -> VerifyResult:
        """Grade a task against the current database, inside the container."""
        return self.get_client().verify(task_idx, final_answer, flavour)

    def get_container_host_ip(self) -> str:
        return "127.0.0.1" if self._loopback else str(super().get_container_host_ip())

    def start(self) -> Self:
        client = self.get_docker_client().client
        network = isolation_network(client, Isolation.PUBLISHED)
        self._loopback = _in_engine_namespace(client, network)
        if self._loopback:
            self.ports[str(SERVER_PORT)] = ("127.0.0.1", None)  # type: ignore[assignment]  # the SDK's form
        if self._network is None and "network" not in self._kwargs:
            self._kwargs["network"] = network
        try:
            super().start()
        except BaseException:
            self.stop()  # a container that never got ready must not stay behind
            raise
        return self

    def stop(self, force: bool = True, delete_volume: bool = True) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
        super().stop(force=force, delete_volume=delete_volume)


def _in_engine_namespace(client: docker.DockerClient, network: str) -> bool:
    """Whether this process shares the engine's network namespace, so 127.0.0.1 reaches ports
    published there: true when the network's gateway address is one of ours (bindable).

    Elsewhere (a remote engine, Docker-outside-of-Docker) the port is published on every
    address, as testcontainers does, and the control token is what guards it.
    """
    gateway = ((client.networks.get(network).attrs.get("IPAM") or {}).get("Config") or [{}])[0].get("Gateway")
    if not gateway:
        return False
    with socket.socket() as probe:
        try:
            probe.bind((gateway, 0))
        except OSError:
            return False
    return True


try:
    import pytest
except ImportError:  # pytest is optional: the fixture exists only where it is installed
    pass
else:

    @pytest.fixture
    def awm_container() -> Iterator[Callable[..., AWMContainer]]:
        """Start AWM containers for one test: `awm_container("awm/<id>:latest", **options)`."""
        started: list[AWMContainer] = []

        def start(image: str, **kwargs: Any) -> AWMContainer:
            container = AWMContainer(image, **kwargs).start()
            started.append(container)
            return container

        yield start
        for container in started:
            container.stop()
