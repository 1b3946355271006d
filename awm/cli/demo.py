"""`awm demo [DIR]`: the main job on a dataset, end to end, saying what happens at each step."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape

from awm.core.cli import handle_errors
from awm.demo import run_demo

__all__ = ["register"]


def register(app: typer.Typer) -> None:
    app.command("demo")(demo)


@handle_errors
def demo(
    dataset: Path = typer.Argument(Path("examples"), help="AWM dataset folder."),
    scenario: str | None = typer.Option(None, help="Scenario to run (default: the first)."),
    task: int = typer.Option(0, help="Task index whose reference solution is replayed."),
) -> None:
    """Build the images, start one, replay a reference solution over MCP, grade it, reset."""
    out = Console(soft_wrap=True, highlight=False)
    run_demo(dataset, scenario=scenario, task_idx=task, say=lambda line: out.print(escape(line)))
