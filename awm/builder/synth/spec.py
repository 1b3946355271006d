"""Stage `spec`: the API specification whose endpoints become the tools.

One request per scenario. The reply is checked for what the env stage and the probe rely on:
methods, snake_case unique `operation_id`s (the tool names), path parameters that match the
path, no body on GET or DELETE, an example value for every required parameter (the env stage
calls every tool with them). Costs: 1 request per scenario, plus one per rejected reply.
"""

from __future__ import annotations

from awm.builder.catalog.models import ApiSpec
from awm.builder.synth.base import SYSTEM_PROMPT, Draft, StageContext, StageResult, dialogue_result, schema_sql
from awm.builder.synth.db import task_list
from awm.builder.synth.dialogue import Dialogue, converse
from awm.builder.synth.replies import parse_model
from awm.builder.synth.validation import spec_problems

__all__ = ["TITLE", "prompt", "run"]

TITLE = "Task: specify the API"
VERSION = 2


def prompt(draft: Draft) -> str:
    """The user message asking for the API specification of one scenario."""
    assert draft.db_schema is not None
    return f"""# {TITLE}

## Scenario: {draft.name}
{draft.description}

## Tasks (each must be possible through the API)
{task_list(draft.tasks or [])}

## Schema
```sql
{schema_sql(draft.db_schema)}
```

Specify the REST API whose endpoints will be the assistant's tools:
- enough endpoints for every task, plus the natural operations of the domain (typically 10 to
  40): searches and lists with filters, get by id, create, update, delete;
- every endpoint acts as the signed-in user (user id 1): no login, no user id parameter for the
  current user, no authentication parameters;
- `operation_id`: a unique snake_case verb_noun (`list_recipes`, `add_meal_plan_entry`); it is
  the tool's name;
- `request_params`: every parameter with `type` (string, integer, number, boolean, array or
  object), `param_type` (path, query or body), `required`, a `description` an assistant can act
  on (meaning, format, allowed values) and an `example` that works against realistic seed data;
  GET and DELETE endpoints take no body parameters;
- `summary` (one line) and `description` (what it does, what it returns, its errors) of every
  endpoint: they become the tool's description;
- path parameters appear in the path as `{{name}}`;
- `response`: the fields returned, briefly.

Reply with one JSON object in a ```json fenced block:
{{"api_groups": [{{"group_name": "...", "endpoints": [{{"path": "/things/{{thing_id}}", "method": "GET",
"summary": "...", "description": "...", "operation_id": "get_thing", "tags": ["things"],
"request_params": {{"thing_id": {{"type": "integer", "param_type": "path", "required": true,
"description": "...", "example": 1}}}}, "response": {{"...": "..."}}, "required_tables": ["things"],
"required_fields": {{"things": ["id", "name"]}}}}]}}]}}
"""


def run(ctx: StageContext, draft: Draft) -> StageResult:
    """Generate and check the API specification of one scenario."""
    dialogue = Dialogue(ctx.llm, system=SYSTEM_PROMPT, prompt=prompt(draft), stage="spec", scenario=draft.id,
                        attempts=ctx.options.attempts, json_reply=True, on_reject=ctx.retry_reporter("spec", draft.id))
    value = converse(dialogue, lambda text: parse_model(text, ApiSpec), spec_problems)
    bare = [f"{e.operation_id}.{name}" for g in (value.api_groups if value else []) for e in g.endpoints
            for name, p in e.request_params.items() if not str(p.get("description") or "").strip()]
    shown = f"{', '.join(bare[:8])}{' ...' if len(bare) > 8 else ''}"
    notes = [f"{len(bare)} parameter(s) without a description (the tool schema will lack it): {shown}"] if bare else []
    return dialogue_result("spec", draft.id, dialogue.records, value.model_dump(mode="json") if value else None,
                           notes=notes)
