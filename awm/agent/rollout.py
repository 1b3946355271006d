"""The rollout API for trainers: one episode of one task, driven call by call by the trainer.

    from awm.agent.rollout import EpisodeKey, rollouts

    with rollouts().episode(EpisodeKey("pantrypal_recipe_planner", 3)) as ep:   # leases an environment
        messages = ep.messages()                     # [system, user(task)] for the chosen protocol
        tools = ep.openai_tools()                    # schemas, known without a lease (`Catalog`)
        text = ep.call("get_recipe", {"recipe_id": 8})   # model mistakes come back as text
        outcome = ep.finish("Done.")                 # graded in the container; the lease is released
    outcome.reward

The trainer owns tokens and messages; the episode owns the environment: a lease from a
per-image pool, one MCP session for all its calls, grading through ``/_awm/verify`` and the
release (reset in place). Every method has an async twin (``astart``, ``acall``, ``afinish``,
``async with``) for async trainers.

How it runs: each process has one `Rollouts`, made on first use (`rollouts()`, keyed by the
process id, so a forked or spawned worker makes its own and nothing heavy happens at import).
It owns a background event loop thread on which every environment lease, MCP session and
pool lives. The sync methods submit to that loop and wait, so they work from plain threads and
from inside a running event loop alike (never ``asyncio.run`` per call); the async methods
await it from the caller's loop. Pools (`ImagePools`) open per image on demand with
`envs_per_image` environments, so a GRPO group of N episodes of one task takes N leases at
once; more than that wait (back-pressure) up to `acquire_timeout_s` (`EnvStartTimeout`).

What raises and what does not: a model's mistakes (an unknown tool, arguments that are not
JSON or not an object, a schema violation, an HTTP error of the app, a tool that hangs) are the
text the model reads, flagged ``is_error`` in the trajectory. Only an environment that stops
answering raises (`EnvUnavailable`), so a trainer can drop the sample instead of scoring it 0;
the lease is then discarded and replaced.
"""

from __future__ import annotations

import asyncio
import atexit
import json
import os
import re
import threading
import time
from collections.abc import Coroutine, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Self, TypeVar

from awm.agent import protocol
from awm.agent.catalog import Catalog, EpisodeKey, ScenarioCatalog
from awm.agent.judge import RewardMap
from awm.agent.loop import NATIVE_SYSTEM_PROMPT, McpTools, Protocol, awm_function, is_infrastructure_error
from awm.agent.pools import ImagePools
from awm.core.errors import AWMError, EnvUnavailable
from awm.core.loop import LoopThread
from awm.runtime import Backend, Env, open_mcp_session
from awm.runtime.base import StartOptions

__all__ = [
    "SUBMIT_ANSWER",
    "SUBMIT_ANSWER_TOOL",
    "Episode",
    "EpisodeKey",
    "Outcome",
    "RolloutConfig",
    "Rollouts",
    "rollouts",
    "strip_think",
]

T = TypeVar("T")

SUBMIT_ANSWER = "submit_answer"
SUBMIT_ANSWER_TOOL: dict[str, Any] = {
    "name": SUBMIT_ANSWER,
    "description": "Submit your final answer to the user. Call it once, when the task is done.",
    "inputSchema": {"type": "object", "properties": {
        "answer": {"type": "string", "description": "Your final answer to the user."}}, "required": ["answer"]},
}
_SUBMIT_HINT = " When the task is done, call submit_answer with your final answer."
_THINK = re.compile(r"<think>.*?</think>", re.DOTALL)


def strip_think(text: str) -> str:
    """The answer without reasoning: ``<think>...</think>`` blocks removed, and everything up to a
    lone ``</think>`` (chat templates that open the block in the prompt)."""
    text = _THINK.sub("", text)
    if "</think>" in text:
        text = text.rsplit("</think>", 1)[1]
    return text.strip()


