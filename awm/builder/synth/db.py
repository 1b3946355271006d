"""Stage `db`: the SQLite schema that the scenario's tasks need.

One request per scenario. The reply's tables are checked statically (one CREATE TABLE per
table, named as declared, references to defined tables, CREATE INDEX statements, a `users`
table) and executed in a fresh SQLite database with foreign keys on; every failing statement
goes back to the model with its SQL error. Costs: 1 request per scenario, plus one per rejected
reply.
"""

from __future__ import annotations

from awm.builder.catalog.models import DbSchema
from awm.builder.synth.base import SYSTEM_PROMPT, Draft, StageContext, StageResult, dialogue_result
from awm.builder.synth.dialogue import Dialogue, converse
from awm.builder.synth.replies import parse_model
from awm.builder.synth.validation import schema_problems

__all__ = ["TITLE", "prompt", "run", "task_list"]

TITLE = "Task: design the database schema"
VERSION = 1


def task_list(tasks: list[str]) -> str:
    """Tasks as a numbered list (numbered from 0, like `task_idx`)."""
    return "\n".join(f"{i}. {t}" for i, t in enumerate(tasks))


def prompt(draft: Draft) -> str:
    """The user message asking for the schema of one scenario."""
    return f"""# {TITLE}

## Scenario: {draft.name}
{draft.description}

## Tasks the database must support
{task_list(draft.tasks or [])}

Design the SQLite database of this application:
- a `users` table; the user with id 1 is the signed-in user;
- every entity, status and relation the tasks need, with realistic columns (timestamps as
  ISO-8601 TEXT, amounts as REAL, enumerations as TEXT with a CHECK constraint);
- `id INTEGER PRIMARY KEY` in every table, foreign keys declared with REFERENCES, NOT NULL and
  UNIQUE where the domain requires them;
- exactly one `CREATE TABLE` statement per table in `ddl`, the tables ordered so that each comes
  after the tables it references; indexes as `CREATE INDEX` statements in `indexes`.

Reply with one JSON object in a ```json fenced block:
{{"tables": [{{"name": "users", "ddl": "CREATE TABLE users (...)", "indexes": ["CREATE INDEX ..."]}}]}}
"""


def run(ctx: StageContext, draft: Draft) -> StageResult:
    """Generate and check the schema of one scenario."""
    dialogue = Dialogue(ctx.llm, system=SYSTEM_PROMPT, prompt=prompt(draft), stage="db", scenario=draft.id,
                        attempts=ctx.options.attempts, json_reply=True, on_reject=ctx.retry_reporter("db", draft.id))
    value = converse(dialogue, lambda text: parse_model(text, DbSchema), lambda s: schema_problems(draft.id, s))
    return dialogue_result("db", draft.id, dialogue.records, value.model_dump(mode="json") if value else None)
