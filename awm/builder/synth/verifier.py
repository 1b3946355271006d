"""Stage `verifier`: per task a code-flavour verifier, a sql-flavour verifier and a reference solution.

One request per task. The reply holds two ```python blocks (`verify_task_completion(...)`, the
code flavour that grades; `verify_task(...)`, the sql flavour that gathers evidence for a judge)
and a ```json block with the reference solution: the tool calls that perform the task and the
final answer. Every reply of a round is checked together:

1. the reference solutions run in one probe container (`awm.builder.synth.probe`), each on a fresh
   copy of the seed, through the module's tools; a failing call is a problem;
2. in the image's verifier sandbox, inside a container (`DockerProber.verify`; never on this
   host), the code verifier must run without error and return **others on the untouched seed**
   (a task already complete at start would reward an agent that does nothing), and
   **complete after the reference solution** (with its final answer);
3. the sql verifier must run on the same databases and return a JSON object.

Problems go back to the model for that task only; tasks still failing when the attempts run out
are flagged in the report and still get a verifier row, marked `"flagged": true` with the reason
(a field the original's tools ignore): its code returns others (code flavour) or evidence that
says why (sql flavour), so the original's `awm verify` never misses a row, and `awm catalog`
skips flagged rows (the task is listed as one without a verifier). Their replies leave the LLM
cache, so a rerun asks again. Solutions of accepted tasks are written to `solutions.json`, in the format of
`examples/solutions.json`. Costs: k requests per scenario, plus one per rejected reply; two
containers per round, one for the solutions and one for the verifiers (at most `attempts` rounds).
"""

from __future__ import annotations

import json
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from awm.builder.catalog.loader import verifier_function
from awm.builder.catalog.models import ApiSpec
from awm.builder.catalog.solutions import Solution
from awm.builder.synth.base import SYSTEM_PROMPT, Draft, StageContext, StageResult, TaskArtifacts, schema_sql
from awm.builder.synth.dialogue import AttemptRecord, Dialogue
from awm.builder.synth.env import seed_file
from awm.builder.synth.probe import ProbeResult, ProbeRun, VerifierJob, VerifierVerdict
from awm.builder.synth.replies import ReplyError, code_blocks
from awm.builder.synth.validation import scrub
from awm_server.sandbox import grade

__all__ = ["TITLE", "parse_reply", "prompt", "run", "tools_summary"]

TITLE = "Task: write the verifiers and a reference solution"
VERSION = 1
CODE_FUNCTION = "verify_task_completion"
SQL_FUNCTION = "verify_task"
_SEED_CHARS = 60_000  # the seed rows shown in a prompt, at most


def tools_summary(spec: ApiSpec | None) -> str:
    """One line per tool: name, parameters (required ones unmarked, optional with ?), route, summary."""
    lines = []
    for group in spec.api_groups if spec else []:
        for e in group.endpoints:
            params = ", ".join(
                f"{name}{'' if p.get('required') or p.get('param_type') == 'path' else '?'}: {p.get('type', 'string')}"
                for name, p in e.request_params.items()
            )
            lines.append(f"- {e.operation_id}({params}): {e.method.upper()} {e.path}. {e.summary}".rstrip())
    return "\n".join(lines)


def _seed_rows(draft: Draft) -> str:
    rows = [sql.strip() for t in (draft.sample.tables if draft.sample else []) for sql in t.insert_statements]
    text = "\n".join(rows)
    return text if len(text) <= _SEED_CHARS else text[:_SEED_CHARS] + "\n-- (more rows not shown)"


def prompt(draft: Draft, task_idx: int) -> str:
    """The user message asking for the verifiers and solution of one task."""
    assert draft.tasks is not None
    assert draft.db_schema is not None
    # Everything shared by the tasks of a scenario comes first and the task last, so that servers
    # with prefix caching (vLLM, OpenAI) reuse the long common part across the k requests.
    return f"""# {TITLE}

## Scenario: {draft.name}

## Schema
```sql
{schema_sql(draft.db_schema)}
```

## Seed data (the database before the assistant acts)
```sql
{_seed_rows(draft)}
```

## Tools (arguments are one flat JSON object; `?` marks optional ones)
{tools_summary(draft.spec)}

## What to write
Three blocks, in this order, for the task below:
1. A code verifier in a ```python block: `def {CODE_FUNCTION}(initial_db_path, final_db_path,
   final_answer=None)` returning {{"result": "complete"}} when the task was done and
   {{"result": "others"}} otherwise. Open both databases read-only with sqlite3
   (`sqlite3.connect(f"file:{{path}}?mode=ro", uri=True)`); check that the expected change
   happened (compare the final database with the initial one) and that nothing the task forbids
   changed; for a question, check `final_answer` for the right value. Use only the standard
   library, catch every exception (return others), and return others on the untouched initial
   database.
2. An evidence verifier in a second ```python block: `def {SQL_FUNCTION}(initial_db_path,
   final_db_path)` returning a JSON-serialisable dict of the facts a judge needs (the relevant
   rows before and after).
3. A reference solution in a ```json block: the tool calls that perform the task on the seed
   data above, and the final answer the assistant gives (null when the task asks nothing):
   {{"calls": [{{"tool": "tool_name", "arguments": {{}}}}], "final_answer": null}}

## Task {task_idx}
{draft.tasks[task_idx]}
"""


