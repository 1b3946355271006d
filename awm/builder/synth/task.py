"""Stage `task`: k self-contained user tasks per scenario (default 10).

One request per scenario. A reply is accepted when it holds exactly k distinct tasks of at least
a sentence each, none about signing in, signing up, passwords or the user interface (the
original's rules; the prompt also asks for single-sentence tasks, which is not enforced: a long
sentence and a short second one are both fine for an agent). Costs: 1 request per scenario, plus one per rejected reply.
"""

from __future__ import annotations

import re

from pydantic import BaseModel

from awm.builder.synth.base import SYSTEM_PROMPT, Draft, StageContext, StageResult, dialogue_result
from awm.builder.synth.dialogue import Dialogue, converse
from awm.builder.synth.replies import parse_model

__all__ = ["TITLE", "TaskList", "check", "prompt", "run"]

TITLE = "Task: write user tasks"
VERSION = 2
MIN_CHARS = 25


class TaskList(BaseModel):
    """The reply: `{"tasks": ["...", ...]}`."""

    tasks: list[str]


def prompt(draft: Draft, k: int) -> str:
    """The user message asking for `k` tasks of one scenario."""
    return f"""# {TITLE}

## Scenario: {draft.name}
{draft.description}

Write exactly {k} tasks that a user of {draft.name} could ask an AI assistant to carry out through
the application's API. Each task:
- is self-contained: it names the things it is about by their natural identifiers (names,
  titles, dates, e-mail addresses), never by database ids, and needs no follow-up question;
- is done for the signed-in user (user id 1), within what that user may see and change;
- can be checked in the database afterwards (it creates, changes or removes specific records),
  except about one task in five, which asks a question whose answer is a specific value the
  assistant states in its final reply;
- differs from the others: cover different entities and operations; some need several steps
  (find something, then change it);
- uses absolute dates ("March 14, 2025"), never "today" or "next week";
- is a single sentence, as a user would type it (it may be long and name several things);
- is done entirely through the API on the application's data: never logging in, signing up,
  registering an account or resetting a password (the user is signed in already), and never
  about the user interface (clicking, scrolling, screens, themes) or anything outside the
  application (sending a real e-mail, phoning someone).

Reply with one JSON object in a ```json fenced block:
{{"tasks": ["...", "..."]}}
"""


_OUT_OF_SCOPE = re.compile(
    r"\b(log ?in|log into|sign ?in|sign ?up|register (?:an|a new|my) account|create (?:an|a new) account|"
    r"reset (?:my|the) password|click|scroll|dark mode|screen)\b", re.I)


def check(tasks: TaskList, k: int) -> list[str]:
    """Problems of a task list: wrong count, too short, repeated, about signing in or the interface."""
    problems = []
    if len(tasks.tasks) != k:
        problems.append(f"there are {len(tasks.tasks)} tasks; exactly {k} are needed")
    seen: set[str] = set()
    for i, task in enumerate(tasks.tasks):
        text = " ".join(task.split())
        if len(text) < MIN_CHARS:
            problems.append(f"task {i} is too short to be self-contained: {text!r}")
        if text.lower() in seen:
            problems.append(f"task {i} repeats an earlier task: {text!r}")
        scope = _OUT_OF_SCOPE.search(text)
        if scope:
            problems.append(f"task {i} is about {scope.group(0)!r}, which is not done through the API on the "
                            f"application's data (the user is signed in already): {text!r}")
        seen.add(text.lower())
    return problems


def run(ctx: StageContext, draft: Draft) -> StageResult:
    """Generate the tasks of one scenario."""
    k = ctx.options.tasks
    dialogue = Dialogue(ctx.llm, system=SYSTEM_PROMPT, prompt=prompt(draft, k), stage="task", scenario=draft.id,
                        attempts=ctx.options.attempts, json_reply=True, on_reject=ctx.retry_reporter("task", draft.id))
    value = converse(dialogue, lambda text: parse_model(text, TaskList), lambda t: check(t, k))
    output = {"tasks": [" ".join(t.split()) for t in value.tasks]} if value else None
    return dialogue_result("task", draft.id, dialogue.records, output)
