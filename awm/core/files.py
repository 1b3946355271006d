"""Atomic file writes: a reader sees the old file or the new one, never a half-written one."""

from __future__ import annotations

import contextlib
import functools
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

__all__ = ["PRIVATE", "atomic_path", "atomic_write", "default_mode"]

PRIVATE = 0o600
"""The mode of files only their owner may read (caches of what a paid service answered)."""


@functools.cache
def default_mode() -> int:
    """The mode `open()` gives a new file: 0o666 less the process's umask (read once)."""
    # The umask can only be read by setting it; done once, at the first write.
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask


@contextlib.contextmanager
def atomic_path(path: Path, *, mode: int | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it into place when the block succeeds.

    The temporary file lives in the same folder (so the rename is atomic on one filesystem) and is
    removed on every failure, KeyboardInterrupt included. The block may write the temporary path
    or replace it (``sqlite3.connect``, ``gzip.open``...).

    Args:
        path: the file to write; its folder is created.
        mode: the new file's mode; what `open()` would give (`default_mode()`) when None.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.chmod(tmp, default_mode() if mode is None else mode)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write(path: Path, data: bytes | str, *, mode: int | None = None) -> None:
    """Write ``data`` to ``path`` atomically (text is UTF-8); see `atomic_path`."""
    raw = data.encode() if isinstance(data, str) else data
    with atomic_path(path, mode=mode) as tmp:
        tmp.write_bytes(raw)
