"""A gate between requests and resets: many requests at once, or one reset alone.

Requests enter shared; a reset closes the gate, waits for the requests in flight to finish,
runs alone, and reopens. Requests that arrive meanwhile wait (a reset takes milliseconds)
instead of failing. If requests in flight do not finish within the drain timeout (a hung
handler), the reset gives up and the caller gets a retryable error.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

__all__ = ["DrainTimeout", "Gate"]


class DrainTimeout(Exception):
    def __init__(self, in_flight: int, timeout_s: float) -> None:
        super().__init__(
            f"{in_flight} request(s) still in flight after {timeout_s:g}s; retry the reset"
        )
        self.in_flight = in_flight


class Gate:
    def __init__(self) -> None:
        self._cond = asyncio.Condition()
        self._active = 0
        self._closed = False

    @property
    def in_flight(self) -> int:
        return self._active

    @asynccontextmanager
    async def shared(self) -> AsyncIterator[None]:
        async with self._cond:
            await self._cond.wait_for(lambda: not self._closed)
            self._active += 1
        try:
            yield
        finally:
            async with self._cond:
                self._active -= 1
                self._cond.notify_all()

    @asynccontextmanager
    async def exclusive(self, drain_timeout_s: float) -> AsyncIterator[None]:
        async with self._cond:
            # One exclusive holder at a time; later ones queue behind it.
            await self._cond.wait_for(lambda: not self._closed)
            self._closed = True
            try:
                await asyncio.wait_for(
                    self._cond.wait_for(lambda: self._active == 0), drain_timeout_s
                )
            except TimeoutError:
                self._closed = False
                self._cond.notify_all()
                raise DrainTimeout(self._active, drain_timeout_s) from None
        try:
            yield
        finally:
            async with self._cond:
                self._closed = False
                self._cond.notify_all()
