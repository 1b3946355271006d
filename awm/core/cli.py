"""What every command of the `awm` command line shares: the error console and error handling."""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import ParamSpec, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

from awm.core.errors import AWMError

__all__ = ["err_console", "handle_errors"]

P = ParamSpec("P")
T = TypeVar("T")

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
