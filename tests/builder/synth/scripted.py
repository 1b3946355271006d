"""A scripted OpenAI-compatible server for the synthesis tests (HTTP: tests/openai_server.py).

It answers `POST /v1/chat/completions` from fixture replies (tests/fixtures/synth/*.json): the
reply whose `match` strings all occur in the request's first user message, and whose `feedback`
is null for a first request or occurs in the last user message of a retry. `POST
/v1/embeddings` returns deterministic bag-of-words vectors. Every request is recorded with the
reply it got (path, query, headers, body). Faults can be queued: the next requests answer an
HTTP error (with `retry-after-ms: 10` unless a `Retry-After` is given, so the SDK's retries are
quick), or wait before answering (to trip the client's timeout). With `reasoning` set, the server
refuses `max_tokens` and a temperature other than 1 as OpenAI does for reasoning models (400,
`param` naming the parameter).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from awm.builder.synth.dedupe import words
from awm.builder.synth.dialogue import FEEDBACK_HEADER
from tests.openai_server import Answer, ScriptedServer, chat_completion

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "synth"
DIMENSIONS = 64


SCENARIOS = ("pantry_pilot_meal_planner", "campfire_site_reservations")


def load_entries(names: Iterable[str] = ("scenario", *SCENARIOS)) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for name in names:
        out.extend(json.loads((FIXTURES / f"{name}.json").read_text()))
    return out


def bag_of_words(text: str) -> list[float]:
    """A deterministic embedding: word counts hashed into DIMENSIONS buckets."""
    vector = [0.0] * DIMENSIONS
    for w in words(text):
        vector[int(hashlib.md5(w.encode()).hexdigest(), 16) % DIMENSIONS] += 1.0
    return vector


class ScriptedLLM(ScriptedServer):
    """The server; `url` is its base URL (`http://127.0.0.1:<port>/v1`)."""

    def __init__(self, entries: list[dict[str, Any]] | None = None) -> None:
        super().__init__()
        self.entries = entries if entries is not None else load_entries()
        self.requests: list[dict[str, Any]] = []
        self.faults: list[dict[str, Any]] = []  # {"status", "retry_after"?} or {"delay"}
        self.reasoning = False
        # Replies made on the fly: request body -> reply text (None: look in the fixtures).
        self.responder: Callable[[dict[str, Any]], str | None] | None = None

    def fail_next(self, status: int, times: int = 1, retry_after: str | None = None) -> None:
        with self.lock:
            self.faults += [{"status": status, "retry_after": retry_after}] * times

    def delay_next(self, seconds: float) -> None:
        with self.lock:
            self.faults.append({"delay": seconds})

    def wait_for_company(self, timeout: float = 5.0) -> None:
        """Hold the calling request until another one is in flight too (or `timeout` passes)."""
        with self.lock:
            self.arrived.wait_for(lambda: self.in_flight >= 2, timeout=timeout)

    def clear(self) -> None:
        with self.lock:
            self.requests.clear()

    # -- what was asked ---------------------------------------------------------------------

    def chats(self) -> list[dict[str, Any]]:
        with self.lock:
            return [r for r in self.requests if r["path"].endswith("/chat/completions")]

    def replied(self) -> list[str]:
        """The fixture ids of the replies given, in order."""
        return [r["entry"] for r in self.chats() if r["entry"]]

    def retries(self) -> list[dict[str, Any]]:
        """Chat requests that carry feedback on a rejected reply."""
        return [r for r in self.chats() if _feedback(r["body"]) is not None]

    # -- answering --------------------------------------------------------------------------

    def answer(self, full_path: str, body: dict[str, Any], headers: dict[str, str] | None = None) -> Answer:
        path = full_path.split("?", 1)[0]
        with self.lock:
            fault = self.faults.pop(0) if self.faults else None
            record: dict[str, Any] = {"path": path, "query": full_path[len(path) + 1:], "body": body,
                                      "headers": {k.lower(): v for k, v in (headers or {}).items()},
                                      "entry": None, "status": 200}
            self.requests.append(record)
        if fault and "delay" in fault:
            time.sleep(fault["delay"])
        elif fault:
            record["status"] = fault["status"]
            wait = {"retry-after": fault["retry_after"]} if fault.get("retry_after") else {"retry-after-ms": "10"}
            return fault["status"], {"error": {"message": "scripted fault", "type": "server_error"}}, wait
        refused = self.refuse(body) if path.endswith("/chat/completions") else None
        if refused is not None:
            record["status"] = 400
            return 400, {"error": refused}, {}
        if path.endswith("/embeddings"):
            texts = body["input"] if isinstance(body["input"], list) else [body["input"]]
            data = [{"object": "embedding", "index": i, "embedding": bag_of_words(t)} for i, t in enumerate(texts)]
            return 200, {"object": "list", "data": data, "model": body.get("model", ""),
                         "usage": {"prompt_tokens": sum(len(t) // 4 for t in texts),
                                   "total_tokens": sum(len(t) // 4 for t in texts)}}, {}
        if not path.endswith("/chat/completions"):
            record["status"] = 404
            return 404, {"error": {"message": f"no route {path}"}}, {}
        made = self.responder(body) if self.responder is not None else None
        entry = {"id": "made", "reply": made} if made is not None else self.pick(body)
        if entry is None:
            record["status"] = 400
            first = _first_user(body)[:300]
            return 400, {"error": {"message": f"no scripted reply for this request: {first!r}",
                                   "type": "invalid_request_error"}}, {}
        record["entry"] = entry["id"]
        message = {"role": "assistant", "content": entry["reply"]}
        return 200, chat_completion(body, message, entry["id"]), {}

    def refuse(self, body: dict[str, Any]) -> dict[str, Any] | None:
        """OpenAI's 400 for parameters a reasoning model does not take (None: accepted)."""
        if not self.reasoning:
            return None
        if "max_tokens" in body:
            return {"message": "Unsupported parameter: 'max_tokens' is not supported with this model. Use "
                               "'max_completion_tokens' instead.", "type": "invalid_request_error",
                    "param": "max_tokens", "code": "unsupported_parameter"}
        if body.get("temperature", 1) != 1:
            return {"message": f"Unsupported value: 'temperature' does not support {body['temperature']} with this "
                               "model. Only the default (1) value is supported.", "type": "invalid_request_error",
                    "param": "temperature", "code": "unsupported_value"}
        return None

    def pick(self, body: dict[str, Any]) -> dict[str, Any] | None:
        first = _first_user(body)
        feedback = _feedback(body)
        for e in self.entries:
            if not all(m in first for m in e["match"]):
                continue
            if feedback is None and e["feedback"] is None:
                return e
            if feedback is not None and e["feedback"] is not None and e["feedback"] in feedback:
                return e
        return None


def _users(body: dict[str, Any]) -> list[str]:
    return [m.get("content") or "" for m in body.get("messages", []) if m.get("role") == "user"]


def _first_user(body: dict[str, Any]) -> str:
    users = _users(body)
    return users[0] if users else ""


def _feedback(body: dict[str, Any]) -> str | None:
    users = _users(body)
    return users[-1] if len(users) > 1 and users[-1].startswith(FEEDBACK_HEADER) else None
