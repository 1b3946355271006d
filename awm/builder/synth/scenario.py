"""Stage `scenario`: from a seed list of names (and descriptions), propose N new, distinct scenarios.

Requests ask for up to `scenario_batch` scenarios at a time, listing every name already taken
(the seeds, those accepted, those rejected) so that the model moves on to new domains. Each
candidate is checked (a name, a description of at least 60 words) and compared with everything
taken: near-duplicates are rejected by embedding similarity when an embedding model is
configured, else by the lexical rule of `awm.builder.synth.dedupe`. Requests continue until N are
accepted or `ceil(N / batch) + 3` requests were made.

Costs: `ceil(N / batch)` requests when nothing is rejected, one more per batch lost to
duplicates; with embeddings, one embedding request for the seeds and one per reply.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field

from awm.core.naming import normalise
from awm.builder.synth.base import SYSTEM_PROMPT, StageContext, digest
from awm.builder.synth.dedupe import cosine, lexical_duplicate
from awm.builder.synth.dialogue import AttemptRecord, Dialogue, converse
from awm.builder.synth.replies import parse_model
from awm.core.errors import SynthesisError

__all__ = ["TITLE", "Candidate", "ScenarioBatch", "ScenarioList", "load_seeds", "prompt", "run"]

TITLE = "Task: propose new application scenarios"
MIN_DESCRIPTION_WORDS = 60
VERSION = 1


class Candidate(BaseModel):
    name: str
    description: str = ""


class ScenarioBatch(BaseModel):
    """The reply: `{"scenarios": [{"name", "description"}]}`."""

    scenarios: list[Candidate]


class Scenario(BaseModel):
    id: str
    name: str
    description: str
    origin: Literal["seed", "generated"]
    extra: dict[str, Any] = Field(default_factory=dict)  # classification fields written beside name, description


class Rejected(BaseModel):
    name: str
    reason: str


class ScenarioList(BaseModel):
    """The stage's result, kept in the output folder's state."""

    inputs_digest: str
    status: Literal["done", "failed"] = "done"
    scenarios: list[Scenario] = Field(default_factory=list)
    rejected: list[Rejected] = Field(default_factory=list)
    attempts: list[list[AttemptRecord]] = Field(default_factory=list)
    error: str | None = None


def load_seeds(path: Path) -> list[Candidate]:
    """Read a seed list: JSON Lines or JSON (`name`, optional `description`), else one name a line.

    Raises:
        SynthesisError: the file is missing, empty, or a line is malformed (naming the line).
    """
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise SynthesisError(f"cannot read the seed list {path}: {exc}") from exc
    seeds: list[Candidate] = []
    if path.suffix in (".jsonl", ".json"):
        if path.suffix == ".json":
            data = json.loads(text)
            rows = data.get("scenarios", []) if isinstance(data, dict) else data
            items = [(i + 1, r) for i, r in enumerate(rows)]
        else:
            items = []
            for lineno, line in enumerate(text.splitlines(), start=1):
                if line.strip():
                    try:
                        items.append((lineno, json.loads(line)))
                    except ValueError as exc:
                        raise SynthesisError(f"{path}:{lineno}: not JSON ({exc})") from exc
        for lineno, row in items:
            if not isinstance(row, dict) or not str(row.get("name", "")).strip():
                raise SynthesisError(f"{path}:{lineno}: a seed needs a `name`")
            seeds.append(Candidate(name=str(row["name"]).strip(), description=str(row.get("description", "")).strip()))
    else:
        seeds = [Candidate(name=line.strip()) for line in text.splitlines() if line.strip() and not line.startswith("#")]
    if not seeds:
        raise SynthesisError(f"the seed list {path} holds no scenario")
    return seeds


def prompt(seeds: list[Candidate], taken: list[str], count: int, tasks: int) -> str:
    """The user message asking for `count` new scenarios."""
    examples = "\n".join(
        f"- **{s.name}**" + (f": {s.description}" if s.description else "") for s in seeds
    )
    names = "\n".join(f"- {n}" for n in taken)
    return f"""# {TITLE}

Below are example scenarios: web applications a user operates through an API. Propose {count} NEW
scenarios. Each must be:
- a different domain from every example and every name in the list of names taken (not a
  rewording, a variant or a competitor of the same product);
- stateful: its data lives in a database that the API reads and changes;
- rich enough for at least {tasks} varied user tasks that look things up and change data.

For each, give a product-style `name` (2-6 words; a parenthesised focus is welcome, as in
"Acme Helpdesk (Support Tickets)") and a `description` of 150-300 words: who uses it, the
entities and how they relate, what the signed-in user (the current user) can see and do through
the API, and what stays private to other users.

## Example scenarios
{examples}

## Names taken (do not reuse or paraphrase)
{names}

