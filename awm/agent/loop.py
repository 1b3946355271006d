"""One episode: a policy behind an OpenAI-compatible endpoint works a task through MCP tools.

Two protocols:
- ``awm`` (default): the original agent's text protocol (`awm.agent.protocol`): the model writes
  ``<tool_call>`` blocks for `list_tools`/`call_tool`; only the first call of a reply runs;
  results go back as ``role: tool`` messages to a local vLLM-style server, else as user messages
  ``Tool response:\\n<text>`` (the original's rule, `LLMConfig.results_as` overrides it).
- ``native``: OpenAI tool calling with the MCP tools' JSON schemas; every call of a reply runs,
  in order.

A reply without a call is the final answer. The episode also ends at `max_iterations`, when the
conversation outgrows the model's context (``context_overflow``), when the endpoint fails after
the SDK's retries (``llm_error``), or when the environment stops answering (``env_error``); the
reason is recorded, nothing is raised for those. Model mistakes (bad JSON, unknown functions or
tools, tool errors, a tool that hangs) are text the model reads, as in the original.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import anyio
import httpx
import openai
from mcp import ClientSession
from mcp.shared.exceptions import McpError
from mcp.types import TextContent, Tool

from awm.agent import protocol
from awm.agent.llm import LLMConfig, is_context_overflow
from awm.core.errors import EnvUnavailable

__all__ = [
    "DEFAULT_TOOL_TIMEOUT_S",
    "NATIVE_SYSTEM_PROMPT",
    "EndReason",
    "EpisodeResult",
    "McpTools",
    "Protocol",
    "Usage",
    "awm_function",
    "is_infrastructure_error",
    "openai_tools",
    "run_episode",
]

Protocol = Literal["awm", "native"]
EndReason = Literal["answer", "max_iterations", "context_overflow", "llm_error", "env_error"]
DEFAULT_TOOL_TIMEOUT_S = 60.0
NATIVE_SYSTEM_PROMPT = (
    "You are working inside an environment on behalf of a user. You are already logged in as the user "
    "with id 1. Use the tools to do the task, one step at a time; when it is done, reply with your final "
    "answer and no tool call."
)


@dataclass
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0

    def add(self, usage: Any) -> None:
        if usage is None:
            return
        self.prompt_tokens += int(getattr(usage, "prompt_tokens", 0) or 0)
        self.completion_tokens += int(getattr(usage, "completion_tokens", 0) or 0)
        self.total_tokens += int(getattr(usage, "total_tokens", 0) or 0)


@dataclass
class EpisodeResult:
    """What happened: the trajectory in the original's step format, and counters."""

    task: str
    protocol: Protocol
    messages: list[dict[str, Any]]  # system, user, assistant, and tool-role results
    trajectory: list[dict[str, Any]]
    final_answer: str | None
    end_reason: EndReason
    error: str | None = None
    iterations: int = 0
    tool_calls: int = 0
    tool_errors: int = 0
    usage: Usage = field(default_factory=Usage)
    llm_s: float = 0.0
    tool_s: float = 0.0
    total_s: float = 0.0

    def counters(self) -> dict[str, Any]:
        return {
            "iterations": self.iterations, "tool_calls": self.tool_calls, "tool_errors": self.tool_errors,
            "end_reason": self.end_reason, "error": self.error, "usage": asdict(self.usage),
            "timings": {"llm_s": round(self.llm_s, 4), "tool_s": round(self.tool_s, 4),
                        "total_s": round(self.total_s, 4)},
        }


def is_infrastructure_error(exc: BaseException) -> bool:
    """Whether an exception (or one inside a group) means the environment stopped answering."""
    if isinstance(exc, BaseExceptionGroup):
        return any(is_infrastructure_error(inner) for inner in exc.exceptions)
    return isinstance(exc, httpx.TransportError | anyio.BrokenResourceError | anyio.ClosedResourceError
                      | EnvUnavailable)


