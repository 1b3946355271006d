"""`awm build DIR`: the base image (if missing) and one image per scenario, in parallel, with
live progress, a build report (JSON + table) and optional smoke tests."""

from __future__ import annotations

import time
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table

from awm.builder.build.batch import (
    SMOKE_AUTO_LIMIT,
    build_images,
    default_jobs,
    excluded_results,
    select_bundles,
)
from awm.builder.build.options import BuildOptions
from awm.builder.build.report import BuildReport, BuildResult, ReportWriter
from awm.builder.catalog.loader import load_catalog
from awm.core.cli import err_console, handle_errors

__all__ = ["DEFAULT_REPORT", "register"]

DEFAULT_REPORT = Path(".awm/build-report.json")
_ROWS_SHOWN = 50  # larger batches print and tabulate only the scenarios with something to say

_MARKS = {
    "built": "[green]built[/green]",
    "cached": "[cyan]cached[/cyan]",
    "failed": "[red]failed[/red]",
    "quarantined": "[magenta]quarantined[/magenta]",
}


def register(app: typer.Typer) -> None:
    app.command("build")(build)


def _mb(n: int | None) -> str:
    return "-" if n is None else f"{n / 1e6:.2f} MB"


def _smoke_cell(r: BuildResult) -> str:
    if r.smoke is None:
        return "-"
    s = r.smoke
    if s.status == "failed":
        return "[red]cannot start[/red]"
    called = sum(1 for t in s.tools if t.outcome != "skipped")
    parts = [f"{called} calls"]
    if s.server_errors:
        parts.append(f"[red]{len(s.server_errors)} 5xx[/red]")
    if s.complete_at_seed:
        parts.append(f"[yellow]{len(s.complete_at_seed)} done at seed[/yellow]")
    return ", ".join(parts)


def _note(r: BuildResult) -> str:
    if r.error:
        return r.error
    return r.warnings[0] + (f" (+{len(r.warnings) - 1} more)" if len(r.warnings) > 1 else "") if r.warnings else ""


def _table(report: BuildReport, rows: list[BuildResult]) -> Table:
    table = Table(title=f"build of {report.dataset}", title_justify="left")
    for col in ("scenario", "status", "image", "size", "layer", "tools", "tasks", "seed rows", "failed stmts",
                "smoke", "seconds", "reason / notes"):
        table.add_column(col, justify="right" if col in ("size", "layer", "tools", "tasks", "seed rows",
                                                         "failed stmts", "seconds") else "left",
                         overflow="fold")
    for r in rows:
        table.add_row(
            r.scenario, _MARKS[r.status], (r.image_id or "-").removeprefix("sha256:")[:12], _mb(r.size_bytes),
            _mb(r.layer_bytes), str(len(r.tools)), str(r.tasks), str(r.seed_rows), str(r.failed_statements),
            _smoke_cell(r), f"{r.duration_s:.1f}", escape(_note(r)),
        )
    return table


