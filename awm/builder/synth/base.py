"""What every stage shares: options, the run context, a scenario's draft, and a stage's result."""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, Field

from awm.builder.catalog.models import ApiSpec, DbSchema, SampleData
from awm.builder.catalog.solutions import ToolCheck
from awm.builder.synth.dialogue import AttemptRecord

if TYPE_CHECKING:  # the client imports `openai`, which the CLI should not pay for at startup
    from awm.builder.synth.llm import LLMClient

__all__ = [
    "STAGES",
    "SYSTEM_PROMPT",
    "Draft",
    "Event",
    "GenOptions",
    "Stage",
    "StageContext",
    "StageResult",
    "TaskArtifacts",
    "dialogue_result",
    "digest",
    "schema_sql",
]

Stage = Literal["scenario", "task", "db", "sample", "spec", "env", "verifier"]
STAGES: tuple[Stage, ...] = ("scenario", "task", "db", "sample", "spec", "env", "verifier")
"""The stages in pipeline order; each needs the ones before it."""

SYSTEM_PROMPT = (
    "You are a senior software engineer who builds realistic, self-consistent simulated web "
    "applications for training and evaluating AI assistants that use tools. Each application is "
    "a SQLite database, a REST API whose endpoints are the assistant's tools, tasks a user asks "
    "the assistant to do, and verifiers that check whether a task was done. Be concrete and "
    "consistent: names, ids, dates and values must agree across everything you write. Reply in "
    "exactly the format asked for."
)


class GenOptions(BaseModel):
    """How much to generate and how hard to try. The CLI's flags map onto these fields."""

    scenarios: int = 10  # new scenarios the scenario stage proposes
    keep_seeds: bool = False  # the seed scenarios are generated for too
    scenario_batch: int = 10  # scenarios asked for per request
    few_shot: int = 8  # seed examples shown per request (sampled from the suitable ones)
    min_suitability: float = 6.0  # seeds scored below (1-10) are not shown as examples
    max_per_category: int | None = None  # None: ceil(1.5 * scenarios / categories)
    stall_rounds: int = 2  # rounds in a row without a new scenario that stop the stage
    tasks: int = 10  # tasks per scenario
    attempts: int = 3  # replies per request, the first included
    jobs: int = 4  # scenarios worked on at once
    # Failing DDL/index or INSERT statements a scenario may keep, as a share of its statements
    # (the original's default); `strict`: none, and no best attempt kept when attempts run out.
    error_threshold: float = 0.1
    strict: bool = False
    # Near-duplicate thresholds (see builder.synth.dedupe); the original's for embeddings.
    embedding_threshold: float = 0.85
    embedding_warn: float = 0.75
    name_overlap: float = 0.5
    description_overlap: float = 0.6
    probe_timeout_s: float = 180.0  # one probe container, all of its calls
    tool_timeout_s: float = 10.0  # one tool call inside the probe
    verifier_timeout_s: float = 20.0  # one verifier run, in the probe container's verifier sandbox

    def for_stage(self, stage: Stage) -> dict[str, Any]:
        """The options that change what `stage` produces (part of its inputs digest)."""
        by_stage: dict[str, dict[str, Any]] = {
            "scenario": {"scenarios": self.scenarios, "keep_seeds": self.keep_seeds, "batch": self.scenario_batch,
                         "few_shot": self.few_shot, "min_suitability": self.min_suitability,
                         "max_per_category": self.max_per_category, "stall_rounds": self.stall_rounds,
                         "thresholds": [self.embedding_threshold, self.embedding_warn, self.name_overlap,
                                        self.description_overlap]},
            "task": {"tasks": self.tasks},
            "db": {"error_threshold": self.error_threshold, "strict": self.strict},
            "sample": {"error_threshold": self.error_threshold, "strict": self.strict},
        }
        return by_stage.get(stage, {})


class TaskArtifacts(BaseModel):
    """What the verifier stage keeps for one task."""

    code: str  # verify_task_completion(initial_db_path, final_db_path, final_answer=None)
    sql: str | None = None  # verify_task(initial_db_path, final_db_path) -> evidence
    calls: list[dict[str, Any]] = Field(default_factory=list)  # reference solution: {tool, arguments}
    final_answer: str | None = None


class Draft(BaseModel):
    """One scenario as far as it has been generated."""

    id: str
    name: str
    description: str = ""
    tasks: list[str] | None = None
    db_schema: DbSchema | None = None
    sample: SampleData | None = None
    spec: ApiSpec | None = None
    env_code: str | None = None
    tools: list[ToolCheck] = Field(default_factory=list)
    verifiers: dict[int, TaskArtifacts] = Field(default_factory=dict)
    flagged: dict[int, str] = Field(default_factory=dict)  # task -> why no verifier passed its checks


