"""File in, file out: one stage over the files of any AWM dataset, as the original pipeline's stages run.

    awm gen verifier --mode code --input_task data/gen_tasks.jsonl --output new/gen_verifier.jsonl

A stage reads the files it is given (`--input`, `--input_task`, `--input_db`, ...); a file it
needs but is not given is taken from the folder of the first given input, by its standard name
(`gen_sample.jsonl` beside `gen_db.jsonl`). It writes one file, its output, and nothing else:
inputs are never touched, and an output that is one of the inputs is refused. Scenarios are
joined on the normalised name, as `awm catalog` does; `--allowed_scenarios` and `--limit` choose
among them (in the input's order). With `--database_dir`, the `db` and `sample` stages also
materialise each scenario's SQLite database there, and `db_path` points to it.

Resume is the LLM cache's: a rerun replays every reply already paid for (the probes run again).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ValidationError

from awm.builder.catalog.models import DbRecord, EnvRecord, SampleRecord, ScenarioRecord, SpecRecord, TasksRecord
from awm.builder.catalog.seed import build_seed
from awm.builder.synth import scenario
from awm.builder.synth.base import Draft, Event, GenOptions, Stage, StageContext, StageResult
from awm.builder.synth.llm import LLMClient
from awm.builder.synth.scenario import ScenarioList
from awm.builder.synth.state import apply_output, dataset_files
from awm.builder.synth.validation import seed_bundle
from awm.core.errors import AWMError, SynthesisError
from awm.core.files import atomic_write
from awm.core.naming import normalise

__all__ = ["INPUT_FILES", "FileRunReport", "VerifierMode", "read_drafts", "resolve_inputs", "run_file_stage",
           "write_scenarios"]

log = logging.getLogger("awm")

VerifierMode = Literal["sql", "code"]
Kind = Literal["scenario", "task", "db", "sample", "spec", "env"]

INPUT_FILES: dict[Kind, str] = {
    "scenario": "gen_scenario.jsonl", "task": "gen_tasks.jsonl", "db": "gen_db.jsonl",
    "sample": "gen_sample.jsonl", "spec": "gen_spec.jsonl", "env": "gen_envs.jsonl",
}
# What each stage is made from (the first is where the scenarios come from) and what it may use.
NEEDS: dict[Stage, tuple[Kind, ...]] = {
    "task": ("scenario",), "db": ("task",), "sample": ("task", "db"), "spec": ("task", "db"),
    "env": ("spec", "db", "sample"), "verifier": ("task", "env", "db", "sample", "spec"),
}
OPTIONAL: dict[Stage, tuple[Kind, ...]] = {
    "task": (), "db": ("scenario",), "sample": ("scenario",), "spec": ("scenario", "sample"),
    "env": ("scenario", "task"), "verifier": ("scenario",),
}
R = TypeVar("R", bound=BaseModel)


@dataclass
class FileRunReport:
    """What a file-mode stage did."""

    stage: Stage
    output: Path
    written: list[str] = field(default_factory=list)  # scenario ids in the output file
    failed: dict[str, str] = field(default_factory=dict)  # scenario id -> error
    notes: dict[str, list[str]] = field(default_factory=dict)
    databases: list[str] = field(default_factory=list)
    inputs: dict[str, str] = field(default_factory=dict)  # kind -> file read
    probe: str = ""  # which probe ran generated code (env, verifier)

    def as_dict(self) -> dict[str, Any]:
        return {"stage": self.stage, "output": str(self.output), "written": self.written, "failed": self.failed,
                "notes": self.notes, "databases": self.databases, "inputs": self.inputs, "probe": self.probe}


def _rows(path: Path, model: type[R], key: Callable[[R], str]) -> dict[str, R]:
    """The records of a JSONL file by normalised scenario name (the first of a name wins).

    Raises:
        SynthesisError: a line is not JSON or not a record of the expected kind, naming file and line.
    """
    out: dict[str, R] = {}
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise SynthesisError(f"cannot read {path}: {exc}") from exc
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = model.model_validate(json.loads(line))
        except (ValueError, ValidationError) as exc:
            first = str(exc).splitlines()[0][:300]
            raise SynthesisError(f"{path}:{lineno}: not a {model.__name__} record: {first}") from None
        out.setdefault(normalise(key(record)), record)
    return out


def resolve_inputs(stage: Stage, given: dict[Kind, Path]) -> dict[Kind, Path]:
    """The files a stage reads: those given, and the missing ones beside the first given input.

    Raises:
        SynthesisError: no input given, a given file missing, or a needed file found nowhere.
    """
    if not given:
        raise SynthesisError(f"`awm gen {stage}` with an output file needs its input files "
                             f"(e.g. --input {INPUT_FILES[NEEDS[stage][0]]})")
    for kind, path in given.items():
        if not path.is_file():
            raise SynthesisError(f"input {path} ({INPUT_FILES[kind]}) does not exist")
    folder = next(iter(given.values())).parent
    out = dict(given)
    for kind in (*NEEDS[stage], *OPTIONAL[stage]):
        if kind not in out and (folder / INPUT_FILES[kind]).is_file():
            out[kind] = folder / INPUT_FILES[kind]
    missing = [k for k in NEEDS[stage] if k not in out]
    if missing:
        raise SynthesisError(
            f"`awm gen {stage}` needs {', '.join(INPUT_FILES[k] for k in missing)}: pass "
            + ", ".join(f"--input_{'env' if k == 'env' else k}" for k in missing)
            + f" or put it beside the other inputs in {folder}"
        )
    return out


def read_drafts(files: dict[Kind, Path], primary: Kind) -> list[Draft]:
    """One draft per scenario of the `primary` file (in its order), filled from every file."""
    scenarios = _rows(files["scenario"], ScenarioRecord, lambda r: r.name) if "scenario" in files else {}
    tasks = _rows(files["task"], TasksRecord, lambda r: r.scenario) if "task" in files else {}
    dbs = _rows(files["db"], DbRecord, lambda r: r.scenario) if "db" in files else {}
    samples = _rows(files["sample"], SampleRecord, lambda r: r.scenario) if "sample" in files else {}
    specs = _rows(files["spec"], SpecRecord, lambda r: r.scenario) if "spec" in files else {}
    envs = _rows(files["env"], EnvRecord, lambda r: r.scenario) if "env" in files else {}
    by_kind: dict[str, dict[str, Any]] = {"scenario": scenarios, "task": tasks, "db": dbs, "sample": samples,
                                          "spec": specs, "env": envs}
    order = by_kind[primary]
    drafts = []
    for sid in order:
        meta = scenarios.get(sid)
        shown = meta.name if meta else next((r.scenario for r in (tasks.get(sid), dbs.get(sid)) if r), sid)
        d = Draft(id=sid, name=shown, description=meta.description if meta else "")
        if sid in tasks:
            d.tasks = list(tasks[sid].tasks)
        if sid in dbs:
            d.db_schema = dbs[sid].db_schema
        if sid in samples:
            d.sample = samples[sid].sample_data
        if sid in specs:
            d.spec = specs[sid].api_spec
        if sid in envs:
            d.env_code = envs[sid].full_code
        drafts.append(d)
    return drafts


def _choose(drafts: list[Draft], allowed: Sequence[str], limit: int | None) -> list[Draft]:
    if allowed:
        wanted = {normalise(a) for a in allowed}
        unknown = wanted - {d.id for d in drafts}
        if unknown:
            raise SynthesisError(f"--allowed_scenarios names scenarios the input does not hold: "
                                 f"{', '.join(sorted(unknown))}")
        drafts = [d for d in drafts if d.id in wanted]
    return drafts[:limit] if limit is not None else drafts


def _missing(stage: Stage, d: Draft) -> str | None:
    pieces: dict[str, object] = {"tasks": d.tasks, "schema": d.db_schema, "spec": d.spec, "module": d.env_code}
    wanted = {"db": ["tasks"], "sample": ["tasks", "schema"], "spec": ["tasks", "schema"],
              "env": ["schema", "spec"], "verifier": ["tasks", "schema", "module"]}.get(stage, [])
    absent = [w for w in wanted if pieces[w] is None]
    return f"the inputs hold no {', '.join(absent)} for it" if absent else None


def _output_name(stage: Stage, mode: VerifierMode) -> str:
    if stage == "verifier":
        return "gen_verifier.jsonl" if mode == "sql" else "gen_verifier.pure_code.jsonl"
    return {"task": "gen_tasks.jsonl", "db": "gen_db.jsonl", "sample": "gen_sample.jsonl", "spec": "gen_spec.jsonl",
            "env": "gen_envs.jsonl"}[stage]


def run_file_stage(
    stage: Stage,
    *,
    llm: LLMClient,
    inputs: dict[Kind, Path],
    output: Path,
    options: GenOptions | None = None,
    allowed: Sequence[str] = (),
    limit: int | None = None,
    database_dir: Path | None = None,
    mode: VerifierMode = "code",
    workdir: Path,
    prober_factory: Callable[[], Any] | None = None,
    on_event: Callable[[Event], None] | None = None,
) -> FileRunReport:
    """Run one per-scenario stage over input files and write its output file.

    Args:
        stage: task, db, sample, spec, env or verifier.
        llm: the client.
        inputs: the files given, by kind; the others are looked for beside them.
        output: the file to write (JSON Lines, in the AWM format).
        options: sizes and limits.
        allowed: scenario names or ids to restrict to (`--allowed_scenarios`).
        limit: the first N scenarios only (`--limit`).
        database_dir: where `db` and `sample` materialise each scenario's SQLite database.
        mode: the verifier flavour written (`sql`: evidence for a judge; `code`: graders).
        workdir: a scratch folder.
        prober_factory: makes the prober of `env` and `verifier`.
        on_event: progress callback.

    Raises:
        SynthesisError: unusable inputs, or an output that is one of them.
    """
    if stage == "scenario":
        raise SynthesisError("the scenario stage runs through `generate` (it has no per-scenario inputs)")
    options = options or GenOptions()
    files = resolve_inputs(stage, inputs)
    if output.resolve() in {p.resolve() for p in files.values()}:
        raise SynthesisError(f"{output} is an input of this stage, and `awm gen` never overwrites an input: "
                             "choose another output file")
    drafts = _choose(read_drafts(files, NEEDS[stage][0]), allowed, limit)
    ctx = StageContext(llm=llm, options=options, workdir=workdir, prober_factory=prober_factory, on_event=on_event)
    report = FileRunReport(stage=stage, output=output, inputs={k: str(p) for k, p in files.items()})
    ctx.emit("plan", "all", detail=f"{len(drafts)} scenario(s), stage {stage}", count=len(drafts))
    module = _stage_module(stage)

    def one(d: Draft) -> tuple[Draft, StageResult]:
        missing = _missing(stage, d)
        if missing:
            return d, StageResult(stage=stage, scenario=d.id, status="failed",
                                  error=f"scenario {d.id!r}, stage {stage}: {missing}")
        ctx.emit("start", stage, d.id)
        try:
            return d, module.run(ctx, d.model_copy(deep=True))
        except AWMError as exc:
            return d, StageResult(stage=stage, scenario=d.id, status="failed",
                                  error=f"scenario {d.id!r}, stage {stage}: {exc.message}")

    with ThreadPoolExecutor(max_workers=max(1, options.jobs), thread_name_prefix="awm-gen") as pool:
        results = list(pool.map(one, drafts))
    done: list[Draft] = []
    for d, result in results:
        if result.notes:
            report.notes[d.id] = list(result.notes)
        if result.status != "done" or result.output is None:
            report.failed[d.id] = result.error or "failed"
            ctx.emit("failed", stage, d.id, result.error or "")
            continue
        apply_output(d, stage, result.output)
        done.append(d)
        ctx.emit("done", stage, d.id, "")
    if database_dir is not None and stage in ("db", "sample"):
        report.databases = _materialise(done, database_dir)
    db_dir = str(database_dir.resolve()) if database_dir is not None else "databases"
    text = dataset_files(done, db_dir=db_dir)[_output_name(stage, mode)]
    atomic_write(output, text)
    report.written = [d.id for d in done]
    report.probe = ctx.probe
    return report


def write_scenarios(
    llm: LLMClient,
    options: GenOptions,
    seeds_file: Path,
    output: Path,
    *,
    on_event: Callable[[Event], None] | None = None,
) -> ScenarioList:
    """The scenario stage, file to file: the seeds (with `keep_seeds`) and the new scenarios.

    Raises:
        SynthesisError: the output is the seed list.
    """
    if output.resolve() == seeds_file.resolve():
        raise SynthesisError(f"{output} is the seed list, and `awm gen` never overwrites an input: choose another "
                             "output file")
    ctx = StageContext(llm=llm, options=options, workdir=output.parent, on_event=on_event)
    made = scenario.run(ctx, scenario.load_seeds(seeds_file), None)
    rows = [{"name": s.name, "description": s.description, **s.extra} for s in made.scenarios]
    atomic_write(output, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    return made


def _materialise(drafts: list[Draft], folder: Path) -> list[str]:
    """Build each scenario's database (schema, and rows when it has them) as `<folder>/<id>.db`."""
    folder.mkdir(parents=True, exist_ok=True)
    made = []
    for d in drafts:
        if d.db_schema is None:
            continue
        path = folder / f"{d.id}.db"
        path.unlink(missing_ok=True)
        build_seed(seed_bundle(d.id, d.db_schema, d.sample), path, foreign_keys=True)
        made.append(str(path))
    return made


def _stage_module(stage: Stage) -> Any:
    from awm.builder.synth.pipeline import STAGE_MODULES

    return STAGE_MODULES[stage]
