"""The seccomp program itself, run for both architectures by a classic-BPF interpreter.

The kernel runs it only for this machine's architecture (the attack tests in
test_sandbox_local.py and tests/image/test_sandbox.py); here every block of the assembled
bytes is executed against `struct seccomp_data` as the kernel would fill it."""

from __future__ import annotations

import errno
import struct

import pytest

from awm_server import seccomp

X86_64, AARCH64, I386 = 0xC000003E, 0xC00000B7, 0x40000003
ALLOW, KILL = 0x7FFF0000, 0x80000000
EACCES = 0x00050000 | errno.EACCES  # SECCOMP_RET_ERRNO with its errno


def run(nr: int, arch: int, arg0: int = 0) -> int:
    """Interpret the program (the instructions it uses) on one system call."""
    data = struct.pack("<iIQ6Q", nr, arch, 0x7F0000001000, arg0, 0, 0, 0, 0, 0)
    code = seccomp.program()
    prog = [struct.unpack("=HBBI", code[i : i + 8]) for i in range(0, len(code), 8)]
    acc, pc = 0, 0
    while True:
        op, jt, jf, k = prog[pc]
        pc += 1
        if op == 0x20:  # ld [k]
            acc = struct.unpack_from("<I", data, k)[0]
        elif op in (0x15, 0x35, 0x45):  # jeq, jge, jset #k
            taken = acc == k if op == 0x15 else acc >= k if op == 0x35 else bool(acc & k)
            pc += jt if taken else jf
        elif op == 0x06:  # ret #k
            return int(k)
        else:
            raise AssertionError(f"instruction {op:#x} the interpreter does not know")


# (name, x86_64 number, aarch64 number)
DENIED = [
    ("socket", 41, 198), ("ptrace", 101, 117), ("process_vm_readv", 310, 270), ("process_vm_writev", 311, 271),
    ("bpf", 321, 280), ("userfaultfd", 323, 282), ("perf_event_open", 298, 241), ("keyctl", 250, 219),
    ("add_key", 248, 217), ("request_key", 249, 218), ("unshare", 272, 97), ("setns", 308, 268),
    ("mount", 165, 40), ("umount2", 166, 39), ("pivot_root", 155, 41), ("chroot", 161, 51),
    ("personality", 135, 92), ("io_uring_setup", 425, 425), ("io_uring_enter", 426, 426),
    ("io_uring_register", 427, 427), ("fsopen", 430, 430), ("open_tree", 428, 428), ("move_mount", 429, 429),
    ("pidfd_getfd", 438, 438), ("mount_setattr", 442, 442),
]
# What CPython and sqlite3 use: read, write, openat, close, mmap, futex, socketpair, seccomp
ALLOWED = [("read", 0, 63), ("write", 1, 64), ("openat", 257, 56), ("close", 3, 57), ("mmap", 9, 222),
           ("futex", 202, 98), ("socketpair", 53, 199), ("seccomp", 317, 277), ("exit_group", 231, 94)]


@pytest.mark.parametrize(("name", "x86", "arm"), DENIED)
def test_denied_calls_fail_with_eacces_on_both_architectures(name: str, x86: int, arm: int) -> None:
    assert run(x86, X86_64) == EACCES, name
    assert run(arm, AARCH64) == EACCES, name


@pytest.mark.parametrize(("name", "x86", "arm"), ALLOWED)
def test_everything_else_is_allowed(name: str, x86: int, arm: int) -> None:
    assert run(x86, X86_64) == ALLOW, name
    assert run(arm, AARCH64) == ALLOW, name


def test_each_architecture_uses_its_own_numbers() -> None:
    # 41 is socket on x86_64 but pivot_root on aarch64; 198 is socket on aarch64 only
    assert run(198, X86_64) == ALLOW  # socket's aarch64 number is another call on x86_64
    assert run(101, AARCH64) == ALLOW  # and ptrace's x86_64 number is nanosleep on aarch64


def test_x32_calls_and_unknown_architectures_are_refused() -> None:
    x32 = 0x40000000
    assert run(x32 + 0, X86_64) == EACCES  # x32 read
    assert run(x32 + 41, X86_64) == EACCES  # x32 socket
    assert run(x32 | 0x3FFFFFFF, X86_64) == EACCES
    assert run(359, I386) == KILL  # socket through int 0x80
    assert run(3, I386) == KILL  # even a read: the numbers mean other calls there
    assert run(0, 0xC00000B7 ^ 0x80000000) == KILL  # big-endian aarch64


def test_clone_with_a_namespace_flag_is_refused_and_clone3_falls_back() -> None:
    thread = 0x3D0F00  # CLONE_VM|FS|FILES|SIGHAND|THREAD|SYSVSEM|SETTLS|PARENT_SETTID|CHILD_CLEARTID
    for arch, nr in ((X86_64, 56), (AARCH64, 220)):
        assert run(nr, arch, thread) == ALLOW
        assert run(nr, arch, 17) == ALLOW  # fork: SIGCHLD only
        for flag in (0x20000, 0x02000000, 0x04000000, 0x08000000, 0x10000000, 0x20000000, 0x40000000):
            assert run(nr, arch, 17 | flag) == EACCES, hex(flag)
        assert run(nr, arch, (1 << 32) | 17) == ALLOW  # the kernel reads the low 32 bits only
        assert run(435, arch) == 0x00050000 | errno.ENOSYS  # clone3: the C library then uses clone


def test_missing_names_seccomp_only_when_it_is_not_installed() -> None:
    assert seccomp.missing(True) == []
    assert [m.split(":")[0] for m in seccomp.missing(False)] == ["seccomp"]


def test_this_machine_can_install_it() -> None:
    assert seccomp.available()  # x86_64 or aarch64 with a kernel of the last eight years
