"""Checks of generated pieces, each returning the problems to feed back to the model.

A problem is one sentence naming what is wrong and where (the table, the statement and its
SQLite error; the endpoint; the line), written for the model that has to fix it. Nothing here
executes generated Python: SQL runs in SQLite (foreign keys on) in the limited child process of
`awm.builder.catalog.sqlbox`, environment modules are only parsed (`awm.builder.catalog.routes`);
running them is `awm.builder.synth.probe`'s job, and verifiers run in `awm_server.sandbox`.
"""

from __future__ import annotations

import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from awm.builder.catalog.models import ApiSpec, DbSchema, SampleData, ScenarioBundle, SeedStats
from awm.builder.catalog.routes import read_routes
from awm.builder.catalog.seed import build_seed, seed_checks
from awm.core.errors import SeedError

__all__ = [
    "HTTP_METHODS",
    "StatementCheck",
    "YieldPolicy",
    "module_problems",
    "sample_check",
    "sample_problems",
    "schema_check",
    "schema_problems",
    "scrub",
    "seed_bundle",
    "short_sql",
    "spec_problems",
]

HTTP_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
CURRENT_USER_ID = 1
_USER_CHECK = f"SELECT 1 FROM users WHERE id = {CURRENT_USER_ID}"  # run in the seed's sandbox

_IDENT = r"[\"`\[]?(\w+)[\"`\]]?"
_CREATE_TABLE = re.compile(rf"^\s*CREATE\s+TABLE\s+(?:IF\s+NOT\s+EXISTS\s+)?{_IDENT}", re.I)
_CREATE_INDEX = re.compile(r"^\s*CREATE\s+(?:UNIQUE\s+)?INDEX\b", re.I)
_REFERENCES = re.compile(rf"\bREFERENCES\s+{_IDENT}", re.I)
_INSERT = re.compile(rf"^\s*INSERT\s+(?:OR\s+\w+\s+)?INTO\s+{_IDENT}", re.I)
_SNAKE = re.compile(r"^[a-z][a-z0-9_]*$")
_PATH_PARAM = re.compile(r"\{(\w+)\}")
_HEX = re.compile(r"\b0x[0-9a-fA-F]{6,}\b")
_TMP = re.compile(re.escape(tempfile.gettempdir().rstrip("/")) + r"/[^\s'\"():,]+")


def short_sql(sql: str, limit: int = 200) -> str:
    """One line of SQL, shortened for a message."""
    one = " ".join(sql.split())
    return one if len(one) <= limit else one[: limit - 3] + "..."


def scrub(text: str, *roots: str | Path) -> str:
    """`text` without what differs between runs (scratch paths, object addresses).

    Feedback goes into the next request, and the request is the cache key: with a scratch path
    or an address in it, a rerun would miss the cache.
    """
    for root in roots:
        text = text.replace(str(root), "<workdir>")
    text = _TMP.sub(lambda m: "<tmp>/" + m.group(0).rsplit("/", 1)[-1], text)  # other scratch folders
    return _HEX.sub("0x...", text)


def seed_bundle(scenario: str, schema: DbSchema, sample: SampleData | None = None) -> ScenarioBundle:
    """A minimal bundle for `awm.builder.catalog.seed.build_seed`: the schema and rows, nothing else."""
    return ScenarioBundle(id=scenario, name=scenario, tasks=["-"], db_schema=schema, sample=sample,
                          env_code="", routes=[])


@dataclass
class StatementCheck:
    """A generated schema or seed rows, executed: problems of form, and statements that failed."""

    problems: list[str] = field(default_factory=list)  # always fed back (wrong form, no user 1...)
    failures: list[str] = field(default_factory=list)  # failing statements, with their SQL errors
    statements: int = 0  # statements of this kind executed
    notes: list[str] = field(default_factory=list)

    @property
    def all_problems(self) -> list[str]:
        return self.problems + self.failures


