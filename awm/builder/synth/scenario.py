"""Stage `scenario`: from a seed list of names (and descriptions), propose N new, distinct scenarios.

Built to reach 1,000+ scenarios:

* **suitability and categories**: when the seeds outnumber the examples one request shows
  (`few_shot`, 8), they are classified first (`classify` requests of 30 seeds: a category and a
  1-10 suitability score for a stateful, database-backed tool environment), unless the seed file
  carries `categories` and `suitability_score` already;
* **few-shot sampling**: each request shows `few_shot` seeds sampled from the suitable ones
  (score >= `min_suitability`), not the whole list, and asks for new scenarios in one **focus
  category**, the one with the fewest accepted so far; a category is capped at
  `max_per_category` scenarios (default `ceil(1.5 * N / categories)`), and a candidate in a full
  category is rejected;
* **concurrent rounds**: up to `concurrency` requests at once, each with its own focus and
  sample; candidates are then checked in a fixed order (so a rerun from the cache gives the same
  list): a name, a description of at least 60 words, not a near-duplicate of anything taken. With
  an embedding model, near-duplicate means a cosine similarity >= 0.85 of `"<name>: <description>"`
  (0.75-0.85 is accepted with a warning), the original's thresholds; without, the lexical rule of
  `awm.builder.synth.dedupe`;
* **an adaptive budget**: once a batch's worth of candidates was seen, each request asks for what
  the rest needs at the yield so far (accepted per candidate), and a round sends as many
  requests as that takes (at most `concurrency`); the stage stops when N are accepted, when
  `stall_rounds` rounds in a row (and at least a batch's worth of candidates) bring nothing new
  (a model that only repeats itself), or after `3 * ceil(N / batch) + concurrency` requests. A
  reply whose candidates were all rejected leaves the cache, so a rerun asks again instead of
  replaying it.

The result reports the category distribution, the duplicate rate and why the stage stopped.
Costs: about `ceil(N / batch) / yield` requests, plus `ceil(seeds / 30)` to classify; with
embeddings, one embedding request for the seeds and one per reply.
"""

from __future__ import annotations

import json
import math
import random
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, computed_field

from awm.builder.synth.base import SYSTEM_PROMPT, StageContext, digest
from awm.builder.synth.dedupe import cosine, lexical_duplicate
from awm.builder.synth.dialogue import AttemptRecord, Dialogue, converse
from awm.builder.synth.replies import parse_model
from awm.core.errors import SynthesisError
from awm.core.naming import normalise

__all__ = ["CLASSIFY_TITLE", "TITLE", "Candidate", "ScenarioBatch", "ScenarioList", "classify_prompt", "load_seeds",
           "prompt", "run"]

TITLE = "Task: propose new application scenarios"
CLASSIFY_TITLE = "Task: classify seed scenarios"
MIN_DESCRIPTION_WORDS = 60
CLASSIFY_BATCH = 30
VERSION = 2


class Candidate(BaseModel):
    name: str
    description: str = ""
    category: str | None = None  # the reply's, or a seed's first category
    suitability_score: float | None = None  # seeds: 1-10


class SeedClass(BaseModel):
    name: str
    category: str
    suitability_score: float


class SeedClasses(BaseModel):
    """The classification reply: `{"seeds": [{"name", "category", "suitability_score"}]}`."""

    seeds: list[SeedClass]


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
    duplicate: bool = False  # rejected as a (near-)duplicate, not for its form or category