def parse_reply(text: str) -> TaskArtifacts:
    """The two verifiers and the solution of a reply.

    Raises:
        ReplyError: a block is missing or does not parse.
    """
    code = sql = None
    for block in code_blocks(text):
        found = verifier_function(block)
        if found is None:
            continue
        if found[0] == CODE_FUNCTION and code is None:
            code = block
        elif found[0] == SQL_FUNCTION and sql is None:
            sql = block
    missing = []
    if code is None:
        missing.append(f"a ```python block defining {CODE_FUNCTION}(initial_db_path, final_db_path, final_answer=None)")
    if sql is None:
        missing.append(f"a ```python block defining {SQL_FUNCTION}(initial_db_path, final_db_path)")
    solutions = code_blocks(text, "json", untagged=False) or [
        b for b in code_blocks(text, "json") if b.lstrip().startswith("{")
    ]
    if not solutions:
        missing.append('a ```json block with the reference solution {"calls": [...], "final_answer": ...}')
    if missing:
        raise ReplyError("the reply lacks " + "; and ".join(missing))
    try:
        solution = Solution.model_validate(json.loads(solutions[0]))
    except json.JSONDecodeError as exc:
        raise ReplyError(f"the reference solution's JSON does not parse: {exc.msg} at line {exc.lineno} "
                         f"column {exc.colno}") from None
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "the object"
        raise ReplyError(
            f"the reference solution does not have the requested fields: {where}: {first['msg']}"
        ) from None
    assert code is not None
    return TaskArtifacts(code=code, sql=sql, calls=[c.model_dump() for c in solution.calls],
                         final_answer=solution.final_answer)


def _jobs(idx: int, art: TaskArtifacts, timeout_s: float) -> list[VerifierJob]:
    """The three verifier runs that judge one task's reply (see module docstring)."""
    final = f"task-{idx}.db"
    assert art.sql is not None
    return [
        VerifierJob(id=f"{idx}/code-seed", code=art.code, function=CODE_FUNCTION, initial="seed.db",
                    final="seed.db", timeout_s=timeout_s),
        VerifierJob(id=f"{idx}/code-final", code=art.code, function=CODE_FUNCTION, initial="seed.db",
                    final=final, final_answer=art.final_answer, timeout_s=timeout_s),
        VerifierJob(id=f"{idx}/sql", code=art.sql, function=SQL_FUNCTION, initial="seed.db", final=final,
                    pass_answer=False, timeout_s=timeout_s),
    ]


def _verdict(verdict: VerifierVerdict, workdir: Path) -> tuple[Any, str | None]:
    error = verdict.error
    if error and verdict.traceback:
        frames = [line for line in verdict.traceback.splitlines() if "verifier.py" in line]
        error += ("\n" + "\n".join(frames[-3:])) if frames else ""
    return verdict.value, scrub(error, workdir) if error else None


