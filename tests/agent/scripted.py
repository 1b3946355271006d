"""A scripted OpenAI-compatible chat server for the agent tests (HTTP: tests/openai_server.py).

`POST /v1/chat/completions` is answered by a policy, a function of the request body that returns
the assistant message (`{"content": ...}` and/or `{"tool_calls": [...]}`). Every request is
recorded. Faults can be queued: the next requests answer an HTTP status (500, or 400 with a
context-length error), as vLLM and OpenAI do.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

from awm.builder.catalog.solutions import Solution
from tests.openai_server import Answer, ScriptedServer, chat_completion

Policy = Callable[[dict[str, Any]], dict[str, Any]]

OVERFLOW = {"message": "This model's maximum context length is 32768 tokens. However, you requested 40000 tokens.",
            "type": "invalid_request_error", "code": "context_length_exceeded"}


class ScriptedModel(ScriptedServer):
    """The server; `url` is its base URL (``http://127.0.0.1:<port>/v1``)."""

    def __init__(self, policy: Policy) -> None:
        super().__init__()
        self.policy = policy
        self.requests: list[dict[str, Any]] = []
        self.statuses: list[int] = []
        self.faults: list[tuple[int, dict[str, Any]]] = []
        self.scheduled: dict[int, tuple[int, dict[str, Any]]] = {}  # request number (from 1) -> fault

    def fail_next(self, status: int, times: int = 1, error: dict[str, Any] | None = None) -> None:
        with self.lock:
            self.faults += [(status, {"error": error or {"message": "scripted fault", "type": "server_error"}})] * times

    def fail_at(self, request: int, status: int, error: dict[str, Any]) -> None:
        """Answer the `request`-th request (counting from 1) with this error."""
        with self.lock:
            self.scheduled[request] = (status, {"error": error})

    def chats(self) -> list[dict[str, Any]]:
        with self.lock:
            return list(self.requests)

    def answer(self, path: str, body: dict[str, Any], headers: dict[str, str]) -> Answer:
        with self.lock:
            self.requests.append(body)
            fault = self.faults.pop(0) if self.faults else self.scheduled.pop(len(self.requests), None)
            number = len(self.requests)
        if fault is not None:
            with self.lock:
                self.statuses.append(fault[0])
            return fault[0], fault[1], {}
        if not path.endswith("/chat/completions"):
            return 404, {"error": {"message": f"no route {path}"}}, {}
        message = {"role": "assistant", "content": None, **self.policy(body)}
        with self.lock:
            self.statuses.append(200)
        return 200, chat_completion(body, message, number), {}


# -- policies --------------------------------------------------------------------------------


def _task(body: Mapping[str, Any]) -> str:
    return next(str(m["content"]) for m in body["messages"] if m["role"] == "user")


def _turn(body: Mapping[str, Any]) -> int:
    return sum(1 for m in body["messages"] if m["role"] == "assistant")


def awm_call(name: str, arguments: dict[str, Any]) -> str:
    return f'<tool_call>\n{json.dumps({"name": name, "arguments": arguments})}\n</tool_call>'


def replay(solutions: Mapping[str, Solution], *, native: bool = False) -> Policy:
    """A model that replays the reference solution of the task it is given, then answers.

    awm protocol: list_tools first, then one call_tool per solution call (arguments as a JSON
    string, as the system prompt asks), then the final answer. native: one tool call per turn.
    """

    def policy(body: dict[str, Any]) -> dict[str, Any]:
        solution = solutions[_task(body)]
        turn = _turn(body)
        answer = {"content": solution.final_answer or "Done: the task is complete."}
        if native:
            if turn >= len(solution.calls):
                return answer
            call = solution.calls[turn]
            return {"tool_calls": [{"id": f"call_{turn}", "type": "function",
                                    "function": {"name": call.tool, "arguments": json.dumps(call.arguments)}}]}
        if turn == 0:
            return {"content": "Let me see the tools.\n" + awm_call("list_tools", {})}
        if turn > len(solution.calls):
            return answer
        call = solution.calls[turn - 1]
        return {"content": awm_call("call_tool", {"tool_name": f"mcp_tool_mcp_server_{call.tool}",
                                                  "arguments": json.dumps(call.arguments)})}

    return policy


def answer_at_once(body: dict[str, Any]) -> dict[str, Any]:
    return {"content": "I have done it."}


def script(replies: list[str]) -> Policy:
    """A model that gives these replies in turn (the last one forever after)."""

    def policy(body: dict[str, Any]) -> dict[str, Any]:
        return {"content": replies[min(_turn(body), len(replies) - 1)]}

    return policy