Reply with one JSON object in a ```json fenced block:
{{"scenarios": [{{"name": "...", "description": "..."}}]}}
"""


def _form_problems(batch: ScenarioBatch) -> list[str]:
    if not batch.scenarios:
        return ["the list of scenarios is empty"]
    return [f"scenario {i}: the name is empty" for i, c in enumerate(batch.scenarios) if not c.name.strip()]


def run(ctx: StageContext, seeds: list[Candidate], previous: ScenarioList | None = None) -> ScenarioList:
    """Generate the scenario list (or return `previous` when it was made from the same inputs).

    Args:
        ctx: the run context.
        seeds: the seed list.
        previous: the list kept in the output folder, if any.

    Returns:
        The accepted scenarios (seeds first with `keep_seeds`), the rejected ones with reasons.
    """
    o = ctx.options
    inputs = digest("scenario", VERSION, ctx.llm.model, ctx.llm.settings.embedding_model, o.for_stage("scenario"),
                    [s.model_dump() for s in seeds])
    if previous is not None and previous.status == "done" and previous.inputs_digest == inputs:
        ctx.emit("skipped", "scenario", detail=f"{len(previous.scenarios)} scenarios (already generated)")
        return previous
    ctx.emit("start", "scenario", detail=f"{o.scenarios} new scenario(s) from {len(seeds)} seed(s)")
    out = ScenarioList(inputs_digest=inputs)
    if o.keep_seeds:
        for s in seeds:
            if normalise(s.name) not in {x.id for x in out.scenarios}:
                out.scenarios.append(Scenario(id=normalise(s.name), name=s.name, description=s.description, origin="seed"))
    taken: list[tuple[str, str]] = [(s.name, s.description) for s in seeds]
    vectors: list[list[float]] = []
    use_embeddings = bool(ctx.llm.settings.embedding_model)
    if use_embeddings:
        vectors = ctx.llm.embed([f"{n}: {d}" for n, d in taken], stage="scenario")

    generated = 0
    max_requests = math.ceil(max(o.scenarios, 1) / max(o.scenario_batch, 1)) + 3
    for _ in range(max_requests if o.scenarios > 0 else 0):
        want = min(o.scenario_batch, o.scenarios - generated)
        names = [n for n, _ in taken] + [r.name for r in out.rejected]
        dialogue = Dialogue(ctx.llm, system=SYSTEM_PROMPT, prompt=prompt(seeds, names, want, o.tasks),
                            stage="scenario", scenario=None, attempts=o.attempts, json_reply=True,
                            on_reject=ctx.retry_reporter("scenario", None))
        batch = converse(dialogue, lambda text: parse_model(text, ScenarioBatch), _form_problems)
        out.attempts.append(dialogue.records)
        if batch is None:
            out.error = "; ".join(dialogue.records[-1].problems) or "no usable reply"
            break
        fresh = [c for c in batch.scenarios if c.name.strip()]
        fresh_vectors = ctx.llm.embed([f"{c.name}: {c.description}" for c in fresh], stage="scenario") if use_embeddings and fresh else []
        for i, cand in enumerate(fresh):
            if generated >= o.scenarios:
                break
            reason = _reject_reason(cand, taken, vectors, fresh_vectors[i] if use_embeddings else None, ctx)
            if reason:
                out.rejected.append(Rejected(name=cand.name, reason=reason))
                ctx.emit("note", "scenario", normalise(cand.name), f"rejected: {reason}")
                continue
            out.scenarios.append(Scenario(id=normalise(cand.name), name=cand.name.strip(),
                                          description=cand.description.strip(), origin="generated"))
            taken.append((cand.name, cand.description))
            if use_embeddings:
                vectors.append(fresh_vectors[i])
            generated += 1
        if generated >= o.scenarios:
            break
    if generated < o.scenarios:
        out.status = "failed"
        out.error = (out.error or "too many near-duplicates") + f"; {generated} of {o.scenarios} new scenarios accepted"
        ctx.emit("failed", "scenario", detail=out.error)
    else:
        ctx.emit("done", "scenario", detail=f"{generated} new scenario(s), {len(out.rejected)} rejected")
    return out


def _reject_reason(
    cand: Candidate, taken: list[tuple[str, str]], vectors: list[list[float]], vector: list[float] | None,
    ctx: StageContext,
) -> str | None:
    o = ctx.options
    if not normalise(cand.name):
        return "the name has no letters or digits"
    if len(cand.description.split()) < MIN_DESCRIPTION_WORDS:
        return f"the description has fewer than {MIN_DESCRIPTION_WORDS} words"
    if any(normalise(n) == normalise(cand.name) for n, _ in taken):
        return "the same id as a scenario already taken"
    if vector is not None:
        for (name, _), other in zip(taken, vectors, strict=True):
            similarity = cosine(vector, other)
            if similarity >= o.embedding_threshold:
                return f"embedding too close to {name!r} (cosine {similarity:.3f} >= {o.embedding_threshold:g})"
        return None
    return lexical_duplicate(cand.name, cand.description, taken, name_threshold=o.name_overlap,
                             description_threshold=o.description_overlap)
