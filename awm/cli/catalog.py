"""`awm catalog DIR`: what a dataset holds and what is wrong with it, before anything is built."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from awm.builder.catalog.loader import load_catalog, summarise
from awm.core.cli import err_console, handle_errors

__all__ = ["register"]


def register(app: typer.Typer) -> None:
    app.command("catalog")(catalog)


@handle_errors
def catalog(
    dataset: Path = typer.Argument(..., help="AWM dataset folder (the gen_*.jsonl files)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
    seed: bool = typer.Option(True, "--seed/--no-seed", help="Build seeds in memory to count rows."),
    foreign_keys: bool = typer.Option(
        True, "--foreign-keys/--no-foreign-keys", help="PRAGMA foreign_keys while seeding."
    ),
    show_problems: bool = typer.Option(True, "--problems/--no-problems", help="List problems."),
) -> None:
    """List the scenarios of a dataset: tools, tasks, verifiers, seed rows and problems.

    Exits 1 when no scenario is loadable.
    """
    cat = load_catalog(dataset)
    total = len(cat.bundles) + len(cat.excluded)
    with Progress(
        TextColumn("seeding"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.description}"),
        console=err_console,
        transient=True,
        disable=not seed or total < 20,
    ) as progress:
        task = progress.add_task("", total=total)
        rows = summarise(
            cat,
            seed=seed,
            foreign_keys=foreign_keys,
            on_progress=lambda sid: progress.update(task, advance=1, description=sid),
        )

    if as_json:
        print(
            json.dumps(
                {
                    "dataset": str(dataset),
                    "scenarios": [r.model_dump() for r in rows],
                    "problems": [str(p) for p in cat.problems],
                    "loadable": len(cat.bundles),
                    "excluded": len(cat.excluded),
                },
                indent=2,
            )
        )
    else:
        # Piped output keeps whole scenario ids instead of wrapping them to 80 columns.
        out = Console() if sys.stdout.isatty() else Console(width=200)
        table = Table(title=f"{dataset}: {len(cat.bundles)} loadable, {len(cat.excluded)} excluded")
        for col in ("scenario", "status", "tools", "tasks", "verifiers", "tables", "seed rows",
                    "failed stmts", "problems"):
            table.add_column(col, justify="left" if col in ("scenario", "status") else "right")
        for r in rows:
            covered = f"{r.verifiers_code}/{r.tasks}" if r.status == "ok" else "-"
            table.add_row(
                r.id,
                "[green]ok[/green]" if r.status == "ok" else "[red]excluded[/red]",
                *(str(v) if r.status == "ok" else "-"
                  for v in (r.tools, r.tasks)),
                covered,
                *(str(v) if r.status == "ok" else "-"
                  for v in (r.tables, r.seed_rows, r.failed_statements)),
                str(len(r.problems)),
            )
        out.print(table)
        if show_problems:
            lines = [str(p) for p in cat.problems] + [p for r in rows for p in r.problems]
            for line in lines:
                out.print(line, highlight=False, soft_wrap=True, markup=False)
    if not cat.bundles:
        raise typer.Exit(1)
