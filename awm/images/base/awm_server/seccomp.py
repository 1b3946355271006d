"""A seccomp-bpf filter the verifier child installs on itself: no sockets, no sandbox bypasses.

Landlock (`awm_server.landlock`) confines files, TCP and signals, but not UDP or pathname unix
sockets, and io_uring would perform socket and file operations without the system calls a
filter sees. A verifier compares two SQLite files and needs none of these, so after Landlock
the child installs this filter: `socket()` of every family, io_uring, ptrace and
process_vm_*, pidfd_getfd, bpf, userfaultfd, perf_event_open, the key syscalls, namespaces
(unshare, setns, clone with a CLONE_NEW* flag), the mount family and personality fail with
EACCES. clone3 fails with ENOSYS (its flags sit in memory a filter cannot read), so the C
library falls back to clone, whose flags it can. Everything else is allowed: a deny-list,
because CPython and sqlite3 use many system calls. socketpair stays allowed: its two ends
reach nothing outside the process, and asyncio needs one.

The program checks the architecture first (x86_64 and aarch64, each with its own syscall
numbers; x32 calls on x86_64 are refused) and kills the process on any other, e.g. i386 calls
made through `int 0x80`. It needs no privilege: PR_SET_NO_NEW_PRIVS, then seccomp(2), as in a
container with every capability dropped. Standard library only (ctypes), like `landlock`.

    if available():
        install()   # for good, for this process and any it starts
"""

from __future__ import annotations

import ctypes
import errno
import os
import platform
import struct

__all__ = ["SeccompError", "available", "install", "missing", "program"]

# The kernel's names for the two architectures (AUDIT_ARCH_*) and their syscall numbers.
_AUDIT_ARCH = {"x86_64": 0xC000003E, "aarch64": 0xC00000B7}
_SYS_SECCOMP = {"x86_64": 317, "aarch64": 277}
_SYS_CLONE = {"x86_64": 56, "aarch64": 220}
_SYS_CLONE3 = 435  # same number everywhere: added after the tables were unified
_X32_SYSCALL_BIT = 0x40000000

# Refused with EACCES. Numbers from <asm/unistd_64.h> (x86_64) and <asm-generic/unistd.h>.
_DENIED: dict[str, dict[str, int]] = {
    "x86_64": {
        "socket": 41, "ptrace": 101, "personality": 135, "pivot_root": 155, "chroot": 161,
        "mount": 165, "umount2": 166, "add_key": 248, "request_key": 249, "keyctl": 250,
        "unshare": 272, "perf_event_open": 298, "setns": 308, "process_vm_readv": 310,
        "process_vm_writev": 311, "bpf": 321, "userfaultfd": 323,
    },
    "aarch64": {
        "umount2": 39, "mount": 40, "pivot_root": 41, "chroot": 51, "personality": 92,
        "unshare": 97, "ptrace": 117, "socket": 198, "add_key": 217, "request_key": 218,
        "keyctl": 219, "perf_event_open": 241, "setns": 268, "process_vm_readv": 270,
        "process_vm_writev": 271, "bpf": 280, "userfaultfd": 282,
    },
}
_DENIED_EVERYWHERE = {
    "io_uring_setup": 425, "io_uring_enter": 426, "io_uring_register": 427, "open_tree": 428,
    "move_mount": 429, "fsopen": 430, "fsconfig": 431, "fsmount": 432, "fspick": 433,
    "pidfd_getfd": 438, "mount_setattr": 442, "open_tree_attr": 467,
}
# CLONE_NEWNS | NEWCGROUP | NEWUTS | NEWIPC | NEWUSER | NEWPID | NEWNET (CLONE_NEWTIME is
# clone3/unshare only: in clone's flags its bit is part of the exit signal).
_CLONE_NEW_MASK = 0x7E020000

# Classic BPF: the few instructions used, and seccomp's return values.
_LD_W_ABS = 0x20
_JEQ_K, _JGE_K, _JSET_K = 0x15, 0x35, 0x45
_RET_K = 0x06
_RET_KILL_PROCESS = 0x80000000
_RET_ERRNO = 0x00050000
_RET_ALLOW = 0x7FFF0000
_OFF_NR, _OFF_ARCH, _OFF_ARG0 = 0, 4, 16  # struct seccomp_data; arg0's low half (little-endian)

_PR_SET_NO_NEW_PRIVS = 38
_SET_MODE_FILTER = 1
_GET_ACTION_AVAIL = 2
_FILTER_FLAG_TSYNC = 1


class SeccompError(OSError):
    """The filter could not be installed (unknown architecture, or the kernel refused it)."""


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_char_p)]


_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


