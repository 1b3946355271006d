"""A run folder, compatible with the original agent's, and the episode that fills it.

    <out>/trajectory.json   scenario, task_id, task, model, api_url, max_iterations, temperature,
                            total_iterations, timestamp, trajectory, messages (the original's
                            fields), plus protocol, end_reason, error, tool_calls, tool_errors,
                            usage and timings
    <out>/initial.db        the environment's database before the episode (its /_awm/snapshot)
    <out>/final.db          ... and after it
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import openai

from awm.agent.llm import LLMConfig
from awm.agent.loop import (
    DEFAULT_TOOL_TIMEOUT_S,
    EpisodeResult,
    McpTools,
    Protocol,
    is_infrastructure_error,
    run_episode,
)
from awm.builder.catalog.loader import load_catalog
from awm.core.errors import AWMError, EnvUnavailable, InvalidInput
from awm.core.files import atomic_write
from awm.core.naming import image_ref, normalise
from awm.runtime import AsyncEnvClient, Backend, DockerBackend, Env, open_mcp_session

__all__ = [
    "TRAJECTORY_FILE",
    "EpisodeOptions",
    "default_run_dir",
    "read_run",
    "run_agent",
    "run_in_environment",
    "timestamp",
    "write_trajectory",
]

log = logging.getLogger("awm")
TRAJECTORY_FILE = "trajectory.json"


@dataclass(frozen=True)
class EpisodeOptions:
    protocol: Protocol = "awm"
    max_iterations: int = 30
    system_prompt: str | None = None  # None: the project's own wording
    tool_timeout_s: float = DEFAULT_TOOL_TIMEOUT_S


def timestamp() -> str:
    return datetime.now().strftime("%Y%m%d_%H%M%S")


def default_run_dir(stamp: str, scenario: str | None, task_id: int | None) -> Path:
    suffix = f"_{scenario}_task_{task_id}" if scenario is not None and task_id is not None else ""
    return Path("outputs") / "agents" / f"{stamp}{suffix}"


def write_trajectory(out: Path, result: EpisodeResult, *, scenario: str | None, task_id: int | None,
                     llm: LLMConfig, max_iterations: int, stamp: str, extra: dict[str, Any] | None = None) -> Path:
    """trajectory.json with the original's fields first, then this project's extra fields."""
    doc: dict[str, Any] = {
        "scenario": scenario, "task_id": task_id, "task": result.task, "model": llm.model,
        "api_url": llm.api_url, "max_iterations": max_iterations, "temperature": llm.temperature,
        "total_iterations": result.iterations, "timestamp": stamp, "trajectory": result.trajectory,
        "messages": result.messages, "protocol": result.protocol, "final_answer": result.final_answer,
        **result.counters(), **(extra or {}),
    }
    path = out / TRAJECTORY_FILE
    atomic_write(path, json.dumps(doc, indent=2, ensure_ascii=False))
    return path


def read_run(run_dir: Path) -> dict[str, Any]:
    """A run folder's trajectory.json.

    Raises:
        AWMError: no trajectory.json there, or it is not JSON.
    """
    path = run_dir / TRAJECTORY_FILE
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise AWMError(f"{run_dir} is not a run folder: no {TRAJECTORY_FILE}", path=run_dir,
                       hint="`awm agent --output_dir DIR` writes one") from exc
    except ValueError as exc:
        raise AWMError(f"{path} is not JSON ({exc})", path=path) from exc
    if not isinstance(doc, dict):
        raise AWMError(f"{path} is not a JSON object", path=path)
    return doc


async def _snapshot(control: AsyncEnvClient | None, path: Path) -> bool:
    if control is None:
        return False
    try:
        await control.snapshot(path)
        return True
    except AWMError as exc:  # an MCP server without the AWM control plane
        log.warning("no database snapshot from %s: %s", control.base_url, exc.message)
        return False


async def run_in_environment(
    *,
    mcp_url: str,
    control: AsyncEnvClient | None,
    headers: dict[str, str] | None,
    client: openai.AsyncOpenAI,
    llm: LLMConfig,
    task: str,
    options: EpisodeOptions,
    out: Path | None,
    scenario: str | None,
    task_id: int | None,
) -> EpisodeResult:
    """Snapshot, run one episode in one MCP session, snapshot, write the run folder (if `out`)."""
    stamp = timestamp()
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)  # noqa: ASYNC240 (one local mkdir)
        await _snapshot(control, out / "initial.db")
    began = time.perf_counter()
    session_s = 0.0
    try:
        async with open_mcp_session(mcp_url, headers=headers) as session:
            session_s = time.perf_counter() - began
            tools = McpTools(session, timeout_s=options.tool_timeout_s, url=mcp_url)
            result = await run_episode(client, llm, tools, task, protocol_name=options.protocol,
                                       max_iterations=options.max_iterations, system_prompt=options.system_prompt)
    except Exception as exc:  # exception groups from the session's task group included
        if isinstance(exc, EnvUnavailable) or not is_infrastructure_error(exc):
            raise
        raise EnvUnavailable(f"the MCP session with {mcp_url} failed: {exc!r}", url=mcp_url,
                             scenario=scenario) from exc
    if out is not None:
        await _snapshot(control, out / "final.db")
        write_trajectory(out, result, scenario=scenario, task_id=task_id, llm=llm,
                         max_iterations=options.max_iterations, stamp=stamp,
                         extra={"session_open_s": round(session_s, 4)})
    return result


async def run_agent(
    *,
    llm: LLMConfig,
    options: EpisodeOptions,
    task: str | None = None,
    scenario: str | None = None,
    task_id: int | None = None,
    mcp_url: str | None = None,
    token: str | None = None,
    dataset: Path | None = None,
    image: str | None = None,
    output_dir: Path | None = None,
    backend: Backend | None = None,
) -> tuple[EpisodeResult, Path]:
    """`awm agent`: one task, in a given MCP endpoint or in the scenario's image started here.

    The task is `task`, else task `task_id` of `scenario` from `dataset` or from the environment
    itself (`/_awm/tasks`). A started environment is reset first and removed afterwards.

    Raises:
        InvalidInput: neither a task nor a scenario with a task id; no environment named.
        EnvUnavailable: the environment stops answering.
    """
    if task is None and (scenario is None or task_id is None):
        raise InvalidInput("name the task: --task TEXT, or --scenario NAME with --task_id N")
    if mcp_url is None and scenario is None and image is None:
        raise InvalidInput("name the environment: --scenario NAME (its image is started), or --mcp_url URL")
    sid = normalise(scenario) if scenario is not None else None
    if task is None and dataset is not None:
        tasks = load_catalog(dataset).get(str(sid)).tasks
        if not 0 <= int(task_id or 0) < len(tasks):
            raise InvalidInput(f"scenario {sid!r} has {len(tasks)} tasks; no task {task_id}")
        task = tasks[int(task_id or 0)]
    stamp = timestamp()
    out = output_dir or default_run_dir(stamp, sid, task_id)
    client = llm.client()
    env: Env | None = None
    try:
        if mcp_url is not None:
            control = AsyncEnvClient(mcp_url.rstrip("/").removesuffix("/mcp"), token=token)
            headers = {"Authorization": f"Bearer {token}"} if token else None
        else:
            backend = backend or DockerBackend()
            env = await asyncio.to_thread(backend.start, image or image_ref(str(sid)))
            await env.aclient.reset()
            control, mcp_url = env.aclient, env.mcp_url
            headers = {"Authorization": f"Bearer {env.token}"} if env.token else None
        try:
            if task is None:
                task = _task_of(await control.tasks(), sid, int(task_id or 0))
            result = await run_in_environment(mcp_url=mcp_url, control=control, headers=headers, client=client,
                                              llm=llm, task=task, options=options, out=out, scenario=sid,
                                              task_id=task_id)
        finally:
            await control.aclose()
    finally:
        await client.close()
        if env is not None:
            await asyncio.to_thread(env.stop)
    return result, out


def _task_of(tasks: list[dict[str, Any]], scenario: str | None, task_id: int) -> str:
    for entry in tasks:
        if entry.get("task_idx") == task_id:
            return str(entry["task"])
    raise InvalidInput(f"scenario {scenario!r} has {len(tasks)} tasks; no task {task_id}")
