"""`EnvPool`: warm environments for training fleets and evaluation jobs.

    with EnvPool(DockerBackend(), {"awm/a:latest": 4, "awm/b:latest": 4}) as pool:
        with pool.lease("awm/a:latest") as env:      # warm, clean, health-checked
            ... the agent works at env.mcp_url ...
            env.verify(3)
        # released: reset in place (milliseconds) and back in the pool

The pool keeps a target number of environments per image. `acquire` hands out an idle one
(starting replacements in the background); `release` resets it in place and returns it, or,
when the reset fails (crashed, killed, hung), throws it away and starts a replacement.
Teardown runs on background threads, off the caller's path; starts are bounded by
`max_concurrent_starts`. `AsyncEnvPool` is the same pool for asyncio code.

Dense episodes: with `slots=N` every container is started with `AWM_SLOTS=N` and serves N
episodes, and the pool hands out one `Env` per slot (`Env.slot_handle`: the slot's own
`mcp_url`, reset, verify and snapshot); `size` still counts episodes, so a pool of 32 with
`slots=4` runs 8 containers. A slot is reset alone when it is released. A container is shared
by its slots: found dead, all its slots leave the pool at once (leased ones raise
`EnvUnavailable` naming the container's state) and a replacement starts. A slot whose reset
fails while its container lives (a hung request) retires the container: its other episodes
finish undisturbed, it takes no new leases, a replacement starts, and it is removed when its
last leased slot comes back.
"""

from __future__ import annotations

import asyncio
import logging
import statistics
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field, replace
from enum import StrEnum
from types import TracebackType
from typing import Any, Self

from awm.core.errors import AWMError, EnvStartTimeout
from awm.runtime.base import Backend, StartOptions
from awm.runtime.env import Env

__all__ = ["AsyncEnvPool", "EnvPool", "PoolMetrics", "PoolState"]

log = logging.getLogger("awm")


class PoolState(StrEnum):
    NEW = "new"
    OPEN = "open"
    CLOSED = "closed"


@dataclass
class PoolMetrics:
    """Counters of a pool's life; `summary()` adds acquire-wait percentiles."""

    started: int = 0
    start_failures: int = 0
    acquires: int = 0
    releases: int = 0
    resets: int = 0
    reset_failures: int = 0
    unhealthy_on_acquire: int = 0
    replaced: int = 0
    acquire_wait_ms: deque[float] = field(default_factory=lambda: deque(maxlen=10_000))

    def summary(self) -> dict[str, Any]:
        waits = sorted(self.acquire_wait_ms)

        def pct(q: float) -> float | None:
            return round(waits[min(len(waits) - 1, int(q * len(waits)))], 3) if waits else None

        out = {k: v for k, v in vars(self).items() if k != "acquire_wait_ms"}
        out["acquire_wait_ms"] = {"p50": pct(0.5), "p95": pct(0.95), "max": waits[-1] if waits else None,
                                  "mean": round(statistics.fmean(waits), 3) if waits else None}
        return out


@dataclass(eq=False)
class _Container:
    """One started environment and the handles the pool leases from it (itself, or its slots)."""

    env: Env
    handles: list[Env]
    leased: int = 0
    retired: bool = False  # takes no new leases; removed when `leased` is back to 0


def _key(env: Env) -> tuple[str, int | None]:
    return env.id, env.slot


def _targets(images: str | Sequence[str] | Mapping[str, int], size: int) -> dict[str, int]:
    if isinstance(images, str):
        return {images: size}
    if isinstance(images, Mapping):
        return dict(images)
    return dict.fromkeys(images, size)


