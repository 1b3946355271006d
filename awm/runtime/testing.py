"""A testcontainers module for AWM environment images, and pytest fixtures.

    from awm.runtime.testing import AWMContainer

    def test_my_agent_books_a_campsite():
        with AWMContainer("awm/trailhead_campground_reservations:latest") as env:
            client = env.get_client()
            client.call_tool("list_parks", {})
            assert env.verify(0)["result"] == "others"
            env.reset()

`AWMContainer` is a testcontainers `DockerContainer`: the image's port 8000 is published, an
HTTP wait strategy waits for `/_awm/health`, the container runs hardened (read-only root,
non-root, no capabilities, memory and pids limits) and carries this project's owner labels,
so `awm env gc` removes it if the test process dies. On machines without a registry, set
`TESTCONTAINERS_RYUK_DISABLED=true` (testcontainers' reaper image cannot be pulled there).

With `pytest_plugins = ["awm.runtime.testing"]` in a conftest, the `awm_container` fixture starts
one per test: `awm_container("awm/<scenario>:latest")`, stopped after the test.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, Self

from testcontainers.core.container import DockerContainer
from testcontainers.core.wait_strategies import HttpWaitStrategy

from awm.runtime.client import EnvClient
from awm.runtime.docker_backend import sandbox_options
from awm.core.labels import check_user_labels, new_run_id, owner_labels

__all__ = ["SERVER_PORT", "AWMContainer", "awm_container"]

SERVER_PORT = 8000


class AWMContainer(DockerContainer):  # type: ignore[misc]
    """An AWM environment image as a testcontainers container.

    Args:
        image: e.g. "awm/pantrypal_recipe_planner:latest".
        control_token: protect the control plane with this bearer token.
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
        self.control_token = control_token
        self.with_exposed_ports(SERVER_PORT)
        if control_token:
            self.with_env("AWM_CONTROL_TOKEN", control_token)
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

    def reset(self) -> dict[str, Any]:
        """Restore the database from the seed, in place."""
        return self.get_client().reset()

    def verify(self, task_idx: int, final_answer: str | None = None, flavour: str = "code") -> dict[str, Any]:
        """Grade a task against the current database, inside the container."""
        return self.get_client().verify(task_idx, final_answer, flavour)

    def start(self) -> Self:
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
