"""`Env`: a handle on one running environment container."""

from __future__ import annotations

from pathlib import Path
from types import TracebackType
from typing import Any, Self

import docker.errors
from docker.models.containers import Container

from runtime.client import EnvClient

__all__ = ["Env"]


class Env:
    """A running environment: its MCP URL, and reset/verify/snapshot/logs/stop."""

    def __init__(self, container: Container, base_url: str, image: str, token: str | None = None) -> None:
        self.container = container
        self.base_url = base_url
        self.image = image
        self.client = EnvClient(base_url, token=token)
        self._stopped = False

    @property
    def mcp_url(self) -> str:
        return f"{self.base_url}/mcp"

    @property
    def id(self) -> str:
        return str(self.container.id)

    def _live(self, action: str) -> None:
        if self._stopped:
            raise RuntimeError(f"Cannot {action} env '{self.image}': it was stopped.")

    def reset(self) -> dict[str, Any]:
        self._live("reset")
        return self.client.reset()

    def verify(self, task_idx: int, final_answer: str | None = None, flavour: str = "code") -> dict[str, Any]:
        self._live("verify")
        return self.client.verify(task_idx, final_answer, flavour)

    def snapshot(self, path: str | Path) -> Path:
        self._live("snapshot")
        return self.client.snapshot(path)

    def logs(self, tail: int = 100) -> str:
        return str(self.container.logs(tail=tail).decode(errors="replace"))

    def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        self.client.close()
        try:
            self.container.remove(force=True)
        except docker.errors.NotFound:
            pass

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