@handle_errors
def build(
    dataset: Path = typer.Argument(..., help="AWM dataset folder."),
    only: list[str] = typer.Option([], "--only", help="Scenario ids, names or glob patterns (repeatable)."),
    exclude: list[str] = typer.Option([], "--exclude", help="Scenarios to leave out (ids, names, globs)."),
    limit: int | None = typer.Option(None, "--limit", min=0, help="Build at most N scenarios (after filters)."),
    jobs: int | None = typer.Option(None, "--jobs", "-j", min=1,
                                    help=f"Scenarios built at once (default here: {default_jobs()})."),
    rebuild: bool = typer.Option(False, "--rebuild", help="Build even if the digest has an image."),
    check: bool = typer.Option(True, "--check/--no-check", help="Import each module in its image."),
    smoke: bool | None = typer.Option(
        None, "--smoke/--no-smoke",
        help=f"Start each image and test it (default: on for up to {SMOKE_AUTO_LIMIT} scenarios).",
    ),
    strict: bool = typer.Option(False, "--strict", help="Refuse scenarios with failing seed SQL."),
    foreign_keys: bool = typer.Option(
        True, "--foreign-keys/--no-foreign-keys", help="PRAGMA foreign_keys while seeding."
    ),
    report_path: Path = typer.Option(DEFAULT_REPORT, "--report", help="Where the JSON build report goes."),
    as_json: bool = typer.Option(False, "--json", help="Print the build report as JSON instead of the table."),
) -> None:
    """Build awm/<scenario>:<digest> images on the shared base image. Exit 1 if any failed.

    Unchanged scenarios are cached by digest, so rerunning after an interrupt resumes.
    """
    started = time.monotonic()
    cat = load_catalog(dataset)
    bundles, excluded = select_bundles(cat, only=only, exclude=exclude, limit=limit)
    total = len(bundles) + len(excluded)
    options = BuildOptions(
        only=tuple(only), exclude=tuple(exclude), limit=limit, jobs=jobs or default_jobs(), rebuild=rebuild,
        check=check, strict=strict, foreign_keys=foreign_keys,
        smoke=smoke if smoke is not None else total <= SMOKE_AUTO_LIMIT,
    )
    report = BuildReport(
        dataset=str(dataset.resolve()),
        started_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        selected=total,
        options=options,
    )
    writer = ReportWriter(report_path, report)
    if report.resumed and report.previous:
        p = report.previous
        done = sum(p.get(k, 0) for k in ("built", "cached", "failed", "quarantined"))
        err_console.print(f"resuming an interrupted build: {done} of its scenarios were done; "
                          "finished images are found in the cache", highlight=False)
    show_all = total <= _ROWS_SHOWN
    counts = {"failed": 0, "built": 0}
    smoke_note = "smoke tests on" if options.smoke else "smoke tests off (--smoke to run them)"
    err_console.print(f"{total} scenario(s), {options.jobs} at a time, {smoke_note}", highlight=False)

    with Progress(
        TextColumn("[bold]building"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"),
        TextColumn("{task.fields[failures]}"),
        TimeElapsedColumn(),
        TextColumn("{task.description}"),
        console=err_console,
    ) as progress:
        task: TaskID = progress.add_task("base image", total=total, rate="", failures="")

        def on_result(r: BuildResult) -> None:
            if r.status in ("built", "quarantined"):
                counts["built"] += 1
            if not r.ok:
                counts["failed"] += 1
            if show_all or not r.ok:
                progress.console.print(f"{_MARKS[r.status]} {r.scenario} {escape(r.error or r.tag or '')}",
                                       highlight=False, soft_wrap=True)
            elapsed = max(time.monotonic() - started, 1e-6)
            progress.update(
                task, advance=1, description=r.scenario,
                rate=f"{counts['built'] / elapsed:.2f} img/s" if counts["built"] else "",
                failures=f"[red]{counts['failed']} failed[/red]" if counts["failed"] else "",
            )

        for result in excluded_results(excluded):
            writer.add(result)
            on_result(result)
        try:
            build_images(
                bundles, options, report=writer,
                on_step=lambda msg: progress.update(task, description=msg),
                on_result=on_result,
            )
        except KeyboardInterrupt:
            err_console.print(f"interrupted; report so far: {report_path}. Run the same command to resume.")
            raise typer.Exit(130) from None
    final = writer.finish()

    problems = [r for r in final.results if not r.ok or r.warnings]
    rows = final.results if show_all else problems
    if as_json:
        print(final.model_dump_json(indent=2))
    elif rows:
        Console(width=240).print(_table(final, rows))
    c = final.counts
    rate = f", {final.images_per_s:.2f} images/s" if final.images_per_s else ""
    err_console.print(
        f"built {c['built']}, cached {c['cached']}, failed {c['failed']}, quarantined {c['quarantined']} "
        f"in {time.monotonic() - started:.1f} s{rate}; report: {report_path}", highlight=False, soft_wrap=True,
    )
    bad = [r for r in final.results if not r.ok]
    if bad:
        for r in bad:
            err_console.print(f"{_MARKS[r.status]} {r.scenario}: {escape(r.error or '')}", soft_wrap=True,
                              highlight=False)
        raise typer.Exit(1)
