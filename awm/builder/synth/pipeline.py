"""Run the stages of `awm gen` over an output folder, without stage barriers.

The scenario stage runs first (it decides which scenarios exist). Then each scenario goes
through the requested stages on its own, `jobs` scenarios at a time: a scenario whose env is
ready gets its verifiers while another is still at its schema, and with `build` a scenario is
handed to the image builder as soon as its last stage is done. A stage that fails stops its
scenario only; the others go on.

Before a stage runs, the digest of its inputs is compared with the one kept in the state: an
equal digest means the stage is done and is skipped (resume), a different one means it is
redone. Results are saved as each stage finishes, so a run killed at any point loses at most
the stages in progress. The dataset files are assembled from the state at the end (also after
Ctrl-C), and `report.json` summarises the run.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from pathlib import Path
from types import ModuleType
from typing import Any

from pydantic import BaseModel, Field

from awm.builder.catalog.loader import load_catalog
from awm.builder.catalog.models import ScenarioBundle
from awm.builder.synth import db, env, sample, scenario, spec, task, verifier
from awm.builder.synth.base import STAGES, Event, GenOptions, Stage, StageContext, StageResult, digest
from awm.builder.synth.llm import LLMClient
from awm.builder.synth.scenario import Rejected, Scenario, ScenarioList, load_seeds
from awm.builder.synth.state import OutputFolder, dataset_files
from awm.core.errors import AWMError, SynthesisError
from awm.core.files import atomic_write
from awm.core.naming import normalise

__all__ = ["STAGE_MODULES", "BuildOutcome", "GenReport", "ScenarioReport", "generate"]

log = logging.getLogger("awm")

STAGE_MODULES: dict[Stage, ModuleType] = {
    "task": task, "db": db, "sample": sample, "spec": spec, "env": env, "verifier": verifier,
}
"""The per-scenario stages, in order, and the module that runs each."""


class BuildOutcome(BaseModel):
    """What `--build` made of a finished scenario."""

    status: str  # built | cached | failed | quarantined
    tag: str | None = None
    error: str | None = None


class ScenarioReport(BaseModel):
    """One scenario in the summary of a run."""

    id: str
    name: str
    stages: dict[str, str] = Field(default_factory=dict)  # stage -> done|skipped|failed|blocked
    error: str | None = None
    notes: list[str] = Field(default_factory=list)
    tools: dict[str, str] = Field(default_factory=dict)  # tool -> outcome of its probe call
    flagged_tasks: list[int] = Field(default_factory=list)
    catalog_problems: list[str] = Field(default_factory=list)
    build: BuildOutcome | None = None

    @property
    def failing_tools(self) -> list[str]:
        return [t for t, o in self.tools.items() if o in ("exception", "server_error", "missing")]


class GenReport(BaseModel):
    """The summary of one `awm gen` run (also kept as `.awm-gen/report.json`)."""

    output: str
    model: str
    stages: list[str]
    complete: bool = True  # False: interrupted
    scenarios: list[ScenarioReport] = Field(default_factory=list)
    rejected_scenarios: list[Rejected] = Field(default_factory=list)
    scenario_categories: dict[str, int] = Field(default_factory=dict)  # new scenarios per category
    duplicate_rate: float = 0.0  # share of proposed scenarios rejected as (near-)duplicates
    scenario_warnings: list[str] = Field(default_factory=list)
    scenario_stop: str = ""  # why the scenario stage stopped
    probe: str = ""  # which probe ran generated code (docker or bubblewrap), if any ran
    scenario_stage: str | None = None  # done | skipped | failed (when it ran)
    llm: dict[str, dict[str, int]] = Field(default_factory=dict)  # per stage, and "total"
    files_changed: list[str] = Field(default_factory=list)
    error: str | None = None

    def counts(self) -> dict[str, dict[str, int]]:
        """Per stage: how many scenarios ended done, skipped (done before), failed or blocked."""
        out: dict[str, dict[str, int]] = {}
        for s in self.scenarios:
            for stage, status in s.stages.items():
                out.setdefault(stage, {"done": 0, "skipped": 0, "failed": 0, "blocked": 0})[status] += 1
        return out

    @property
    def failed(self) -> list[ScenarioReport]:
        return [s for s in self.scenarios if s.error or (s.build is not None and s.build.status == "failed")]


def _stage_inputs(folder: OutputFolder, sid: str, stage: Stage, name: str, description: str) -> list[Any] | None:
    """The outputs a stage is made from (None when one is not done)."""
    inputs: list[Any] = [name, description]
    for before in STAGES[1 : STAGES.index(stage)]:
        result = folder.load_stage(sid, before)
        if result is None or result.status != "done":
            return None
        inputs.append(result.output)
    return inputs


class _Run:
    def __init__(
        self, folder: OutputFolder, ctx: StageContext, stages: Sequence[Stage], build: bool,
        build_fn: Callable[[ScenarioBundle], BuildOutcome] | None,
    ) -> None:
        self.folder = folder
        self.ctx = ctx
        self.stages = stages
        self.build = build
        self.build_fn = build_fn
        self.stop = threading.Event()
        self.builder = ThreadPoolExecutor(max_workers=1, thread_name_prefix="awm-gen-build") if build else None
        self.builds: list[Future[None]] = []

    def run_scenario(self, s: Scenario, report: ScenarioReport) -> None:
        ctx, o = self.ctx, self.ctx.options
        for stage in self.stages:
            if self.stop.is_set():
                return
            inputs = _stage_inputs(self.folder, s.id, stage, s.name, s.description)
            if inputs is None:
                report.stages[stage] = "blocked"
                ctx.emit("blocked", stage, s.id, "an earlier stage is not done")
                return
            key = digest(stage, STAGE_MODULES[stage].VERSION, ctx.llm.model, o.for_stage(stage), inputs)
            previous = self.folder.load_stage(s.id, stage)
            if previous is not None and previous.status == "done" and previous.inputs_digest == key:
                report.stages[stage] = "skipped"
                ctx.emit("skipped", stage, s.id, "done before")
                continue
            ctx.emit("start", stage, s.id)
            draft = self.folder.draft(s.id, s.name, s.description, upto=stage)
            try:
                result: StageResult = STAGE_MODULES[stage].run(ctx, draft)
            except AWMError as exc:
                result = StageResult(stage=stage, scenario=s.id, status="failed",
                                     error=exc.message if exc.message.startswith("scenario") else
                                     f"scenario {s.id!r}, stage {stage}: {exc.message}")
            except Exception as exc:  # a bug must not stop the batch; it is logged in full
                log.exception("scenario %s: unexpected error in stage %s", s.id, stage)
                result = StageResult(stage=stage, scenario=s.id, status="failed",
                                     error=f"scenario {s.id!r}, stage {stage}: unexpected error: "
                                           f"{type(exc).__name__}: {exc}")
            result.inputs_digest = key
            self.folder.save_stage(result)
            report.stages[stage] = result.status
            for note in result.notes:
                ctx.emit("note", stage, s.id, note)
            if result.status != "done":
                report.error = result.error
                ctx.emit("failed", stage, s.id, result.error or "")
                return
            ctx.emit("done", stage, s.id, _summary(stage, result))
        if "verifier" in self.stages:
            self.finish(s, report)

    def finish(self, s: Scenario, report: ScenarioReport) -> None:
        """Check a scenario whose last stage is done with the catalog; hand it to the builder."""
        if self.folder.load_stage(s.id, "verifier") is None:
            return
        draft = self.folder.draft(s.id, s.name, s.description)
        bundle, problems = catalog_check(draft)
        report.catalog_problems = problems
        if bundle is None:
            report.error = f"scenario {s.id!r}: the catalog refuses the generated files: {'; '.join(problems)}"
            self.ctx.emit("failed", "catalog", s.id, report.error)
            return
        if self.builder is not None and self.build_fn is not None and not self.stop.is_set():
            fn = self.build_fn

            def build() -> None:
                try:
                    outcome = fn(bundle)
                except Exception as exc:  # no engine, say: the scenario is done, only its image failed
                    outcome = BuildOutcome(status="failed", error=f"scenario {s.id!r}: cannot build: {exc}")
                report.build = outcome
                self.ctx.emit("built" if outcome.status != "failed" else "failed", "build", s.id,
                              outcome.error or outcome.tag or outcome.status)

            self.builds.append(self.builder.submit(build))


def _summary(stage: Stage, result: StageResult) -> str:
    out = result.output or {}
    tries = sum(len(r) for r in result.attempts.values())
    if stage == "task":
        what = f"{len(out.get('tasks', []))} tasks"
    elif stage == "db":
        what = f"{len(out.get('tables', []))} tables"
    elif stage == "sample":
        what = f"{sum(len(t.get('insert_statements', [])) for t in out.get('tables', []))} rows"
    elif stage == "spec":
        what = f"{sum(len(g.get('endpoints', [])) for g in out.get('api_groups', []))} endpoints"
    elif stage == "env":
        tools = out.get("tools", [])
        what = f"{sum(1 for t in tools if t.get('outcome') in ('ok', 'client_error'))}/{len(tools)} tools answer"
    else:
        what = f"{len(out.get('tasks', {}))} verified tasks"
    return f"{what} ({tries} {'reply' if tries == 1 else 'replies'})"


def catalog_check(draft: Any) -> tuple[ScenarioBundle | None, list[str]]:
    """Load one finished scenario the way `awm catalog` would: its bundle, and its problems."""
    with tempfile.TemporaryDirectory(prefix="awm-gen-catalog-") as tmp:
        for name, text in dataset_files([draft]).items():
            (Path(tmp) / name).write_text(text, encoding="utf-8")
        catalog = load_catalog(tmp)
    problems = [str(p) for p in catalog.all_problems()]
    return catalog.bundles.get(draft.id), problems


def generate(
    output: str | Path,
    *,
    stages: Sequence[Stage],
    llm: LLMClient,
    options: GenOptions | None = None,
    seeds: str | Path | None = None,
    only: Sequence[str] = (),
    limit: int | None = None,
    database_dir: Path | None = None,
    build_fn: Callable[[ScenarioBundle], BuildOutcome] | None = None,
    prober_factory: Callable[[], Any] | None = None,
    on_event: Callable[[Event], None] | None = None,
) -> GenReport:
    """Run `stages` over the output folder, resuming what an earlier run finished.

    Args:
        output: the output folder (created; a folder holding a dataset `awm gen` did not write
            is refused).
        stages: the stages to run, e.g. `STAGES` for `awm gen all`.
        llm: the LLM client (its usage counters end up in the report).
        options: sizes and limits (`GenOptions()` by default).
        seeds: the seed list; needed when `scenario` is among `stages`.
        only: scenario ids or names to restrict the per-scenario stages to.
        limit: the first N scenarios of the list only (after `only`).
        database_dir: where the seed databases are written (`db_path`); `<output>/databases` by default.
        build_fn: builds a finished scenario's image (`awm gen all --build`); called on a
            background thread as soon as the scenario's last stage is done.
        prober_factory: makes the environment prober (a `DockerProber` by default).
        on_event: progress callback, called from worker threads.

    Returns:
        The run's report (also written to `<output>/.awm-gen/report.json`).

    Raises:
        SynthesisError: unusable inputs (no seeds, no scenario list yet, an input the output
            would overwrite), or the scenario stage failed outright.
        KeyboardInterrupt: after the stages in progress end and the files and report are written.
    """
    options = options or GenOptions()
    folder = OutputFolder(output, database_dir=database_dir)
    if seeds is not None:
        folder.refuse_overwriting(Path(seeds))
    with folder.locked():
        return _generate(folder, [s for s in STAGES if s in set(stages)], llm, options, seeds, only, limit,
                         build_fn, prober_factory, on_event)


def _generate(
    folder: OutputFolder,
    requested: list[Stage],
    llm: LLMClient,
    options: GenOptions,
    seeds: str | Path | None,
    only: Sequence[str],
    limit: int | None,
    build_fn: Callable[[ScenarioBundle], BuildOutcome] | None,
    prober_factory: Callable[[], Any] | None,
    on_event: Callable[[Event], None] | None,
) -> GenReport:
    work = _scratch()
    ctx = StageContext(llm=llm, options=options, workdir=work, prober_factory=prober_factory, on_event=on_event)
    report = GenReport(output=str(folder.root), model=llm.model, stages=list(requested))
    run: _Run | None = None
    try:
        if "scenario" in requested:
            if seeds is None:
                raise SynthesisError("the scenario stage needs a seed list (--seeds FILE)")
            before = folder.load_scenarios()
            made = scenario.run(ctx, load_seeds(Path(seeds)), before)
            report.scenario_stage = "skipped" if made is before else made.status
            if made is not before:
                folder.save_scenarios(made)
            report.rejected_scenarios = made.rejected
            report.scenario_categories, report.duplicate_rate = made.categories, made.duplicate_rate
            report.scenario_warnings, report.scenario_stop = made.warnings, made.stop_reason
            if made.status != "done":
                report.error = made.error
        scenarios = folder.load_scenarios()
        per_scenario = [s for s in requested if s != "scenario"]
        if per_scenario and scenarios is None:
            raise SynthesisError(
                f"{folder.root} has no scenario list yet: run `awm gen scenario --seeds FILE -o {folder.root}` first"
            )
        chosen = _select(scenarios, only)[:limit]
        run = _Run(folder, ctx, per_scenario, build_fn is not None, build_fn)
        reports = {s.id: ScenarioReport(id=s.id, name=s.name) for s in chosen}
        report.scenarios = list(reports.values())
        if per_scenario:
            ctx.emit("plan", "all", detail=f"{len(chosen)} scenario(s), stages {', '.join(per_scenario)}",
                     count=len(chosen) * len(per_scenario))
            with ThreadPoolExecutor(max_workers=max(1, options.jobs), thread_name_prefix="awm-gen") as pool:
                futures = [pool.submit(run.run_scenario, s, reports[s.id]) for s in chosen]
                try:
                    wait(futures)
                    for f in futures:
                        f.result()
                except BaseException:
                    run.stop.set()  # the other workers end after the stage in progress
                    raise
        if run.builder is not None:
            wait(run.builds)
            for f in run.builds:
                f.result()
    except BaseException:
        report.complete = False
        raise
    finally:
        if run is not None and run.builder is not None:
            run.builder.shutdown(wait=True, cancel_futures=True)
        _fill_details(folder, report)
        report.llm = {**llm.usage.as_dict(), "total": dict(vars(llm.usage.total()))}
        report.probe = ctx.probe
        report.files_changed = folder.assemble()
        atomic_write(folder.state / "report.json", report.model_dump_json(indent=1) + "\n")
        shutil.rmtree(work, ignore_errors=True)
    return report


def _scratch() -> Path:
    """A scratch folder for this run, after removing those of runs that were killed.

    The folder's name holds the pid of its run: one whose process is gone was not cleaned up
    (SIGKILL), and nothing else uses it. (A recycled pid only delays the cleanup.)
    """
    root = Path(tempfile.gettempdir())
    for old in root.glob("awm-gen-*-*"):
        try:
            os.kill(int(old.name.split("-")[2]), 0)
        except (ValueError, IndexError):
            continue
        except ProcessLookupError:
            shutil.rmtree(old, ignore_errors=True)
        except PermissionError:  # alive, someone else's
            continue
    return Path(tempfile.mkdtemp(prefix=f"awm-gen-{os.getpid()}-"))


def _select(scenarios: ScenarioList | None, only: Sequence[str]) -> list[Scenario]:
    if scenarios is None:
        return []
    if not only:
        return list(scenarios.scenarios)
    wanted = {normalise(n) for n in only}
    unknown = wanted - {s.id for s in scenarios.scenarios}
    if unknown:
        raise SynthesisError(f"no scenario {', '.join(sorted(unknown))} in the scenario list "
                             f"({', '.join(s.id for s in scenarios.scenarios)})")
    return [s for s in scenarios.scenarios if s.id in wanted]


def _fill_details(folder: OutputFolder, report: GenReport) -> None:
    """Tool outcomes, flagged tasks and notes from the state, for the summary."""
    for s in report.scenarios:
        for stage in STAGES[1:]:
            status = s.stages.get(stage)
            result = folder.load_failure(s.id, stage) if status == "failed" else folder.load_stage(s.id, stage)
            if result is None:
                continue
            if status in ("done", "failed"):
                s.notes += [f"{stage}: {n}" for n in result.notes]
            if stage == "env" and result.output:
                s.tools = {t["tool"]: t["outcome"] for t in result.output.get("tools", [])}
            if stage == "verifier" and result.output:
                s.flagged_tasks = list(result.output.get("flagged", []))
