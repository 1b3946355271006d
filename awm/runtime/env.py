"""`Env`: a handle on one running environment, whatever backend started it."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Self

from awm.core.errors import EnvUnavailable
from awm.runtime.base import Isolation, Protections
from awm.runtime.client import AsyncEnvClient, EnvClient
from awm_server.contract import ResetResult, VerifyResult

if TYPE_CHECKING:
    from awm.runtime.base import Backend

__all__ = ["Env", "EnvState"]


class EnvState(StrEnum):
    RUNNING = "running"
    STOPPED = "stopped"


class Env:
    """A running environment: `mcp_url` for the agent, and reset/verify/snapshot/logs/stop.

    The sync methods block; `aclient` is the async client of the same server, for trainers.
    `token` is its control plane's bearer token (the container holds only its hash);
    `isolation` and `protections` say what the environment really got.
    A request to an environment that stopped answering raises `EnvUnavailable` naming it and
    the state its container or pod is in.

    Example:
        >>> with DockerBackend().start("awm/pantrypal_recipe_planner:latest") as env:
        ...     env.client.call_tool("list_recipes", {"limit": 1}).is_error
        False
    """

    def __init__(
        self,
        *,
        backend: Backend,
        env_id: str,
        name: str,
        image: str,
        scenario: str | None,
        base_url: str,
        token: str | None = None,
        request_timeout_s: float = 60.0,
        isolation: Isolation = Isolation.PUBLISHED,
        protections: Protections = frozenset(),
    ) -> None:
        self.backend = backend
        self.id = env_id
        self.name = name
        self.image = image
        self.scenario = scenario
        self.base_url = base_url
        self.token = token
        self.state = EnvState.RUNNING
        self.isolation = isolation  # what it really got (SEALED can fall back to INTERNAL)
        self.protections = protections  # exactly what stops it (see `Protection`)
        self.client = EnvClient(base_url, token=token, timeout_s=request_timeout_s)
        self._request_timeout_s = request_timeout_s
        self._aclient: AsyncEnvClient | None = None
        self.slot: int | None = None  # k for a handle on slot k (see `slot_handle`)
        self.container: Env = self  # the environment whose container this handle is in

    def slot_handle(self, slot: int) -> Env:
        """A handle on episode slot `slot` of this environment (started with `AWM_SLOTS` > slot).

        Its `mcp_url` and control plane are the slot's (`<base_url>/e/<slot>/...`): reset,
        verify and snapshot act on that slot alone. The container is shared: `container` is
        this handle, and `stop()` on a slot handle ends only the handle, not the container.
        """
        handle = Env(backend=self.backend, env_id=self.id, name=f"{self.name}/e/{slot}", image=self.image,
                     scenario=self.scenario, base_url=f"{self.base_url}/e/{slot}", token=self.token,
                     request_timeout_s=self._request_timeout_s, isolation=self.isolation,
                     protections=self.protections)
        handle.slot = slot
        handle.container = self
        return handle

    def __repr__(self) -> str:
        return f"Env({self.name!r}, image={self.image!r}, state={self.state.value})"

    @property
    def mcp_url(self) -> str:
        return f"{self.base_url}/mcp"

    @property
    def aclient(self) -> AsyncEnvClient:
        """An async client of the same server (made on first use; `await env.aclient.aclose()`)."""
        if self._aclient is None or self._aclient.is_closed:
            self._aclient = AsyncEnvClient(self.base_url, token=self.token, timeout_s=self._request_timeout_s)
        return self._aclient

    async def aclose(self) -> None:
        """Close the async client, if one was made (its connections belong to the running loop)."""
        if self._aclient is not None:
            await self._aclient.aclose()
            self._aclient = None

    def _live(self, action: str) -> None:
        if self.state is EnvState.STOPPED:
            raise RuntimeError(f"Cannot {action} env '{self.name}': it was stopped.")

    def _explain(self, exc: EnvUnavailable) -> EnvUnavailable:
        state = getattr(self.backend, "state", lambda _id: "unknown")(self.id)
        return EnvUnavailable(
            f"environment {self.name} ({self.image}) is {state}: {exc.message}",
            scenario=self.scenario, image=self.image, container_id=self.id,
        )

    def reset(self) -> ResetResult:
        """Restore the database from the seed, in place (milliseconds)."""
        self._live("reset")
        try:
            return self.client.reset()
        except EnvUnavailable as exc:
            raise self._explain(exc) from exc

    def verify(self, task_idx: int, final_answer: str | None = None, flavour: str = "code") -> VerifyResult:
        """Grade task `task_idx` against the current database, inside the environment."""
        self._live("verify")
        try:
            return self.client.verify(task_idx, final_answer, flavour)
        except EnvUnavailable as exc:
            raise self._explain(exc) from exc

    def snapshot(self, path: str | Path) -> Path:
        """Save a consistent copy of the current database to `path`."""
        self._live("snapshot")
        try:
            return self.client.snapshot(path)
        except EnvUnavailable as exc:
            raise self._explain(exc) from exc

    def healthy(self) -> bool:
        try:
            return self.state is EnvState.RUNNING and self.client.health().get("status") == "ok"
        except Exception:
            return False

    def logs(self, tail: int = 100) -> str:
        return self.backend.logs(self.id, tail)

    def stop(self) -> None:
        """Remove the environment (a slot handle: end the handle only). Idempotent."""
        if self.state is EnvState.STOPPED:
            return
        self.state = EnvState.STOPPED
        self.client.close()
        if self.container is self:
            self.backend.stop(self.id)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
