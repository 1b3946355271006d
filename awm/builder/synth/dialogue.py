"""The bounded ask-check-feed-back loop every stage runs.

A `Dialogue` holds one request (a system and a user message) and at most one failed exchange:
after a rejected reply, the next request is the original prompt, the rejected reply, and a
feedback message listing the problems found (parse errors, SQL errors, tracebacks...). Only the
last exchange is kept, so a request never grows beyond about twice the largest reply.

Feedback messages begin with `FEEDBACK_HEADER`, so a reader of a request log (or a scripted
test server) can tell a retry from a first request.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

from pydantic import BaseModel, Field

from awm.builder.synth.replies import ReplyError

if TYPE_CHECKING:
    from awm.builder.synth.llm import LLMClient

__all__ = ["FEEDBACK_HEADER", "AttemptRecord", "Dialogue", "converse", "feedback_text"]

T = TypeVar("T")

FEEDBACK_HEADER = "Your previous reply was rejected"
_MAX_PROBLEMS = 20
_MAX_PROBLEM_CHARS = 2000


class AttemptRecord(BaseModel):
    """One reply and what was wrong with it (empty: accepted)."""

    attempt: int
    problems: list[str] = Field(default_factory=list)


def feedback_text(problems: list[str], attempt: int, attempts: int) -> str:
    """The user message that sends a rejected reply's problems back to the model."""
    shown = [
        p if len(p) <= _MAX_PROBLEM_CHARS else p[: _MAX_PROBLEM_CHARS - 3] + "..." for p in problems[:_MAX_PROBLEMS]
    ]
    lines = [f"{FEEDBACK_HEADER} (attempt {attempt} of {attempts}). Problems found:"]
    lines += [f"- {p}" for p in shown]
    if len(problems) > len(shown):
        lines.append(f"- ... and {len(problems) - len(shown)} more of the same kind")
    lines.append(
        "Fix every problem and send the complete corrected reply again, in exactly the format "
        "asked for originally (not only the changed parts)."
    )
    return "\n".join(lines)


class Dialogue:
    """One generation request with a bounded number of attempts.

    Args:
        llm: the client.
        system: the system message.
        prompt: the user message.
        stage: the stage name (accounting, errors).
        scenario: the scenario id (errors).
        attempts: the most replies to ask for.
        json_reply: the reply is one JSON object (lets the client ask for JSON mode).
        on_reject: called with the problems of each rejected reply (progress output).
    """

    def __init__(
        self,
        llm: LLMClient,
        *,
        system: str,
        prompt: str,
        stage: str,
        scenario: str | None,
        attempts: int,
        json_reply: bool = False,
        on_reject: Callable[[list[str]], None] | None = None,
    ) -> None:
        self.llm = llm
        self.base = [{"role": "system", "content": system}, {"role": "user", "content": prompt}]
        self.stage = stage
        self.scenario = scenario
        self.attempts = max(1, attempts)
        self.json_reply = json_reply
        self.on_reject = on_reject
        self.records: list[AttemptRecord] = []
        self._last: list[dict[str, str]] = []
        self._sent: list[list[dict[str, str]]] = []
        self.reply: str | None = None

    @property
    def used(self) -> int:
        return len(self.records)

    @property
    def exhausted(self) -> bool:
        return self.used >= self.attempts

    def messages(self) -> list[dict[str, str]]:
        return self.base + self._last

    def ask(self) -> str:
        """Send the next request; the reply's text."""
        messages = self.messages()
        self._sent.append(messages)
        reply = self.llm.chat(messages, stage=self.stage, scenario=self.scenario, json_reply=self.json_reply)
        text = reply.text
        if reply.finish_reason == "length":
            # Parsing a cut-off reply gives a confusing error; say what happened instead.
            self.reply = text
            self.records.append(AttemptRecord(attempt=self.used + 1))
            self.reject(["the reply was cut off at the output token limit; be more concise"], replace=True)
            raise ReplyError("the reply was cut off at the output token limit")
        self.reply = text
        self.records.append(AttemptRecord(attempt=self.used + 1))
        return text

    def reject(self, problems: list[str], *, replace: bool = False) -> None:
        """Record why the last reply is rejected; the next request carries it back."""
        record = self.records[-1]
        record.problems = list(problems) if replace else record.problems + list(problems)
        if self.on_reject is not None:
            self.on_reject(record.problems)
        self._last = [
            {"role": "assistant", "content": self.reply or ""},
            {"role": "user", "content": feedback_text(record.problems, record.attempt, self.attempts)},
        ]

    def accept(self) -> None:
        """The last reply is good (its record keeps no problems)."""
        self.records[-1].problems = []

    def forget(self) -> None:
        """Drop every reply of this dialogue from the cache: it failed, and a rerun should ask again."""
        for messages in self._sent:
            self.llm.forget(messages, json_reply=self.json_reply)


def converse(dialogue: Dialogue, parse: Callable[[str], T], check: Callable[[T], list[str]]) -> T | None:
    """Ask until a reply parses and passes `check`, or the attempts run out.

    Args:
        dialogue: the request.
        parse: reply text -> value; raises `ReplyError` when the reply has the wrong form.
        check: value -> problems (empty when acceptable).

    Returns:
        The accepted value, or None (the problems of every attempt are in `dialogue.records`).
    """
    while not dialogue.exhausted:
        try:
            value = parse(dialogue.ask())
        except ReplyError as exc:
            if dialogue.records and not dialogue.records[-1].problems:
                dialogue.reject([str(exc)])
            continue
        problems = check(value)
        if not problems:
            dialogue.accept()
            return value
        dialogue.reject(problems)
    dialogue.forget()
    return None
