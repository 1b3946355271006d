"""Stage `env`: the FastAPI module whose routes are the scenario's tools.

One request per scenario; the reply is one ```python block. Checks, in order, each failure fed
back to the model:

1. static (`awm.builder.synth.validation.module_problems`): it parses, has `app`, reads
   `DATABASE_PATH`, ends with the `__main__` guard, implements every `operation_id` of the spec,
   no two routes share a method and path;
2. in a probe container (`awm.builder.synth.probe`): the module imports against a scratch copy of the
   seed, and **every tool is called** with the spec's example arguments, each on a fresh copy of
   the seed. An exception in a route or a 5xx answer is a problem (sent back with the exception
   and the module lines it passed through); a 4xx answer is recorded (examples may name records
   that do not exist) but accepted.

The result of every tool call is kept in the stage's output (`tools`) and the run's report. When
the attempts run out, the best module that imports is kept and its failing tools are reported;
a module that never imports fails the scenario. Costs: 1 request per scenario, plus one per
rejected reply (each a whole module), and one probe container per reply that passes step 1.
"""

from __future__ import annotations

import json
from pathlib import Path

from awm.builder.build.smoke import example_arguments
from awm.builder.catalog.models import ApiSpec
from awm.builder.catalog.routes import read_routes
from awm.builder.catalog.seed import build_seed
from awm.builder.catalog.solutions import ToolCheck
from awm.builder.synth.base import (
    SYSTEM_PROMPT,
    Draft,
    StageContext,
    StageResult,
    dialogue_result,
    schema_sql,
)
from awm.builder.synth.dialogue import Dialogue, converse
from awm.builder.synth.probe import ProbeResult, ProbeRun
from awm.builder.synth.replies import ReplyError, code_blocks
from awm.builder.synth.validation import module_problems, seed_bundle

__all__ = ["TITLE", "extract_module", "prompt", "run", "seed_file", "tool_checks"]

TITLE = "Task: implement the environment server"
VERSION = 2


def prompt(draft: Draft) -> str:
    """The user message asking for the environment module of one scenario."""
    assert draft.db_schema is not None
    assert draft.spec is not None
    spec = json.dumps(draft.spec.model_dump(mode="json"), indent=1, ensure_ascii=False)
    return f"""# {TITLE}

## Scenario: {draft.name}
{draft.description}

## Database (it exists already, with this schema and seed data)
```sql
{schema_sql(draft.db_schema)}
```

## API specification
```json
{spec}
```

Write one Python module: a FastAPI application that implements every endpoint of the
specification against this database.
- Use FastAPI, SQLAlchemy 2.0's declarative ORM and Pydantic v2 (fastapi 0.115, sqlalchemy 2.0,
  pydantic 2.12) and the standard library; nothing else.
- Read the database URL from the environment variable DATABASE_PATH (a full `sqlite:///...`
  URL): `engine = create_engine(os.getenv("DATABASE_PATH", "sqlite:///./app.db"),
  connect_args={{"check_same_thread": False}})`, then
  `SessionLocal = sessionmaker(bind=engine, autocommit=False, autoflush=False)`.
- ORM classes map exactly the tables and columns above. Do not create tables or insert rows:
  the database is given.
- `app = FastAPI(...)` at module level; one route per endpoint with the same method and path,
  `operation_id` equal to the specification's, a `summary`, a `description`, `tags` and a
  Pydantic `response_model`.
- Path and query parameters are function parameters declared with `Path(...)` / `Query(...)`,
  each with a `description=` and `examples=[...]` (the specification's description and
  example); body parameters form one Pydantic request model whose fields are declared with
  `Field(..., description=..., examples=[...])`. These become the tool's input schema that an
  assistant reads: a parameter without a description is a parameter it has to guess.
- Response models describe their fields the same way (`Field(description=...)`).
- Handlers open `SessionLocal()`, commit after writes and close it in `finally`. They act as
  user id 1. Unknown ids answer 404 and invalid requests 400, 409 or 422 through
  `HTTPException`; a handler must never fail with an unhandled exception.
- End the module with:
  if __name__ == "__main__":
      import uvicorn
      uvicorn.run(app, host=os.getenv("HOST", "127.0.0.1"), port=int(os.getenv("PORT", "8000")))

Reply with the complete module in one ```python fenced block.
"""


def extract_module(text: str) -> str:
    """The module in a reply: the ```python block that builds a FastAPI app (else the longest).

    Raises:
        ReplyError: the reply holds no Python block.
    """
    blocks = code_blocks(text)
    if not blocks:
        raise ReplyError("the reply holds no ```python fenced block with the module")
    with_app = [b for b in blocks if "FastAPI(" in b]
    return max(with_app or blocks, key=len)


