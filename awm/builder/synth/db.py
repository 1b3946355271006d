"""Stage `db`: the SQLite schema that the scenario's tasks need.

One request per scenario. The reply's tables are checked statically (one CREATE TABLE per
table, named as declared, references to defined tables, CREATE INDEX statements, a `users`
table) and executed in a fresh SQLite database with foreign keys on; every failing statement
goes back to the model with its SQL error, unless the failing statements are within
`--error_threshold` (a share of the statements, 0.1 by default as in the original; they are then
noted). When the attempts run out, the attempt with the fewest failing statements (of a right
form) is kept and marked in the notes, unless `--strict`. Costs: 1 request per scenario, plus one
per rejected reply.
"""

from __future__ import annotations

from typing import Generic, TypeVar

from awm.builder.catalog.models import DbSchema
from awm.builder.synth.base import SYSTEM_PROMPT, Draft, StageContext, StageResult, dialogue_result
from awm.builder.synth.dialogue import Dialogue, converse
from awm.builder.synth.replies import parse_model
from awm.builder.synth.validation import StatementCheck, YieldPolicy, schema_check

__all__ = ["TITLE", "BestAttempt", "prompt", "run", "task_list"]

T = TypeVar("T")

TITLE = "Task: design the database schema"
VERSION = 2


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
    policy = YieldPolicy(ctx.options.error_threshold)
    best = BestAttempt[DbSchema]()
    notes: list[str] = []

    def check(schema: DbSchema) -> list[str]:
        found = schema_check(draft.id, schema)
        best.offer(schema, found)
        problems = policy.problems("DDL/index", found)
        notes[:] = found.notes
        return problems

    dialogue = Dialogue(ctx.llm, system=SYSTEM_PROMPT, prompt=prompt(draft), stage="db", scenario=draft.id,
                        attempts=ctx.options.attempts, json_reply=True, on_reject=ctx.retry_reporter("db", draft.id))
    value = converse(dialogue, lambda text: parse_model(text, DbSchema), check)
    if value is None and not ctx.options.strict:
        value, notes = best.kept("DDL/index", dialogue.used)
    return dialogue_result("db", draft.id, dialogue.records, value.model_dump(mode="json") if value else None,
                           notes=notes)


class BestAttempt(Generic[T]):
    """The attempt with the fewest failing statements among those of a right form."""

    def __init__(self) -> None:
        self.value: T | None = None
        self.check: StatementCheck | None = None

    def offer(self, value: T, check: StatementCheck) -> None:
        if check.problems:
            return
        if self.check is None or len(check.failures) < len(self.check.failures):
            self.value, self.check = value, check

    def kept(self, what: str, attempts: int) -> tuple[T | None, list[str]]:
        """The best value and its notes (None when no attempt had the right form)."""
        if self.value is None or self.check is None:
            return None, []
        first = "; ".join(f.splitlines()[0][:200] for f in self.check.failures[:3])
        kept = (f"best attempt kept after {attempts} attempts: {len(self.check.failures)} of "
                f"{self.check.statements} {what} statements fail: {first}")
        return self.value, [*self.check.notes, kept]
