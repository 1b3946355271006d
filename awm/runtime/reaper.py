"""Nothing leaks: environments this process started are removed at exit, on SIGTERM and SIGINT.

Every backend registers what it starts here. At normal exit (atexit), on SIGTERM (turned into
SystemExit so `with` blocks unwind) and on SIGINT (KeyboardInterrupt, likewise), whatever is
still registered is removed. A process killed with SIGKILL cannot clean up: its environments
carry its owner label, and `awm env gc` (or `Backend.gc()`) removes them once it is gone.
"""

from __future__ import annotations

import atexit
import logging
import os
import signal
import threading
from collections.abc import Callable
from types import FrameType

__all__ = ["install_signal_handlers", "reap_all", "track", "untrack"]

log = logging.getLogger("awm")

_lock = threading.Lock()
_live: dict[str, Callable[[], None]] = {}  # env id -> how to remove it
_installed = False


def _forget_in_child() -> None:
    # A forked child inherits the registry but owns none of those environments: left as it is,
    # the child's exit would remove its parent's environments.
    global _lock
    _lock = threading.Lock()  # the parent may have held it while forking
    _live.clear()


os.register_at_fork(after_in_child=_forget_in_child)


def track(env_id: str, remove: Callable[[], None]) -> None:
    with _lock:
        _live[env_id] = remove
    install_signal_handlers()


def untrack(env_id: str) -> None:
    with _lock:
        _live.pop(env_id, None)


def reap_all() -> int:
    """Remove every environment still registered; return how many."""
    with _lock:
        pending = list(_live.items())
        _live.clear()
    for env_id, remove in pending:
        try:
            remove()
        except Exception as exc:  # cleanup must go on for the others
            log.warning("could not remove environment %s at exit: %s", env_id, exc)
    return len(pending)


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


def install_signal_handlers() -> None:
    """Register the exit hook, and SIGTERM -> SystemExit when the default handler is in place.

    Only from the main thread (Python's rule), and never over a handler the application set.
    """
    global _installed
    if _installed:
        return
    _installed = True
    atexit.register(reap_all)
    main = threading.current_thread() is threading.main_thread()
    if main and signal.getsignal(signal.SIGTERM) in (signal.SIG_DFL, None):
        signal.signal(signal.SIGTERM, _on_sigterm)
