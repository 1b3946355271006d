"""What every command of the `awm` command line shares: the error console and error handling.

An expected failure (an `AWMError`) prints one line `error: <message>`, then `hint: <next
step>` when the error has one, and exits with the error family's code (see `awm.core.errors`).
With `awm --debug` (or AWM_DEBUG=1) the whole message and the traceback are printed too. Any
other exception is a bug: it propagates with its traceback.
"""

from __future__ import annotations

import traceback
from collections.abc import Callable
from functools import wraps
from typing import ParamSpec, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

from awm.core.errors import AWMError

__all__ = ["err_console", "handle_errors", "print_error", "set_debug"]

P = ParamSpec("P")
T = TypeVar("T")

err_console = Console(stderr=True)


# Set by the root command's `--debug` at each invocation. (Typer vendors its own click in some
# versions, so the click context is not a portable place to look it up.)
_debug = False


def set_debug(on: bool) -> None:
    """Print the whole message and the traceback of errors from now on (`awm --debug`)."""
    global _debug
    _debug = on


def print_error(exc: AWMError, *, debug: bool = False) -> None:
    """The error line and hint line of `exc` on stderr (and its traceback when `debug`)."""
    if debug:
        err_console.print("".join(traceback.format_exception(exc)), markup=False, highlight=False, end="")
    lines = exc.message.strip().splitlines() or [type(exc).__name__]
    message = exc.message.strip() if debug else lines[0]
    err_console.print(f"[red]error:[/red] {escape(message)}", highlight=False, soft_wrap=True)
    if exc.hint:
        err_console.print(f"[yellow]hint:[/yellow] {escape(exc.hint)}", highlight=False, soft_wrap=True)


def handle_errors(fn: Callable[P, T]) -> Callable[P, T]:
    """Turn an `AWMError` into its error and hint lines on stderr and its family's exit code."""

    @wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return fn(*args, **kwargs)
        except AWMError as exc:
            print_error(exc, debug=_debug)
            raise typer.Exit(exc.exit_code) from exc

    return wrapper
