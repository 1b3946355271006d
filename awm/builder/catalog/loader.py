"""Load an AWM dataset folder into one validated `ScenarioBundle` per scenario.

Records are joined across files on the normalised scenario name, never on line order. Problems
are collected, not raised one at a time: a malformed line costs that line, a scenario missing a
vital piece (tasks, schema, environment module) is excluded with its reasons, and everything
else loads. Nothing here executes the dataset's code: routes are read with `ast`, and seed SQL
(`summarise`) runs only in `awm.builder.catalog.sqlbox`'s limited child process.
"""

from __future__ import annotations

import ast
import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Generic, TypeVar

from pydantic import BaseModel, Field, ValidationError

from awm.builder.catalog.models import (
    DbRecord,
    EnvRecord,
    Problem,
    Route,
    SampleRecord,
    ScenarioBundle,
    ScenarioRecord,
    Severity,
    SpecRecord,
    TasksRecord,
    Verifier,
    VerifierFlavour,
    VerifierRecord,
)
from awm.builder.catalog.routes import parse, read_routes
from awm.builder.catalog.seed import build_seed
from awm.core.errors import DatasetError, ScenarioNotFound, SeedError
from awm.core.naming import invalid_scenario_id, normalise

__all__ = [
    "DATASET_FILES",
    "Catalog",
    "ScenarioSummary",
    "load_catalog",
    "summarise",
    "verifier_function",
]

# file name -> whether a dataset without it can still produce scenarios
DATASET_FILES: dict[str, bool] = {
    "gen_scenario.jsonl": False,
    "gen_tasks.jsonl": True,
    "gen_db.jsonl": True,
    "gen_sample.jsonl": False,
    "gen_spec.jsonl": False,
    "gen_envs.jsonl": True,
    "gen_verifier.jsonl": False,
    "gen_verifier.pure_code.jsonl": False,
}
VERIFIER_FILES = ("gen_verifier.pure_code.jsonl", "gen_verifier.jsonl")

R = TypeVar("R", bound=BaseModel)


@dataclass
class Catalog:
    """A loaded dataset: the scenarios that load, those excluded and why, and file-level faults."""

    root: Path
    bundles: dict[str, ScenarioBundle] = field(default_factory=dict)
    excluded: dict[str, list[Problem]] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)

    def get(self, scenario: str) -> ScenarioBundle:
        """The bundle for a scenario id or display name.

        Raises:
            ScenarioNotFound: naming the reasons when the scenario was excluded.
        """
        sid = normalise(scenario)
        if sid in self.bundles:
            return self.bundles[sid]
        if sid in self.excluded:
            reasons = "; ".join(p.message for p in self.excluded[sid] if p.severity is Severity.FATAL)
            raise ScenarioNotFound(f"scenario {sid!r} was excluded: {reasons}", scenario=sid)
        raise ScenarioNotFound(
            f"scenario {sid!r} is not in {self.root}; `awm catalog {self.root}` lists them",
            scenario=sid,
        )

    def all_problems(self) -> list[Problem]:
        out = list(self.problems)
        for bundle in self.bundles.values():
            out.extend(bundle.problems)
        for problems in self.excluded.values():
            out.extend(problems)
        return out


@dataclass
class _Row(Generic[R]):
    record: R
    file: str
    line: int


_SCENARIO_HINT = re.compile(r'"(?:scenario|name)"\s*:\s*"((?:[^"\\]|\\.)*)"')


def _read_jsonl(
    path: Path, model: type[R], problems: list[Problem]
) -> Iterator[_Row[R]]:
    """Yield the valid records of a JSONL file; report each bad line with its number."""
    with path.open(encoding="utf-8", errors="replace") as fh:
        for lineno, text in enumerate(fh, start=1):
            if not text.strip():
                continue
            hint = _SCENARIO_HINT.search(text[:2000])
            scenario = normalise(hint.group(1)) if hint else None
            try:
                data = json.loads(text)
            except json.JSONDecodeError as exc:
                problems.append(
                    Problem(
                        severity=Severity.WARNING,
                        scenario=scenario,
                        file=path.name,
                        line=lineno,
                        message=f"malformed JSON line skipped ({exc.msg} at column {exc.colno})",
                    )
                )
                continue
            try:
                record = model.model_validate(data)
            except ValidationError as exc:
                first = exc.errors()[0]
                loc = ".".join(str(p) for p in first["loc"]) or "record"
                problems.append(
                    Problem(
                        severity=Severity.WARNING,
                        scenario=scenario,
                        file=path.name,
                        line=lineno,
                        message=f"invalid {model.__name__} record skipped: {loc}: {first['msg']}",
                    )
                )
                continue
            yield _Row(record, path.name, lineno)


