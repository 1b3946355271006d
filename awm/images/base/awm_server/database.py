"""The working copy of the scenario's database: restored from the immutable seed in place.

The seed lives in the image (read-only); the working copy lives in a writable directory (a
tmpfs when the container runs `--read-only`). Reset and snapshot use SQLite's online backup
API: it rewrites the working file page by page through SQLite itself, so connections the
app's engine keeps open stay valid and see the restored content on their next transaction;
no file is swapped under them and no process restarts.
"""

from __future__ import annotations

import shutil
import sqlite3
from collections.abc import Callable
from pathlib import Path

__all__ = ["WorkingDatabase"]


class WorkingDatabase:
    def __init__(self, seed: Path, work: Path) -> None:
        self.seed = seed
        self.work = work
        self.resets = 0

    @property
    def url(self) -> str:
        """The SQLAlchemy URL the environment module reads from DATABASE_PATH."""
        return f"sqlite:///{self.work}"

    def prepare(self) -> None:
        self.work.parent.mkdir(parents=True, exist_ok=True)
        for stale in self.work.parent.glob(self.work.name + "*"):
            stale.unlink()
        shutil.copyfile(self.seed, self.work)

    def reset(self, release_connections: Callable[[], None] | None = None) -> None:
        """Restore the working copy from the seed, in place.

        Args:
            release_connections: called once if the first attempt finds the database locked
                (a connection left inside a transaction); it should dispose the app's pools.
        """
        try:
            self._copy(self.seed, self.work)
        except sqlite3.OperationalError:
            if release_connections is None:
                raise
            release_connections()
            self._copy(self.seed, self.work)
        self.resets += 1

    def snapshot(self, dest: Path) -> None:
        """Write a consistent copy of the working database to `dest`."""
        dest.unlink(missing_ok=True)
        self._copy(self.work, dest)

    @staticmethod
    def _copy(src_path: Path, dst_path: Path) -> None:
        src = sqlite3.connect(f"file:{src_path}?mode=ro", uri=True)
        dst = sqlite3.connect(dst_path, timeout=2.0)
        try:
            # Python's backup() retries a locked destination forever; taking the write lock
            # first turns a connection stuck in a transaction into OperationalError after the
            # busy timeout, which reset() answers by releasing the app's connections.
            dst.execute("BEGIN IMMEDIATE")
            dst.execute("ROLLBACK")
            src.backup(dst)
        finally:
            dst.close()
            src.close()
