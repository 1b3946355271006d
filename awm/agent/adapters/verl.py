"""verl's agent loop: `AWMAgentLoop`, one AWM episode per sample, registered as ``awm_agent``.

Follows the contract of verl's ``verl/experimental/agent_loop/agent_loop.py`` (``AgentLoopBase``,
``AgentLoopOutput``; the 0.5 line and later, as the verl 0.10 ``ToolAgentLoop`` uses it):

- the worker builds one loop per sample, ``cls(trainer_config=<has .config>, server_manager=...,
  tokenizer=..., processor=...)``, and awaits ``run(sampling_params, **row)`` with the dataset
  row's fields (``raw_prompt``, ``extra_info``, ...), all samples of a batch at once;
- ``server_manager.generate(request_id, prompt_ids=..., sampling_params=...)`` returns a
  ``TokenOutput`` (``token_ids``, ``log_probs``) (older verl: a list of ids);
- ``run`` returns an ``AgentLoopOutput`` (``prompt_ids``, ``response_ids``, ``response_mask``
  1 for model tokens and 0 for tool tokens, ``response_logprobs``, ``num_turns``, ``metrics``,
  ``extra_fields``); a set ``reward_score`` makes the worker skip its reward manager.

Like ``ToolAgentLoop``: the prompt is the chat template applied with ``tools=tool_schemas``; a
reply's ``<tool_call>{"name", "arguments"}</tool_call>`` blocks (the hermes format) are the calls
and the first ``max_parallel_calls`` (1) run; tool responses are cut to
``max_tool_response_length`` (256) characters (middle truncation) and appended as ``tool``
messages, tokenized without the template's system prefix; the loop ends on a reply without a
call, at ``max_assistant_turns``/``max_user_turns`` or at ``response_length`` tokens. The episode
key comes from ``extra_info`` (``awm_key``, or ``scenario`` and ``task_idx``); ``tools`` and
``tool_schemas`` are set per episode (the scenario's tools, from the catalog). The episode is
graded with the last reply (think-blocks stripped) and ``reward_score`` set; an environment that
stops answering raises `EnvUnavailable`.

When verl is installed, `register_with_verl()` adds ``awm_agent`` to its registry (or list
``{name: awm_agent, _target_: awm.agent.adapters.verl.AWMAgentLoop}`` in the file named by
``actor_rollout_ref.rollout.agent.agent_loop_config_path``) and outputs are verl's own
``AgentLoopOutput``; without verl, `AgentLoopOutput` here has the same fields.
"""

from __future__ import annotations

import asyncio
import importlib
import re
from collections.abc import Mapping, Sequence
from functools import partial
from typing import Any
from uuid import uuid4

from pydantic import BaseModel

from awm.agent import protocol
from awm.agent.catalog import EpisodeKey
from awm.agent.rollout import Episode, Rollouts, rollouts

__all__ = ["AGENT_NAME", "AWMAgentLoop", "AgentLoopMetrics", "AgentLoopOutput", "register_with_verl", "verl_rows"]

AGENT_NAME = "awm_agent"
_VERL = "verl.experimental.agent_loop.agent_loop"
_CALL = re.compile(r"<tool_call>\s*(.*?)\s*</tool_call>", re.DOTALL)
_TRUNCATED = "...(truncated)..."


class AgentLoopMetrics(BaseModel):
    """verl's ``AgentLoopMetrics`` fields."""

    generate_sequences: float = 0.0
    tool_calls: float = 0.0


class AgentLoopOutput(BaseModel):
    """verl's ``AgentLoopOutput`` fields (used when verl is not installed)."""

    prompt_ids: list[int]
    response_ids: list[int]
    response_mask: list[int]
    response_logprobs: list[float] | None = None
    multi_modal_data: dict[str, Any] | None = None
    reward_score: float | None = None
    num_turns: int = 0
    metrics: AgentLoopMetrics
    extra_fields: dict[str, Any] = {}


def _verl_module() -> Any:
    try:
        return importlib.import_module(_VERL)
    except ImportError:
        return None


def register_with_verl() -> bool:
    """Register `AWMAgentLoop` as ``awm_agent`` in verl's registry; False when verl is not installed."""
    module = _verl_module()
    if module is None:
        return False
    module.register(AGENT_NAME)(AWMAgentLoop)
    return True


def _setting(config: Any, path: str, default: Any) -> Any:
    node = config
    for part in path.split("."):
        node = node.get(part) if isinstance(node, Mapping) else getattr(node, part, None)
        if node is None:
            return default
    return node