def _check_task(
    idx: int, art: TaskArtifacts, result: ProbeResult, verdicts: dict[str, VerifierVerdict], workdir: Path,
) -> list[str]:
    problems: list[str] = []
    calls_failed = False
    unknown = sorted({c["tool"] for c in art.calls} - set(result.tools))
    if unknown:
        problems.append(f"the reference solution calls tools that do not exist: {', '.join(unknown)} "
                        f"(the tools are: {', '.join(result.tools)})")
    for call in result.calls_of(f"task-{idx}"):
        if call.is_error:
            calls_failed = True
            args = json.dumps(art.calls[call.index].get("arguments", {}), ensure_ascii=False)
            detail = call.exception or call.text
            problems.append(f"reference solution call {call.index} ({call.tool} with {args}) failed: {detail[:800]}")
    if f"task-{idx}" not in result.dbs:
        problems.append(f"the reference solution could not be run: {result.error or 'no database came back'}")
        return problems

    value, error = _verdict(verdicts[f"{idx}/code-seed"], workdir)
    if error:
        problems.append(f"the code verifier failed on the untouched seed database: {error}")
    elif grade(value) == "complete":
        problems.append("the code verifier returned complete on the untouched seed database, so an agent that "
                        "does nothing would pass; it must return others there and check the change the task asks for")
    value, error = _verdict(verdicts[f"{idx}/code-final"], workdir)
    if error:
        problems.append(f"the code verifier failed after the reference solution: {error}")
    elif grade(value) != "complete" and not calls_failed:
        problems.append(f"after the reference solution's calls the code verifier returned {json.dumps(value)[:300]} "
                        "instead of complete: either the calls do not perform the task or the verifier checks the "
                        "wrong thing")
    value, error = _verdict(verdicts[f"{idx}/sql"], workdir)
    if error:
        problems.append(f"the evidence verifier failed: {error}")
    elif not isinstance(value, dict):
        problems.append(f"the evidence verifier returned {type(value).__name__}, not a JSON object (dict)")
    return problems


def run(ctx: StageContext, draft: Draft) -> StageResult:
    """Generate and check the verifiers and solutions of every task of one scenario."""
    assert draft.tasks is not None
    assert draft.env_code is not None
    work = ctx.workdir / draft.id / "verifier"
    work.mkdir(parents=True, exist_ok=True)
    seed = seed_file(draft, work / "seed.db")
    seed.chmod(0o444)
    dialogues = {
        i: Dialogue(ctx.llm, system=SYSTEM_PROMPT, prompt=prompt(draft, i), stage="verifier", scenario=draft.id,
                    attempts=ctx.options.attempts, on_reject=ctx.retry_reporter("verifier", draft.id, f"task {i}: "))
        for i in range(len(draft.tasks))
    }
    accepted: dict[int, TaskArtifacts] = {}
    pending = sorted(dialogues)
    round_no = 0
    with ThreadPoolExecutor(max_workers=max(1, ctx.llm.settings.concurrency), thread_name_prefix="awm-gen-ask") as pool:
        while pending:
            round_no += 1

            def ask(i: int) -> tuple[int, TaskArtifacts | None]:
                d = dialogues[i]
                try:
                    return i, parse_reply(d.ask())
                except ReplyError as exc:
                    if d.records and not d.records[-1].problems:
                        d.reject([str(exc)])
                    return i, None

            parsed = {i: art for i, art in pool.map(ask, pending) if art is not None}
            if parsed:
                runs = [ProbeRun(id=f"task-{i}", calls=art.calls, keep_db=True) for i, art in sorted(parsed.items())]
                result = ctx.prober.probe(draft.id, draft.env_code, seed, runs, work / f"round-{round_no}")
                ran = [i for i in sorted(parsed) if f"task-{i}" in result.dbs]
                verdicts = ctx.prober.verify(
                    draft.id, [j for i in ran for j in _jobs(i, parsed[i], ctx.options.verifier_timeout_s)],
                    {"seed.db": seed, **{f"task-{i}.db": result.dbs[f"task-{i}"] for i in ran}})
                for i, art in sorted(parsed.items()):
                    problems = _check_task(i, art, result, verdicts, work)
                    if problems:
                        dialogues[i].reject(problems)
                    else:
                        dialogues[i].accept()
                        accepted[i] = art
            pending = [i for i in pending if i not in accepted and not dialogues[i].exhausted]
    shutil.rmtree(work, ignore_errors=True)

    attempts: dict[str, list[AttemptRecord]] = {str(i): d.records for i, d in sorted(dialogues.items())}
    flagged = sorted(set(dialogues) - set(accepted))
    reasons = {i: (dialogues[i].records[-1].problems or ["no reply"])[0].splitlines()[0][:300] if dialogues[i].records
               else "no reply" for i in flagged}
    for i in flagged:
        dialogues[i].forget()
    notes = [f"task {i} flagged (its verifier row is marked): {reasons[i]}" for i in flagged]
    output = {"tasks": {str(i): a.model_dump(mode="json") for i, a in sorted(accepted.items())},
              "flagged": flagged, "flag_reasons": {str(i): r for i, r in reasons.items()}}
    if not accepted:
        return StageResult(stage="verifier", scenario=draft.id, status="failed", attempts=attempts, notes=notes,
                           error=f"scenario {draft.id!r}, stage verifier: no task got a verifier that passes "
                                 f"its checks; first: {notes[0] if notes else 'no reply'}")
    return StageResult(stage="verifier", scenario=draft.id, status="done", output=output, attempts=attempts,
                       notes=notes)
