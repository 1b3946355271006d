"""`awm env ...`: start, list, use and remove environment containers by hand."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from awm.core.cli import handle_errors
from awm.core.errors import EnvNotFound, EnvUnavailable
from awm.core.labels import current_user
from awm.core.naming import image_ref
from awm.runtime import tokens
from awm.runtime.base import EnvRecord, Isolation, Protection, StartOptions
from awm.runtime.client import EnvClient, list_mcp_tools
from awm.runtime.docker_backend import DockerBackend

__all__ = ["register"]

env_app = typer.Typer(help="Run environment containers: start, ls, stop, reset, verify, logs, check, gc.",
                      no_args_is_help=True)
out = Console(soft_wrap=True, highlight=False)


def register(app: typer.Typer) -> None:
    app.add_typer(env_app, name="env")


def _image(ref: str) -> str:
    """An image reference, or a scenario id meaning awm/<id>:latest."""
    return ref if "/" in ref or ":" in ref else image_ref(ref)


def _find(backend: DockerBackend, ref: str) -> EnvRecord:
    matches = [r for r in backend.list() if ref in (r.name, r.id, r.id[:12], r.scenario)]
    if not matches:
        raise EnvNotFound(f"no environment container named {ref!r}")
    if len(matches) > 1:
        raise EnvNotFound(f"{ref!r} matches {len(matches)} environments",
                          hint="use a name or id from `awm env ls`")
    return matches[0]


def _client(record: EnvRecord, token: str | None) -> EnvClient:
    """A client of `record`, with the given token, else the one kept when it was started."""
    if record.base_url is None:
        raise EnvUnavailable(f"environment {record.name} has no reachable address (status {record.status})",
                             container_id=record.id)
    return EnvClient(record.base_url, token=token or tokens.load(record.id))


def _print(data: Any) -> None:
    out.print(json.dumps(data, indent=2), markup=False)


JSON = typer.Option(False, "--json", help="Print JSON instead of text.")


TOKEN = typer.Option(None, "--token", envvar="AWM_CONTROL_TOKEN",
                     help="Control-plane token (default: the one kept when `awm env start` made it).")


@env_app.command("start")
@handle_errors
def start(
    image: str = typer.Argument(..., help="Image, or scenario id (awm/<id>:latest)."),
    port: int | None = typer.Option(None, "--port", help="Publish on 127.0.0.1:PORT (a route out unless guarded)."),
    token: str | None = typer.Option(None, "--token", envvar="AWM_CONTROL_TOKEN",
                                     help="Control-plane token (default: a random one, kept for later commands)."),
    memory: str = typer.Option("512m", help="Memory limit."),
    as_json: bool = JSON,
) -> None:
    """Start an environment that stays up until `awm env stop` (it has no owning process).

    Its control token is kept in a file only you can read (see `awm.runtime.tokens`), so
    `awm env reset/verify NAME` need no --token.
    """
    from awm.runtime.base import Resources

    backend = DockerBackend()
    options = StartOptions(
        control_token=token,
        isolation=Isolation.PUBLISHED if port else Isolation.SEALED,
        host_port=port,
        resources=Resources(memory=memory),
        detached=True,
    )
    env = backend.start(_image(image), options)
    if as_json:
        _print({"name": env.name, "id": env.id, "image": env.image, "scenario": env.scenario,
                "mcp_url": env.mcp_url, "base_url": env.base_url, "isolation": env.isolation.value,
                "protections": sorted(env.protections)})
        return
    out.print(f"{env.name}\n  MCP:      {env.mcp_url}\n  control:  {env.base_url}/_awm/\n"
              f"  network:  {env.isolation.value}\n  protections: {', '.join(sorted(env.protections))}")
    if Protection.EGRESS_GUARD not in env.protections:
        out.print("  warning: no egress guard (it needs root on the engine's host): the environment can open "
                  "connections to " + ("the host" if Protection.INTERNAL_NETWORK in env.protections
                                       else "the host and beyond"))


@env_app.command("ls")
@handle_errors
def ls(as_json: bool = JSON) -> None:
    """List environment containers of every owner."""
    records = DockerBackend().list()
    if as_json:
        _print([{**vars(r), "protections": sorted(r.protections)} for r in records])
        return
    table = Table()
    for col in ("name", "scenario", "status", "run id", "user", "owner", "url", "isolation", "protections"):
        table.add_column(col)
    for r in records:
        table.add_row(r.name, r.scenario or "-", r.status, r.run_id or "-", r.user or "-", r.owner or "-",
                      r.base_url or "-",
                      r.isolation or "-", ", ".join(sorted(r.protections)) or "-")
    Console(width=220).print(table)


@env_app.command("stop")
@handle_errors
def stop(
    names: list[str] = typer.Argument(None, help="Names, ids or scenarios of environments (`awm env ls`)."),
    all_: bool = typer.Option(False, "--all", help="Every environment of this user."),
    all_owners: bool = typer.Option(False, "--all-owners", help="With --all: of every user."),
    as_json: bool = JSON,
) -> None:
    """Remove environments by name, id or scenario, or all of yours (--all)."""
    if bool(names) == all_:
        raise typer.BadParameter("give environment names or --all, not both" if names
                                 else "give environment names, or --all to remove all of yours")
    if all_owners and not all_:
        raise typer.BadParameter("--all-owners goes with --all")
    backend = DockerBackend()
    if all_:
        me = current_user()
        records = [r for r in backend.list() if all_owners or r.user == me]
    else:
        records = [_find(backend, n) for n in names]
    for record in records:
        backend.stop(record.id)
        if not as_json:
            out.print(f"removed {record.name}")
    if as_json:
        _print([{"name": r.name, "id": r.id} for r in records])


@env_app.command("reset")
@handle_errors
def reset(name: str, token: str | None = TOKEN, as_json: bool = JSON) -> None:
    """Restore an environment's database from its seed."""
    with _client(_find(DockerBackend(), name), token) as client:
        result = client.reset()
    if as_json:
        _print(result.model_dump(mode="json"))
    else:
        out.print(f"reset {name} in {result.duration_ms:.0f} ms ({result.resets} resets so far)", markup=False)