class ScenarioList(BaseModel):
    """The stage's result, kept in the output folder's state."""

    inputs_digest: str
    status: Literal["done", "failed"] = "done"
    scenarios: list[Scenario] = Field(default_factory=list)
    rejected: list[Rejected] = Field(default_factory=list)
    warnings: list[str] = Field(default_factory=list)  # accepted, but close to a scenario taken
    attempts: list[list[AttemptRecord]] = Field(default_factory=list)
    categories: dict[str, int] = Field(default_factory=dict)  # generated scenarios per category
    requests: int = 0  # generation requests (classification aside)
    candidates: int = 0  # candidates proposed
    stop_reason: str = ""
    error: str | None = None

    @computed_field  # type: ignore[prop-decorator]
    @property
    def duplicate_rate(self) -> float:
        """The share of candidates rejected as duplicates or near-duplicates."""
        dups = sum(1 for r in self.rejected if r.duplicate)
        return dups / self.candidates if self.candidates else 0.0


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
            categories = row.get("categories")
            category = categories[0] if isinstance(categories, list) and categories else row.get("category")
            score = row.get("suitability_score")
            seeds.append(Candidate(name=str(row["name"]).strip(), description=str(row.get("description", "")).strip(),
                                   category=str(category).strip().lower() if category else None,
                                   suitability_score=float(score) if isinstance(score, (int, float)) else None))
    else:
        lines = (line.strip() for line in text.splitlines() if not line.startswith("#"))
        seeds = [Candidate(name=line) for line in lines if line]
    if not seeds:
        raise SynthesisError(f"the seed list {path} holds no scenario")
    return seeds


def prompt(seeds: list[Candidate], taken: list[str], count: int, tasks: int, focus: str | None = None,
           categories: list[str] | None = None) -> str:
    """The user message asking for `count` new scenarios (in the `focus` category, if any)."""
    examples = "\n".join(
        f"- **{s.name}**" + (f": {s.description}" if s.description else "") for s in seeds
    )
    names = "\n".join(f"- {n}" for n in taken)
    focus_text = ""
    reply_fields = '"name": "...", "description": "..."'
    if focus is not None:
        focus_text = (f"\nFocus category: **{focus}**. Every scenario you propose belongs to this category (give it as "
                      f"`category`), in a sub-domain that none of the names taken covers.\n")
        reply_fields += f', "category": "{focus}"'
        if categories:
            focus_text += f"The categories are: {', '.join(categories)}.\n"
    return f"""# {TITLE}

Below are example scenarios: web applications a user operates through an API. Propose {count} NEW
scenarios. Each must be:
- a different domain from every example and every name in the list of names taken (not a
  rewording, a variant or a competitor of the same product);
- stateful: its data lives in a database that the API reads and changes;
- rich enough for at least {tasks} varied user tasks that look things up and change data.
{focus_text}
For each, give a product-style `name` (2-6 words; a parenthesised focus is welcome, as in
"Acme Helpdesk (Support Tickets)") and a `description` of 150-300 words: who uses it, the
entities and how they relate, what the signed-in user (the current user) can see and do through
the API, and what stays private to other users.

## Example scenarios
{examples}

## Names taken (do not reuse or paraphrase)
{names}

Reply with one JSON object in a ```json fenced block:
{{"scenarios": [{{{reply_fields}}}]}}
"""


def classify_prompt(seeds: list[Candidate]) -> str:
    """The user message asking for each seed's category and suitability."""
    listed = "\n".join(f"- **{s.name}**" + (f": {s.description[:400]}" if s.description else "") for s in seeds)
    return f"""# {CLASSIFY_TITLE}

Each scenario below is a web application that will be rebuilt as a simulated environment: a SQLite
database, a REST API whose endpoints are an AI assistant's tools, and user tasks that read and
change the data. For each, give:
- `category`: a short lowercase domain label (1-3 words, e.g. "e-commerce", "healthcare",
  "travel", "developer tools"); reuse the same label for scenarios of the same domain;
- `suitability_score`: 1-10, how well it fits such an environment: 10 = rich, stateful data that
  a signed-in user looks up and changes through an API; 1 = nothing to store or change (a static
  page, a game of pure skill, a hardware device).

## Scenarios
{listed}

Reply with one JSON object in a ```json fenced block, one entry per scenario, same names:
{{"seeds": [{{"name": "...", "category": "...", "suitability_score": 8}}]}}
"""


def _form_problems(batch: ScenarioBatch) -> list[str]:
    if not batch.scenarios:
        return ["the list of scenarios is empty"]
    return [f"scenario {i}: the name is empty" for i, c in enumerate(batch.scenarios) if not c.name.strip()]


