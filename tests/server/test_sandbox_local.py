"""The verifier sandbox on this machine's kernel, attacked from inside the verifier.

`run_verifier` is the same code the image runs; here its child is a real process confined by
real Landlock, so each attack either fails in the kernel or the test fails."""

from __future__ import annotations

import json
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
from tests.server.syscalls import SYSCALLS

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
    assert outcome.seccomp is True
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


BEYOND_LANDLOCK = SYSCALLS + '''
import asyncio, errno, json, os, socket, sqlite3, threading
def attack(initial, final, target):
    seen = {}
    def attempt(name, fn):
        try:
            seen[name] = "done: " + repr(fn())[:100]
        except OSError as exc:
            seen[name] = errno.errorcode.get(exc.errno, str(exc.errno))
    attempt("udp_send", lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b"leak", tuple(target["udp"])))
    attempt("unix_connect", lambda: socket.socket(socket.AF_UNIX).connect(target["unix"]))
    for family in ("AF_INET", "AF_INET6", "AF_UNIX", "AF_NETLINK", "AF_PACKET"):
        attempt("socket_" + family, lambda: socket.socket(getattr(socket, family), socket.SOCK_DGRAM).close())
    attempt("io_uring_setup", io_uring)
    attempt("ptrace_attach", lambda: syscall("ptrace", 16, target["parent"], 0, 0))  # PTRACE_ATTACH
    attempt("process_vm_readv", lambda: syscall("process_vm_readv", target["parent"], None, 0, None, 0, 0))
    attempt("bpf", lambda: syscall("bpf", 5, None, 0))  # BPF_PROG_LOAD
    attempt("userfaultfd", lambda: syscall("userfaultfd", 0))
    attempt("perf_event_open", lambda: syscall("perf_event_open", None, 0, -1, -1, 0))
    attempt("keyctl", lambda: syscall("keyctl", 0, -3, 0))  # the session keyring's id
    attempt("unshare_user", lambda: syscall("unshare", 0x10000000))  # CLONE_NEWUSER
    attempt("clone_newuser", lambda: syscall("clone", 0x10000000 | 17, 0, 0, 0, 0))
    attempt("setns", lambda: syscall("setns", 0, 0))
    attempt("mount", lambda: syscall("mount", b"none", b"/tmp", b"tmpfs", 0, None))
    attempt("personality", lambda: syscall("personality", 0x0040000))  # ADDR_NO_RANDOMIZE
    # what honest verifiers use still works
    attempt("socketpair", lambda: [s.close() for s in socket.socketpair()] and None)
    attempt("asyncio", lambda: asyncio.run(asyncio.sleep(0, "ok")))
    def in_a_thread():
        box = []
        worker = threading.Thread(target=lambda: box.append(
            sqlite3.connect(initial).execute("select count(*) from t").fetchone()[0]))
        worker.start()
        worker.join()
        return box
    attempt("thread", in_a_thread)
    return seen
'''


@pytest.fixture
def udp_listener() -> Iterator[socket.socket]:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as server:
        server.bind(("127.0.0.1", 0))
        server.settimeout(10)
        yield server


@pytest.fixture
def unix_listener(tmp_path: Path) -> Iterator[str]:
    path = str(tmp_path / "listening.sock")
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(path)
        server.listen()
        yield path


def _first_datagram_after(udp: socket.socket) -> bytes:
    """What `udp` received first, once a marker sent now has arrived: loopback UDP is queued in
    the order it was sent, so an earlier datagram from the verifier would come before it."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
        client.sendto(b"marker", udp.getsockname())
    return udp.recv(64)


def test_verifier_cannot_use_sockets_io_uring_or_ptrace(
    tmp_path: Path, udp_listener: socket.socket, unix_listener: str
) -> None:
    initial = _db(tmp_path / "initial.db")
    target = {"udp": udp_listener.getsockname(), "unix": unix_listener, "parent": os.getpid()}
    outcome = run_verifier(BEYOND_LANDLOCK, "attack", [str(initial), str(initial), target],
                           limits=Limits(processes=8), scratch_root=tmp_path)  # threads: as root or not
    assert outcome.error is None, outcome
    assert outcome.seccomp is True
    seen = outcome.value
    denied = ["udp_send", "unix_connect", "io_uring_setup", "ptrace_attach", "process_vm_readv", "bpf",
              "userfaultfd", "perf_event_open", "keyctl", "unshare_user", "clone_newuser", "setns", "mount",
              "personality", *(f"socket_{f}" for f in ("AF_INET", "AF_INET6", "AF_UNIX", "AF_NETLINK", "AF_PACKET"))]
    assert {name: seen[name] for name in denied} == dict.fromkeys(denied, "EACCES")  # the filter's errno
    assert _first_datagram_after(udp_listener) == b"marker"  # nothing came from the verifier
    assert seen["socketpair"] == "done: None"
    assert seen["asyncio"] == "done: 'ok'"
    assert seen["thread"] == "done: [1]"  # threads start (clone3 falls back to clone) and read the copy


def test_landlock_alone_leaves_udp_unix_sockets_and_io_uring_open(
    tmp_path: Path, udp_listener: socket.socket, unix_listener: str, listener: socket.socket
) -> None:
    """Why the filter is there: the same calls under Landlock only (TCP is still refused)."""
    code = SYSCALLS + (
        "import json, socket, sys\n"
        f"sys.path.insert(0, {str(Path(landlock.__file__).parent.parent)!r})\n"
        "from awm_server import landlock\n"
        "landlock.confine(read=[sys.base_prefix, sys.prefix, '/usr', '/lib', '/lib64'], write=[])\n"
        "seen = {}\n"
        f"socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b'leak', {udp_listener.getsockname()!r})\n"
        f"socket.socket(socket.AF_UNIX).connect({unix_listener!r})\n"
        "seen['unix_connect'] = 'done'\n"
        "seen['io_uring_fd'] = io_uring() > 2\n"
        "try:\n"
        f"    socket.create_connection(('127.0.0.1', {listener.getsockname()[1]}), timeout=5)\n"
        "except PermissionError:\n"
        "    seen['tcp'] = 'EACCES'\n"
        "print(json.dumps(seen))\n"
    )
    out = subprocess.run([sys.executable, "-I", "-c", code], capture_output=True, text=True, check=True).stdout
    assert json.loads(out) == {"unix_connect": "done", "io_uring_fd": True, "tcp": "EACCES"}
    assert udp_listener.recv(64) == b"leak"


def test_where_seccomp_cannot_be_installed_the_verifier_runs_and_says_so(tmp_path: Path) -> None:
    """A 64-bit Python under the 32-bit personality (uname says i686): the filter knows no such
    architecture, so the child runs the verifier without it and reports that."""
    python = tmp_path / "python-linux32"
    python.write_text(f"#!/bin/sh\nexec setarch linux32 {sys.executable} \"$@\"\n")
    python.chmod(0o755)
    code = ("import socket\ndef f(a, b, c):\n"
            "    socket.socket(socket.AF_INET, socket.SOCK_DGRAM).close()\n    return 'ran'\n")
    outcome = run_verifier(code, "f", [None, None, None], python=str(python), scratch_root=tmp_path)
    assert outcome.error is None, outcome
    assert outcome.value == "ran"  # a UDP socket: nothing filtered it
    assert outcome.seccomp is False
    assert outcome.landlock_abi == ABI  # Landlock still confines it
    assert "verifier sandbox without seccomp: [Errno 22] seccomp: no filter for architecture 'i686'" in outcome.stderr


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