def _truncate(text: str, limit: int) -> str:
    if limit <= 0 or len(text) <= limit:
        return text
    return text[: limit // 2] + _TRUNCATED + text[-(limit // 2):]


def parse_tool_calls(text: str) -> tuple[str, list[tuple[str, dict[str, Any]]]]:
    """The reply without its tool-call blocks, and the calls (name, arguments) it makes."""
    calls: list[tuple[str, dict[str, Any]]] = []
    for body in _CALL.findall(text):
        parsed = protocol.lenient_json(body)
        if isinstance(parsed, dict) and parsed.get("name"):
            arguments = parsed.get("arguments")
            if isinstance(arguments, str):
                arguments = protocol.lenient_json(arguments)
            calls.append((str(parsed["name"]), arguments if isinstance(arguments, dict) else {}))
    return _CALL.sub("", text).strip(), calls


class AWMAgentLoop:
    """An AWM episode as a verl agent loop; see the module docstring."""

    runtime: Rollouts | None = None  # None: this process's shared rollouts

    def __init__(self, trainer_config: Any, server_manager: Any, tokenizer: Any, processor: Any = None,
                 **kwargs: Any) -> None:
        self.config = trainer_config.config
        self.server_manager = server_manager
        self.tokenizer = tokenizer
        self.processor = processor
        self.loop = asyncio.get_running_loop()
        rollout = "actor_rollout_ref.rollout"
        self.prompt_length = int(_setting(self.config, f"{rollout}.prompt_length", 4096))
        self.response_length = int(_setting(self.config, f"{rollout}.response_length", 4096))
        self.max_assistant_turns = _setting(self.config, f"{rollout}.multi_turn.max_assistant_turns", None)
        self.max_user_turns = _setting(self.config, f"{rollout}.multi_turn.max_user_turns", None)
        self.max_parallel_calls = int(_setting(self.config, f"{rollout}.multi_turn.max_parallel_calls", 1))
        self.max_tool_response_length = int(_setting(self.config, f"{rollout}.multi_turn.max_tool_response_length",
                                                     256))
        self.template_kwargs = dict(_setting(self.config, "data.apply_chat_template_kwargs", {}) or {})
        self.tools: dict[str, Any] = {}
        self.tool_schemas: list[dict[str, Any]] = []
        self.episode: Episode | None = None

    def _template(self, messages: Sequence[Mapping[str, Any]], **kwargs: Any) -> list[int]:
        ids = self.tokenizer.apply_chat_template(list(messages), tokenize=True, **self.template_kwargs, **kwargs)
        return list(ids["input_ids"] if isinstance(ids, Mapping) else ids)

    async def run(self, sampling_params: dict[str, Any], **kwargs: Any) -> Any:
        key = EpisodeKey.from_row({"extra_info": kwargs.get("extra_info") or {}})
        episode = (self.runtime or rollouts()).episode(key, protocol="native")
        self.episode = episode
        self.tool_schemas = episode.openai_tools()
        self.tools = {s["function"]["name"]: s for s in self.tool_schemas}
        messages = list(kwargs.get("raw_prompt") or episode.messages())
        prompt_ids = await self.loop.run_in_executor(
            None, lambda: self._template(messages, tools=self.tool_schemas, add_generation_prompt=True))
        empty_ids = await self.loop.run_in_executor(None, lambda: self._template([{}], add_generation_prompt=False))
        metrics = AgentLoopMetrics()
        response_ids: list[int] = []
        response_mask: list[int] = []
        logprobs: list[float] = []
        assistant_turns = user_turns = 0
        answer = ""
        request_id = uuid4().hex
        await episode.astart()
        try:
            while len(response_mask) < self.response_length:
                t0 = self.loop.time()
                output = await self.server_manager.generate(request_id, prompt_ids=prompt_ids + response_ids,
                                                            sampling_params=sampling_params)
                metrics.generate_sequences += self.loop.time() - t0
                ids = list(getattr(output, "token_ids", output))
                response_ids += ids
                response_mask += [1] * len(ids)
                logprobs += list(getattr(output, "log_probs", None) or [0.0] * len(ids))
                assistant_turns += 1
                text = self.tokenizer.decode(ids, skip_special_tokens=True)
                answer, calls = parse_tool_calls(text)
                if not calls or len(response_mask) >= self.response_length:
                    break
                if self.max_assistant_turns and assistant_turns >= int(self.max_assistant_turns):
                    break
                t1 = self.loop.time()
                results = [await episode.acall(name, arguments) for name, arguments in calls[: self.max_parallel_calls]]
                metrics.tool_calls += self.loop.time() - t1
                tool_messages = [{"role": "tool", "content": _truncate(r, self.max_tool_response_length)}
                                 for r in results]
                tool_ids = await self.loop.run_in_executor(
                    None, partial(self._template, tool_messages, add_generation_prompt=True))
                tool_ids = tool_ids[len(empty_ids):]
                if len(response_mask) + len(tool_ids) >= self.response_length:
                    break
                response_ids += tool_ids
                response_mask += [0] * len(tool_ids)
                logprobs += [0.0] * len(tool_ids)
                user_turns += 1
                if self.max_user_turns and user_turns >= int(self.max_user_turns):
                    break
        except BaseException:
            await episode.aabort()
            raise
        outcome = await episode.afinish(answer)
        fields: dict[str, Any] = {
            "prompt_ids": prompt_ids,
            "response_ids": response_ids[: self.response_length],
            "response_mask": response_mask[: self.response_length],
            "response_logprobs": logprobs[: self.response_length],
            "multi_modal_data": {},
            "reward_score": outcome.reward,
            "num_turns": assistant_turns + user_turns + 1,
            "extra_fields": {"awm": outcome.to_dict() | {"trajectory": episode.trajectory}},
        }
        module = _verl_module()
        if module is not None:
            return module.AgentLoopOutput(metrics=module.AgentLoopMetrics(**metrics.model_dump()), **fields)
        return AgentLoopOutput(metrics=metrics, **fields)


def verl_rows(keys: Sequence[EpisodeKey | str | Mapping[str, Any]], *, runtime: Rollouts | None = None,
              data_source: str = "awm") -> list[dict[str, Any]]:
    """Rows of a verl RL dataset (its parquet columns): ``prompt`` (system prompt and task),
    ``agent_name``, ``data_source`` and ``extra_info`` carrying the episode key."""
    rows = []
    for index, key in enumerate(map(EpisodeKey.parse, keys)):
        episode = (runtime or rollouts()).episode(key, protocol="native")
        rows.append({"prompt": episode.messages(), "agent_name": AGENT_NAME, "data_source": data_source,
                     "extra_info": {"awm_key": str(key), "index": index}})
    return rows