# Focus categories when the seeds are not classified and more than one request is needed.
DOMAINS = (
    "commerce", "finance", "healthcare", "education", "travel", "hospitality", "real estate", "logistics",
    "human resources", "customer support", "developer tools", "project management", "media", "events",
    "sports and fitness", "government services", "nonprofit", "agriculture", "manufacturing", "legal",
)


@dataclass
class _Taken:
    """Everything a candidate must differ from, and the category counts."""

    names: list[tuple[str, str]]
    vectors: list[list[float]]
    category_of: list[str | None]
    counts: dict[str, int] = field(default_factory=dict)


def _classify(ctx: StageContext, seeds: list[Candidate], out: ScenarioList) -> dict[str, tuple[str, float | None]]:
    """Category and suitability of each seed (from the file when it has them, else asked in batches)."""
    known = {normalise(s.name): (s.category, s.suitability_score) for s in seeds
             if s.category and s.suitability_score is not None}
    todo = [s for s in seeds if normalise(s.name) not in known]
    batches = [todo[i : i + CLASSIFY_BATCH] for i in range(0, len(todo), CLASSIFY_BATCH)]

    def ask(batch: list[Candidate]) -> tuple[Dialogue, SeedClasses | None]:
        wanted = {normalise(s.name) for s in batch}

        def check(value: SeedClasses) -> list[str]:
            missing = wanted - {normalise(c.name) for c in value.seeds}
            return [f"no entry for: {', '.join(sorted(missing))}"] if missing else []

        d = Dialogue(ctx.llm, system=SYSTEM_PROMPT, prompt=classify_prompt(batch), stage="scenario", scenario=None,
                     attempts=ctx.options.attempts, json_reply=True, on_reject=ctx.retry_reporter("scenario", None))
        return d, converse(d, lambda text: parse_model(text, SeedClasses), check)

    result: dict[str, tuple[str, float | None]] = {k: (str(c), v) for k, (c, v) in known.items()}
    with ThreadPoolExecutor(max_workers=max(1, ctx.llm.settings.concurrency), thread_name_prefix="awm-gen-ask") as pool:
        for batch, (dialogue, value) in zip(batches, pool.map(ask, batches), strict=True):
            out.attempts.append(dialogue.records)
            got = {normalise(c.name): c for c in value.seeds} if value else {}
            for seed in batch:
                c = got.get(normalise(seed.name))
                result[normalise(seed.name)] = ((c.category.strip().lower() or "other", c.suitability_score) if c
                                                else ("other", None))
    return result


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
    embeddings = ctx.llm.settings.embeddings
    inputs = digest("scenario", VERSION, ctx.llm.model, embeddings, o.for_stage("scenario"),
                    [s.model_dump() for s in seeds])
    if previous is not None and previous.status == "done" and previous.inputs_digest == inputs:
        ctx.emit("skipped", "scenario", detail=f"{len(previous.scenarios)} scenarios (already generated)")
        return previous
    ctx.emit("start", "scenario", detail=f"{o.scenarios} new scenario(s) from {len(seeds)} seed(s)")
    out = ScenarioList(inputs_digest=inputs)
    classes = _classify(ctx, seeds, out) if len(seeds) > o.few_shot and o.scenarios > 0 else {}
    if o.keep_seeds:
        for s in seeds:
            sid = normalise(s.name)
            if sid not in {x.id for x in out.scenarios}:
                cat, score = classes.get(sid, (None, None))
                extra = {"categories": [cat], "suitability_score": score} if cat is not None else {}
                out.scenarios.append(Scenario(id=sid, name=s.name, description=s.description, origin="seed",
                                              extra=extra))
    suitable = [s for s in seeds if (classes.get(normalise(s.name), ("", None))[1] or 10) >= o.min_suitability]
    suitable = suitable or seeds
    categories = sorted({classes[normalise(s.name)][0] for s in suitable}) if classes else (
        list(DOMAINS) if o.scenarios > o.scenario_batch else [])
    cap = o.max_per_category or (math.ceil(1.5 * o.scenarios / len(categories)) if categories else None)
    taken = _Taken(names=[(s.name, s.description) for s in seeds], vectors=[],
                   category_of=[classes.get(normalise(s.name), (None, None))[0] for s in seeds],
                   counts=dict.fromkeys(categories, 0))
    if embeddings:
        taken.vectors = ctx.llm.embed([f"{n}: {d}" for n, d in taken.names], stage="scenario")

    generated = stall = unfruitful = round_no = 0
    max_requests = 3 * math.ceil(max(o.scenarios, 1) / max(o.scenario_batch, 1)) + ctx.llm.settings.concurrency
    while generated < o.scenarios:
        remaining = o.scenarios - generated
        if out.requests >= max_requests:
            out.stop_reason = f"the request budget ({max_requests}) is spent"
            break
        open_categories = sorted((c for c in categories if cap is None or taken.counts[c] < cap),
                                 key=lambda c: (taken.counts[c], c))
        if categories and not open_categories:
            out.stop_reason = f"every category holds its cap of {cap} scenarios"
            break
        # The budget adapts to the yield so far (accepted per candidate, once a batch's worth was
        # seen): each request asks for what the rest needs at that yield, and a round sends as
        # many requests as that takes.
        rate = max(generated / out.candidates, 0.1) if out.candidates >= o.scenario_batch else 1.0
        want = min(o.scenario_batch, math.ceil(remaining / rate))
        n = min(ctx.llm.settings.concurrency, max_requests - out.requests,
                max(1, math.ceil(remaining / max(want * rate, 0.5))))
        focuses = [open_categories[i % len(open_categories)] if open_categories else None for i in range(n)]
        dialogues = [_request(ctx, seeds if not classes else suitable, taken, focuses[i], categories, want,
                              round_no, i) for i in range(n)]
        with ThreadPoolExecutor(max_workers=n, thread_name_prefix="awm-gen-ask") as pool:
            batches = list(pool.map(lambda d: converse(d, lambda t: parse_model(t, ScenarioBatch), _form_problems),
                                    dialogues))
        accepted, proposed = 0, out.candidates
        for dialogue, batch, focus in zip(dialogues, batches, focuses, strict=True):
            out.requests += 1
            out.attempts.append(dialogue.records)
            if batch is None:
                out.error = "; ".join(dialogue.records[-1].problems) or "no usable reply"
                continue
            here = _take(ctx, batch, focus, categories, cap, taken, out, o.scenarios - generated - accepted)
            if here == 0:
                dialogue.forget()  # a reply that gave nothing is not replayed on a rerun
            accepted += here
        generated += accepted
        stall, unfruitful = (0, 0) if accepted else (stall + 1, unfruitful + out.candidates - proposed)
        if stall >= o.stall_rounds and unfruitful >= o.scenario_batch:  # not just a few unlucky candidates
            out.stop_reason = (f"stalled: {stall} round(s) in a row accepted no new scenario (the model repeats "
                               "itself or proposes only near-duplicates)")
            break
        round_no += 1
    out.categories = {c: n for c, n in sorted(taken.counts.items()) if n}
    summary = (f"{generated} of {o.scenarios} new scenarios accepted in {out.requests} request(s); "
               f"{len(out.rejected)} rejected, duplicate rate {out.duplicate_rate:.0%}")
    if generated < o.scenarios:
        out.status = "failed"
        out.error = f"{out.stop_reason or out.error or 'no usable reply'}; {summary}"
        ctx.emit("failed", "scenario", detail=out.error)
    else:
        out.stop_reason = out.stop_reason or "target reached"
        ctx.emit("done", "scenario", detail=f"{generated} new scenario(s), {len(out.rejected)} rejected")
    return out


