"""Source prepended to attacking verifiers: the system calls Python has no wrapper for.

`syscall(name, *args)` raises OSError with the kernel's errno, like Python's own wrappers,
on x86_64 and aarch64 (each has its own numbers); `io_uring()` sets up a ring of 8 entries."""

from __future__ import annotations

__all__ = ["SYSCALLS"]

SYSCALLS = """
import ctypes, os, platform
_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long
_NR = {"io_uring_setup": (425, 425), "ptrace": (101, 117), "process_vm_readv": (310, 270), "bpf": (321, 280),
       "userfaultfd": (323, 282), "perf_event_open": (298, 241), "keyctl": (250, 219), "unshare": (272, 97),
       "setns": (308, 268), "mount": (165, 40), "clone": (56, 220), "personality": (135, 92)}
def syscall(name, *args):
    nr = _NR[name][platform.machine() != "x86_64"]
    result = _libc.syscall(ctypes.c_long(nr), *args)
    if result < 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))
    if name == "clone" and result == 0:  # the child of a clone that should have failed
        os._exit(0)
    return result
def io_uring():
    return syscall("io_uring_setup", ctypes.c_uint(8), ctypes.create_string_buffer(120))
"""
