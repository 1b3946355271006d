"""`awm env ...`: start, list, use and remove environment containers by hand."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from awm.core.cli import handle_errors
from awm.runtime import tokens
from awm.runtime.base import EnvRecord, Isolation, Protection, StartOptions
from awm.runtime.client import EnvClient, list_mcp_tools
from awm.runtime.docker_backend import DockerBackend
from awm.core.errors import ScenarioNotFound

__all__ = ["register"]

env_app = typer.Typer(help="Run environment containers: start, ls, stop, reset, verify, logs, check, gc.",
                      no_args_is_help=True)
out = Console(soft_wrap=True, highlight=False)


def register(app: typer.Typer) -> None:
    app.add_typer(env_app, name="env")


def _image(ref: str) -> str:
    """An image reference, or a scenario id meaning awm/<id>:latest."""
    return ref if "/" in ref or ":" in ref else f"awm/{ref}:latest"


def _find(backend: DockerBackend, ref: str) -> EnvRecord:
    matches = [r for r in backend.list() if ref in (r.name, r.id, r.id[:12], r.scenario)]
    if not matches:
        raise ScenarioNotFound(f"no environment container named {ref!r}; `awm env ls` lists them")
    if len(matches) > 1:
        raise ScenarioNotFound(f"{ref!r} matches {len(matches)} environments; use a name or id from `awm env ls`")
    return matches[0]


def _client(record: EnvRecord, token: str | None) -> EnvClient:
    """A client of `record`, with the given token, else the one kept when it was started."""
    if record.base_url is None:
        raise ScenarioNotFound(f"environment {record.name} has no reachable address (status {record.status})")
    return EnvClient(record.base_url, token=token or tokens.load(record.id))


def _print(data: Any) -> None:
    out.print(json.dumps(data, indent=2), markup=False)


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
    out.print(f"{env.name}\n  MCP:      {env.mcp_url}\n  control:  {env.base_url}/_awm/\n"
              f"  network:  {env.isolation.value}\n  protections: {', '.join(sorted(env.protections))}")
    if Protection.EGRESS_GUARD not in env.protections:
        out.print("  warning: no egress guard (it needs root on the engine's host): the environment can open "
                  "connections to " + ("the host" if Protection.INTERNAL_NETWORK in env.protections
                                       else "the host and beyond"))


@env_app.command("ls")
@handle_errors
def ls(as_json: bool = typer.Option(False, "--json")) -> None:
    """List environment containers of every owner."""
    records = DockerBackend().list()
    if as_json:
        _print([{**vars(r), "protections": sorted(r.protections)} for r in records])
        return
    table = Table()
    for col in ("name", "scenario", "status", "run id", "owner", "url", "isolation", "protections"):
        table.add_column(col)
    for r in records:
        table.add_row(r.name, r.scenario or "-", r.status, r.run_id or "-", r.owner or "-", r.base_url or "-",
                      r.isolation or "-", ", ".join(sorted(r.protections)) or "-")
    Console(width=220).print(table)


@env_app.command("stop")
@handle_errors
def stop(names: list[str] = typer.Argument(None), all_: bool = typer.Option(False, "--all", help="Every one.")) -> None:
    """Remove environments by name, id or scenario (or --all)."""
    backend = DockerBackend()
    records = backend.list() if all_ else [_find(backend, n) for n in names or []]
    for record in records:
        backend.stop(record.id)
        out.print(f"removed {record.name}")


@env_app.command("reset")
@handle_errors
def reset(name: str, token: str | None = TOKEN) -> None:
    """Restore an environment's database from its seed."""
    with _client(_find(DockerBackend(), name), token) as client:
        _print(client.reset())


@env_app.command("verify")
@handle_errors
def verify(
    name: str,
    task_idx: int = typer.Option(..., "--task-idx"),
    final_answer: str | None = typer.Option(None, "--final-answer"),
    flavour: str = typer.Option("code", "--flavour"),
    token: str | None = TOKEN,
) -> None:
    """Grade a task against an environment's current database."""
    with _client(_find(DockerBackend(), name), token) as client:
        result = client.verify(task_idx, final_answer, flavour)
    _print(result)
    if result["result"] == "error":
        raise typer.Exit(1)


@env_app.command("logs")
@handle_errors
def logs(name: str, tail: int = typer.Option(100, "--tail")) -> None:
    """Print an environment container's log."""
    backend = DockerBackend()
    out.print(backend.logs(_find(backend, name).id, tail), markup=False)


@env_app.command("check")
@handle_errors
def check(url: str = typer.Argument(..., help="An MCP endpoint, e.g. http://127.0.0.1:8000/mcp")) -> None:
    """List the tools of any MCP streamable-HTTP endpoint."""
    tools = asyncio.run(list_mcp_tools(url))
    for tool in tools:
        out.print(f"{tool.name}: {(tool.description or '').strip().splitlines()[0] if tool.description else ''}")
    out.print(f"{len(tools)} tools at {url}")


@env_app.command("gc")
@handle_errors
def gc() -> None:
    """Remove environment containers whose owning process is gone (this host only)."""
    removed = DockerBackend().gc()
    out.print(f"removed {len(removed)} orphaned environment(s)")
