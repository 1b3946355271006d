"""Environments on demand for many scenarios: one `AsyncEnvPool` per image, opened when needed.

An evaluation or a trainer asks for an environment of some image; the first request of an image
opens its pool (starting `size` environments), later ones take a warm one, reset in place when
the previous episode released it. At most `max_open` pools stay open: opening another closes the
least recently used pool that has nothing leased, so a run over 1,000 scenarios never holds more
than a few images' environments. Waiting for an environment has a timeout (`EnvStartTimeout`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from awm.runtime import AsyncEnvPool, Backend, Env
from awm.runtime.base import StartOptions

__all__ = ["ImagePools"]


class ImagePools:
    """Per-image pools, opened lazily, bounded in number; use from one event loop.

    Args:
        backend: where environments run.
        size: environments per image (an int, or a function of the image).
        max_open: pools open at once (least recently used idle pools close first).
        options: how environments are started.
        acquire_timeout_s: how long an acquire waits.
    """

    def __init__(self, backend: Backend, *, size: int | Callable[[str], int] = 8, max_open: int = 2,
                 options: StartOptions | None = None, acquire_timeout_s: float = 300.0) -> None:
        self.backend = backend
        self.size = size
        self.max_open = max_open
        self.options = options
        self.acquire_timeout_s = acquire_timeout_s
        self._pools: dict[str, AsyncEnvPool] = {}
        self._leased: dict[str, int] = {}
        self._used: dict[str, float] = {}
        self._lock = asyncio.Lock()
        self._closed = False

    async def _pool(self, image: str) -> AsyncEnvPool:
        async with self._lock:
            if self._closed:
                raise RuntimeError("the pools are closed")
            pool = self._pools.get(image)
            if pool is None:
                await self._make_room()
                size = self.size(image) if callable(self.size) else self.size
                pool = AsyncEnvPool(self.backend, image, max(1, size), options=self.options,
                                    acquire_timeout_s=self.acquire_timeout_s)
                await pool.start(wait=False)
                self._pools[image] = pool
                self._leased[image] = 0
            self._used[image] = time.monotonic()
            self._leased[image] += 1  # counted before the wait, so the pool is not closed under it
            return pool

    async def _make_room(self) -> None:
        idle = sorted((self._used[i], i) for i in self._pools if self._leased[i] == 0)
        while len(self._pools) >= self.max_open and idle:
            _, image = idle.pop(0)
            pool = self._pools.pop(image)
            del self._leased[image], self._used[image]
            await pool.close()

    async def acquire(self, image: str, timeout_s: float | None = None) -> Env:
        """A warm, clean environment of `image` (its pool opens on first use)."""
        pool = await self._pool(image)
        try:
            return await pool.acquire(timeout_s=timeout_s)
        except BaseException:
            self._leased[image] -= 1
            raise

    async def release(self, env: Env, *, discard: bool = False) -> None:
        """Give `env` back: reset in place, or (`discard`) removed and replaced."""
        pool = self._pools.get(env.image)
        if pool is None:  # its pool was closed meanwhile
            await asyncio.to_thread(env.stop)
            return
        try:
            if discard:
                await env.aclose()
                await asyncio.to_thread(pool.pool.discard, env)
            else:
                await pool.release(env)
        finally:
            self._leased[env.image] -= 1
            self._used[env.image] = time.monotonic()

    def open_images(self) -> list[str]:
        return list(self._pools)

    async def close(self) -> None:
        """Close every pool: every environment, leased ones included, is removed."""
        async with self._lock:
            self._closed = True
            pools, self._pools = list(self._pools.values()), {}
        await asyncio.gather(*(pool.close() for pool in pools), return_exceptions=True)
