"""Stage `task`: k self-contained user tasks per scenario (default 10).

One request per scenario. A reply is accepted when it holds exactly k distinct tasks of at least
a sentence each. Costs: 1 request per scenario, plus one per rejected reply.
"""

from __future__ import annotations

from pydantic import BaseModel

from awm.builder.synth.base import SYSTEM_PROMPT, Draft, StageContext, StageResult, dialogue_result
from awm.builder.synth.dialogue import Dialogue, converse
from awm.builder.synth.replies import parse_model

__all__ = ["TITLE", "TaskList", "check", "prompt", "run"]

TITLE = "Task: write user tasks"
VERSION = 1
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
- uses absolute dates ("March 14, 2025"), never "today" or "next week".

Reply with one JSON object in a ```json fenced block:
{{"tasks": ["...", "..."]}}
"""


def check(tasks: TaskList, k: int) -> list[str]:
    """Problems of a task list: wrong count, too short, repeated."""
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