class EnvPool:
    """A pool of warm environments of one or more images.

    Args:
        backend: where environments run (`DockerBackend`, `KubernetesBackend`).
        images: one image, several (each gets `size`), or a mapping image -> target size.
        size: target number of environments per image.
        options: how each environment is started.
        max_concurrent_starts: starts in flight at once (the engine is the bottleneck).
        acquire_timeout_s: how long `acquire` waits for an environment by default.
        max_consecutive_start_failures: after this many failed starts in a row of one image,
            `acquire` of that image raises the last start error instead of waiting.
        slots: episodes per container (`AWM_SLOTS`); `size` counts episodes, so an image gets
            ceil(size / slots) containers and the pool leases one `Env` per slot.
    """

    def __init__(
        self,
        backend: Backend,
        images: str | Sequence[str] | Mapping[str, int],
        size: int = 4,
        *,
        options: StartOptions | None = None,
        max_concurrent_starts: int = 4,
        acquire_timeout_s: float = 120.0,
        max_consecutive_start_failures: int = 3,
        slots: int = 1,
    ) -> None:
        if slots < 1:
            raise ValueError(f"slots must be at least 1, not {slots}")
        self.backend = backend
        self.targets = _targets(images, size)
        self.slots = slots
        options = options or StartOptions()
        self.options = options if slots == 1 else replace(options, env={**options.env, "AWM_SLOTS": str(slots)})
        self.acquire_timeout_s = acquire_timeout_s
        self.max_consecutive_start_failures = max_consecutive_start_failures
        self.metrics = PoolMetrics()
        self.state = PoolState.NEW
        self._cond = threading.Condition()
        self._idle: dict[str, deque[Env]] = {image: deque() for image in self.targets}
        self._leased: dict[tuple[str, int | None], Env] = {}
        self._containers: dict[str, _Container] = {}  # by container id
        self._starting: dict[str, int] = dict.fromkeys(self.targets, 0)
        self._failures: dict[str, int] = dict.fromkeys(self.targets, 0)
        self._last_error: dict[str, AWMError] = {}
        self._listeners: list[Callable[[], None]] = []
        self._starter = ThreadPoolExecutor(max_concurrent_starts, thread_name_prefix="awm-pool-start")
        self._stopper = ThreadPoolExecutor(2, thread_name_prefix="awm-pool-stop")

    # -- lifecycle ------------------------------------------------------------------------

    def start(self, *, wait: bool = True, timeout_s: float | None = None) -> Self:
        """Open the pool and start its environments; with `wait`, until all are warm.

        Raises:
            AWMError: an image failed to start repeatedly (the pool is closed again).
            EnvStartTimeout: not all environments were warm within `timeout_s`.
        """
        with self._cond:
            if self.state is not PoolState.NEW:
                raise RuntimeError(f"Cannot start pool: it is {self.state.value}.")
            self.state = PoolState.OPEN
            self._fill()
        if not wait:
            return self
        budget = timeout_s or self.acquire_timeout_s
        deadline = time.monotonic() + budget
        while True:
            with self._cond:
                if all(len(self._idle[i]) >= n for i, n in self.targets.items()):
                    return self
                broken = self._broken_image()
                if broken is None and self._cond.wait(max(0.0, deadline - time.monotonic())):
                    continue
                stats = self.stats()
            self.close()
            if broken is not None:
                raise self._last_error[broken]
            raise EnvStartTimeout(f"pool not warm within {budget:g}s: {stats}")

    def close(self) -> None:
        """Remove every environment of the pool (leased ones included) and stop its threads."""
        with self._cond:
            if self.state is PoolState.CLOSED:
                return
            self.state = PoolState.CLOSED
            containers = list(self._containers.values())
            for q in self._idle.values():
                q.clear()
            self._leased.clear()
            self._containers.clear()
            self._cond.notify_all()
        for container in containers:
            self._teardown(container)
        self._starter.shutdown(wait=True, cancel_futures=True)  # starts that finish now are torn down
        self._stopper.shutdown(wait=True)
        self._notify()

    def __enter__(self) -> Self:
        return self.start() if self.state is PoolState.NEW else self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # -- leasing --------------------------------------------------------------------------

    def _image(self, image: str | None) -> str:
        if image is None:
            if len(self.targets) != 1:
                raise ValueError(f"this pool has several images; name one of {sorted(self.targets)}")
            return next(iter(self.targets))
        if image not in self.targets:
            raise ValueError(f"image {image!r} is not in this pool ({sorted(self.targets)})")
        return image

    def try_acquire(self, image: str | None = None) -> Env | None:
        """An idle, healthy environment of `image`, or None without waiting."""
        image = self._image(image)
        while True:
            with self._cond:
                if self.state is not PoolState.OPEN:
                    raise RuntimeError(f"Cannot acquire from pool: it is {self.state.value}.")
                if not self._idle[image]:
                    broken = image if self._is_broken(image) else None
                    if broken:
                        raise self._last_error[image]
                    self._fill()
                    return None
                env = self._idle[image].popleft()
                self._lease(env)
                self._fill()
            if env.healthy():
                return env
            log.warning("pool: %s found dead on acquire; replacing it", env.name)
            with self._cond:
                self.metrics.unhealthy_on_acquire += 1
                self._unlease(env)
                self._drop_container(env)

    def acquire(self, image: str | None = None, timeout_s: float | None = None) -> Env:
        """Wait for a warm, clean, healthy environment of `image` and lease it.

        Raises:
            EnvStartTimeout: none became available within the timeout.
            AWMError: the image's environments fail to start (the last start error).
        """
        image = self._image(image)
        timeout_s = self.acquire_timeout_s if timeout_s is None else timeout_s
        began = time.perf_counter()
        deadline = time.monotonic() + timeout_s
        while True:
            env = self.try_acquire(image)
            if env is not None:
                break
            with self._cond:
                waiting = not self._idle[image] and not self._is_broken(image) and self.state is PoolState.OPEN
                if waiting and not self._cond.wait(max(0.0, deadline - time.monotonic())):
                    raise EnvStartTimeout(
                        f"no environment of {image} within {timeout_s:g}s ({self.stats()[image]})",
                        image=image,
                    )
        with self._cond:
            self.metrics.acquires += 1
            self.metrics.acquire_wait_ms.append((time.perf_counter() - began) * 1000)
        return env

    def release(self, env: Env) -> None:
        """Reset `env` in place and return it to the pool; replace it if the reset fails."""
        with self._cond:
            if self._leased.get(_key(env)) is not env:
                raise ValueError(f"{env.name} is not leased from this pool")
            self.metrics.releases += 1
            container = self._containers.get(env.id)
            if self.state is not PoolState.OPEN or container is None or container.retired:
                self._unlease(env)  # its container is gone, or leaves when its last slot is back
                if env.container is not env:
                    env.stop()  # a slot handle: closes its client only
                return
        try:
            env.reset()
        except Exception as exc:
            # one slot's failure need not end its neighbours' episodes: a live container retires
            dead = self.slots == 1 or not env.container.healthy()
            log.warning("pool: reset of %s failed (%s); %s", env.name, exc,
                        "replacing it" if dead else "retiring its container")
            with self._cond:
                self.metrics.reset_failures += 1
                self._unlease(env)
                if env.container is not env:
                    env.stop()
                if dead:
                    self._drop_container(env)
                else:
                    self._retire(env)
            return
        with self._cond:
            self.metrics.resets += 1
            self._unlease(env)
            if self.state is PoolState.OPEN and env.id in self._containers:
                self._idle[env.image].append(env)
                self._cond.notify_all()
            elif env.container is not env:
                env.stop()
        self._notify()

    def discard(self, env: Env) -> None:
        """Give back a leased environment that must not be reused; a fresh one replaces it.

        With slots, its container retires: the other slots' episodes finish first.
        """
        with self._cond:
            if self._leased.get(_key(env)) is not env:
                raise ValueError(f"{env.name} is not leased from this pool")
            self._unlease(env)
            self._retire(env)
            if env.container is not env:
                env.stop()

    @contextmanager
    def lease(self, image: str | None = None, timeout_s: float | None = None) -> Iterator[Env]:
        """`acquire` then, whatever happens, `release`."""
        env = self.acquire(image, timeout_s)
        try:
            yield env
        finally:
            self.release(env)

    def stats(self) -> dict[str, dict[str, int]]:
        with self._cond:
            leased: dict[str, int] = {}
            for env in self._leased.values():
                leased[env.image] = leased.get(env.image, 0) + 1
            return {
                image: {"target": n, "idle": len(self._idle[image]), "leased": leased.get(image, 0),
                        "starting": self._starting[image] * self.slots}
                for image, n in self.targets.items()
            }

    # -- internals (called with the lock held unless said otherwise) ---------------------

    def _is_broken(self, image: str) -> bool:
        return self._failures[image] >= self.max_consecutive_start_failures

    def _broken_image(self) -> str | None:
        return next((i for i in self.targets if self._is_broken(i)), None)

    def _lease(self, env: Env) -> None:
        self._leased[_key(env)] = env
        self._containers[env.id].leased += 1

    def _unlease(self, env: Env) -> None:
        self._leased.pop(_key(env), None)
        container = self._containers.get(env.id)
        if container is not None:
            container.leased -= 1
            if container.retired and container.leased == 0:
                del self._containers[env.id]
                self._teardown(container)

    def _retire(self, env: Env) -> None:
        """Lease nothing more from `env`'s container; replace it; remove it once all are back."""
        container = self._containers.get(env.id)
        if container is None or container.retired:
            return
        container.retired = True
        self.metrics.replaced += 1
        self._idle[env.image] = deque(e for e in self._idle[env.image] if e.id != env.id)
        if container.leased == 0:
            del self._containers[env.id]
            self._teardown(container)
        self._fill()

    def _drop_container(self, env: Env) -> None:
        """`env`'s container is dead: all its slots leave the pool now and it is replaced."""
        container = self._containers.pop(env.id, None)
        if container is None:
            return
        self.metrics.replaced += 1
        self._idle[env.image] = deque(e for e in self._idle[env.image] if e.id != env.id)
        self._teardown(container)
        self._fill()

    def _fill(self) -> None:
        if self.state is not PoolState.OPEN:
            return
        for image, target in self.targets.items():
            if self._is_broken(image):
                continue
            want = -(-target // self.slots)  # containers
            have = self._starting[image]
            have += sum(1 for c in self._containers.values() if c.env.image == image and not c.retired)
            for _ in range(want - have):
                self._starting[image] += 1
                self._starter.submit(self._start_one, image)

    def _start_one(self, image: str) -> None:  # on a starter thread, without the lock
        try:
            env = self.backend.start(image, self.options)
        except AWMError as exc:
            log.warning("pool: start of %s failed: %s", image, exc)
            with self._cond:
                self._starting[image] -= 1
                self.metrics.start_failures += 1
                self._failures[image] += 1
                self._last_error[image] = exc
                self._cond.notify_all()
                if not self._is_broken(image):
                    self._fill()
            self._notify()
            return
        handles = [env] if self.slots == 1 else [env.slot_handle(k) for k in range(self.slots)]
        with self._cond:
            self._starting[image] -= 1
            self._failures[image] = 0
            self.metrics.started += 1
            if self.state is PoolState.OPEN:
                self._containers[env.id] = _Container(env, handles)
                self._idle[image].extend(handles)
                self._cond.notify_all()
            else:
                self._teardown(_Container(env, handles))
        self._notify()

    def _teardown(self, container: _Container) -> None:
        # Leased slot handles stay usable (their calls then name the container's state); they
        # are closed when they come back.
        idle = [h for h in container.handles if self._leased.get(_key(h)) is not h]

        def stop() -> None:
            for handle in idle:
                handle.stop()
            container.env.stop()

        try:
            self._stopper.submit(stop)
        except RuntimeError:  # the stopper is shut down: stop here
            stop()

    def _notify(self) -> None:  # without the lock
        for listener in list(self._listeners):
            listener()


class AsyncEnvPool:
    """The same pool for asyncio code: `await pool.acquire()`, `async with pool.lease()`.

    Blocking work (starting, resetting) runs on threads; waiting for an environment does not
    hold a thread.
    """

    def __init__(self, backend: Backend, images: str | Sequence[str] | Mapping[str, int], size: int = 4,
                 **kwargs: Any) -> None:
        self.pool = EnvPool(backend, images, size, **kwargs)
        self._event: asyncio.Event | None = None

    @property
    def metrics(self) -> PoolMetrics:
        return self.pool.metrics

    async def start(self, *, wait: bool = True) -> Self:
        loop = asyncio.get_running_loop()
        self._event = asyncio.Event()
        event = self._event
        def wake() -> None:
            loop.call_soon_threadsafe(event.set)

        self.pool._listeners.append(wake)
        await asyncio.to_thread(self.pool.start, wait=wait)
        return self

    async def acquire(self, image: str | None = None, timeout_s: float | None = None) -> Env:
        assert self._event is not None, "start the pool first (async with AsyncEnvPool(...))"
        timeout_s = self.pool.acquire_timeout_s if timeout_s is None else timeout_s
        began = time.perf_counter()
        deadline = time.monotonic() + timeout_s
        while True:
            self._event.clear()  # before looking, so a release in between is not missed
            env = await asyncio.to_thread(self.pool.try_acquire, image)
            if env is not None:
                with self.pool._cond:
                    self.pool.metrics.acquires += 1
                    self.pool.metrics.acquire_wait_ms.append((time.perf_counter() - began) * 1000)
                return env
            try:
                await asyncio.wait_for(self._event.wait(), max(0.0, deadline - time.monotonic()))
            except TimeoutError:
                raise EnvStartTimeout(f"no environment within {timeout_s:g}s ({self.pool.stats()})") from None

    async def release(self, env: Env) -> None:
        await env.aclose()  # the next lease may be on another loop
        await asyncio.to_thread(self.pool.release, env)

    @asynccontextmanager
    async def lease(self, image: str | None = None, timeout_s: float | None = None) -> AsyncIterator[Env]:
        env = await self.acquire(image, timeout_s)
        try:
            yield env
        finally:
            await self.release(env)

    async def close(self) -> None:
        await asyncio.to_thread(self.pool.close)

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
