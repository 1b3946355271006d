"""The `awm` command line: a thin Typer app; each command calls one library function.

An `AWMError` becomes one line on stderr and exit code 1; tracebacks are for bugs only.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from functools import wraps
from typing import Any, ParamSpec, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

from runtime.errors import AWMError

__all__ = ["app", "main", "err_console", "handle_errors"]

P = ParamSpec("P")
T = TypeVar("T")

app = typer.Typer(
    name="awm",
    help="Agent World Model environments: catalog, seed, build and run one image per scenario.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
err_console = Console(stderr=True)


def handle_errors(fn: Callable[P, T]) -> Callable[P, T]:
    """Turn an `AWMError` into one line on stderr and exit code 1."""

    @wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return fn(*args, **kwargs)
        except AWMError as exc:
            err_console.print(f"[red]error:[/red] {escape(str(exc))}", highlight=False, soft_wrap=True)
            raise typer.Exit(1) from exc

    return wrapper


@app.callback()
def _root(
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log what the library does."),
) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def _register() -> None:
    from builder.cli import build, catalog, demo, env, gen, images, seed

    for module in (catalog, seed, build, images, env, demo, gen):
        module.register(app)


_register()


def main(argv: Any = None) -> None:
    app(args=argv)