@dataclass(frozen=True)
class YieldPolicy:
    """How many failing statements a scenario may keep (the original's `--error_threshold`).

    Example:
        >>> YieldPolicy(0.1).tolerates(StatementCheck(failures=["x"], statements=40))
        True
        >>> YieldPolicy(0.0).tolerates(StatementCheck(failures=["x"], statements=40))
        False
    """

    error_threshold: float = 0.1

    def tolerates(self, check: StatementCheck) -> bool:
        if check.problems or not check.statements:
            return not check.problems and not check.failures
        return len(check.failures) <= self.error_threshold * check.statements

    def problems(self, what: str, check: StatementCheck) -> list[str]:
        """What to feed back: nothing when the failures are within the threshold (they become a note)."""
        if check.failures and self.tolerates(check):
            check.notes.append(
                f"{len(check.failures)} of {check.statements} {what} statements failed, within --error_threshold "
                f"{self.error_threshold:g}; kept: " + "; ".join(f.splitlines()[0][:200] for f in check.failures[:3])
            )
            return []
        return check.all_problems


def _failures(stats: SeedStats) -> list[str]:
    return [
        f"{f.stage} of table {f.table!r} failed: {f.error}: {short_sql(f.sql)}"
        for f in stats.failed
    ]


def schema_problems(scenario: str, schema: DbSchema) -> list[str]:
    """What is wrong with a generated schema, statically and when executed (foreign keys on)."""
    return schema_check(scenario, schema).all_problems


def schema_check(scenario: str, schema: DbSchema) -> StatementCheck:
    """A generated schema checked statically and executed (foreign keys on)."""
    check = StatementCheck(statements=sum(1 + len(t.indexes) + len(t.examples or []) for t in schema.tables))
    problems = check.problems
    names = [t.name.lower() for t in schema.tables]
    if not schema.tables:
        problems.append("the schema has no tables")
        return check
    if "users" not in names:
        problems.append("there is no `users` table (user id 1 is the signed-in user)")
    for dup in sorted({n for n in names if names.count(n) > 1}):
        problems.append(f"table {dup!r} is defined more than once")
    for table in schema.tables:
        match = _CREATE_TABLE.match(table.ddl)
        if not match:
            problems.append(f"the ddl of table {table.name!r} is not a CREATE TABLE statement: {short_sql(table.ddl)}")
        elif match.group(1).lower() != table.name.lower():
            problems.append(f"the ddl of table {table.name!r} creates table {match.group(1)!r} instead")
        for target in _REFERENCES.findall(table.ddl):
            if target.lower() not in names:
                problems.append(f"table {table.name!r} references table {target!r}, which the schema does not define")
        for sql in table.indexes:
            if not _CREATE_INDEX.match(sql):
                problems.append(f"index of table {table.name!r} is not a CREATE INDEX statement: {short_sql(sql)}")
    try:
        stats = build_seed(seed_bundle(scenario, schema), None, foreign_keys=True)
    except SeedError as exc:  # past the seed's deadline or size limit
        problems.append(exc.message)
        return check
    # A failing CREATE TABLE is never tolerated: the table would be missing, and with it its rows
    # and tools. Failing indexes and examples count against the threshold.
    failed = _failures(stats)
    problems += [f for f in failed if f.startswith("ddl")]
    check.failures = [f for f in failed if not f.startswith("ddl")]
    return check


def sample_problems(scenario: str, schema: DbSchema, sample: SampleData) -> tuple[list[str], list[str]]:
    """Problems of generated seed rows (executed after the schema, foreign keys on), and notes.

    Returns:
        (problems to feed back, notes: acceptable oddities such as tables left empty).
    """
    check = sample_check(scenario, schema, sample)
    return check.all_problems, check.notes


def sample_check(scenario: str, schema: DbSchema, sample: SampleData) -> StatementCheck:
    """Generated seed rows checked and executed after the schema (foreign keys on)."""
    check = StatementCheck(statements=sum(len(t.insert_statements) for t in sample.tables))
    problems = check.problems
    tables = {t.name.lower(): t.name for t in schema.tables}
    for group in sample.tables:
        if group.table_name.lower() not in tables:
            problems.append(f"rows for table {group.table_name!r}, which the schema does not define")
        for sql in group.insert_statements:
            match = _INSERT.match(sql)
            if not match:
                problems.append(f"only INSERT statements are allowed; got: {short_sql(sql)}")
            elif match.group(1).lower() not in tables:
                problems.append(f"insert into unknown table {match.group(1)!r}: {short_sql(sql)}")
    if problems:  # running DROP or UPDATE statements is not worth it: fix the form first
        return check
    try:
        stats, (has_user,) = seed_checks(seed_bundle(scenario, schema, sample), [_USER_CHECK], foreign_keys=True)
    except SeedError as exc:
        problems.append(exc.message)
        return check
    check.failures = [p for p in _failures(stats) if not p.startswith(("ddl", "index", "example"))]
    if "users" in stats.rows and not has_user:
        problems.append(f"there is no user with id {CURRENT_USER_ID} in `users` (the signed-in user)")
    empty = sorted(t for t, n in stats.rows.items() if n == 0)
    check.notes = [f"tables left empty: {', '.join(empty)}"] if empty else []
    return check


