"""`awm demo DIR`: the main job on a dataset, end to end, saying what happens at each step."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from builder.catalog import load_catalog, summarise
from builder.cli import handle_errors
from builder.seed import build_seed

__all__ = ["register"]


def register(app: typer.Typer) -> None:
    app.command("demo")(demo)


@handle_errors
def demo(
    dataset: Path = typer.Argument(Path("examples"), help="AWM dataset folder."),
    workdir: Path = typer.Option(Path(".awm/demo"), help="Where seeds and results are written."),
) -> None:
    """Catalog the dataset and build every scenario's seed database."""
    out = Console(soft_wrap=True)
    cat = load_catalog(dataset)
    out.print(f"[bold]1. catalog[/bold] {dataset}: {len(cat.bundles)} loadable, {len(cat.excluded)} excluded")
    for row in summarise(cat, seed=False):
        out.print(f"   {row.id}: {row.tools} tools, {row.tasks} tasks, {row.verifiers_code} verifiers")
    out.print(f"[bold]2. seed databases[/bold] -> {workdir}")
    for bundle in cat.bundles.values():
        stats = build_seed(bundle, workdir / f"{bundle.id}.db")
        out.print(
            f"   {bundle.id}: {stats.tables} tables, {stats.total_rows} rows, "
            f"{stats.bytes} bytes, {len(stats.failed)} failed statements"
        )
    if not cat.bundles:
        raise typer.Exit(1)
