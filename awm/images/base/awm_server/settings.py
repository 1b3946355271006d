"""Settings of the in-container server, read once from the environment (prefix AWM_).

The control token is never kept: only its SHA-256 (`AWM_CONTROL_TOKEN_SHA256`, lowercase hex,
as the runtime passes it; a plain `AWM_CONTROL_TOKEN` is hashed here, and the entrypoint
re-executes itself without it). `scrub_control_env` removes every AWM_ variable from
`os.environ` before the environment module is imported.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from awm_server.sandbox import Limits

__all__ = ["MAX_SLOTS", "Settings", "hash_token", "scrub_control_env"]

MAX_SLOTS = 256

_SHA256_HEX = re.compile(r"[0-9a-f]{64}")


def hash_token(token: str) -> str:
    """The form in which the server keeps a control token: lowercase hex SHA-256."""
    return hashlib.sha256(token.encode()).hexdigest()


def scrub_control_env() -> None:
    """Remove the control variables (AWM_*) from this process's environment."""
    for name in [n for n in os.environ if n.startswith("AWM_")]:
        del os.environ[name]


def _token_sha256() -> str | None:
    digest = os.environ.get("AWM_CONTROL_TOKEN_SHA256") or None
    token = os.environ.get("AWM_CONTROL_TOKEN") or None
    if digest is not None and not _SHA256_HEX.fullmatch(digest):
        raise ValueError("AWM_CONTROL_TOKEN_SHA256 must be 64 lowercase hex digits (sha256 of the token)")
    if token is not None:
        if digest is not None and digest != hash_token(token):
            raise ValueError("AWM_CONTROL_TOKEN and AWM_CONTROL_TOKEN_SHA256 are both set and disagree")
        digest = hash_token(token)
    return digest


def _float(name: str, default: float) -> float:
    return float(os.environ.get(name, default))


def _int(name: str, default: int) -> int:
    return int(os.environ.get(name, default))


def _bounded(name: str, default: int, low: int, high: int) -> int:
    value = _int(name, default)
    if not low <= value <= high:
        raise ValueError(f"{name} must be between {low} and {high}, not {value}")
    return value


@dataclass(frozen=True)
class Settings:
    scenario_dir: Path = Path("/opt/awm/scenario")  # read-only: module, seed.db, tasks, verifiers
    work_dir: Path = Path("/tmp/awm")  # writable (a tmpfs under --read-only): the working copy
    host: str = "0.0.0.0"
    port: int = 8000
    scratch_dir: Path | None = None  # cleared on reset but for work_dir and verifies in flight
    control_token_sha256: str | None = None  # None: the control plane is unguarded
    max_body_bytes: int = 1024 * 1024  # one /_awm request body
    mcp_max_body_bytes: int = 4 * 1024 * 1024  # one /mcp (or app) request body
    max_json_depth: int = 32  # nesting of a control-plane JSON body
    mcp_max_json_depth: int = 64  # nesting of an MCP message (tool arguments included)
    verify_concurrency: int = 2  # verifiers running at once; more wait their turn
    tool_timeout_s: float = 30.0  # one tool call through /mcp
    slots: int = 1  # independent episodes served at once (see awm_server.slots)
    mcp_max_sessions: int = 16  # kept MCP sessions per slot; the longest-idle one makes room
    mcp_session_idle_s: float = 600.0  # a kept MCP session unused this long is closed
    reset_drain_timeout_s: float = 10.0  # how long a reset waits for requests in flight
    verifier: Limits = field(default_factory=Limits)

    @classmethod
    def from_env(cls) -> Settings:
        return cls(
            scenario_dir=Path(os.environ.get("AWM_SCENARIO_DIR", "/opt/awm/scenario")),
            work_dir=Path(os.environ.get("AWM_WORK_DIR", "/tmp/awm")),
            host=os.environ.get("AWM_HOST", "0.0.0.0"),
            port=_int("AWM_PORT", 8000),
            scratch_dir=Path(os.environ["AWM_SCRATCH_DIR"]) if os.environ.get("AWM_SCRATCH_DIR") else None,
            control_token_sha256=_token_sha256(),
            max_body_bytes=_int("AWM_MAX_BODY_BYTES", 1024 * 1024),
            mcp_max_body_bytes=_int("AWM_MCP_MAX_BODY_BYTES", 4 * 1024 * 1024),
            max_json_depth=_int("AWM_MAX_JSON_DEPTH", 32),
            mcp_max_json_depth=_int("AWM_MCP_MAX_JSON_DEPTH", 64),
            verify_concurrency=max(1, _int("AWM_VERIFY_CONCURRENCY", 2)),
            tool_timeout_s=_float("AWM_TOOL_TIMEOUT", 30.0),
            slots=_bounded("AWM_SLOTS", 1, 1, MAX_SLOTS),
            mcp_max_sessions=_bounded("AWM_MCP_MAX_SESSIONS", 16, 1, 4096),
            mcp_session_idle_s=max(1.0, _float("AWM_MCP_SESSION_IDLE_S", 600.0)),
            reset_drain_timeout_s=_float("AWM_RESET_DRAIN_TIMEOUT", 10.0),
            verifier=Limits(
                timeout_s=_float("AWM_VERIFY_TIMEOUT", 30.0),
                # below the container's own limit (512 MB by default), so a greedy verifier
                # gets a MemoryError instead of the cgroup's OOM killer
                memory_bytes=_int("AWM_VERIFY_MEMORY_MB", 256) * 1024 * 1024,
                file_size_bytes=_int("AWM_VERIFY_FILE_MB", 64) * 1024 * 1024,
                open_files=_int("AWM_VERIFY_OPEN_FILES", 64),
                processes=_int("AWM_VERIFY_PROCESSES", 0),
                output_bytes=_int("AWM_VERIFY_OUTPUT_BYTES", 1024 * 1024),
            ),
        )