class McpTools:
    """The tools of one MCP session: listed once, called with a per-call timeout.

    `call` returns what the model reads (``(text, is_error)``): tool errors, protocol refusals
    and timeouts are text; a session that stops answering raises `EnvUnavailable`.
    """

    def __init__(self, session: ClientSession, *, timeout_s: float = DEFAULT_TOOL_TIMEOUT_S,
                 url: str | None = None) -> None:
        self.session = session
        self.timeout_s = timeout_s
        self.url = url
        self._tools: list[Tool] | None = None

    async def tools(self) -> list[Tool]:
        if self._tools is None:
            try:
                self._tools = list((await self.session.list_tools()).tools)
            except McpError as exc:
                raise EnvUnavailable(f"listing tools on {self.url}: {exc.error.message}", url=self.url) from exc
            except Exception as exc:
                if is_infrastructure_error(exc):
                    raise EnvUnavailable(f"listing tools on {self.url} failed: {exc!r}", url=self.url) from exc
                raise
        return self._tools

    async def call(self, name: str, arguments: dict[str, Any]) -> tuple[str, bool]:
        try:
            with anyio.fail_after(self.timeout_s):
                result = await self.session.call_tool(name, arguments)
        except TimeoutError:
            return protocol.timeout_text(self.timeout_s), True
        except McpError as exc:  # the server refused the call (e.g. an unknown tool)
            return protocol.error_text(exc.error.message), True
        except Exception as exc:
            if is_infrastructure_error(exc):
                raise EnvUnavailable(f"calling tool {name!r} on {self.url} failed: {exc!r}",
                                     url=self.url, tool=name) from exc
            return protocol.error_text(exc), True
        texts = [c.text for c in result.content if isinstance(c, TextContent)]
        return protocol.result_text(texts, is_error=bool(result.isError)), bool(result.isError)


async def awm_function(tools: McpTools, call: protocol.FunctionCall) -> tuple[str, bool]:
    """Run one function of the text protocol: `list_tools`, `call_tool`, or an unknown name."""
    if call.name == protocol.LIST_TOOLS:
        return protocol.format_tool_list(await tools.tools()), False
    if call.name == protocol.CALL_TOOL:
        request = protocol.resolve_call_tool(call.arguments)
        return await tools.call(request.tool, request.arguments)
    return protocol.unknown_function_text(call.name), True


def openai_tools(tools: Sequence[Tool]) -> list[dict[str, Any]]:
    """MCP tools as OpenAI function-tool schemas (names as the server names them)."""
    return [
        {"type": "function",
         "function": {"name": t.name, "description": t.description or "",
                      "parameters": t.inputSchema or {"type": "object", "properties": {}}}}
        for t in tools
    ]


async def run_episode(
    client: openai.AsyncOpenAI,
    llm: LLMConfig,
    tools: McpTools,
    task: str,
    *,
    protocol_name: Protocol = "awm",
    max_iterations: int = 30,
    system_prompt: str | None = None,
) -> EpisodeResult:
    """Run the task until a final answer or another end; never raises for the model's or endpoint's faults."""
    began = time.perf_counter()
    system = protocol.SYSTEM_PROMPT if system_prompt is None else system_prompt
    if protocol_name == "native" and system_prompt is None:
        system = NATIVE_SYSTEM_PROMPT
    sent: list[dict[str, Any]] = [{"role": "system", "content": system}, {"role": "user", "content": task}]
    result = EpisodeResult(task=task, protocol=protocol_name, messages=[dict(m) for m in sent], trajectory=[],
                           final_answer=None, end_reason="max_iterations")
    extra: dict[str, Any] = {}
    try:
        if protocol_name == "native":
            extra["tools"] = openai_tools(await tools.tools())
            if llm.extra_body:
                extra["extra_body"] = llm.extra_body
        elif (body := llm.request_extra_body()) is not None:
            extra["extra_body"] = body
        for iteration in range(1, max_iterations + 1):
            t0 = time.perf_counter()
            try:
                response = await client.chat.completions.create(
                    model=llm.model, messages=sent,  # type: ignore[arg-type]
                    temperature=llm.temperature, max_completion_tokens=llm.max_tokens, **extra,
                )
            except openai.APIError as exc:
                result.end_reason = "context_overflow" if is_context_overflow(exc) else "llm_error"
                result.error = f"{type(exc).__name__}: {exc}"
                break
            finally:
                result.llm_s += time.perf_counter() - t0
            result.iterations = iteration
            result.usage.add(response.usage)
            message = response.choices[0].message
            content = message.content or ""
            result.final_answer = content
            t1 = time.perf_counter()
            try:
                if protocol_name == "native":
                    done = await _native_step(tools, iteration, message, sent, result)
                else:
                    done = await _awm_step(tools, iteration, content, sent, result, llm.tool_role)
            finally:
                result.tool_s += time.perf_counter() - t1
            if done:
                result.end_reason = "answer"
                break
    except EnvUnavailable as exc:
        result.end_reason = "env_error"
        result.error = exc.message
    result.total_s = time.perf_counter() - began
    return result


