"""The reset gate, in process: requests share it, a reset drains them and runs alone.

Ordering is forced with events, never with sleeps: each step waits for the previous one to be
observable, and `_settle` only lets every ready task run (no wall-clock time is measured).
"""

from __future__ import annotations

import asyncio

import pytest

from awm_server.gate import DrainTimeout, Gate


async def _settle() -> None:
    """Let every task that can make progress do so."""
    for _ in range(20):
        await asyncio.sleep(0)


async def _request(gate: Gate, name: str, log: list[str], release: asyncio.Event) -> None:
    async with gate.shared():
        log.append(f"{name} in")
        await release.wait()
    log.append(f"{name} out")


async def _reset(gate: Gate, log: list[str], release: asyncio.Event | None = None) -> None:
    async with gate.exclusive(drain_timeout_s=30):
        log.append("reset in")
        if release is not None:
            await release.wait()
    log.append("reset out")


def test_a_reset_waits_for_requests_in_flight_and_later_requests_wait_for_it() -> None:
    async def scenario() -> list[str]:
        gate, log = Gate(), list[str]()
        first_done, reset_done, second_done = asyncio.Event(), asyncio.Event(), asyncio.Event()
        first = asyncio.create_task(_request(gate, "first", log, first_done))
        await _settle()
        assert gate.in_flight == 1
        reset = asyncio.create_task(_reset(gate, log, reset_done))
        await _settle()
        assert "reset in" not in log  # draining: the first request still runs
        second = asyncio.create_task(_request(gate, "second", log, second_done))
        await _settle()
        assert "second in" not in log  # the gate is closed while the reset waits
        first_done.set()
        await _settle()
        assert log == ["first in", "first out", "reset in"]
        assert gate.in_flight == 0  # the reset runs alone
        reset_done.set()
        second_done.set()
        await asyncio.gather(first, reset, second)
        return log

    assert asyncio.run(scenario()) == ["first in", "first out", "reset in", "reset out", "second in", "second out"]


def test_requests_share_the_gate() -> None:
    async def scenario() -> int:
        gate, log, release = Gate(), list[str](), asyncio.Event()
        tasks = [asyncio.create_task(_request(gate, str(i), log, release)) for i in range(5)]
        await _settle()
        together = gate.in_flight
        release.set()
        await asyncio.gather(*tasks)
        assert gate.in_flight == 0
        return together

    assert asyncio.run(scenario()) == 5


def test_resets_queue_behind_each_other() -> None:
    async def scenario() -> list[str]:
        gate, log = Gate(), list[str]()
        hold = asyncio.Event()
        first = asyncio.create_task(_reset(gate, log, hold))
        await _settle()
        second = asyncio.create_task(_reset(gate, log))
        await _settle()
        assert log == ["reset in"]  # the second waits for the first to leave
        hold.set()
        await asyncio.gather(first, second)
        return log

    assert asyncio.run(scenario()) == ["reset in", "reset out", "reset in", "reset out"]


def test_a_hung_request_makes_the_reset_give_up_and_reopens_the_gate() -> None:
    async def scenario() -> None:
        gate, log = Gate(), list[str]()
        never = asyncio.Event()  # the hung handler never finishes
        hung = asyncio.create_task(_request(gate, "hung", log, never))
        await _settle()
        with pytest.raises(DrainTimeout, match="1 request\\(s\\) still in flight") as caught:
            async with gate.exclusive(drain_timeout_s=0.01):
                log.append("reset in")
        assert caught.value.in_flight == 1
        assert "reset in" not in log
        # The gate is open again: a new request enters beside the hung one.
        done = asyncio.Event()
        done.set()
        await asyncio.wait_for(_request(gate, "next", log, done), timeout=5)
        assert log == ["hung in", "next in", "next out"]
        hung.cancel()
        with pytest.raises(asyncio.CancelledError):
            await hung
        assert gate.in_flight == 0

    asyncio.run(scenario())
