"""`awm build DIR`: the base image (if missing) and one image per scenario, with progress."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from builder.build import BuildResult, build_images
from builder.catalog import load_catalog
from builder.cli import err_console, handle_errors

__all__ = ["register"]


def register(app: typer.Typer) -> None:
    app.command("build")(build)


def _mb(n: int | None) -> str:
    return "-" if n is None else f"{n / 1e6:.2f} MB"


@handle_errors
def build(
    dataset: Path = typer.Argument(..., help="AWM dataset folder."),
    only: list[str] = typer.Option([], "--only", help="Scenario ids or names (repeatable)."),
    rebuild: bool = typer.Option(False, "--rebuild", help="Build even if the digest has an image."),
    check: bool = typer.Option(True, "--check/--no-check", help="Import each module in its image."),
    strict: bool = typer.Option(False, "--strict", help="Refuse scenarios with failing seed SQL."),
) -> None:
    """Build awm/<scenario>:<digest> images on the shared base image. Exit 1 if any failed."""
    cat = load_catalog(dataset)
    bundles = [cat.get(name) for name in only] if only else list(cat.bundles.values())
    for sid, problems in cat.excluded.items():
        if not only:
            err_console.print(f"[yellow]skipped[/yellow] {sid}: " + escape("; ".join(p.message for p in problems)))
    results: list[BuildResult] = []
    with Progress(
        TextColumn("[bold]building"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.description}"),
        console=err_console,
    ) as progress:
        task = progress.add_task("base image", total=len(bundles))

        def on_result(r: BuildResult) -> None:
            mark = {"built": "[green]built[/green]", "cached": "[cyan]cached[/cyan]"}.get(r.status, "[red]failed[/red]")
            progress.console.print(f"{mark} {r.scenario} {escape(r.error or r.tag or '')}", highlight=False)
            progress.update(task, advance=1, description=r.scenario)

        results = build_images(
            bundles,
            rebuild=rebuild,
            check=check,
            strict=strict,
            on_step=lambda msg: progress.update(task, description=msg),
            on_result=on_result,
        )
    table = Table(title="build")
    for col in ("scenario", "status", "tag", "tools", "tasks", "seed rows", "failed stmts", "layer", "seconds"):
        table.add_column(col)
    for r in results:
        table.add_row(r.scenario, r.status, r.tag or "-", str(len(r.tools)), str(r.tasks), str(r.seed_rows),
                      str(r.failed_statements), _mb(r.layer_bytes), f"{r.duration_s:.1f}")
    Console(width=200).print(table)
    failed = [r for r in results if r.status == "failed"]
    if failed:
        for r in failed:
            err_console.print(f"[red]failed[/red] {r.scenario}: {escape(r.error or '')}", soft_wrap=True)
        raise typer.Exit(1)