class StageResult(BaseModel):
    """The outcome of one stage for one scenario, as kept in the output folder's state."""

    stage: Stage
    scenario: str
    status: Literal["done", "failed"]
    inputs_digest: str = ""
    output: dict[str, Any] | None = None
    attempts: dict[str, list[AttemptRecord]] = Field(default_factory=dict)  # per request ("" if one)
    error: str | None = None
    notes: list[str] = Field(default_factory=list)  # accepted, but worth a look


@dataclass(frozen=True)
class Event:
    """A progress event: a stage of a scenario started, finished, failed, was retried or skipped."""

    kind: Literal["plan", "start", "done", "failed", "retry", "skipped", "blocked", "built", "note"]
    stage: str
    scenario: str | None = None
    detail: str = ""
    count: int = 0  # plan: how many scenario stages the run has


@dataclass
class StageContext:
    """What a stage runs with: the client, the options, the probe, a scratch folder, progress."""

    llm: LLMClient
    options: GenOptions
    workdir: Path
    prober_factory: Callable[[], Any] | None = None
    on_event: Callable[[Event], None] | None = None
    probe: str = ""  # which probe ran generated code (set when one is made)
    _prober: Any = field(default=None, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def prober(self) -> Any:
        """The environment prober (made on first use: only env and verifier need it)."""
        with self._lock:
            if self._prober is None:
                self._prober = self.prober_factory() if self.prober_factory is not None else self._default_prober()
                describe = getattr(self._prober, "describe", None)
                self.probe = describe() if callable(describe) else type(self._prober).__name__
                self.emit("note", "probe", None, f"generated code runs in {self.probe}")
            return self._prober

    def _default_prober(self) -> Any:
        """A probe container when a Docker engine answers; else the bubblewrap sandbox on this host."""
        from awm.builder.synth.probe import DockerProber
        from awm.core.errors import BackendUnavailable, SynthesisError

        o = self.options
        try:
            return DockerProber(timeout_s=o.probe_timeout_s, tool_timeout_s=o.tool_timeout_s)
        except BackendUnavailable as unreachable:
            from awm.builder.synth.bwrap import BubblewrapProber

            try:
                return BubblewrapProber(timeout_s=o.probe_timeout_s, tool_timeout_s=o.tool_timeout_s)
            except SynthesisError as exc:
                raise SynthesisError(f"{exc.message}; and {unreachable.message}") from exc

    def emit(self, kind: Any, stage: str, scenario: str | None = None, detail: str = "", count: int = 0) -> None:
        if self.on_event is not None:
            self.on_event(Event(kind, stage, scenario, detail, count))

    def retry_reporter(self, stage: str, scenario: str | None, label: str = "") -> Callable[[list[str]], None]:
        """A `Dialogue.on_reject` that reports each rejected reply as a `retry` event."""

        def report(problems: list[str]) -> None:
            first = " ".join(problems[0].split()) if problems and problems[0] else "rejected"
            more = f" (+{len(problems) - 1} more)" if len(problems) > 1 else ""
            self.emit("retry", stage, scenario, f"{label}{first[:240]}{more}")

        return report


def digest(*parts: Any) -> str:
    """Hex SHA-256 of the parts as canonical JSON: the inputs digest of a stage."""
    text = json.dumps(parts, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def dialogue_result(
    stage: Stage,
    scenario: str,
    records: list[AttemptRecord],
    output: dict[str, Any] | None,
    *,
    notes: list[str] | None = None,
) -> StageResult:
    """The result of a one-request stage: done with `output`, or failed naming the last problems."""
    if output is not None:
        return StageResult(stage=stage, scenario=scenario, status="done", output=output,
                           attempts={"": records}, notes=notes or [])
    last = records[-1].problems if records else ["no reply"]
    error = (f"scenario {scenario!r}, stage {stage}: no acceptable reply in {len(records)} attempt(s); "
             f"last problems: {'; '.join(p.splitlines()[0] for p in last[:3])}")
    return StageResult(stage=stage, scenario=scenario, status="failed", attempts={"": records}, error=error,
                       notes=notes or [])


def schema_sql(schema: DbSchema) -> str:
    """The schema as one SQL script, for prompts."""
    parts = []
    for table in schema.tables:
        parts.append(table.ddl.strip().rstrip(";") + ";")
        parts += [sql.strip().rstrip(";") + ";" for sql in table.indexes]
    return "\n\n".join(parts)
