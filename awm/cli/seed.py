"""`awm seed DIR -o OUT`: build the seed databases of a dataset, with their statistics."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.markup import escape

from awm.builder.catalog.loader import load_catalog
from awm.builder.catalog.seed import build_seed
from awm.core.cli import err_console, handle_errors
from awm.core.errors import SeedError

__all__ = ["register"]


def register(app: typer.Typer) -> None:
    app.command("seed")(seed)


@handle_errors
def seed(
    dataset: Path = typer.Argument(..., help="AWM dataset folder."),
    output: Path = typer.Option(..., "--output", "-o", help="Folder for <scenario>.db and .json."),
    only: list[str] = typer.Option([], "--only", help="Scenario ids or names (repeatable)."),
    strict: bool = typer.Option(False, "--strict", help="Refuse scenarios with failing statements."),
    foreign_keys: bool = typer.Option(True, "--foreign-keys/--no-foreign-keys"),
    as_json: bool = typer.Option(False, "--json", help="Print the statistics as JSON instead of text."),
) -> None:
    """Build each scenario's seed database into OUTPUT, next to its statistics as JSON."""
    cat = load_catalog(dataset)
    bundles = [cat.get(name) for name in only] if only else list(cat.bundles.values())
    out = Console()
    failed = 0
    report: list[dict[str, Any]] = []
    for bundle in bundles:
        try:
            stats = build_seed(
                bundle, output / f"{bundle.id}.db", foreign_keys=foreign_keys, strict=strict
            )
        except SeedError as exc:
            failed += 1
            err_console.print(f"[red]failed[/red] {escape(str(exc))}", highlight=False, soft_wrap=True)
            report.append({"scenario": bundle.id, "error": str(exc)})
            continue
        (output / f"{bundle.id}.json").write_text(stats.model_dump_json(indent=2) + "\n")
        if as_json:
            report.append({"scenario": bundle.id, "path": str(output / f"{bundle.id}.db"),
                           "stats": stats.model_dump(mode="json")})
            continue
        note = f", [yellow]{len(stats.failed)} failed statements[/yellow]" if stats.failed else ""
        out.print(
            f"{bundle.id}: {stats.tables} tables, {stats.total_rows} rows, {stats.bytes} bytes{note}",
            highlight=False,
        )
    if as_json:
        print(json.dumps(report, indent=2))
    if failed:
        raise typer.Exit(1)
