"""Settings of the in-container server, read once from the environment (prefix AWM_)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from awm_server.sandbox import Limits

__all__ = ["Settings"]


def _float(name: str, default: float) -> float:
    return float(os.environ.get(name, default))


def _int(name: str, default: int) -> int:
    return int(os.environ.get(name, default))


@dataclass(frozen=True)
class Settings:
    scenario_dir: Path = Path("/opt/awm/scenario")  # read-only: module, seed.db, tasks, verifiers
    work_dir: Path = Path("/tmp/awm")  # writable (a tmpfs under --read-only): the working copy
    host: str = "0.0.0.0"
    port: int = 8000
    control_token: str | None = None
    tool_timeout_s: float = 30.0  # one tool call through /mcp
    reset_drain_timeout_s: float = 10.0  # how long a reset waits for requests in flight
    verifier: Limits = field(default_factory=Limits)

    @classmethod
    def from_env(cls) -> Settings:
        return cls(
            scenario_dir=Path(os.environ.get("AWM_SCENARIO_DIR", "/opt/awm/scenario")),
            work_dir=Path(os.environ.get("AWM_WORK_DIR", "/tmp/awm")),
            host=os.environ.get("AWM_HOST", "0.0.0.0"),
            port=_int("AWM_PORT", 8000),
            control_token=os.environ.get("AWM_CONTROL_TOKEN") or None,
            tool_timeout_s=_float("AWM_TOOL_TIMEOUT", 30.0),
            reset_drain_timeout_s=_float("AWM_RESET_DRAIN_TIMEOUT", 10.0),
            verifier=Limits(
                timeout_s=_float("AWM_VERIFY_TIMEOUT", 30.0),
                # below the container's own limit (512 MB by default), so a greedy verifier
                # gets a MemoryError instead of the cgroup's OOM killer
                memory_bytes=_int("AWM_VERIFY_MEMORY_MB", 256) * 1024 * 1024,
                file_size_bytes=_int("AWM_VERIFY_FILE_MB", 64) * 1024 * 1024,
                open_files=_int("AWM_VERIFY_OPEN_FILES", 64),
                processes=_int("AWM_VERIFY_PROCESSES", 0),
            ),
        )
