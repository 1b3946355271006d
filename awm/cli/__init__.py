"""The `awm` command line: a thin Typer app; each command calls one library function.

An expected failure (an `AWMError`) prints one `error:` line and one `hint:` line and exits with
its family's code (see `awm.core.errors`); tracebacks are for bugs only, or with `--debug`.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import typer

from awm import __version__
from awm.core.cli import err_console, handle_errors, set_debug

__all__ = ["app", "err_console", "handle_errors", "main"]

app = typer.Typer(
    name="awm",
    help="Agent World Model environments: catalog, seed, build and run one image per scenario.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"awm {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log what the library does."),
    debug: bool = typer.Option(
        False, "--debug", envvar="AWM_DEBUG", help="On an error, print its whole message and the traceback."
    ),
    version: bool = typer.Option(
        False, "--version", callback=_print_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    set_debug(debug)
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def _register() -> None:
    from awm.cli import agent, build, catalog, demo, gen, images, k8s, seed
    from awm.runtime import cli as env

    for module in (catalog, seed, build, images, env, demo, gen, k8s):
        module.register(app)
    agent.register(app)  # awm agent / verify / eval


_register()


def main(argv: Any = None) -> None:
    app(args=argv)
