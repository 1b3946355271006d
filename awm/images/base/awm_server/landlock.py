"""Landlock, the Linux LSM an unprivileged process uses to confine itself (and its children).

A process that calls `confine(read=..., write=...)` can afterwards open only the listed paths
(read-only or read-write beneath them), cannot connect or bind TCP sockets (ABI >= 4), and
cannot signal or reach abstract unix sockets of processes outside its own domain (ABI >= 6).
It works in containers with every capability dropped and needs no privilege: the verifier
child calls it on itself before it runs any dataset code. Older kernels give a lower ABI, or
none; `missing(abi)` names what they cannot enforce, so callers can degrade and say so.

Why a binding of our own instead of the `landlock` package on PyPI: that package is a
1.0.0.dev pre-release, and it would be one more dependency in every environment image and
in the host tool, which imports `awm_server.sandbox` too (standard library only). Landlock
is three system calls and three small structures, fixed by the kernel's stable ABI; ctypes
covers them in the few lines below.

    abi = abi_version()          # 0 when the kernel has no Landlock
    confine(read=["/usr"], write=["/tmp/scratch"])
"""

from __future__ import annotations

import ctypes
import errno
import os
from collections.abc import Iterable

__all__ = ["LandlockError", "abi_version", "confine", "missing"]

# System call numbers: the same on every architecture (added after the tables were unified).
_SYS_CREATE_RULESET = 444
_SYS_ADD_RULE = 445
_SYS_RESTRICT_SELF = 446
_CREATE_RULESET_VERSION = 1 << 0
_RULE_PATH_BENEATH = 1
_PR_SET_NO_NEW_PRIVS = 38

# Filesystem access rights (ABI 1 unless noted).
_FS_EXECUTE = 1 << 0
_FS_WRITE_FILE = 1 << 1
_FS_READ_FILE = 1 << 2
_FS_READ_DIR = 1 << 3
_FS_ABI1 = (1 << 13) - 1  # execute .. make_sym: everything ABI 1 knows
_FS_REFER = 1 << 13  # ABI 2
_FS_TRUNCATE = 1 << 14  # ABI 3
_FS_IOCTL_DEV = 1 << 15  # ABI 5
_FILE_ONLY = _FS_EXECUTE | _FS_WRITE_FILE | _FS_READ_FILE | _FS_TRUNCATE | _FS_IOCTL_DEV
_READ = _FS_EXECUTE | _FS_READ_FILE | _FS_READ_DIR
# Network (ABI 4) and scopes (ABI 6).
_NET_BIND_TCP = 1 << 0
_NET_CONNECT_TCP = 1 << 1
_SCOPE_ABSTRACT_UNIX_SOCKET = 1 << 0
_SCOPE_SIGNAL = 1 << 1

# What each protection needs, and what a kernel below that ABI leaves open.
_PROTECTIONS: tuple[tuple[int, str], ...] = (
    (1, "filesystem: files outside the allowed paths (working database, /proc/1/environ) can be read and written"),
    (3, "truncate: truncate(2) is not restricted"),
    (4, "tcp: TCP connect and bind are not restricted (the control plane and the host are reachable)"),
    (5, "device_ioctl: ioctl on device files is not restricted"),
    (6, "signals: the server (PID 1) can be signalled"),
    (6, "abstract_unix_sockets: abstract unix sockets outside the sandbox can be reached"),
)


class LandlockError(OSError):
    """A Landlock system call failed on a kernel that reports Landlock support."""


class _RulesetAttr(ctypes.Structure):
    _fields_ = [
        ("handled_access_fs", ctypes.c_uint64),
        ("handled_access_net", ctypes.c_uint64),
        ("scoped", ctypes.c_uint64),
    ]


class _PathBeneathAttr(ctypes.Structure):
    _pack_ = 1  # __attribute__((packed)) in the kernel's header
    _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


def _syscall(number: int, *args: object) -> int:
    result = int(_libc.syscall(ctypes.c_long(number), *args))
    if result < 0:
        code = ctypes.get_errno()
        raise LandlockError(code, f"landlock syscall {number}: {os.strerror(code)}")
    return result


def abi_version() -> int:
    """The kernel's Landlock ABI version; 0 when Landlock is missing, disabled or filtered."""
    try:
        return _syscall(_SYS_CREATE_RULESET, None, ctypes.c_size_t(0), ctypes.c_uint32(_CREATE_RULESET_VERSION))
    except LandlockError as exc:
        if exc.errno in (errno.ENOSYS, errno.EOPNOTSUPP, errno.EPERM):
            return 0
        raise


def missing(abi: int) -> list[str]:
    """The protections a kernel with this ABI cannot give (empty from ABI 6 on)."""
    return [what for needed, what in _PROTECTIONS if abi < needed]


def _fs_rights(abi: int) -> int:
    rights = _FS_ABI1
    if abi >= 2:
        rights |= _FS_REFER
    if abi >= 3:
        rights |= _FS_TRUNCATE
    if abi >= 5:
        rights |= _FS_IOCTL_DEV
    return rights


def _allow(ruleset: int, path: str, access: int) -> None:
    try:
        fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
    except FileNotFoundError:
        return  # e.g. no /lib64 on this system: nothing to allow
    try:
        if not os.path.isdir(path):
            access &= _FILE_ONLY  # the kernel refuses directory rights on a file
        rule = _PathBeneathAttr(allowed_access=access, parent_fd=fd)
        _syscall(_SYS_ADD_RULE, ctypes.c_int(ruleset), ctypes.c_int(_RULE_PATH_BENEATH),
                 ctypes.byref(rule), ctypes.c_uint32(0))
    finally:
        os.close(fd)


def confine(*, read: Iterable[str], write: Iterable[str]) -> int:
    """Restrict this process (and any child) for good, as far as the kernel's ABI allows.

    Args:
        read: paths readable (and executable) beneath, nothing else.
        write: paths fully usable beneath (read, write, create, remove).

    Returns:
        The ABI used; 0 means Landlock is unavailable and nothing was restricted.

    Raises:
        LandlockError: Landlock is there but refused the rules (fail closed: do not go on).
    """
    abi = abi_version()
    if abi == 0:
        return 0
    fs = _fs_rights(abi)
    attr = _RulesetAttr(
        handled_access_fs=fs,
        handled_access_net=(_NET_BIND_TCP | _NET_CONNECT_TCP) if abi >= 4 else 0,  # no rule: none
        scoped=(_SCOPE_ABSTRACT_UNIX_SOCKET | _SCOPE_SIGNAL) if abi >= 6 else 0,
    )
    size = 24 if abi >= 6 else 16 if abi >= 4 else 8  # the fields this ABI knows
    ruleset = _syscall(_SYS_CREATE_RULESET, ctypes.byref(attr), ctypes.c_size_t(size), ctypes.c_uint32(0))
    try:
        for path in read:
            _allow(ruleset, path, _READ & fs)
        for path in write:
            _allow(ruleset, path, fs)
        if _libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
            code = ctypes.get_errno()
            raise LandlockError(code, f"prctl(PR_SET_NO_NEW_PRIVS): {os.strerror(code)}")
        _syscall(_SYS_RESTRICT_SELF, ctypes.c_int(ruleset), ctypes.c_uint32(0))
    finally:
        os.close(ruleset)
    return abi
