"""What crosses between the host and the server in an image, defined once for both sides.

The scenario folder baked into every image (written by `awm build`, read by this server):

    /opt/awm/scenario/
        env.py          the environment module, unchanged
        seed.db         the seed database (immutable)
        tasks.json      ["task text", ...]
        verifiers.json  {"code": {"<task_idx>": {"function": ..., "code": ...}}, "sql": {...}}
        manifest.json   `ScenarioManifest`: scenario id, tools, seed statistics, digests, versions

and the JSON bodies of the control plane's answers: `ResetResult` (POST /_awm/reset) and
`VerifyResult` (POST /_awm/verify, and the image's `verify` command).

The host imports this module as `awm_server.contract`; it runs inside the image too, so it uses
pydantic and the standard library only, never `awm`.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

__all__ = [
    "CONTEXT_DIR",
    "MANIFEST_FILE",
    "MODULE_FILE",
    "SCENARIO_DIR",
    "SCENARIO_FILES",
    "SEED_FILE",
    "TASKS_FILE",
    "VERIFIERS_FILE",
    "FailedStatement",
    "ResetResult",
    "ScenarioManifest",
    "SeedSummary",
    "ToolRoute",
    "VerifierSandbox",
    "VerifyResult",
    "Versions",
]

SCENARIO_DIR = "/opt/awm/scenario"
"""Where the scenario folder lives in an image (read-only)."""

CONTEXT_DIR = "scenario"
"""The scenario folder's name in a build context (copied to `SCENARIO_DIR`)."""

MODULE_FILE = "env.py"
SEED_FILE = "seed.db"
TASKS_FILE = "tasks.json"
VERIFIERS_FILE = "verifiers.json"
MANIFEST_FILE = "manifest.json"
SCENARIO_FILES = (MODULE_FILE, SEED_FILE, TASKS_FILE, VERIFIERS_FILE, MANIFEST_FILE)
"""Every file of a scenario folder."""


class _Record(BaseModel):
    # The folder is written and read by the same version (both are in one image): a field one
    # side does not know is a bug, so it fails loudly.
    model_config = ConfigDict(extra="forbid", frozen=True)


class _Answer(BaseModel):
    # A host may talk to an image built by another version: fields it does not know are ignored.
    model_config = ConfigDict(extra="ignore", frozen=True)

    def __getitem__(self, key: str) -> Any:
        """Read a field like the JSON the answer travels as (``result["reward"]``).

        Code written against the wire format keeps working; attributes are the typed way.
        """
        if key not in type(self).model_fields:
            raise KeyError(key)
        return getattr(self, key)


class FailedStatement(_Record):
    """A seed statement that failed, and why."""

    stage: Literal["ddl", "index", "example", "insert"]
    table: str
    sql: str
    error: str


class ToolRoute(_Record):
    """An HTTP route of the environment app as a tool (or a route a later one shadows)."""

    name: str
    method: str
    path: str


class SeedSummary(_Record):
    """What the seed database holds and how it was made."""

    foreign_keys: bool
    tables: int
    rows: dict[str, int]
    bytes: int
    failed_statements: list[FailedStatement]


class Versions(_Record):
    """What made the image."""

    awm: str
    base_image: str
    sqlite: str


class ScenarioManifest(_Record):
    """`manifest.json` of a scenario folder; `GET /_awm/info` serves it (plus runtime counters)."""

    scenario: str
    name: str
    description: str
    tools: list[ToolRoute]
    shadowed_routes: list[ToolRoute]
    task_count: int
    verifiers: dict[str, list[int]]  # flavour -> task indices with a verifier of that flavour
    seed: SeedSummary
    problems: list[str]
    source_digest: str  # of the scenario's dataset records
    versions: Versions
    image_digest: str | None = None  # of everything in the image but itself; set last

    @property
    def tool_names(self) -> list[str]:
        """The names of the tools, in order."""
        return [t.name for t in self.tools]


class ResetResult(_Answer):
    """The answer to a reset: the database is the seed again."""

    ok: bool
    resets: int  # resets since the server started, this one included
    duration_ms: float


class VerifierSandbox(_Answer):
    """How the verifier's sandbox was confined."""

    landlock_abi: int | None  # the kernel's Landlock ABI as the verifier's process saw it
    seccomp: bool | None = None  # whether its seccomp filter was installed (None: an older image)


class VerifyResult(_Answer):
    """A task's verifier run on the seed and the current (or a given) database.

    `result` is complete/others/error for the code flavour and evidence for the sql flavour;
    `value` is what the verifier returned; `reward` is 1.0 for complete, 0.0 for others/error.
    """

    scenario: str
    task_idx: int
    flavour: Literal["code", "sql"]
    result: Literal["complete", "others", "error", "evidence"]
    reward: float | None
    value: Any
    error: str | None
    timed_out: bool
    duration_ms: float
    sandbox: VerifierSandbox | None = None
