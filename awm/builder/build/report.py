"""The build report: one record per scenario, written as JSON while the build runs.

The report is rewritten after results arrive (at most every `min_interval_s`, and always after
the first result and at the end), each time to a temporary file renamed over the old one. So a
build killed at any moment leaves the last complete version, a valid JSON document with
`"complete": false`; the next `awm build` notices it, says it resumes, and finds the images the
killed run finished in the digest cache.

Shape (`"format": "awm.build-report/1"`):

    {"format", "dataset", "started_at", "finished_at", "complete", "resumed", "previous",
     "options": BuildOptions, "base_image", "selected", "counts": {"built": n, "cached": n, ...},
     "images_per_s", "results": [BuildResult, ...]}
"""

from __future__ import annotations

import json
import logging
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, ValidationError

from awm.builder.build.options import BuildOptions
from awm.builder.build.smoke import SmokeResult
from awm.builder.catalog.models import FailedStatement
from awm.core.files import atomic_write

__all__ = [
    "REPORT_FORMAT",
    "BuildReport",
    "BuildResult",
    "ReportWriter",
    "Status",
    "load_report",
]

log = logging.getLogger("awm")

REPORT_FORMAT = "awm.build-report/1"

Status = Literal["built", "cached", "failed", "quarantined"]


class BuildResult(BaseModel):
    """What happened to one scenario.

    `status`: `built` (a new image), `cached` (its digest already had an image), `failed` (no
    image; `stage` and `error` say where and why) or `quarantined` (an image that cannot start:
    kept and tagged `awm/<id>:quarantined`, never `:latest`).
    """

    scenario: str
    status: Status
    stage: str | None = None  # where it failed: catalog, seed, build, check, smoke, engine
    error: str | None = None
    warnings: list[str] = Field(default_factory=list)
    tag: str | None = None
    image_id: str | None = None
    size_bytes: int | None = None
    layer_bytes: int | None = None  # what this scenario adds on top of the base
    scenario_bytes: int | None = None  # its own files (module, seed, tasks, verifiers)
    tools: list[str] = Field(default_factory=list)
    tasks: int = 0
    seed_tables: int = 0
    seed_rows: int = 0
    failed_statements: int = 0
    failed_sql: list[FailedStatement] = Field(default_factory=list)
    problems: list[str] = Field(default_factory=list)  # catalog warnings (shadowed routes, ...)
    smoke: SmokeResult | None = None
    duration_s: float = 0.0

    @property
    def ok(self) -> bool:
        """Built or cached: an image that is usable."""
        return self.status in ("built", "cached")


class BuildReport(BaseModel):
    """A whole `awm build` run; see the module docstring."""

    format: str = REPORT_FORMAT
    dataset: str
    started_at: str
    finished_at: str | None = None
    complete: bool = False
    resumed: bool = False
    previous: dict[str, Any] | None = None  # counts of the interrupted report this run resumes
    options: BuildOptions = Field(default_factory=BuildOptions)
    base_image: str | None = None
    selected: int = 0
    counts: dict[str, int] = Field(default_factory=dict)
    images_per_s: float | None = None
    results: list[BuildResult] = Field(default_factory=list)

    def count(self) -> dict[str, int]:
        """Results per status, plus `pending` (selected but not done yet)."""
        out = dict.fromkeys(("built", "cached", "failed", "quarantined"), 0)
        for r in self.results:
            out[r.status] += 1
        out["pending"] = max(0, self.selected - len(self.results))
        return out


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def load_report(path: Path) -> BuildReport | None:
    """The report at `path`, or None when there is none or it is not a build report."""
    try:
        return BuildReport.model_validate_json(path.read_bytes())
    except (OSError, ValueError, ValidationError):
        return None


class ReportWriter:
    """Collects results (from any thread) and keeps the report file current and whole.

    Args:
        path: where the JSON goes; its folder is created.
        report: the report to fill (dataset, options and `selected` set by the caller).
        min_interval_s: the shortest time between two rewrites while the build runs.
    """

    def __init__(self, path: Path, report: BuildReport, *, min_interval_s: float = 0.5) -> None:
        self.path = path
        self.report = report
        self.min_interval_s = min_interval_s
        self._lock = threading.Lock()
        self._rendered: list[str] = []  # each result's JSON, rendered once
        self._last_write = 0.0
        self._dirty = False
        self._started = time.monotonic()
        previous = load_report(path)
        if previous is not None and not previous.complete and previous.dataset == report.dataset:
            report.resumed = True
            report.previous = {"started_at": previous.started_at, **previous.count()}
            log.info("resuming the interrupted build of %s (report %s)", report.dataset, path)
        path.parent.mkdir(parents=True, exist_ok=True)
        self.write()

    def add(self, result: BuildResult) -> None:
        """Record one scenario's result; rewrite the file unless that was done very recently."""
        with self._lock:
            self.report.results.append(result)
            self._rendered.append(result.model_dump_json())
            self._dirty = True
            first = len(self._rendered) == 1
            if first or time.monotonic() - self._last_write >= self.min_interval_s:
                self._write_locked()

    def finish(self, *, complete: bool = True) -> BuildReport:
        """Write the final report: results sorted by scenario, counts, rate, `complete`."""
        with self._lock:
            report = self.report
            order = sorted(range(len(report.results)), key=lambda i: report.results[i].scenario)
            report.results = [report.results[i] for i in order]
            self._rendered = [self._rendered[i] for i in order]
            report.complete = complete
            report.finished_at = _now()
            elapsed = time.monotonic() - self._started
            built = sum(1 for r in report.results if r.status in ("built", "quarantined"))
            report.images_per_s = round(built / elapsed, 3) if built and elapsed > 0 else None
            self._write_locked()
            return report

    def write(self) -> None:
        """Rewrite the file now."""
        with self._lock:
            self._write_locked()

    def _write_locked(self) -> None:
        self.report.counts = self.report.count()
        head = self.report.model_dump(mode="json", exclude={"results"})
        # Results are rendered once each; the document is assembled from those strings, so a
        # rewrite costs a string join, not a serialisation of every result again.
        text = json.dumps(head, indent=1)[:-2] + ',\n "results": [\n' + ",\n".join(self._rendered) + "\n ]\n}\n"
        atomic_write(self.path, text)
        self._last_write = time.monotonic()
        self._dirty = False