@dataclass(frozen=True)
class RolloutConfig:
    """How episodes run. `protocol` ``native``: OpenAI tool calling with the MCP tools; ``awm``: the
    original agent's text protocol (`list_tools`/`call_tool`, see `awm.agent.protocol`)."""

    protocol: Protocol = "native"
    system_prompt: str | None = None  # None: the project's own wording for the protocol
    submit_answer: bool = False  # offer the `submit_answer` tool (TRL's get_reward has no answer)
    rewards: RewardMap = field(default_factory=RewardMap)  # complete -> 1.0, anything else 0.0
    envs_per_image: int = 8  # leases of one image at once (a GRPO group)
    max_open_images: int = 4  # pools kept open; idle ones close first
    acquire_timeout_s: float = 300.0
    tool_timeout_s: float = 60.0
    images: Mapping[str, str] = field(default_factory=dict)  # scenario -> image (else awm/<scenario>:latest)
    dataset: Path | None = None  # tasks from this dataset folder instead of the images
    catalog_cache: Path | None = None  # the catalog's disk cache (AWM_CACHE_DIR/catalog by default)
    start_options: StartOptions | None = None


@dataclass(frozen=True)
class Outcome:
    """How an episode ended: the verifier's class, its reward, and what the episode did."""

    key: EpisodeKey
    result: str  # complete | others | judge_error | aborted
    reward: float
    final_answer: str | None
    verify: dict[str, Any] | None
    tool_calls: int
    tool_errors: int
    error: str | None = None
    duration_s: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["key"] = self.key.to_dict()
        return out


class Rollouts:
    """A process's episodes: the catalog, the background loop, and the per-image pools on it.

    Use `rollouts()` for the process's shared instance; make one yourself for another config.
    """

    def __init__(self, config: RolloutConfig | None = None, *, backend: Backend | None = None) -> None:
        self.config = config or RolloutConfig()
        self._backend = backend
        self.catalog = Catalog(images=self.config.images, dataset=self.config.dataset, backend=backend,
                               cache_dir=self.config.catalog_cache)
        self._lock = threading.Lock()
        self._thread: LoopThread | None = None
        self._pools: ImagePools | None = None
        self._closed = False

    # -- the loop ---------------------------------------------------------------------------

    def _loop(self) -> LoopThread:
        with self._lock:
            if self._closed:
                raise RuntimeError("these rollouts are closed")
            if self._thread is None:
                self._thread = LoopThread("awm-rollouts")
            return self._thread

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run `coro` on the background loop and wait (from any thread, inside a running loop too)."""
        return self._loop().run(
            coro, own_thread_error="a sync rollout method was called on the rollouts' own loop; use the async one"
        )

    async def arun(self, coro: Coroutine[Any, Any, T]) -> T:
        """Await `coro` run on the background loop, from the caller's loop."""
        thread = self._loop()
        if asyncio.get_running_loop() is thread.loop:
            return await coro
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, thread.loop))

    def backend(self) -> Backend:
        if self._backend is None:
            self._backend = self.catalog.backend()
        return self._backend

    def pools(self) -> ImagePools:
        """The per-image pools (use on the background loop only)."""
        if self._pools is None:
            cfg = self.config
            self._pools = ImagePools(self.backend(), size=cfg.envs_per_image, max_open=cfg.max_open_images,
                                     options=cfg.start_options, acquire_timeout_s=cfg.acquire_timeout_s)
        return self._pools

    # -- episodes ---------------------------------------------------------------------------

    def scenario(self, scenario: str) -> ScenarioCatalog:
        return self.catalog.get(scenario)

    def episode(self, key: EpisodeKey | str | Mapping[str, Any], **overrides: Any) -> Episode:
        """A new episode of `key` (nothing is leased until it starts); `overrides` are
        `RolloutConfig` fields for this episode (protocol, system_prompt, submit_answer, rewards)."""
        return Episode(self, EpisodeKey.parse(key), **overrides)

    def close(self) -> None:
        """Remove every environment (leased ones included) and stop the loop."""
        with self._lock:
            thread, self._thread, self._closed = self._thread, None, True
        if thread is None:
            return
        if self._pools is not None:
            asyncio.run_coroutine_threadsafe(self._pools.close(), thread.loop).result()
        thread.close(timeout_s=30)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


_default: dict[int, Rollouts] = {}
_default_lock = threading.Lock()


