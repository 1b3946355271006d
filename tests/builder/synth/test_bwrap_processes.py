"""The bubblewrap probe's process limit and identity, attacked by generated modules.

As root (CI), the sandbox's code runs as a dedicated uid (`SANDBOX_UID_BASE` + a slot) and
RLIMIT_NPROC holds; as an ordinary user it runs as that user, with the user's count plus the
budget as the limit. The tests find the sandbox's processes on this host as the processes of
that uid in another pid namespace than this one, and watch them from outside:

* a module that forks without end at import stops at the limit: the host's count of the
  sandbox's processes never exceeds `processes`, the probe fails naming the scenario and the
  limit, and nothing is left running;
* a module that sleeps at import runs as the unprivileged uid outside, without capabilities;
* a fork bomb in one probe does not starve a concurrent honest probe (each has its own uid);
* a module that swaps its results file for a link to a host file does not get it read: only
  regular files come back from the sandbox;
* where bwrap cannot set up as root without a user namespace, the probe still runs and says
  that it has no process limit.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import pytest

from awm.builder.synth.bwrap import SANDBOX_UID_BASE, BubblewrapProber
from awm.builder.synth.probe import ProbeResult, ProbeRun

# A range of our own per test process: other runs on this host (another checkout's tests, a
# real `awm gen`) use the default base, so their processes are never counted as this test's.
UID_BASE = SANDBOX_UID_BASE + 1000 * (1 + os.getpid() % 1000)
WAIT_S = 120.0  # a generous bound for the sandbox to reach a state; never the thing tested

FORK_BOMB = '''
import os, time
from fastapi import FastAPI
app = FastAPI()
try:
    while True:
        if os.fork() == 0:
            time.sleep(3600)
            os._exit(0)
except BlockingIOError:
    os.wait()  # hold every process until the test has counted them and ended one child
    raise
'''

SLEEPER = '''
import time
from fastapi import FastAPI
app = FastAPI()
time.sleep(3600)
'''

HONEST = '''
import os
from fastapi import FastAPI
from sqlalchemy import create_engine, text
engine = create_engine(os.getenv("DATABASE_PATH", "sqlite:///./app.db"))
app = FastAPI()

@app.get("/users", operation_id="count_users", summary="s", description="d")
def count_users():
    with engine.connect() as conn:
        return {"users": conn.execute(text("SELECT COUNT(*) FROM users")).scalar()}

if __name__ == "__main__":
    import uvicorn
    uvicorn.run(app, host="127.0.0.1", port=8000)
'''

SWAP_LINK = '''
import os
from fastapi import FastAPI
app = FastAPI()
os.unlink("/y/results.jsonl")
os.symlink({secret!r}, "/y/results.jsonl")  # read on the host, it would be the host's file
os._exit(0)
'''


@pytest.fixture
def prober() -> BubblewrapProber:
    p = BubblewrapProber(timeout_s=WAIT_S, uid_base=UID_BASE)
    assert p.missing is None, p.missing  # this machine gives every protection
    assert p.drops_to_uid == (os.geteuid() == 0)
    return p


def _uid(prober: BubblewrapProber, slot: int = 0) -> int:
    """The uid outside of the sandbox's code: a dedicated one as root, else this user's."""
    return prober.uid_base + slot if prober.drops_to_uid else os.getuid()


def _status(pid: int) -> dict[str, str]:
    with open(f"/proc/{pid}/status") as fh:
        return {k: v.strip() for k, v in (line.split(":", 1) for line in fh if ":" in line)}


def _sandboxed(uid: int) -> dict[int, dict[str, str]]:
    """Processes of `uid` in another pid namespace than ours, with their status and cmdline."""
    ours = os.readlink("/proc/self/ns/pid")
    found = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            if os.readlink(f"/proc/{name}/ns/pid") == ours:
                continue
            status = _status(int(name))
            if int(status["Uid"].split()[0]) != uid:
                continue
            status["cmdline"] = Path(f"/proc/{name}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            status["wchan"] = Path(f"/proc/{name}/wchan").read_text()
        except (OSError, KeyError):  # it ended meanwhile
            continue
        found[int(name)] = status
    return found


def _tasks(processes: dict[int, dict[str, str]]) -> int:
    return sum(int(s["Threads"]) for s in processes.values())


def _wait_for(
    future: Future[ProbeResult], uid: int, ready: Callable[[dict[int, dict[str, str]]], bool]
) -> tuple[dict[int, dict[str, str]], int]:
    """Watch the sandbox until `ready(processes)`; returns them and the most tasks ever seen."""
    peak, deadline = 0, time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        seen = _sandboxed(uid)
        peak = max(peak, _tasks(seen))
        if ready(seen):
            return seen, peak
        assert not future.done(), f"the probe ended first: {future.result()}"
    raise AssertionError(f"the sandbox did not get there within {WAIT_S:g}s")


def _bomb_parent(seen: dict[int, dict[str, str]]) -> int | None:
    """The fork bomb once it met the limit: the probe process waiting for a child."""
    return next((pid for pid, s in seen.items() if "awm_server" in s["cmdline"] and s["wchan"] == "do_wait"
                 and any(c["PPid"] == str(pid) for c in seen.values())), None)


def _end_bomb(seen: dict[int, dict[str, str]]) -> None:
    parent = _bomb_parent(seen)
    child = next(pid for pid, s in seen.items() if s["PPid"] == str(parent))
    os.kill(child, signal.SIGKILL)  # its parent's wait returns: the import fails


def test_a_fork_bomb_stops_at_the_process_limit_and_leaves_nothing_running(
    prober: BubblewrapProber, seed: Path, tmp_path: Path,
) -> None:
    uid = _uid(prober)
    with ThreadPoolExecutor(1) as pool:
        future = pool.submit(prober.probe, "forkbomb_shop", FORK_BOMB, seed, [], tmp_path / "out")
        seen, peak = _wait_for(future, uid, lambda s: _bomb_parent(s) is not None)
        # the kernel refused the fork at the limit: the sandbox holds at most `processes` tasks
        assert peak <= prober.processes
        if prober.drops_to_uid:  # the uid is the sandbox's alone: it holds exactly the limit
            assert _tasks(seen) == prober.processes
        _end_bomb(seen)
        result = future.result()
    assert result.import_error is not None
    assert "BlockingIOError" in result.import_error
    assert f"scenario 'forkbomb_shop': the module met the probe's limit of {prober.processes} processes" \
        in (result.error or "")
    assert _sandboxed(uid) == {}  # the pid namespace went with the probe, every child with it


def test_the_sandboxed_code_runs_as_an_unprivileged_uid_outside(
    prober: BubblewrapProber, seed: Path, tmp_path: Path,
) -> None:
    uid = _uid(prober)
    with ThreadPoolExecutor(1) as pool:
        future = pool.submit(prober.probe, "whoami_shop", SLEEPER, seed, [], tmp_path / "out")
        seen, _ = _wait_for(future, uid, lambda s: any("awm_server" in p["cmdline"] for p in s.values()))
        pid, status = next((pid, s) for pid, s in seen.items() if "awm_server" in s["cmdline"])
        os.kill(pid, signal.SIGKILL)
        result = future.result()
    assert status["Uid"].split() == [str(uid)] * 4  # real, effective, saved, file system
    assert status["Gid"].split() == [str(uid if prober.drops_to_uid else os.getgid())] * 4
    assert uid != 0
    assert status["CapEff"] == status["CapPrm"] == "0" * 16
    assert status["NoNewPrivs"] == "1"
    assert "code 137" in (result.error or "")  # bwrap reports the killed probe as 128 + 9


def test_a_fork_bomb_does_not_starve_a_concurrent_probe(prober: BubblewrapProber, seed: Path, tmp_path: Path) -> None:
    if not prober.drops_to_uid:
        pytest.skip("as an ordinary user, concurrent probes share the user's room (BubblewrapProber._process_limit)")
    run = ProbeRun(id="t0", calls=[{"tool": "count_users", "arguments": {}}])
    with ThreadPoolExecutor(2) as pool:
        bomb = pool.submit(prober.probe, "forkbomb_shop", FORK_BOMB, seed, [], tmp_path / "bomb")
        seen, _ = _wait_for(bomb, _uid(prober), lambda s: _bomb_parent(s) is not None)
        honest = prober.probe("honest_shop", HONEST, seed, [run], tmp_path / "honest")  # while the bomb holds its limit
        _end_bomb(seen)
        bombed = bomb.result()
    assert honest.error is None, honest.error
    assert [(c.is_error, json.loads(c.text)) for c in honest.calls] == [(False, {"users": 1})]
    assert bombed.import_error is not None


def test_a_link_in_the_output_folder_is_not_followed_on_the_host(
    prober: BubblewrapProber, seed: Path, tmp_path: Path,
) -> None:
    secret = tmp_path / "host-secret.jsonl"  # a host file the module names but cannot see
    secret.write_text('{"kind": "tools", "tools": ["read_from_the_host"]}\n')
    code = SWAP_LINK.format(secret=str(secret))
    result = prober.probe("swap_shop", code, seed, [], tmp_path / "out")
    assert result.tools == []
    assert "produced no result" in (result.error or "")


def test_where_root_cannot_set_up_without_a_user_namespace_the_missing_limit_is_said(
    seed: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
) -> None:
    if os.geteuid() != 0:
        pytest.skip("only root sets up without a user namespace")
    # the real bwrap, refusing what a container without CAP_SYS_ADMIN refuses
    fake = tmp_path / "bin" / "bwrap"
    fake.parent.mkdir()
    fake.write_text(f'#!/bin/sh\ncase " $* " in *" --unshare-user "*) exec {shutil.which("bwrap")} "$@";; esac\n'
                    'echo "bwrap: Creating new namespace failed: Operation not permitted" >&2\nexit 1\n')
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake.parent}:{os.environ['PATH']}")
    prober = BubblewrapProber(timeout_s=WAIT_S)
    assert not prober.drops_to_uid
    assert prober.missing is not None
    assert "no process-count limit" in prober.missing
    assert "Operation not permitted" in prober.missing
    assert "no process-count limit" in prober.describe()
    assert "no process-count limit" in caplog.text
    run = ProbeRun(id="t0", calls=[{"tool": "count_users", "arguments": {}}])
    result = prober.probe("honest_shop", HONEST, seed, [run], tmp_path / "out")  # it still probes, as before
    assert result.error is None, result.error
    assert [json.loads(c.text) for c in result.calls] == [{"users": 1}]
