"""`awm eval`: every selected task of a dataset or of images, through pooled environments.

    DIR/results.jsonl                  one line per finished episode (see `result_line`)
    DIR/runs/<scenario>/task_<i>/      each episode's run folder (trajectory.json, initial.db,
                                       final.db, verify.<judge>.json)
    DIR/report.html                    the self-contained report (`awm.agent.report`)

`concurrency` episodes run at once, each in its own environment leased from a per-image
`AsyncEnvPool` and reset in place when released. Grading happens inside the environment
(`/_awm/verify`), before the release. A rerun skips the episodes results.jsonl already holds
(those that ended because the environment failed are run again); Ctrl-C stops the workers,
removes every environment, and leaves the finished lines whole (each is one appended write).
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from awm.agent.judge import JUDGE_ERROR, Mode, RewardMap, llm_judge, verify_document
from awm.agent.llm import LLMConfig
from awm.agent.loop import EpisodeResult
from awm.agent.pools import ImagePools
from awm.agent.run import EpisodeOptions, run_in_environment
from awm.builder.catalog.loader import load_catalog
from awm.core.errors import AWMError, DatasetError, EnvUnavailable, ImageNotFound, InvalidInput
from awm.core.naming import image_ref, normalise
from awm.runtime import Backend, DockerBackend, Env

__all__ = [
    "RESULTS_FILE",
    "EvalConfig",
    "EvalItem",
    "read_results",
    "run_eval",
    "select_items",
    "summarise",
]

RESULTS_FILE = "results.jsonl"
_RETRIED = {"env_error"}  # error classes a rerun runs again


@dataclass(frozen=True)
class EvalItem:
    scenario: str
    image: str
    task_idx: int


@dataclass
class EvalConfig:
    out: Path
    llm: LLMConfig
    options: EpisodeOptions = field(default_factory=EpisodeOptions)
    concurrency: int = 4
    judge: Mode = "code"
    judge_llm: LLMConfig | None = None  # sql mode: the judge's endpoint (the policy's when None)
    judge_prompt: str | None = None
    rewards: RewardMap = field(default_factory=RewardMap)
    acquire_timeout_s: float = 300.0


def _parse_tasks(spec: str | None) -> set[int] | None:
    if not spec:
        return None
    out: set[int] = set()
    try:
        for part in spec.split(","):
            lo, _, hi = part.strip().partition("-")
            out.update(range(int(lo), int(hi or lo) + 1))
    except ValueError as exc:
        raise InvalidInput(f"--tasks {spec!r}: give indices and ranges, e.g. 0,2,4-5") from exc
    return out


def select_items(sources: Sequence[str], *, scenarios: Sequence[str] | None = None, tasks: str | None = None,
                 backend: Backend | None = None) -> list[EvalItem]:
    """The (scenario, image, task) items of dataset folders and image references, in order.

    Raises:
        DatasetError: a dataset folder does not load.
        ImageNotFound: an image is not in the engine.
        InvalidInput: a selection matches nothing.
    """
    wanted = {normalise(s) for s in scenarios} if scenarios else None
    picked = _parse_tasks(tasks)
    found: list[tuple[str, str, int]] = []
    for source in sources:
        if Path(source).is_dir():
            catalog = load_catalog(Path(source))
            if not catalog.bundles:
                raise DatasetError(f"no scenario of {source} loads; `awm catalog {source}` says why", path=source)
            found += [(sid, image_ref(sid), len(b.tasks)) for sid, b in sorted(catalog.bundles.items())]
        else:
            found.append(_image_facts(source, backend))
    items = [EvalItem(sid, image, i) for sid, image, n in found if wanted is None or sid in wanted
             for i in range(n) if picked is None or i in picked]
    if not items:
        raise InvalidInput(f"no task selected from {', '.join(sources)} (scenarios {scenarios}, tasks {tasks})")
    return items


def _image_facts(image: str, backend: Backend | None) -> tuple[str, str, int]:
    import docker.errors

    client = backend.client if isinstance(backend, DockerBackend) else DockerBackend().client
    try:
        labels = client.images.get(image).labels or {}
    except docker.errors.ImageNotFound as exc:
        raise ImageNotFound(f"image {image} not found; build it with `awm build DATASET`", image=image) from exc
    if "awm.scenario" not in labels:
        raise InvalidInput(f"{image} is not an AWM environment image (no awm.scenario label)")
    return labels["awm.scenario"], image, int(labels.get("awm.tasks", "0"))


def read_results(out: Path) -> dict[tuple[str, int], dict[str, Any]]:
    """The last complete line of each (scenario, task_idx) in results.jsonl."""
    path = out / RESULTS_FILE
    lines: dict[tuple[str, int], dict[str, Any]] = {}
    if not path.is_file():
        return lines
    for text in path.read_text(encoding="utf-8").splitlines():
        try:
            line = json.loads(text)
            lines[(str(line["scenario"]), int(line["task_idx"]))] = line
        except (ValueError, KeyError, TypeError):
            continue  # a line cut by a crash
    return lines


def _append(path: Path, line: dict[str, Any]) -> None:
    data = (json.dumps(line, ensure_ascii=False) + "\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, data)  # one write: a line is whole or absent
        os.fsync(fd)
    finally:
        os.close(fd)


def result_line(item: EvalItem, episode: EpisodeResult | None, verdict: dict[str, Any] | None, *,
                error_class: str | None, error: str | None, durations: dict[str, float],
                run_dir: str) -> dict[str, Any]:
    """One results.jsonl line."""
    usage = episode.usage if episode is not None else None
    return {
        "scenario": item.scenario, "task_idx": item.task_idx,
        "result": (verdict or {}).get("reward_type", JUDGE_ERROR if error_class else None),
        "reward": float((verdict or {}).get("reward", 0.0)),
        "iterations": episode.iterations if episode else 0,
        "tool_calls": episode.tool_calls if episode else 0,
        "tool_errors": episode.tool_errors if episode else 0,
        "tokens": {"prompt": usage.prompt_tokens if usage else 0,
                   "completion": usage.completion_tokens if usage else 0,
                   "total": usage.total_tokens if usage else 0},
        "durations": {k: round(v, 4) for k, v in durations.items()},
        "end_reason": episode.end_reason if episode else None,
        "error_class": error_class, "error": error, "run_dir": run_dir,
    }


class _Runner:
    def __init__(self, config: EvalConfig, pools: ImagePools, on_done: Callable[[dict[str, Any]], None]) -> None:
        self.config = config
        self.pools = pools
        self.on_done = on_done
        self.client = config.llm.client()
        self._tasks: dict[str, list[dict[str, Any]]] = {}

    async def task_text(self, env: Env, item: EvalItem) -> str:
        if item.image not in self._tasks:
            self._tasks[item.image] = await env.aclient.tasks()
        for task in self._tasks[item.image]:
            if task.get("task_idx") == item.task_idx:
                return str(task["task"])
        raise InvalidInput(f"scenario {item.scenario!r}: the image has no task {item.task_idx}")

    async def run(self, item: EvalItem) -> dict[str, Any]:
        cfg = self.config
        run_dir = cfg.out / "runs" / item.scenario / f"task_{item.task_idx}"
        began = time.perf_counter()
        episode: EpisodeResult | None = None
        verdict: dict[str, Any] | None = None
        error_class: str | None = None
        error: str | None = None
        verify_s = 0.0
        env = await self.pools.acquire(item.image)
        lease_s = time.perf_counter() - began
        discard = False
        try:
            task = await self.task_text(env, item)
            headers = {"Authorization": f"Bearer {env.token}"} if env.token else None
            episode = await run_in_environment(
                mcp_url=env.mcp_url, control=env.aclient, headers=headers, client=self.client, llm=cfg.llm,
                task=task, options=cfg.options, out=run_dir, scenario=item.scenario, task_id=item.task_idx)
            if episode.end_reason == "env_error":
                raise EnvUnavailable(episode.error or "the environment stopped answering", scenario=item.scenario)
            if episode.end_reason != "answer":
                error_class, error = episode.end_reason, episode.error
            t0 = time.perf_counter()
            verdict = await self.grade(env, item, task, episode, run_dir)
            verify_s = time.perf_counter() - t0
            if verdict.get("reward_type") == JUDGE_ERROR and error_class is None:
                error_class, error = JUDGE_ERROR, verdict.get("error")
        except EnvUnavailable as exc:
            discard = True
            error_class, error = "env_error", exc.message
        except AWMError as exc:
            error_class, error = type(exc).__name__, exc.message
        finally:
            await self.pools.release(env, discard=discard)
        durations = {"lease_s": lease_s, "verify_s": verify_s, "total_s": time.perf_counter() - began}
        if episode is not None:
            durations.update(episode_s=episode.total_s, llm_s=episode.llm_s, tool_s=episode.tool_s)
        line = result_line(item, episode, verdict, error_class=error_class, error=error, durations=durations,
                           run_dir=str(run_dir.relative_to(cfg.out)))
        _append(cfg.out / RESULTS_FILE, line)
        self.on_done(line)
        return line

    async def grade(self, env: Env, item: EvalItem, task: str, episode: EpisodeResult, run_dir: Path) -> dict[str, Any]:
        cfg = self.config
        run = {"scenario": item.scenario, "task_id": item.task_idx, "task": task}
        try:
            result = await env.aclient.verify(item.task_idx, episode.final_answer, cfg.judge)
        except AWMError as exc:
            if isinstance(exc, EnvUnavailable):
                raise
            doc = verify_document(run, cfg.judge, None, error=exc.message, rewards=cfg.rewards)
        else:
            judgement = None
            if cfg.judge == "sql":
                judgement = await llm_judge(cfg.judge_llm or cfg.llm, task, episode.trajectory, result.value,
                                            **({"prompt": cfg.judge_prompt} if cfg.judge_prompt else {}))
            doc = verify_document(run, cfg.judge, result.model_dump(mode="json"), llm_judgement=judgement,
                                  rewards=cfg.rewards, error=result.error if result.result == "error" else None)
        (run_dir / f"verify.{cfg.judge}.json").write_text(json.dumps(doc, indent=2, ensure_ascii=False, default=str))
        return doc

    async def aclose(self) -> None:
        await self.client.close()


async def run_eval(
    items: Sequence[EvalItem],
    config: EvalConfig,
    *,
    backend: Backend | None = None,
    on_start: Callable[[int, int], None] | None = None,
    on_done: Callable[[dict[str, Any]], None] | None = None,
) -> dict[tuple[str, int], dict[str, Any]]:
    """Run the items not finished yet; the results of all items (earlier runs' included)."""
    config.out.mkdir(parents=True, exist_ok=True)
    earlier = read_results(config.out)
    todo = [i for i in items if (i.scenario, i.task_idx) not in earlier
            or earlier[(i.scenario, i.task_idx)].get("error_class") in _RETRIED]
    if on_start is not None:
        on_start(len(items), len(items) - len(todo))
    results = dict(earlier)
    per_image: dict[str, int] = {}
    for item in todo:
        per_image[item.image] = per_image.get(item.image, 0) + 1
    concurrency = max(1, config.concurrency)
    pools = ImagePools(backend or DockerBackend(), size=lambda image: min(concurrency, per_image[image]),
                       max_open=2, acquire_timeout_s=config.acquire_timeout_s)
    runner = _Runner(config, pools, on_done or (lambda line: None))
    queue: asyncio.Queue[EvalItem] = asyncio.Queue()
    for item in todo:
        queue.put_nowait(item)

    async def worker() -> None:
        while True:
            try:
                item = queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            line = await runner.run(item)
            results[(item.scenario, item.task_idx)] = line

    try:
        await asyncio.gather(*(worker() for _ in range(min(concurrency, len(todo)))))
    finally:  # also on Ctrl-C (cancellation): no environment outlives the run
        await pools.close()
        await runner.aclose()
    return {(i.scenario, i.task_idx): results[(i.scenario, i.task_idx)] for i in items
            if (i.scenario, i.task_idx) in results}


def summarise(results: Sequence[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per scenario and overall (``"all"``): episodes, success rate, mean turns, failure classes."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for line in results:
        groups.setdefault(str(line["scenario"]), []).append(line)
    groups = dict(sorted(groups.items()))
    groups["all"] = list(results)
    out: dict[str, dict[str, Any]] = {}
    for name, lines in groups.items():
        n = len(lines)
        failures: dict[str, int] = {}
        for line in lines:
            if line.get("reward", 0) < 1.0:
                key = line.get("error_class") or line.get("result") or "others"
                failures[key] = failures.get(key, 0) + 1
        out[name] = {
            "episodes": n,
            "success": sum(1 for line in lines if line.get("reward", 0) >= 1.0),
            "success_rate": round(sum(line.get("reward", 0.0) for line in lines) / n, 4) if n else 0.0,
            "mean_iterations": round(sum(line.get("iterations", 0) for line in lines) / n, 2) if n else 0.0,
            "tool_errors": sum(line.get("tool_errors", 0) for line in lines),
            "tokens": sum(line.get("tokens", {}).get("total", 0) for line in lines),
            "failures": dict(sorted(failures.items())),
        }
    return out
