"""Run AWM environment images: backends, the `Env` handle, pools, clients, errors.

    from awm.runtime import DockerBackend, EnvPool

    with EnvPool(DockerBackend(), "awm/pantrypal_recipe_planner:latest", size=8) as pool:
        with pool.lease() as env:
            ...  # the agent works at env.mcp_url
            env.verify(3)
"""

from awm.core.errors import (
    AWMError,
    BackendUnavailable,
    BuildError,
    DatasetError,
    EngineError,
    EnvError,
    EnvNotFound,
    EnvStartTimeout,
    EnvUnavailable,
    ImageBuildError,
    ImageNotFound,
    InvalidInput,
    InvalidURL,
    ResetError,
    ScenarioNotFound,
    SeedError,
    SynthesisError,
    ToolCallError,
    VerifierError,
)
from awm.runtime.base import Backend, EnvRecord, Isolation, Resources, StartOptions, Timeouts
from awm.runtime.client import AsyncEnvClient, EnvClient, ToolResult, list_mcp_tools, open_mcp_session
from awm.runtime.docker_backend import DockerBackend
from awm.runtime.env import Env, EnvState
from awm.runtime.pool import AsyncEnvPool, EnvPool, PoolMetrics, PoolState

__all__ = [
    "AWMError",
    "AsyncEnvClient",
    "AsyncEnvPool",
    "Backend",
    "BackendUnavailable",
    "BuildError",
    "DatasetError",
    "DockerBackend",
    "EngineError",
    "Env",
    "EnvClient",
    "EnvError",
    "EnvNotFound",
    "EnvPool",
    "EnvRecord",
    "EnvStartTimeout",
    "EnvState",
    "EnvUnavailable",
    "ImageBuildError",
    "ImageNotFound",
    "InvalidInput",
    "InvalidURL",
    "Isolation",
    "PoolMetrics",
    "PoolState",
    "ResetError",
    "Resources",
    "ScenarioNotFound",
    "SeedError",
    "StartOptions",
    "SynthesisError",
    "Timeouts",
    "ToolCallError",
    "ToolResult",
    "VerifierError",
    "list_mcp_tools",
    "open_mcp_session",
]
