"""The output folder of `awm gen`: its state, and the dataset files assembled from it.

    OUT/gen_scenario.jsonl ... gen_verifier.jsonl, solutions.json    the dataset (AWM format)
    OUT/.awm-gen/scenarios.json                                       the scenario stage's result
    OUT/.awm-gen/scenarios/<id>/<stage>.json                          one stage of one scenario
    OUT/.awm-gen/scenarios/<id>/<stage>.failed.json                   its last failure, if any
    OUT/.awm-gen/report.json                                          the last run's summary
    OUT/.awm-gen/lock                                                 held by the run in progress

The state is the source of truth; the dataset files are rewritten from it (sorted by scenario
id, so the same state gives the same bytes) at the end of every run. Every file is written to
a temporary file and renamed into place, so a run killed at any moment leaves each file either
as it was or complete: the next run finds every finished stage in the state and skips it.

A failed stage is kept in `<stage>.failed.json`, beside the last good result of that stage
(if any), which it never replaces: what a run produced is not lost to a later failure.

A stage result records the digest of its inputs (the stage's options, the model, and the
outputs it was made from). A rerun redoes a stage whose inputs changed, and therefore everything
after it; it never redoes one whose inputs did not.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from awm.builder.catalog.loader import DATASET_FILES
from awm.builder.catalog.models import ApiSpec, DbSchema, SampleData
from awm.builder.catalog.solutions import SOLUTIONS_FILE, ToolCheck
from awm.builder.synth.base import Draft, Stage, StageResult, TaskArtifacts
from awm.builder.synth.scenario import ScenarioList
from awm.core.errors import SynthesisError
from awm.core.files import atomic_write

__all__ = ["STATE_DIR", "OutputFolder", "apply_output", "dataset_files"]

STATE_DIR = ".awm-gen"
M = TypeVar("M", bound=BaseModel)


# The verifier rows of a flagged task: the original's verify finds a row, and grades it as not done.
FLAGGED_CODE = '''def verify_task_completion(initial_db_path, final_db_path, final_answer=None):
    """No generated verifier passed its checks for this task (flagged by awm gen)."""
    return {"result": "others"}
'''
FLAGGED_SQL = '''def verify_task(initial_db_path, final_db_path):
    """No generated verifier passed its checks for this task (flagged by awm gen)."""
    return {"flagged": "no generated verifier passed its checks for this task"}
'''


def _jsonl(records: list[dict[str, Any]]) -> str:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)


def dataset_files(drafts: list[Draft], *, db_dir: str = "databases") -> dict[str, str]:
    """File name -> content of the AWM dataset made of `drafts` (each up to where it got).

    `db_path` in gen_db.jsonl and gen_envs.jsonl is `<db_dir>/<id>.db`.
    """
    drafts = sorted(drafts, key=lambda d: d.id)
    files: dict[str, list[dict[str, Any]]] = {name: [] for name in DATASET_FILES}
    solutions: dict[str, dict[str, Any]] = {}
    for d in drafts:
        files["gen_scenario.jsonl"].append({"name": d.name, "description": d.description})
        if d.tasks is not None:
            files["gen_tasks.jsonl"].append({"scenario": d.name, "tasks": d.tasks})
        db_path = f"{db_dir}/{d.id}.db"
        if d.db_schema is not None:
            files["gen_db.jsonl"].append({"scenario": d.id, "db_path": db_path,
                                          "db_schema": d.db_schema.model_dump(mode="json")})
        if d.sample is not None:
            tables = d.sample.model_dump(mode="json")["tables"]
            files["gen_sample.jsonl"].append({
                "scenario": d.id, "tables_count": len({t["table_name"] for t in tables}),
                "inserts_count": sum(len(t["insert_statements"]) for t in tables),
                "sample_data": {"tables": tables},
            })
        if d.spec is not None:
            files["gen_spec.jsonl"].append({"scenario": d.id, "api_spec": d.spec.model_dump(mode="json")})
        if d.env_code is not None:
            files["gen_envs.jsonl"].append({"scenario": d.id, "db_path": db_path, "full_code": d.env_code})
        for idx, art in sorted(d.verifiers.items()):
            task = d.tasks[idx] if d.tasks and idx < len(d.tasks) else ""
            row = {"scenario": d.name, "task_idx": idx, "task": task}
            files["gen_verifier.pure_code.jsonl"].append({**row, "verification": {"code": art.code}})
            if art.sql:
                files["gen_verifier.jsonl"].append({**row, "verification": {"code": art.sql}})
            solutions.setdefault(d.id, {})[str(idx)] = {"calls": art.calls, "final_answer": art.final_answer}
        for idx, reason in sorted(d.flagged.items()):
            task = d.tasks[idx] if d.tasks and idx < len(d.tasks) else ""
            row = {"scenario": d.name, "task_idx": idx, "task": task, "flagged": True, "flag_reason": reason}
            files["gen_verifier.pure_code.jsonl"].append({**row, "verification": {"code": FLAGGED_CODE}})
            files["gen_verifier.jsonl"].append({**row, "verification": {"code": FLAGGED_SQL}})
    out = {name: _jsonl(rows) for name, rows in files.items()}
    out[SOLUTIONS_FILE] = json.dumps(solutions, indent=2, ensure_ascii=False) + "\n"
    return out


class OutputFolder:
    """One `awm gen` output folder.

    Args:
        root: the folder (created when missing).

    Raises:
        SynthesisError: the folder holds dataset files that `awm gen` did not write (they would
            be overwritten).
    """

    def __init__(self, root: str | Path, *, database_dir: Path | None = None) -> None:
        self.root = Path(root)
        self.state = self.root / STATE_DIR
        # Where the seed databases go (`db_path`): OUT/databases, written relative, by default.
        self.database_dir = database_dir.resolve() if database_dir is not None else None
        foreign = [n for n in (*DATASET_FILES, SOLUTIONS_FILE) if (self.root / n).exists()]
        if foreign and not self.state.is_dir():
            raise SynthesisError(
                f"{self.root} already holds a dataset that `awm gen` did not write ({', '.join(foreign)}); "
                "choose an empty or new output folder: nothing given is overwritten"
            )
        self.state.mkdir(parents=True, exist_ok=True)

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the folder for one run; another run on it at the same time is refused.

        The lock is an `flock` on `.awm-gen/lock`: the system drops it when its holder dies, so a
        killed run never blocks the next one.

        Raises:
            SynthesisError: another `awm gen` runs on this folder.
        """
        try:
            import fcntl
        except ImportError:  # not POSIX: no lock
            yield
            return
        with open(self.state / "lock", "a") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise SynthesisError(f"another `awm gen` is running on {self.root}; wait for it to end") from None
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def refuse_overwriting(self, *inputs: Path) -> None:
        """Raise when an input file is one this folder's files would replace."""
        ours = {(self.root / n).resolve() for n in (*DATASET_FILES, SOLUTIONS_FILE)}
        for path in inputs:
            if path.resolve() in ours:
                raise SynthesisError(
                    f"{path} is an input, and `awm gen` would overwrite it: choose another output folder"
                )

    # -- scenario list ----------------------------------------------------------------------

    def load_scenarios(self) -> ScenarioList | None:
        return self._load(self.state / "scenarios.json", ScenarioList)

    def save_scenarios(self, scenarios: ScenarioList) -> None:
        atomic_write(self.state / "scenarios.json", scenarios.model_dump_json(indent=1) + "\n")

    # -- stage results ----------------------------------------------------------------------

    def stage_path(self, scenario: str, stage: Stage, *, failed: bool = False) -> Path:
        return self.state / "scenarios" / scenario / f"{stage}{'.failed' if failed else ''}.json"

    def load_stage(self, scenario: str, stage: Stage) -> StageResult | None:
        """The last good result of a stage (None when it never succeeded)."""
        return self._load(self.stage_path(scenario, stage), StageResult)

    def load_failure(self, scenario: str, stage: Stage) -> StageResult | None:
        """The last failure of a stage, if its last run failed."""
        return self._load(self.stage_path(scenario, stage, failed=True), StageResult)

    def save_stage(self, result: StageResult) -> None:
        """Keep a result. A failure never replaces the last good result: it is kept beside it."""
        failed = result.status != "done"
        atomic_write(self.stage_path(result.scenario, result.stage, failed=failed),
                     result.model_dump_json(indent=1) + "\n")
        if not failed:
            self.stage_path(result.scenario, result.stage, failed=True).unlink(missing_ok=True)

    def _load(self, path: Path, model: type[M]) -> M | None:
        try:
            return model.model_validate_json(path.read_bytes())
        except FileNotFoundError:
            return None
        except (OSError, ValidationError, ValueError):
            return None  # unreadable state is redone, never trusted

    # -- drafts and files -------------------------------------------------------------------

    def draft(self, scenario_id: str, name: str, description: str, upto: Stage | None = None) -> Draft:
        """The scenario as its finished stages describe it (only stages before `upto`, if given)."""
        from awm.builder.synth.base import STAGES

        d = Draft(id=scenario_id, name=name, description=description)
        for stage in STAGES[1:]:
            if upto is not None and stage == upto:
                break
            result = self.load_stage(scenario_id, stage)
            if result is None or result.status != "done" or result.output is None:
                break
            apply_output(d, stage, result.output)
        return d

    def drafts(self) -> list[Draft]:
        """Every scenario of the list, as far as it got."""
        scenarios = self.load_scenarios()
        if scenarios is None:
            return []
        return [self.draft(s.id, s.name, s.description) for s in scenarios.scenarios]

    def assemble(self) -> list[str]:
        """Rewrite the dataset files and seed databases from the state; the names of the files that changed."""
        changed = []
        drafts = self.drafts()
        db_dir = str(self.database_dir) if self.database_dir is not None else "databases"
        for name, text in dataset_files(drafts, db_dir=db_dir).items():
            path = self.root / name
            if text in ("", "{}\n") and not path.exists():
                continue  # no stage got that far: no empty file
            if not path.is_file() or path.read_text(encoding="utf-8") != text:
                atomic_write(path, text)
                changed.append(name)
        return changed + self._databases(drafts)

    def _databases(self, drafts: list[Draft]) -> list[str]:
        """`databases/<id>.db` (where gen_db.jsonl's `db_path` points), rebuilt when its SQL changed."""
        from awm.builder.catalog.seed import build_seed
        from awm.builder.synth.base import digest
        from awm.builder.synth.validation import seed_bundle

        index_path = self.state / "databases.json"
        try:
            built: dict[str, str] = json.loads(index_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            built = {}
        changed = []
        for d in drafts:
            if d.db_schema is None:
                continue
            key = digest(d.db_schema.model_dump(mode="json"), d.sample.model_dump(mode="json") if d.sample else None)
            path = (self.database_dir or self.root / "databases") / f"{d.id}.db"
            if built.get(d.id) == key and path.is_file():
                continue
            path.parent.mkdir(parents=True, exist_ok=True)
            path.unlink(missing_ok=True)
            build_seed(seed_bundle(d.id, d.db_schema, d.sample), path, foreign_keys=True)
            built[d.id] = key
            changed.append(str(path.relative_to(self.root)) if path.is_relative_to(self.root) else str(path))
        if changed:
            atomic_write(index_path, json.dumps(built, indent=1, sort_keys=True) + "\n")
        return changed


def apply_output(d: Draft, stage: Stage, output: dict[str, Any]) -> None:
    """Put a stage's output into a draft."""
    if stage == "task":
        d.tasks = list(output["tasks"])
    elif stage == "db":
        d.db_schema = DbSchema.model_validate(output)
    elif stage == "sample":
        d.sample = SampleData.model_validate(output)
    elif stage == "spec":
        d.spec = ApiSpec.model_validate(output)
    elif stage == "env":
        d.env_code = output["code"]
        d.tools = [ToolCheck.model_validate(t) for t in output.get("tools", [])]
    elif stage == "verifier":
        d.verifiers = {int(i): TaskArtifacts.model_validate(a) for i, a in output.get("tasks", {}).items()}
        reasons = output.get("flag_reasons", {})
        d.flagged = {int(i): str(reasons.get(str(i), "")) for i in output.get("flagged", [])}
