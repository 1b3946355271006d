"""Stage `sample`: seed rows that make every task possible.

One request per scenario. The reply must hold only INSERT statements into tables of the schema;
they are executed one by one after the schema, with foreign keys on (as `awm build` seeds), and
every failing statement goes back to the model with its SQL error, unless they are within
`--error_threshold` (then noted). User id 1 must exist. Tables left empty are noted, not refused.
When the attempts run out, the attempt with the fewest failing inserts is kept and marked, unless
`--strict`. Costs: 1 request per scenario, plus one per rejected reply.
"""

from __future__ import annotations

from awm.builder.catalog.models import SampleData
from awm.builder.synth.base import SYSTEM_PROMPT, Draft, StageContext, StageResult, dialogue_result, schema_sql
from awm.builder.synth.db import BestAttempt, task_list
from awm.builder.synth.dialogue import Dialogue, converse
from awm.builder.synth.replies import parse_model
from awm.builder.synth.validation import YieldPolicy, sample_check

__all__ = ["TITLE", "prompt", "run"]

TITLE = "Task: write the seed data"
VERSION = 3


def prompt(draft: Draft) -> str:
    """The user message asking for the seed rows of one scenario."""
    assert draft.db_schema is not None
    return f"""# {TITLE}

## Scenario: {draft.name}
{draft.description}

## Tasks (the data must make every one of them possible)
{task_list(draft.tasks or [])}

## Schema
```sql
{schema_sql(draft.db_schema)}
```

Write the INSERT statements that fill this database with realistic, consistent data:
- user id 1 is the signed-in user; add a few other users, whose data the tasks must not need;
- every entity, name, date and value a task mentions exists, in the state the task assumes
  (a booking to cancel exists and is not cancelled yet); no task is already done;
- enough other rows (5 to 30 per table) that finding the right record needs a search: for every
  search or filter a task implies, rows that match it and rows that do not (another status,
  date, owner or category), so a wrong filter gives a visibly wrong answer;
- enough rows for every aggregation a task implies (counts, sums, averages, the most or the
  least of something) to have a single, unambiguous answer;
- varied, realistic values: different names, amounts, dates spread over months, every status
  and category of the schema used at least once; no placeholder text ("test", "foo", "Lorem");
- explicit ids in every INSERT, so references are stable; insert referenced rows first
  (foreign keys are enforced, statement by statement);
- INSERT statements only, one row each.

Reply with one JSON object in a ```json fenced block, one entry per table in insertion order:
{{"tables": [{{"table_name": "users", "reasoning": "what these rows are for",
             "insert_statements": ["INSERT INTO users (id, ...) VALUES (1, ...)"]}}]}}
"""


def run(ctx: StageContext, draft: Draft) -> StageResult:
    """Generate and check the seed rows of one scenario."""
    assert draft.db_schema is not None
    schema = draft.db_schema
    notes: list[str] = []
    policy = YieldPolicy(ctx.options.error_threshold)
    best = BestAttempt[SampleData]()

    def check(sample: SampleData) -> list[str]:
        found = sample_check(draft.id, schema, sample)
        best.offer(sample, found)
        problems = policy.problems("INSERT", found)
        notes[:] = found.notes
        return problems

    dialogue = Dialogue(ctx.llm, system=SYSTEM_PROMPT, prompt=prompt(draft), stage="sample", scenario=draft.id,
                        attempts=ctx.options.attempts, json_reply=True,
                        on_reject=ctx.retry_reporter("sample", draft.id))
    value = converse(dialogue, lambda text: parse_model(text, SampleData), check)
    if value is None and not ctx.options.strict:
        value, notes = best.kept("INSERT", dialogue.used)
    return dialogue_result("sample", draft.id, dialogue.records, value.model_dump(mode="json") if value else None,
                           notes=notes)
