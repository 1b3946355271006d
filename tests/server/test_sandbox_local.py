"""The verifier sandbox on this machine's kernel, attacked from inside the verifier.

`run_verifier` is the same code the image runs; here its child is a real process confined by
real Landlock, so each attack either fails in the kernel or the test fails."""

from __future__ import annotations

import os
import socket
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from awm_server import landlock
from awm_server.sandbox import Limits, run_verifier

ABI = landlock.abi_version()
pytestmark = pytest.mark.skipif(ABI < 6, reason=f"this kernel's Landlock ABI is {ABI}; these attacks need >= 6")

ATTACKS = '''
import errno, os, signal, socket, sqlite3
def attack(initial, final, target):
    seen = {}
    def attempt(name, fn):
        try:
            fn()
            seen[name] = "done"
        except OSError as exc:
            seen[name] = errno.errorcode.get(exc.errno, str(exc.errno))
        except sqlite3.Error as exc:
            seen[name] = "sqlite: " + str(exc)
    attempt("read_outside", lambda: open(target["secret"]).read())
    attempt("write_outside", lambda: open(target["outside"], "w").write("x"))
    attempt("write_copy", lambda: open(final, "r+b").write(b"x"))
    attempt("sql_write_copy", lambda: sqlite3.connect(final).execute("create table evil(x)"))
    attempt("proc_environ", lambda: open("/proc/1/environ", "rb").read())
    attempt("tcp_connect", lambda: socket.create_connection(("127.0.0.1", target["port"]), timeout=2))
    attempt("tcp_bind", lambda: socket.socket().bind(("127.0.0.1", 0)))
    attempt("signal_parent", lambda: os.kill(target["parent"], 0))
    attempt("scratch_write", lambda: open("scratch.bin", "wb").write(b"x" * 1024))
    seen["scratch"] = os.getcwd()
    seen["rows"] = sqlite3.connect(initial).execute("select count(*) from t").fetchone()[0]
    return seen
'''


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        yield server


def _db(path: Path) -> Path:
    with sqlite3.connect(path) as conn:
        conn.execute("create table t(x)")
        conn.execute("insert into t values (1)")
    conn.close()
    path.chmod(0o444)
    return path


def test_verifier_attacks_fail_in_the_kernel(tmp_path: Path, listener: socket.socket) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("host secret")
    initial, final = _db(tmp_path / "initial.db"), _db(tmp_path / "final.db")
    before = final.read_bytes()
    target = {"secret": str(secret), "outside": str(tmp_path / "planted.txt"),
              "port": listener.getsockname()[1], "parent": os.getpid()}
    scratch_root = tmp_path / "scratch"
    scratch_root.mkdir()
    outcome = run_verifier(ATTACKS, "attack", [str(initial), str(final), target], scratch_root=scratch_root)
    assert outcome.error is None, outcome
    assert outcome.landlock_abi == ABI
    seen = outcome.value
    assert seen["rows"] == 1  # the copies it was given stay readable
    assert seen["scratch_write"] == "done"  # and its own scratch folder writable
    for attack in ("read_outside", "write_outside", "write_copy", "proc_environ", "tcp_connect", "tcp_bind"):
        assert seen[attack] == "EACCES", (attack, seen)
    assert seen["sql_write_copy"].startswith("sqlite: attempt to write a readonly database")
    assert seen["signal_parent"] == "EPERM"
    assert not (tmp_path / "planted.txt").exists()
    assert final.read_bytes() == before
    assert list(scratch_root.iterdir()) == []  # its scratch folder is gone


def test_verifier_printing_without_end_is_stopped_at_the_cap(tmp_path: Path) -> None:
    flood = (
        "import sys\ndef f(a, b, c):\n"
        "    while True:\n        sys.__stdout__.write('x' * 65536)\n        print('y' * 65536)\n"
    )
    outcome = run_verifier(flood, "f", [None, None, None], limits=Limits(output_bytes=256 * 1024, timeout_s=20),
                           scratch_root=tmp_path)
    assert outcome.error == "verifier printed more than 262144 bytes (the output limit) and was stopped"
    assert not outcome.timed_out
    assert list(tmp_path.iterdir()) == []


def test_missing_protections_are_named_per_abi() -> None:
    assert landlock.missing(7) == []
    assert landlock.missing(6) == []
    assert [m.split(":")[0] for m in landlock.missing(0)] == [
        "filesystem", "truncate", "tcp", "device_ioctl", "signals", "abstract_unix_sockets"]
    assert [m.split(":")[0] for m in landlock.missing(4)] == ["device_ioctl", "signals", "abstract_unix_sockets"]


def test_read_only_paths_refuse_writes(tmp_path: Path) -> None:
    code = (
        "import sys, errno\n"
        f"sys.path.insert(0, {str(Path(landlock.__file__).parent.parent)!r})\n"
        "from awm_server import landlock\n"
        f"landlock.confine(read=[sys.base_prefix, sys.prefix, '/usr', '/lib', {str(tmp_path)!r}], write=[])\n"
        f"print(open({str(tmp_path / 'r.txt')!r}).read())\n"
        "try:\n"
        f"    open({str(tmp_path / 'w.txt')!r}, 'w')\n"
        "except PermissionError:\n"
        "    print('denied')\n"
    )
    (tmp_path / "r.txt").write_text("readable")
    out = subprocess.run([sys.executable, "-I", "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["readable", "denied"]
    assert not (tmp_path / "w.txt").exists()