def _request(ctx: StageContext, pool: list[Candidate], taken: _Taken, focus: str | None, categories: list[str],
             want: int, round_no: int, index: int) -> Dialogue:
    """One generation request: a few-shot sample (different per request) and the names to avoid."""
    o = ctx.options
    rng = random.Random(f"{round_no}/{index}/{focus}")  # a rerun asks exactly the same
    in_focus = [s for s in pool if s.category == focus] if focus else []
    others = [s for s in pool if s not in in_focus]
    shots = (rng.sample(in_focus, min(len(in_focus), o.few_shot))
             + rng.sample(others, max(0, min(len(others), o.few_shot - len(in_focus)))))
    shots = shots if len(pool) > o.few_shot else pool
    if focus is None:
        names = [n for n, _ in taken.names]
    else:  # at 1,000 scenarios the whole list would crowd the prompt: the focus category's, and the shots'
        names = [n for (n, _), c in zip(taken.names, taken.category_of, strict=True) if c == focus or c is None]
    return Dialogue(ctx.llm, system=SYSTEM_PROMPT,
                    prompt=prompt(shots, names, want, o.tasks, focus, categories if focus else None),
                    stage="scenario", scenario=None, attempts=o.attempts, json_reply=True,
                    on_reject=ctx.retry_reporter("scenario", None))