def rollouts(config: RolloutConfig | None = None) -> Rollouts:
    """This process's shared `Rollouts`, made on first use (with `config`, if given then).

    Keyed by process id: a forked child does not reuse its parent's (whose loop thread it does
    not have), a spawned one makes its own.

    Raises:
        RuntimeError: `config` differs from the one the shared instance was made with.
    """
    pid = os.getpid()
    with _default_lock:
        current = _default.get(pid)
        if current is None:
            current = _default[pid] = Rollouts(config)
            atexit.register(current.close)
        elif config is not None and config != current.config:
            raise RuntimeError("this process's rollouts already run with another config; "
                               "make your own Rollouts(config) instead")
        return current


class Episode:
    """One task in one leased environment; see the module docstring.

    Not thread-safe for concurrent use by several callers at once, except that calls are
    serialised and `finish` may be called from anywhere, any number of times.
    """

    def __init__(self, rollouts: Rollouts, key: EpisodeKey, **overrides: Any) -> None:
        unknown = set(overrides) - {"protocol", "system_prompt", "submit_answer", "rewards"}
        if unknown:
            raise TypeError(f"unknown episode options: {sorted(unknown)}")
        cfg = rollouts.config
        self.rollouts = rollouts
        self.key = key
        self.protocol: Protocol = overrides.get("protocol", cfg.protocol)
        self.system_prompt: str | None = overrides.get("system_prompt", cfg.system_prompt)
        self.submit_answer: bool = overrides.get("submit_answer", cfg.submit_answer)
        self.rewards: RewardMap = overrides.get("rewards", cfg.rewards)
        self.trajectory: list[dict[str, Any]] = []
        self.submitted: str | None = None
        self.outcome: Outcome | None = None
        self._entry: ScenarioCatalog | None = None
        self._env: Env | None = None
        self._tools: McpTools | None = None
        self._session: asyncio.Task[None] | None = None
        self._closing: asyncio.Event | None = None
        self._broken = False
        self._released = False
        self._failure: BaseException | None = None
        self._began = time.perf_counter()
        self._call_lock: asyncio.Lock | None = None  # made on the background loop

    def __repr__(self) -> str:
        state = "finished" if self.outcome else ("running" if self._env else "new")
        return f"Episode({str(self.key)!r}, protocol={self.protocol!r}, {state})"

    # -- static facts (no lease) ------------------------------------------------------------

    @property
    def entry(self) -> ScenarioCatalog:
        if self._entry is None:
            self._entry = self.rollouts.scenario(self.key.scenario)
        return self._entry

    @property
    def task(self) -> str:
        return self.entry.task(self.key.task_idx)

    def tool_dicts(self) -> list[dict[str, Any]]:
        """The MCP tools the model may call, `submit_answer` included when offered."""
        return self.entry.mcp_tools() + ([dict(SUBMIT_ANSWER_TOOL)] if self.submit_answer else [])

    def openai_tools(self) -> list[dict[str, Any]]:
        """OpenAI schemas of the tools (native protocol; the awm protocol lists them as text)."""
        return [{"type": "function", "function": {"name": t["name"], "description": t.get("description") or "",
                                                  "parameters": t.get("inputSchema") or {"type": "object"}}}
                for t in self.tool_dicts()]

    def system_text(self) -> str:
        if self.system_prompt is not None:
            return self.system_prompt
        base = protocol.SYSTEM_PROMPT if self.protocol == "awm" else NATIVE_SYSTEM_PROMPT
        return base + (_SUBMIT_HINT if self.submit_answer and self.protocol == "native" else "")

    def messages(self) -> list[dict[str, Any]]:
        """The messages to start from: the system prompt and the task as the user's message."""
        return [{"role": "system", "content": self.system_text()}, {"role": "user", "content": self.task}]

    # -- sync facade ------------------------------------------------------------------------

    def start(self) -> Self:
        """Lease an environment and open the MCP session (waits with back-pressure)."""
        self.rollouts.run(self._start())
        return self

    def call(self, name: str, arguments: Mapping[str, Any] | str | None = None) -> str:
        """Call a tool (native: an MCP tool or `submit_answer`; awm: `list_tools`/`call_tool`);
        the text the model reads. Starts the episode if needed.

        Raises:
            EnvUnavailable: the environment stopped answering.
            RuntimeError: the episode is finished.
        """
        return self.rollouts.run(self._call(name, arguments))

    def finish(self, final_answer: str | None = None) -> Outcome:
        """Grade and release (once; later calls return the same outcome). The answer is
        `final_answer`, else what `submit_answer` got; think-blocks are stripped.

        Raises:
            EnvUnavailable: the environment stopped answering (also on later calls).
        """
        return self.rollouts.run(self._finish(final_answer))

    def abort(self) -> None:
        """Release without grading (idempotent); the outcome is ``aborted``."""
        self.rollouts.run(self._finish(None, grade=False))

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self.outcome is None and self._failure is None:
            if exc is None:
                self.finish()
            else:
                self.abort()

    # -- async core -------------------------------------------------------------------------

    async def astart(self) -> Self:
        await self.rollouts.arun(self._start())
        return self

    async def acall(self, name: str, arguments: Mapping[str, Any] | str | None = None) -> str:
        return await self.rollouts.arun(self._call(name, arguments))

    async def acall_tool(self, name: str, arguments: Mapping[str, Any] | str | None = None) -> tuple[str, bool]:
        """An MCP tool by its own name whatever the protocol (for loops that parse the protocol
        themselves): ``(text, is_error)``, recorded in the trajectory like `acall`."""
        return await self.rollouts.arun(self._step(name, arguments, raw=True))

    async def afinish(self, final_answer: str | None = None) -> Outcome:
        return await self.rollouts.arun(self._finish(final_answer))

    async def aabort(self) -> None:
        await self.rollouts.arun(self._finish(None, grade=False))

    async def __aenter__(self) -> Self:
        return await self.astart()

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        if self.outcome is None and self._failure is None:
            if exc is None:
                await self.afinish()
            else:
                await self.aabort()

    # -- on the background loop -------------------------------------------------------------

    async def _start(self) -> None:
        if self._call_lock is None:
            self._call_lock = asyncio.Lock()
        async with self._call_lock:
            if self._env is not None or self.outcome is not None or self._failure is not None:
                return
            entry = await asyncio.to_thread(lambda: self.entry)  # a first look may start a probe
            pools = self.rollouts.pools()
            env = await pools.acquire(entry.image)
            self._env = env
            self._began = time.perf_counter()
            ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._closing = asyncio.Event()
            self._session = asyncio.create_task(self._hold_session(env, ready))
            try:
                await ready
            except BaseException as exc:
                self._broken = True
                await self._release()
                if isinstance(exc, Exception) and is_infrastructure_error(exc) and not isinstance(exc, EnvUnavailable):
                    raise EnvUnavailable(f"opening an MCP session with {env.name} failed: {exc!r}",
                                         scenario=self.key.scenario) from exc
                raise

    async def _hold_session(self, env: Env, ready: asyncio.Future[None]) -> None:
        # The session's task groups must be entered and left by one task: this one holds it open
        # while calls from other tasks use it.
        assert self._closing is not None
        headers = {"Authorization": f"Bearer {env.token}"} if env.token else None
        try:
            async with open_mcp_session(env.mcp_url, headers=headers) as session:
                self._tools = McpTools(session, timeout_s=self.rollouts.config.tool_timeout_s, url=env.mcp_url)
                ready.set_result(None)
                await self._closing.wait()
        except BaseException as exc:  # handed to the waiter, or the session just ends
            if not ready.done():
                ready.set_exception(exc)
            elif not isinstance(exc, asyncio.CancelledError):
                self._broken = True

    async def _call(self, name: str, arguments: Mapping[str, Any] | str | None) -> str:
        return (await self._step(name, arguments))[0]

    async def _step(self, name: str, arguments: Mapping[str, Any] | str | None, *,
                    raw: bool = False) -> tuple[str, bool]:
        if self.outcome is not None or self._failure is not None:
            raise RuntimeError(f"episode {self.key} is finished; start a new one")
        await self._start()
        assert self._call_lock is not None
        assert self._tools is not None
        async with self._call_lock:
            began = time.perf_counter()
            args, fault = _arguments(arguments)
            step: dict[str, Any] = {"step": len(self.trajectory) + 1, "name": name,
                                    "arguments": args if fault is None else arguments}
            try:
                if fault is not None:
                    text, is_error = fault, True
                else:
                    text, is_error = await (self._tools.call(name, args) if raw else self._dispatch(name, args))
                    if is_error and text == protocol.timeout_text(self._tools.timeout_s):
                        await self._check_alive()  # a hung tool is the model's problem, a dead server is not
            except EnvUnavailable as exc:
                self._broken = True
                step.update(content=None, is_error=True, error=exc.message)
                self.trajectory.append(step)
                raise
            step.update(content=text, is_error=is_error, duration_s=round(time.perf_counter() - began, 6))
            self.trajectory.append(step)
            return text, is_error

    async def _check_alive(self) -> None:
        assert self._env is not None
        try:
            await self._env.aclient.health()
        except EnvUnavailable as exc:
            raise EnvUnavailable(f"environment {self._env.name} of {self.key.scenario} stopped answering: "
                                 f"{exc.message}", scenario=self.key.scenario) from exc

    async def _dispatch(self, name: str, args: dict[str, Any]) -> tuple[str, bool]:
        assert self._tools is not None
        if self.submit_answer and name == SUBMIT_ANSWER:
            answer = args.get("answer")
            if not isinstance(answer, str):
                return protocol.error_text("submit_answer needs an 'answer' string"), True
            self.submitted = answer
            return "Answer submitted.", False
        if self.protocol == "awm":
            call = protocol.FunctionCall(name, args)
            if name.startswith(protocol.TOOL_PREFIX):  # a listed tool called directly, as parse_reply reads it
                call = protocol.FunctionCall(protocol.CALL_TOOL, {"tool_name": name, "arguments": args})
            return await awm_function(self._tools, call)
        return await self._tools.call(name, args)

    async def _finish(self, final_answer: str | None, *, grade: bool = True) -> Outcome:
        if self._call_lock is None:
            self._call_lock = asyncio.Lock()
        async with self._call_lock:
            if self._failure is not None:
                raise self._failure
            if self.outcome is not None:
                return self.outcome
            answer = final_answer if final_answer is not None else self.submitted
            answer = strip_think(answer) if answer is not None else None
            verdict: dict[str, Any] | None = None
            error: str | None = None
            result = "aborted"
            try:
                if grade:
                    if self._env is None:
                        raise RuntimeError(f"episode {self.key} was never started: nothing to grade")
                    try:
                        verdict = _as_dict(await self._env.aclient.verify(self.key.task_idx, answer, "code"))
                        result = {"complete": "complete", "error": "judge_error"}.get(str(verdict.get("result")),
                                                                                      "others")
                        error = str(verdict.get("error")) if result == "judge_error" else None
                    except EnvUnavailable as exc:
                        self._broken = True
                        self._failure = exc
                        raise
                    except AWMError as exc:  # the verifier could not run: graded as an error
                        result, error = "judge_error", exc.message
            finally:
                await self._release()
            errors = sum(1 for s in self.trajectory if s.get("is_error"))
            self.outcome = Outcome(self.key, result, self.rewards(result), answer, verdict, len(self.trajectory),
                                   errors, error, round(time.perf_counter() - self._began, 6))
            return self.outcome

    async def _release(self) -> None:
        if self._released:
            return
        self._released = True
        if self._closing is not None:
            self._closing.set()
        if self._session is not None:
            try:
                await asyncio.wait_for(self._session, 10)
            except (TimeoutError, asyncio.CancelledError):
                self._broken = True
        if self._env is not None:
            await self.rollouts.pools().release(self._env, discard=self._broken)


def _as_dict(verdict: Any) -> dict[str, Any]:
    """The verifier's answer as JSON data (the client gives a model or, before, a dict)."""
    dumped = verdict.model_dump(mode="json") if hasattr(verdict, "model_dump") else verdict
    return dict(dumped)


def _arguments(arguments: Mapping[str, Any] | str | None) -> tuple[dict[str, Any], str | None]:
    """The call's arguments as an object, or the error text the model reads."""
    if arguments is None:
        return {}, None
    if isinstance(arguments, str):
        if not arguments.strip():
            return {}, None
        try:
            arguments = json.loads(arguments)
        except ValueError as exc:
            return {}, protocol.error_text(f"the arguments are not valid JSON ({exc})")
    if not isinstance(arguments, Mapping):
        return {}, protocol.error_text(f"the arguments must be a JSON object, not {type(arguments).__name__}")
    return dict(arguments), None


# A forked child must not touch its parent's loop thread or pools (it has neither).
os.register_at_fork(after_in_child=_default.clear)
