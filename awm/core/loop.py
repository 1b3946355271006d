"""An event loop of its own in a daemon thread: how sync facades run async code.

Why not `asyncio.run` per call: it refuses to run inside a running loop (Jupyter,
pytest-asyncio, an async trainer calling sync code), and starts a new loop each time. One
private loop serves every calling thread at once (each call is one task on it), needs no loop
in the caller, and is stopped by `close()`.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

__all__ = ["LoopThread"]

T = TypeVar("T")


class LoopThread:
    """A private event loop running in a daemon thread named `name`."""

    def __init__(self, name: str) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name=name, daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, T], *, own_thread_error: str) -> T:
        """Run `coro` on the loop and wait for it; `own_thread_error` if called from the loop itself."""
        if threading.current_thread() is self.thread:
            coro.close()
            raise RuntimeError(own_thread_error)
        future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return future.result()
        except BaseException:
            future.cancel()  # e.g. KeyboardInterrupt in the caller: do not leave the call running
            raise

    def close(self, timeout_s: float | None = None) -> None:
        """Cancel what still runs on the loop, stop it and close it (idempotent)."""
        if self.loop.is_closed():
            return
        if threading.current_thread() is self.thread:  # collected on its own thread: just stop it
            self.loop.call_soon_threadsafe(self.loop.stop)
            return
        if self.thread.is_alive():
            asyncio.run_coroutine_threadsafe(self._cancel_all(), self.loop).result(timeout=timeout_s)
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(timeout=timeout_s)
        if not self.thread.is_alive():
            self.loop.close()

    @staticmethod
    async def _cancel_all() -> None:
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await asyncio.get_running_loop().shutdown_asyncgens()