def seed_file(draft: Draft, path: Path) -> Path:
    """Build the scenario's seed database at `path` (foreign keys on, as `awm build` does)."""
    assert draft.db_schema is not None
    build_seed(seed_bundle(draft.id, draft.db_schema, draft.sample), path, foreign_keys=True)
    return path


def tool_checks(code: str, spec: ApiSpec | None, result: ProbeResult, runs: list[ProbeRun]) -> list[ToolCheck]:
    """One `ToolCheck` per tool run, from a probe's result."""
    checks = []
    served = set(result.tools)
    for run in runs:
        call = run.calls[0]
        tool, args = call["tool"], call.get("arguments", {})
        found = result.calls_of(run.id)
        if tool not in served:
            checks.append(ToolCheck(tool=tool, arguments=args, outcome="missing",
                                    detail="not in the app's OpenAPI document, so not a tool"))
        elif not found:
            checks.append(ToolCheck(tool=tool, arguments=args, outcome="exception",
                                    detail=result.error or "the probe stopped before this call"))
        else:
            c = found[0]
            if c.exception:
                outcome, detail = "exception", c.exception
            elif c.is_error and (c.status_code or 0) >= 500:
                outcome, detail = "server_error", c.text
            elif c.is_error:
                outcome, detail = "client_error", c.text
            else:
                outcome, detail = "ok", ""
            checks.append(ToolCheck(tool=tool, arguments=args, outcome=outcome,  # type: ignore[arg-type]
                                    status_code=c.status_code, detail=detail[:1500]))
    return checks


def _runs(code: str, spec: ApiSpec | None) -> list[ProbeRun]:
    examples = example_arguments(spec)
    tools = [r.name for r in read_routes(code).routes if not r.shadowed]
    return [ProbeRun(id=f"tool-{i}", calls=[{"tool": t, "arguments": examples.get(t, {})}])
            for i, t in enumerate(dict.fromkeys(tools))]


def _problems(checks: list[ToolCheck]) -> list[str]:
    out = []
    for c in checks:
        args = json.dumps(c.arguments, ensure_ascii=False)
        if c.outcome == "exception":
            out.append(f"tool {c.tool} called with {args} raised an exception (HTTP 500):\n{c.detail}")
        elif c.outcome == "server_error":
            out.append(f"tool {c.tool} called with {args} answered HTTP {c.status_code}: {c.detail[:500]}")
        elif c.outcome == "missing":
            out.append(f"tool {c.tool} is not served: {c.detail}")
    return out


def run(ctx: StageContext, draft: Draft) -> StageResult:
    """Generate the environment module of one scenario and call every one of its tools."""
    work = ctx.workdir / draft.id / "env"
    work.mkdir(parents=True, exist_ok=True)
    seed = seed_file(draft, work / "seed.db")
    best: tuple[int, str, list[ToolCheck]] | None = None  # (failing tools, module, checks)
    attempt = 0

    def check(code: str) -> list[str]:
        nonlocal best, attempt
        attempt += 1
        static = module_problems(code, draft.spec)
        if static:
            return static
        runs = _runs(code, draft.spec)
        result = ctx.prober.probe(draft.id, code, seed, runs, work / f"probe-{attempt}")
        if result.import_error:
            return [f"the module failed on import: {result.import_error}"]
        if result.error and not result.calls:
            return [f"the module could not be run: {result.error}"]
        checks = tool_checks(code, draft.spec, result, runs)
        problems = _problems(checks)
        if best is None or len(problems) <= best[0]:
            best = (len(problems), code, checks)
        return problems

    dialogue = Dialogue(ctx.llm, system=SYSTEM_PROMPT, prompt=prompt(draft), stage="env", scenario=draft.id,
                        attempts=ctx.options.attempts, on_reject=ctx.retry_reporter("env", draft.id))
    code = converse(dialogue, extract_module, check)
    notes: list[str] = []
    if code is None and best is not None:
        # Tools still fail after every attempt: keep the best module, and say which tools fail.
        failing, code, _ = best
        notes.append(f"kept the module with the fewest failing tools ({failing}) after {dialogue.used} attempts")
    if code is None or best is None:
        return dialogue_result("env", draft.id, dialogue.records, None)
    checks = best[2] if best[1] == code else []
    bad = [c.tool for c in checks if c.outcome in ("exception", "server_error", "missing")]
    if bad:
        notes.append(f"tools failing: {', '.join(bad)}")
    output = {"code": code, "tools": [c.model_dump(mode="json") for c in checks]}
    return dialogue_result("env", draft.id, dialogue.records, output, notes=notes)
