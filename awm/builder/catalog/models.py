"""Pydantic models: the records of an AWM dataset folder and the validated `ScenarioBundle`.

Record models mirror one JSON line of each `gen_*.jsonl` file. They keep unknown fields
(`extra="allow"`), because real data carries classification fields this project does not use
and a round trip must not drop them.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from awm_server.contract import FailedStatement  # recorded in every image's manifest

__all__ = [
    "ApiEndpoint",
    "ApiGroup",
    "ApiSpec",
    "DbRecord",
    "DbSchema",
    "EnvRecord",
    "FailedStatement",
    "Problem",
    "Route",
    "SampleData",
    "SampleRecord",
    "SampleTable",
    "ScenarioBundle",
    "ScenarioRecord",
    "SeedStats",
    "Severity",
    "SpecRecord",
    "TableSchema",
    "TasksRecord",
    "Verification",
    "Verifier",
    "VerifierFlavour",
    "VerifierRecord",
]


class Record(BaseModel):
    """Base of every dataset record: unknown fields are kept, not rejected."""

    model_config = ConfigDict(extra="allow")


class ScenarioRecord(Record):
    name: str
    description: str = ""


class TasksRecord(Record):
    scenario: str
    tasks: list[str]


class TableSchema(Record):
    name: str
    ddl: str
    indexes: list[str] = Field(default_factory=list)
    examples: list[str] = Field(default_factory=list)


class DbSchema(Record):
    tables: list[TableSchema]


class DbRecord(Record):
    scenario: str
    db_path: str | None = None
    db_schema: DbSchema


class SampleTable(Record):
    table_name: str
    reasoning: str = ""
    insert_statements: list[str] = Field(default_factory=list)


class SampleData(Record):
    tables: list[SampleTable]


class SampleRecord(Record):
    scenario: str
    tables_count: int | None = None
    inserts_count: int | None = None
    sample_data: SampleData


class ApiEndpoint(Record):
    path: str
    method: str
    operation_id: str | None = None
    summary: str = ""
    description: str = ""
    tags: list[str] = Field(default_factory=list)
    request_params: dict[str, dict[str, Any]] = Field(default_factory=dict)
    response: dict[str, Any] = Field(default_factory=dict)


class ApiGroup(Record):
    group_name: str = ""
    endpoints: list[ApiEndpoint] = Field(default_factory=list)


class ApiSpec(Record):
    api_groups: list[ApiGroup] = Field(default_factory=list)


class SpecRecord(Record):
    scenario: str
    api_spec: ApiSpec


class EnvRecord(Record):
    scenario: str
    db_path: str | None = None
    full_code: str


class Verification(Record):
    code: str
    raw_response: str | None = None


class VerifierRecord(Record):
    scenario: str
    task_idx: int
    task: str = ""
    verification: Verification


class Severity(StrEnum):
    FATAL = "fatal"  # the scenario cannot be built; it is excluded
    WARNING = "warning"  # the scenario loads; the fault is reported


class Problem(BaseModel):
    """One fault found while loading a dataset, located as precisely as the data allows."""

    severity: Severity
    message: str
    scenario: str | None = None
    file: str | None = None
    line: int | None = None

    def __str__(self) -> str:
        where = ":".join(str(p) for p in (self.file, self.line) if p is not None)
        who = f"[{self.scenario}] " if self.scenario else ""
        return f"{self.severity.value}: {who}{where + ': ' if where else ''}{self.message}"


class Route(BaseModel):
    """A route of the environment module as read from its source, before any image exists."""

    name: str  # the tool name: operation_id, or the one FastAPI generates when it is missing
    method: str
    path: str
    function: str
    line: int
    has_operation_id: bool = True
    # A later route has the same method and path: the OpenAPI document, hence the tool list,
    # keeps only the last one, while requests to the path still run the first handler.
    shadowed: bool = False


VerifierFlavour = Literal["code", "sql"]


class Verifier(BaseModel):
    task_idx: int
    flavour: VerifierFlavour
    function: str  # the first `def verify_...` in the code
    code: str
    source_file: str
    source_line: int


class SeedStats(BaseModel):
    foreign_keys: bool
    tables: int
    rows: dict[str, int]
    statements: int
    failed: list[FailedStatement] = Field(default_factory=list)
    sqlite_version: str
    bytes: int = 0
    max_bytes: int = 0  # the seed size limit it was built under (AWM_SEED_MAX_MB)

    @property
    def total_rows(self) -> int:
        return sum(self.rows.values())


class ScenarioBundle(BaseModel):
    """Everything about one scenario, joined across the dataset files on its normalised name."""

    id: str
    name: str
    description: str = ""
    scenario_record: ScenarioRecord | None = None
    tasks: list[str]
    db_schema: DbSchema
    sample: SampleData | None = None
    spec: ApiSpec | None = None
    env_code: str
    routes: list[Route]
    verifiers: dict[VerifierFlavour, dict[int, Verifier]] = Field(default_factory=dict)
    problems: list[Problem] = Field(default_factory=list)

    def verifier(self, task_idx: int, flavour: VerifierFlavour = "code") -> Verifier | None:
        return self.verifiers.get(flavour, {}).get(task_idx)

    @property
    def tools(self) -> list[Route]:
        """The routes an agent sees as tools (shadowed ones are not in the OpenAPI document)."""
        return [r for r in self.routes if not r.shadowed]