def verifier_function(code: str) -> tuple[str, list[str]] | None:
    """Name and parameters of the first `def verify_...` in verifier source, or None."""
    try:
        tree = parse(code)
    except SyntaxError:
        match = re.search(r"^def (verify_\w+)\s*\(([^)]*)\)", code, re.M)
        if not match:
            return None
        params = [p.split("=")[0].split(":")[0].strip() for p in match.group(2).split(",")]
        return match.group(1), [p for p in params if p]
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name.startswith(
            "verify_"
        ):
            return node.name, [a.arg for a in node.args.args]
    return None


def _flavour(function: str, params: list[str]) -> VerifierFlavour:
    # The code flavour grades (initial, final, final_answer); the sql flavour gathers evidence
    # for a judge from (initial, final). The function tells them apart, whatever the file.
    if function == "verify_task_completion" or "final_answer" in params:
        return "code"
    return "sql"


class _Loader:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.problems: list[Problem] = []  # file-level, or lines with no scenario
        self.by_scenario: dict[str, list[Problem]] = {}
        self.names: dict[str, str] = {}  # id -> best display name seen

    def problem(
        self,
        severity: Severity,
        message: str,
        scenario: str | None = None,
        file: str | None = None,
        line: int | None = None,
    ) -> None:
        p = Problem(severity=severity, message=message, scenario=scenario, file=file, line=line)
        (self.by_scenario.setdefault(scenario, []) if scenario else self.problems).append(p)

    def _see_name(self, raw: str, file: str, line: int) -> str | None:
        """The id of a name seen in a row; None (reported) when the name cannot be a scenario."""
        why = invalid_scenario_id(raw)
        if why is not None:
            sid = normalise(raw)
            # An empty id would merge every such name into one scenario: report the row alone.
            # A long one is its own scenario, excluded with the reason.
            self.problem(Severity.FATAL, why, sid or None, file, line)
            return None
        sid = normalise(raw)
        # Prefer a display name ("SurveyMonkey Apply") over a normalised one.
        if sid not in self.names or self.names[sid] == sid:
            self.names[sid] = raw
        return sid

    def rows(self, file: str, model: type[R], key: str) -> dict[str, _Row[R]]:
        """First valid row per scenario of one file; later duplicates are reported."""
        path = self.root / file
        if not path.is_file():
            if DATASET_FILES[file]:
                self.problem(Severity.WARNING, f"missing file {file}", file=file)
            return {}
        found: dict[str, _Row[R]] = {}
        line_problems: list[Problem] = []
        for row in _read_jsonl(path, model, line_problems):
            sid = self._see_name(getattr(row.record, key), file, row.line)
            if sid is None:
                continue
            if sid in found:
                self.problem(
                    Severity.WARNING,
                    f"duplicate row ignored (line {found[sid].line} is used)",
                    sid,
                    file,
                    row.line,
                )
                continue
            found[sid] = row
        for p in line_problems:
            self.problem(p.severity, p.message, p.scenario, p.file, p.line)
        return found

    def verifier_rows(self) -> dict[str, dict[VerifierFlavour, dict[int, Verifier]]]:
        out: dict[str, dict[VerifierFlavour, dict[int, Verifier]]] = {}
        for file in VERIFIER_FILES:
            path = self.root / file
            if not path.is_file():
                continue
            line_problems: list[Problem] = []
            for row in _read_jsonl(path, VerifierRecord, line_problems):
                rec = row.record
                sid = self._see_name(rec.scenario, file, row.line)
                if sid is None:
                    continue
                if getattr(rec, "flagged", False) is True:  # `awm gen` found no verifier that passes its checks
                    continue
                fn = verifier_function(rec.verification.code)
                if fn is None:
                    self.problem(
                        Severity.WARNING,
                        f"task {rec.task_idx}: verifier code defines no `def verify_...` function",
                        sid,
                        file,
                        row.line,
                    )
                    continue
                flavour = _flavour(*fn)
                slot = out.setdefault(sid, {}).setdefault(flavour, {})
                if rec.task_idx in slot:
                    first = slot[rec.task_idx]
                    self.problem(
                        Severity.WARNING,
                        f"duplicate {flavour} verifier row for task {rec.task_idx} ignored "
                        f"({first.source_file} line {first.source_line} is used)",
                        sid,
                        file,
                        row.line,
                    )
                    continue
                slot[rec.task_idx] = Verifier(
                    task_idx=rec.task_idx,
                    flavour=flavour,
                    function=fn[0],
                    code=rec.verification.code,
                    source_file=file,
                    source_line=row.line,
                )
            for p in line_problems:
                self.problem(p.severity, p.message, p.scenario, p.file, p.line)
        return out

    def load(self) -> Catalog:
        if not self.root.is_dir():
            what = "is a file, not a folder" if self.root.exists() else "does not exist"
            raise DatasetError(f"dataset folder {self.root} {what}", path=self.root)
        present = [f for f in DATASET_FILES if (self.root / f).is_file()]
        if not present:
            raise DatasetError(
                f"{self.root} holds none of the AWM dataset files ({', '.join(DATASET_FILES)})"
            )
        scenarios = self.rows("gen_scenario.jsonl", ScenarioRecord, "name")
        tasks = self.rows("gen_tasks.jsonl", TasksRecord, "scenario")
        dbs = self.rows("gen_db.jsonl", DbRecord, "scenario")
        samples = self.rows("gen_sample.jsonl", SampleRecord, "scenario")
        specs = self.rows("gen_spec.jsonl", SpecRecord, "scenario")
        envs = self.rows("gen_envs.jsonl", EnvRecord, "scenario")
        verifiers = self.verifier_rows()

        catalog = Catalog(root=self.root)
        ids = sorted(set(self.names) | set(self.by_scenario))
        for sid in ids:
            bundle = self._bundle(
                sid,
                scenarios.get(sid),
                tasks.get(sid),
                dbs.get(sid),
                samples.get(sid),
                specs.get(sid),
                envs.get(sid),
                verifiers.get(sid, {}),
            )
            problems = self.by_scenario.get(sid, [])
            if bundle is None or any(p.severity is Severity.FATAL for p in problems):
                catalog.excluded[sid] = problems
            else:
                bundle.problems = problems
                catalog.bundles[sid] = bundle
        catalog.problems = self.problems
        return catalog

    def _bundle(
        self,
        sid: str,
        scenario: _Row[ScenarioRecord] | None,
        tasks: _Row[TasksRecord] | None,
        db: _Row[DbRecord] | None,
        sample: _Row[SampleRecord] | None,
        spec: _Row[SpecRecord] | None,
        env: _Row[EnvRecord] | None,
        verifiers: dict[VerifierFlavour, dict[int, Verifier]],
    ) -> ScenarioBundle | None:
        fatal = Severity.FATAL
        if scenario is None:
            self.problem(Severity.WARNING, "no scenario record (name, description)", sid, "gen_scenario.jsonl")
        if tasks is None or not tasks.record.tasks:
            self.problem(fatal, "no tasks", sid, "gen_tasks.jsonl", tasks.line if tasks else None)
        if db is None or not db.record.db_schema.tables:
            self.problem(fatal, "no database schema", sid, "gen_db.jsonl", db.line if db else None)
        if sample is None:
            self.problem(
                Severity.WARNING, "no sample data: the seed tables will be empty", sid, "gen_sample.jsonl"
            )
        routes: list[Route] = []
        if env is None:
            self.problem(fatal, "no environment module", sid, "gen_envs.jsonl")
        else:
            routes = self._check_module(sid, env)
        if tasks is None or db is None or env is None or not tasks.record.tasks:
            return None

        n_tasks = len(tasks.record.tasks)
        for flavour, by_task in verifiers.items():
            for idx in sorted(by_task):
                if not 0 <= idx < n_tasks:
                    v = by_task.pop(idx)
                    self.problem(
                        Severity.WARNING,
                        f"{flavour} verifier for task {idx} ignored: the scenario has "
                        f"{n_tasks} tasks (0..{n_tasks - 1})",
                        sid,
                        v.source_file,
                        v.source_line,
                    )
        uncovered = [i for i in range(n_tasks) if not any(i in v for v in verifiers.values())]
        if uncovered:
            self.problem(
                Severity.WARNING,
                f"tasks without a verifier: {', '.join(map(str, uncovered))}",
                sid,
                "gen_verifier.pure_code.jsonl",
            )
        return ScenarioBundle(
            id=sid,
            name=scenario.record.name if scenario else self.names.get(sid, sid),
            description=scenario.record.description if scenario else "",
            scenario_record=scenario.record if scenario else None,
            tasks=tasks.record.tasks,
            db_schema=db.record.db_schema,
            sample=sample.record.sample_data if sample else None,
            spec=spec.record.api_spec if spec else None,
            env_code=env.record.full_code,
            routes=routes,
            verifiers={f: dict(sorted(v.items())) for f, v in verifiers.items() if v},
        )

    def _check_module(self, sid: str, env: _Row[EnvRecord]) -> list[Route]:
        facts = read_routes(env.record.full_code)

        def report(severity: Severity, message: str) -> None:
            self.problem(severity, message, scenario=sid, file=env.file, line=env.line)

        if facts.syntax_error:
            report(Severity.FATAL, f"environment module does not parse: {facts.syntax_error}")
            return []
        if not facts.has_app:
            report(Severity.WARNING, "environment module has no module-level `app = FastAPI(...)`")
        if not facts.routes:
            report(Severity.WARNING, "environment module defines no routes")
        missing = [r.function for r in facts.routes if not r.has_operation_id]
        if missing:
            report(
                Severity.WARNING,
                f"routes without operation_id (tool names will be generated): {', '.join(missing)}",
            )
        last: dict[tuple[str, str], Route] = {}
        for route in facts.routes:
            key = (route.method, route.path)
            if key in last:
                last[key].shadowed = True
            last[key] = route
        groups: dict[tuple[str, str], list[Route]] = {}
        for route in facts.routes:
            groups.setdefault((route.method, route.path), []).append(route)
        for (method, path), same in groups.items():
            if len(same) > 1:
                report(
                    Severity.WARNING,
                    f"shadowed route: {method} {path} is defined {len(same)} times "
                    f"({', '.join(r.name for r in same)}); the tool list shows {same[-1].name!r} "
                    f"but calls run the handler of {same[0].name!r}",
                )
        seen: dict[str, Route] = {}
        for route in facts.routes:
            if route.shadowed:
                continue
            if route.name in seen:
                report(
                    Severity.WARNING,
                    f"duplicate operation_id {route.name!r} (module lines "
                    f"{seen[route.name].line} and {route.line})",
                )
            seen.setdefault(route.name, route)
        return facts.routes