async def _awm_step(tools: McpTools, iteration: int, content: str, sent: list[dict[str, Any]],
                    result: EpisodeResult, tool_role: bool) -> bool:
    call = protocol.parse_reply(content)
    assistant = {"role": "assistant", "content": content}
    sent.append(assistant)
    result.messages.append(dict(assistant))
    if call is None:
        result.trajectory.append({"iteration": iteration, "role": "assistant", "content": content,
                                  "tool_calls": [], "is_final": True})
        return True
    call_id = f"call_{iteration}"
    text, is_error = await awm_function(tools, call)
    result.tool_calls += 1
    result.tool_errors += int(is_error)
    tool_message = {"role": "tool", "tool_call_id": call_id, "content": text}
    result.messages.append(tool_message)
    sent.append(dict(tool_message) if tool_role else {"role": "user", "content": f"Tool response:\n{text}"})
    result.trajectory.append({
        "iteration": iteration, "role": "assistant", "content": content,
        "tool_calls": [{"id": call_id, "name": call.name, "arguments": call.arguments}],
        "tool_response": {"tool_call_id": call_id, "content": text}, "is_error": is_error,
    })
    return False


async def _native_step(tools: McpTools, iteration: int, message: Any, sent: list[dict[str, Any]],
                       result: EpisodeResult) -> bool:
    content = message.content or ""
    calls = list(message.tool_calls or [])
    if not calls:
        assistant = {"role": "assistant", "content": content}
        sent.append(assistant)
        result.messages.append(dict(assistant))
        result.trajectory.append({"iteration": iteration, "role": "assistant", "content": content,
                                  "tool_calls": [], "is_final": True})
        return True
    wire = [{"id": c.id, "type": "function", "function": {"name": c.function.name, "arguments": c.function.arguments}}
            for c in calls]
    assistant = {"role": "assistant", "content": content, "tool_calls": wire}
    sent.append(assistant)
    result.messages.append(dict(assistant))
    records, responses, errors = [], [], []
    for c in calls:  # parallel calls run in order, in the one session
        arguments = protocol.lenient_json(c.function.arguments or "")
        arguments = arguments if isinstance(arguments, dict) else {}
        text, is_error = await tools.call(c.function.name, arguments)
        result.tool_calls += 1
        result.tool_errors += int(is_error)
        records.append({"id": c.id, "name": c.function.name, "arguments": arguments})
        responses.append({"tool_call_id": c.id, "content": text})
        errors.append(is_error)
        tool_message = {"role": "tool", "tool_call_id": c.id, "content": text}
        sent.append(tool_message)
        result.messages.append(dict(tool_message))
    step: dict[str, Any] = {"iteration": iteration, "role": "assistant", "content": content, "tool_calls": records,
                            "tool_response": responses[0], "is_error": any(errors)}
    if len(responses) > 1:
        step["tool_responses"] = responses
    result.trajectory.append(step)
    return False
