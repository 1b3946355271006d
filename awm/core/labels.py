"""The label names of this project's images and containers, and who owns what.

Every container and pod carries:

    awm.scenario      the scenario id
    awm.version       the version of awm that started it
    awm.run-id        the session (one pool, one test run...) it belongs to
    awm.owner         host:pid:start-time of the process that started it, or "detached"
    awm.user          the name of the user who started it (`awm env stop --all` removes only theirs)

Every scenario image carries `awm.scenario` and `awm.version` (of the build), its digests, its
counts and the OCI annotations (`org.opencontainers.image.*`); see `awm.builder.build.render`.

The owner's process start time (from /proc) guards against a recycled pid: a container whose
owner's pid now belongs to another process is an orphan. `awm env gc` removes orphans of this
host. The `awm.` namespace is ours: user labels in it are refused.
"""

from __future__ import annotations

import os
import pwd
import socket
import uuid
from dataclasses import dataclass
from pathlib import Path

from awm import __version__

__all__ = [
    "LABEL_DIGEST",
    "LABEL_OWNER",
    "LABEL_ROLE",
    "LABEL_RUN_ID",
    "LABEL_SCENARIO",
    "LABEL_SCENARIO_BYTES",
    "LABEL_SEED_FAILED",
    "LABEL_SEED_ROWS",
    "LABEL_SEED_TABLES",
    "LABEL_SOURCE_DIGEST",
    "LABEL_TASKS",
    "LABEL_TOOLS",
    "LABEL_USER",
    "LABEL_VERSION",
    "OCI_BASE_NAME",
    "OCI_DESCRIPTION",
    "OCI_LICENSES",
    "OCI_TITLE",
    "OCI_VERSION",
    "Owner",
    "check_user_labels",
    "current_user",
    "new_run_id",
    "owner_labels",
]

LABEL_SCENARIO = "awm.scenario"
LABEL_VERSION = "awm.version"
LABEL_RUN_ID = "awm.run-id"
LABEL_OWNER = "awm.owner"
LABEL_USER = "awm.user"
LABEL_ROLE = "awm.role"  # what a short-lived container of a build is for (build-check, ...)

# Scenario images (set at build time, read by `awm images` and `awm images pull`)
LABEL_DIGEST = "awm.digest"  # the digest of the image's inputs, also its tag
LABEL_SOURCE_DIGEST = "awm.source-digest"  # the digest of the scenario's dataset records
LABEL_TOOLS = "awm.tools"
LABEL_TASKS = "awm.tasks"
LABEL_SEED_FAILED = "awm.seed.failed-statements"
LABEL_SEED_TABLES = "awm.seed.tables"
LABEL_SEED_ROWS = "awm.seed.rows"  # in all tables
LABEL_SCENARIO_BYTES = "awm.scenario-bytes"  # the scenario's own files (module, seed, tasks...)

# OCI image annotations (https://github.com/opencontainers/image-spec/blob/main/annotations.md)
OCI_TITLE = "org.opencontainers.image.title"
OCI_DESCRIPTION = "org.opencontainers.image.description"
OCI_VERSION = "org.opencontainers.image.version"
OCI_BASE_NAME = "org.opencontainers.image.base.name"
OCI_LICENSES = "org.opencontainers.image.licenses"


def new_run_id() -> str:
    return uuid.uuid4().hex[:12]


def _start_time(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (field 22 of /proc/PID/stat)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # the command name (field 2) may hold spaces; fields after it are space-separated
    return stat.rsplit(")", 1)[1].split()[19]


@dataclass(frozen=True)
class Owner:
    host: str
    pid: int
    started: str

    @classmethod
    def current(cls) -> Owner:
        return cls(socket.gethostname(), os.getpid(), _start_time(os.getpid()) or "0")

    @classmethod
    def parse(cls, value: str) -> Owner | None:
        try:
            host, pid, started = value.rsplit(":", 2)
            return cls(host, int(pid), started)
        except ValueError:
            return None

    def __str__(self) -> str:
        return f"{self.host}:{self.pid}:{self.started}"

    def is_local(self) -> bool:
        return self.host == socket.gethostname()

    def is_alive(self) -> bool:
        """True when the owning process still runs (only answerable for this host)."""
        return _start_time(self.pid) == self.started


def check_user_labels(labels: dict[str, str] | None) -> dict[str, str]:
    """Refuse labels in the `awm.` namespace, which this project owns."""
    labels = dict(labels or {})
    ours = sorted(k for k in labels if k.startswith("awm."))
    if ours:
        raise ValueError(f"labels in the awm. namespace are reserved: {', '.join(ours)}")
    return labels


DETACHED = "detached"


def current_user() -> str:
    """This process's user name (from its uid, not from $USER), or the uid when it has none."""
    try:
        return pwd.getpwuid(os.getuid()).pw_name
    except KeyError:  # a uid without a passwd entry, e.g. in a container
        return str(os.getuid())


def owner_labels(run_id: str, scenario: str | None = None, *, detached: bool = False) -> dict[str, str]:
    owner = DETACHED if detached else str(Owner.current())
    labels = {LABEL_VERSION: __version__, LABEL_RUN_ID: run_id, LABEL_OWNER: owner, LABEL_USER: current_user()}
    if scenario:
        labels[LABEL_SCENARIO] = scenario
    return labels
