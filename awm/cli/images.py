"""`awm images ls|prune|export|push|pull`: the scenario images in the engine."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from awm.builder.ship import (
    PushResult,
    export_images,
    list_images,
    prune_images,
    pull_images,
    push_images,
)
from awm.core.cli import err_console, handle_errors
from awm.core.naming import image_repo
from awm.runtime.docker_backend import engine_client

__all__ = ["images_app", "register"]

images_app = typer.Typer(
    name="images", help="List, prune, export and push scenario images.", no_args_is_help=True,
)

_STATE = {
    "current": "[green]current[/green]",
    "old": "[yellow]old[/yellow]",
    "quarantined": "[magenta]quarantined[/magenta]",
    "dangling": "[yellow]dangling[/yellow]",
}


def register(app: typer.Typer) -> None:
    app.add_typer(images_app, name="images")


JSON = typer.Option(False, "--json", help="Print JSON instead of text.")


def _mb(n: int) -> str:
    return f"{n / 1e6:.2f} MB"


def _out() -> Console:
    # Piped output keeps whole names instead of wrapping them to 80 columns.
    return Console() if sys.stdout.isatty() else Console(width=240)


@images_app.command("ls")
@handle_errors
def ls(
    scenarios: list[str] = typer.Argument(None, help="Scenario ids, names or glob patterns (default: all)."),
    as_json: bool = JSON,
) -> None:
    """List scenario images: scenario, tags, size, the digest built from, state and smoke status."""
    images = list_images(engine_client(), scenarios=scenarios or [])
    if as_json:
        print(json.dumps([i.model_dump() for i in images], indent=2))
        return
    table = Table(title=f"{len({i.scenario for i in images})} scenario(s), {len(images)} image(s)",
                  title_justify="left")
    for col in ("scenario", "tags", "image", "size", "layer", "built from digest", "state", "smoke", "tools",
                "tasks", "created"):
        table.add_column(col, justify="right" if col in ("size", "layer", "tools", "tasks") else "left")
    for i in images:
        prefix = f"{image_repo(i.scenario)}:"
        tags = ", ".join(t.rpartition(":")[2] if t.startswith(prefix) else t for t in i.tags) or "-"
        table.add_row(
            i.scenario, escape(tags), i.short_id, _mb(i.size_bytes),
            "-" if i.layer_bytes is None else _mb(i.layer_bytes), i.digest or "-", _STATE[i.state],
            i.smoke or "-", "-" if i.tools is None else str(i.tools), "-" if i.tasks is None else str(i.tasks),
            time.strftime("%Y-%m-%d %H:%M", time.localtime(i.created)),
        )
    _out().print(table)


@images_app.command("prune")
@handle_errors
def prune(
    scenarios: list[str] = typer.Argument(None, help="Scenario ids, names or glob patterns (default: all)."),
    old: bool = typer.Option(True, "--old/--no-old", help="Remove earlier digests and dangling images."),
    broken: bool = typer.Option(True, "--broken/--no-broken", help="Remove quarantined images."),
    dry_run: bool = typer.Option(False, "--dry-run", "-n", help="Only say what would be removed."),
    as_json: bool = JSON,
) -> None:
    """Remove old digests and quarantined images; the current image of a scenario stays."""
    actions = prune_images(engine_client(), scenarios=scenarios or [], old=old, broken=broken, dry_run=dry_run)
    if as_json:
        print(json.dumps([a.model_dump(mode="json") for a in actions], indent=2))
        if any(a.error for a in actions):
            raise typer.Exit(1)
        return
    out = _out()
    verb = "would remove" if dry_run else "removed"
    for a in actions:
        if a.error:
            err_console.print(f"[red]kept[/red] {escape(a.error)}", highlight=False, soft_wrap=True)
        else:
            out.print(f"{verb} {a.scenario} {a.image_id.removeprefix('sha256:')[:12]} ({a.state}"
                      f"{', ' + ', '.join(a.tags) if a.tags else ''})", highlight=False, soft_wrap=True,
                      markup=False)
    done = [a for a in actions if a.removed or dry_run]
    freed = sum(a.layer_bytes or 0 for a in done)
    out.print(f"{verb} {len(done)} image(s), {_mb(freed)} of their own layers (the shared base stays)",
              highlight=False)
    if any(a.error for a in actions):
        raise typer.Exit(1)


@images_app.command("export")
@handle_errors
def export(
    output: Path = typer.Option(..., "--output", "-o", help="Tarball (.tar, .tar.gz) or existing folder."),
    scenarios: list[str] = typer.Argument(None, help="Scenario ids, names or glob patterns (default: all)."),
    with_base: bool = typer.Option(False, "--with-base", help="Also name the base image in the tarball."),
    as_json: bool = JSON,
) -> None:
    """Write the current images as one `docker save` tarball; load it with `docker load -i FILE`."""
    with err_console.status("exporting") as status:
        result = export_images(
            engine_client(), output, scenarios=scenarios or [], with_base=with_base,
            on_progress=lambda n: status.update(f"exporting: {n / 1e6:.0f} MB"),
        )
    if as_json:
        print(result.model_dump_json(indent=2))
        return
    _out().print(f"wrote {result.path}: {len(result.images)} tag(s), {_mb(result.bytes)} "
                 f"(base layers once); load with `docker load -i {result.path}`", highlight=False, markup=False)


def _print_push(r: PushResult) -> None:
    if r.error:
        err_console.print(f"[red]failed[/red] {escape(r.error)}", highlight=False, soft_wrap=True)
    else:
        layers = (f" ({r.layers_pushed} layer(s) pushed, {r.layers_existing} already there)"
                  if r.layers_pushed or r.layers_existing else "")
        err_console.print(f"[green]ok[/green] {r.remote} {r.digest or ''}{layers}", highlight=False, soft_wrap=True)


@images_app.command("push")
@handle_errors
def push(
    registry: str = typer.Option(..., "--registry", help="Registry HOST:PORT."),
    scenarios: list[str] = typer.Argument(None, help="Scenario ids, names or glob patterns (default: all)."),
    keep_tags: bool = typer.Option(False, "--keep-tags", help="Keep the local <registry>/... tags."),
    as_json: bool = JSON,
) -> None:
    """Tag the current images <registry>/awm/<id>:<digest> and :latest and push them."""
    results = push_images(engine_client(), registry, scenarios=scenarios or [], keep_tags=keep_tags,
                          on_result=None if as_json else _print_push)
    failed = [r for r in results if r.error]
    if as_json:
        print(json.dumps([r.model_dump(mode="json") for r in results], indent=2))
    else:
        _out().print(f"pushed {len(results) - len(failed)} tag(s) to {registry}, {len(failed)} failed", highlight=False)
    if failed:
        raise typer.Exit(1)


@images_app.command("pull")
@handle_errors
def pull(
    scenarios: list[str] = typer.Argument(..., help="Scenario ids or names."),
    registry: str = typer.Option(..., "--registry", help="Registry HOST:PORT."),
    tag: str = typer.Option("latest", "--tag", help="The tag to pull."),
    as_json: bool = JSON,
) -> None:
    """Pull images from a registry and tag them awm/<id>:<digest> and :latest, as a build would."""
    results = pull_images(engine_client(), registry, scenarios, tag=tag, on_result=None if as_json else _print_push)
    if as_json:
        print(json.dumps([r.model_dump(mode="json") for r in results], indent=2))
    if any(r.error for r in results):
        raise typer.Exit(1)