@env_app.command("verify")
@handle_errors
def verify(
    name: str,
    task_idx: int = typer.Option(..., "--task-idx"),
    final_answer: str | None = typer.Option(None, "--final-answer"),
    flavour: str = typer.Option("code", "--flavour"),
    token: str | None = TOKEN,
    as_json: bool = JSON,
) -> None:
    """Grade a task against an environment's current database. Exit 1 if the verifier failed."""
    with _client(_find(DockerBackend(), name), token) as client:
        result = client.verify(task_idx, final_answer, flavour)
    if as_json:
        _print(result.model_dump(mode="json"))
    else:
        error = f": {result.error}" if result.error else ""
        out.print(f"task {task_idx}: {result.result} (reward {result.reward}){error}", markup=False)
    if result.result == "error":
        raise typer.Exit(1)


@env_app.command("logs")
@handle_errors
def logs(name: str, tail: int = typer.Option(100, "--tail")) -> None:
    """Print an environment container's log."""
    backend = DockerBackend()
    out.print(backend.logs(_find(backend, name).id, tail), markup=False)


@env_app.command("check")
@handle_errors
def check(
    url: str = typer.Argument(..., help="An MCP endpoint, e.g. http://127.0.0.1:8000/mcp"), as_json: bool = JSON
) -> None:
    """List the tools of any MCP streamable-HTTP endpoint."""
    tools = asyncio.run(list_mcp_tools(url))
    if as_json:
        _print([t.model_dump(mode="json", exclude_none=True) for t in tools])
        return
    for tool in tools:
        out.print(f"{tool.name}: {(tool.description or '').strip().splitlines()[0] if tool.description else ''}")
    out.print(f"{len(tools)} tools at {url}")


@env_app.command("gc")
@handle_errors
def gc(as_json: bool = JSON) -> None:
    """Remove environment containers whose owning process is gone (this host only)."""
    removed = DockerBackend().gc()
    if as_json:
        _print(removed)
    else:
        out.print(f"removed {len(removed)} orphaned environment(s)")