def _arch() -> str | None:
    """This process's syscall ABI, if the filter knows it (a 32-bit Python on x86_64 does not)."""
    machine = platform.machine().lower()
    machine = {"amd64": "x86_64", "arm64": "aarch64"}.get(machine, machine)
    return machine if machine in _AUDIT_ARCH and ctypes.sizeof(ctypes.c_void_p) == 8 else None


# One instruction: (code, jump-if-true label, jump-if-false label, k); None means the next one.
_Insn = tuple[int, str | None, str | None, int]


def _block(arch: str) -> list[tuple[str | None, _Insn]]:
    """The instructions for one architecture, each with an optional label of its own."""
    insns: list[tuple[str | None, _Insn]] = [(arch, (_LD_W_ABS, None, None, _OFF_NR))]
    if arch == "x86_64":
        insns.append((None, (_JGE_K, f"{arch}.deny", None, _X32_SYSCALL_BIT)))
    insns.append((None, (_JEQ_K, f"{arch}.enosys", None, _SYS_CLONE3)))
    insns.append((None, (_JEQ_K, f"{arch}.clone", None, _SYS_CLONE[arch])))
    for nr in sorted({*_DENIED[arch].values(), *_DENIED_EVERYWHERE.values()}):
        insns.append((None, (_JEQ_K, f"{arch}.deny", None, nr)))
    insns += [
        (None, (_RET_K, None, None, _RET_ALLOW)),
        (f"{arch}.clone", (_LD_W_ABS, None, None, _OFF_ARG0)),
        (None, (_JSET_K, f"{arch}.deny", None, _CLONE_NEW_MASK)),
        (None, (_RET_K, None, None, _RET_ALLOW)),
        (f"{arch}.deny", (_RET_K, None, None, _RET_ERRNO | errno.EACCES)),
        (f"{arch}.enosys", (_RET_K, None, None, _RET_ERRNO | errno.ENOSYS)),
    ]
    return insns


def program() -> bytes:
    """The filter as the kernel reads it (struct sock_filter[]).

    It holds a block per architecture: the arch check at the top picks one, so a call made
    under another ABI never meets the wrong syscall numbers.
    """
    insns: list[tuple[str | None, _Insn]] = [(None, (_LD_W_ABS, None, None, _OFF_ARCH))]
    arches = sorted(_AUDIT_ARCH)
    insns += [(None, (_JEQ_K, a, None, _AUDIT_ARCH[a])) for a in arches]
    insns.append((None, (_RET_K, None, None, _RET_KILL_PROCESS)))
    for a in arches:
        insns += _block(a)
    where = {label: i for i, (label, _) in enumerate(insns) if label}
    out = bytearray()
    for i, (_, (code, jt, jf, k)) in enumerate(insns):
        offsets = [where[t] - i - 1 if t else 0 for t in (jt, jf)]
        assert all(0 <= o <= 255 for o in offsets), "a jump beyond classic BPF's reach"
        out += struct.pack("=HBBI", code, offsets[0], offsets[1], k)
    return bytes(out)


def _known_arch() -> str:
    arch = _arch()
    if arch is None:
        raise SeccompError(errno.EINVAL, f"seccomp: no filter for architecture {platform.machine()!r}")
    return arch


def _seccomp(op: int, flags: int, arg: object) -> int:
    arch = _known_arch()
    result = int(_libc.syscall(ctypes.c_long(_SYS_SECCOMP[arch]), ctypes.c_uint(op), ctypes.c_uint(flags), arg))
    if result < 0:
        code = ctypes.get_errno()
        raise SeccompError(code, f"seccomp: {os.strerror(code)}")
    return result


def available() -> bool:
    """Whether `install` can work here: a known architecture, and a kernel with filter mode
    and the two actions the program uses (asked without installing anything)."""
    try:
        for action in (_RET_ERRNO, _RET_KILL_PROCESS):
            _seccomp(_GET_ACTION_AVAIL, 0, ctypes.byref(ctypes.c_uint32(action)))
    except SeccompError:
        return False
    return True


def missing(installable: bool) -> list[str]:
    """What verifiers run without when the filter cannot be installed (`available()` is False)."""
    if installable:
        return []
    return ["seccomp: UDP and pathname unix sockets, io_uring, ptrace and namespaces are not restricted"]


def install() -> None:
    """Install the filter on this process (and every thread and child of it), for good.

    Raises:
        SeccompError: unknown architecture, or the kernel refused the filter.
    """
    _known_arch()
    code = program()
    if _libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        err = ctypes.get_errno()
        raise SeccompError(err, f"prctl(PR_SET_NO_NEW_PRIVS): {os.strerror(err)}")
    fprog = _SockFprog(len=len(code) // 8, filter=code)
    _seccomp(_SET_MODE_FILTER, _FILTER_FLAG_TSYNC, ctypes.byref(fprog))