def _take(ctx: StageContext, batch: ScenarioBatch, focus: str | None, categories: list[str], cap: int | None,
          taken: _Taken, out: ScenarioList, room: int) -> int:
    """Check a reply's candidates in order and accept up to `room`; how many were accepted."""
    fresh = [c for c in batch.scenarios if c.name.strip()]
    embeddings = bool(ctx.llm.settings.embeddings)
    vectors = ctx.llm.embed([f"{c.name}: {c.description}" for c in fresh], stage="scenario") if embeddings and fresh \
        else []
    accepted = 0
    for i, cand in enumerate(fresh):
        if accepted >= room:
            break
        out.candidates += 1
        label = (cand.category or "").strip().lower()
        category = label if label in categories else focus
        reason, duplicate = _reject_reason(cand, taken, vectors[i] if embeddings else None, ctx, out)
        if reason is None and category is not None and cap is not None and taken.counts.get(category, 0) >= cap:
            reason = f"category {category!r} already holds its cap of {cap} scenarios"
        if reason:
            out.rejected.append(Rejected(name=cand.name, reason=reason, duplicate=duplicate))
            ctx.emit("note", "scenario", normalise(cand.name), f"rejected: {reason}")
            continue
        out.scenarios.append(Scenario(id=normalise(cand.name), name=cand.name.strip(),
                                      description=cand.description.strip(), origin="generated",
                                      extra={"categories": [category]} if category else {}))
        taken.names.append((cand.name, cand.description))
        taken.category_of.append(category)
        if category is not None:
            taken.counts[category] = taken.counts.get(category, 0) + 1
        if embeddings:
            taken.vectors.append(vectors[i])
        accepted += 1
    return accepted


def _reject_reason(cand: Candidate, taken: _Taken, vector: list[float] | None, ctx: StageContext,
                   out: ScenarioList) -> tuple[str | None, bool]:
    """Why a candidate is refused, and whether as a duplicate; (None, False) when it is accepted."""
    o = ctx.options
    if not normalise(cand.name):
        return "the name has no letters or digits", False
    if len(cand.description.split()) < MIN_DESCRIPTION_WORDS:
        return f"the description has fewer than {MIN_DESCRIPTION_WORDS} words", False
    if any(normalise(n) == normalise(cand.name) for n, _ in taken.names):
        return "the same id as a scenario already taken", True
    if vector is not None:
        closest, near = 0.0, ""
        for (name, _), other in zip(taken.names, taken.vectors, strict=True):
            similarity = cosine(vector, other)
            if similarity >= o.embedding_threshold:
                return f"embedding too close to {name!r} (cosine {similarity:.3f} >= {o.embedding_threshold:g})", True
            if similarity > closest:
                closest, near = similarity, name
        if closest >= o.embedding_warn:
            out.warnings.append(f"{cand.name!r} is close to {near!r} (cosine {closest:.3f}, warned from "
                                f"{o.embedding_warn:g}); accepted")
        return None, False
    reason = lexical_duplicate(cand.name, cand.description, taken.names, name_threshold=o.name_overlap,
                               description_threshold=o.description_overlap)
    return reason, reason is not None