def load_catalog(root: str | Path) -> Catalog:
    """Load and validate an AWM dataset folder.

    Args:
        root: the folder holding the `gen_*.jsonl` files, or a Hugging Face dataset
            `hf://<org>/<name>[@<revision>]` (see `awm.builder.catalog.hub`).

    Returns:
        A `Catalog` with one bundle per loadable scenario, the excluded ones with their problems,
        and file-level problems.

    Raises:
        DatasetError: the folder does not exist or holds no dataset file.

    Example:
        >>> catalog = load_catalog("examples")
        >>> sorted(catalog.bundles)[0]
        'acme_helpdesk_support_tickets'
    """
    from awm.builder.catalog.hub import resolve_dataset  # `hf://org/name[@rev]`: a Hub snapshot

    return _Loader(resolve_dataset(root)).load()


class ScenarioSummary(BaseModel):
    """One row of `awm catalog`: counts a person checks before building."""

    id: str
    name: str
    status: str  # "ok" | "excluded"
    tools: int = 0
    shadowed_routes: int = 0
    tasks: int = 0
    verifiers_code: int = 0
    verifiers_sql: int = 0
    tables: int = 0
    seed_rows: int = 0
    failed_statements: int = 0
    problems: list[str] = Field(default_factory=list)


def summarise(
    catalog: Catalog,
    *,
    seed: bool = True,
    foreign_keys: bool = True,
    on_progress: Callable[[str], None] | None = None,
) -> list[ScenarioSummary]:
    """Summarise every scenario of a catalog, loaded or excluded, in id order.

    Args:
        catalog: a loaded catalog.
        seed: build each seed database in memory to count rows and failed statements.
        foreign_keys: the foreign-key setting for those seed builds.
        on_progress: called with each scenario id once it is summarised.
    """
    rows: list[ScenarioSummary] = []
    for sid in sorted(set(catalog.bundles) | set(catalog.excluded)):
        if sid in catalog.excluded:
            rows.append(
                ScenarioSummary(
                    id=sid,
                    name=sid,
                    status="excluded",
                    problems=[str(p) for p in catalog.excluded[sid]],
                )
            )
        else:
            b = catalog.bundles[sid]
            row = ScenarioSummary(
                id=sid,
                name=b.name,
                status="ok",
                tools=len(b.tools),
                shadowed_routes=len(b.routes) - len(b.tools),
                tasks=len(b.tasks),
                verifiers_code=len(b.verifiers.get("code", {})),
                verifiers_sql=len(b.verifiers.get("sql", {})),
                tables=len(b.db_schema.tables),
                problems=[str(p) for p in b.problems],
            )
            if seed:
                try:
                    stats = build_seed(b, None, foreign_keys=foreign_keys)
                except SeedError as exc:  # past its deadline or size limit: listed, not fatal
                    row.problems.append(f"error: {exc.message}")
                else:
                    row.tables = stats.tables
                    row.seed_rows = stats.total_rows
                    row.failed_statements = len(stats.failed)
                    row.problems += [
                        f"warning: [{sid}] seed {f.stage} of table {f.table!r} failed: {f.error}"
                        for f in stats.failed
                    ]
            rows.append(row)
        if on_progress:
            on_progress(sid)
    return rows