def spec_problems(spec: ApiSpec) -> list[str]:
    """What is wrong with a generated API specification."""
    problems: list[str] = []
    seen_ids: set[str] = set()
    seen_routes: set[tuple[str, str]] = set()
    endpoints = [e for g in spec.api_groups for e in g.endpoints]
    if not endpoints:
        return ["the specification has no endpoints"]
    for e in endpoints:
        label = f"{e.method.upper()} {e.path}"
        method = e.method.upper()
        if method not in HTTP_METHODS:
            problems.append(f"{label}: method must be one of {', '.join(HTTP_METHODS)}")
        if not e.path.startswith("/"):
            problems.append(f"{label}: the path must start with '/'")
        if not e.operation_id or not _SNAKE.match(e.operation_id):
            problems.append(f"{label}: operation_id {e.operation_id!r} must be snake_case (it is the tool name)")
        elif e.operation_id in seen_ids:
            problems.append(f"{label}: operation_id {e.operation_id!r} is used twice")
        else:
            seen_ids.add(e.operation_id)
        if (method, e.path) in seen_routes:
            problems.append(f"{label} is specified twice; one method and path per endpoint")
        seen_routes.add((method, e.path))
        in_path = set(_PATH_PARAM.findall(e.path))
        for name, param in e.request_params.items():
            where = param.get("param_type")
            if where not in ("path", "query", "body"):
                problems.append(f"{label}: parameter {name!r}: param_type must be path, query or body")
            if where == "path" and name not in in_path:
                problems.append(f"{label}: path parameter {name!r} does not appear in the path")
            if where == "body" and method in ("GET", "DELETE"):
                problems.append(f"{label}: a {method} endpoint cannot take body parameter {name!r}; use query")
            if (param.get("required") or where == "path") and param.get("example") is None:
                problems.append(f"{label}: required parameter {name!r} has no example value")
        for name in sorted(in_path - set(e.request_params)):
            problems.append(f"{label}: path parameter {name!r} is not listed in request_params")
    return problems


def module_problems(code: str, spec: ApiSpec | None) -> list[str]:
    """What a static read of an environment module finds wrong (nothing is executed)."""
    facts = read_routes(code)
    if facts.syntax_error:
        return [f"the module does not parse: {facts.syntax_error}"]
    problems: list[str] = []
    if not facts.has_app:
        problems.append("the module has no module-level `app = FastAPI(...)`")
    if "DATABASE_PATH" not in code:
        problems.append("the module must read its database URL from the environment variable DATABASE_PATH")
    if not facts.has_main_guard:
        problems.append('the module must end with `if __name__ == "__main__":` running uvicorn')
    names = [r.name for r in facts.routes]
    missing_id = [r.function for r in facts.routes if not r.has_operation_id]
    if missing_id:
        problems.append(f"routes without operation_id: {', '.join(missing_id)}")
    for dup in sorted({n for n in names if names.count(n) > 1}):
        problems.append(f"operation_id {dup!r} is used by more than one route")
    by_route: dict[tuple[str, str], list[str]] = {}
    for r in facts.routes:
        by_route.setdefault((r.method, r.path), []).append(r.name)
    for (method, path), same in sorted(by_route.items()):
        if len(same) > 1:
            problems.append(f"{method} {path} is defined by several routes ({', '.join(same)}); only the first "
                            "would ever run: give each its own path")
    if spec is not None:
        wanted = [e.operation_id for g in spec.api_groups for e in g.endpoints if e.operation_id]
        missing = [op for op in wanted if op not in names]
        if missing:
            problems.append(f"endpoints of the specification with no route of that operation_id: {', '.join(missing)}")
    return problems
