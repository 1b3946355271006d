"""`awm env ...`: start, list, use and remove environments by hand, on Docker or Kubernetes.

Every command takes `--backend docker|k8s` (or AWM_BACKEND). On Kubernetes, environments are
pods in `--namespace` (AWM_K8S_NAMESPACE, default awm) of the cluster KUBECONFIG names, or of
the in-cluster service account; commands reach a pod at its IP inside the cluster and through
a `kubectl port-forward` of their own outside it (`--connect`, AWM_K8S_CONNECT).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Iterator
from enum import StrEnum
from typing import TYPE_CHECKING, Any

import typer
from rich.console import Console
from rich.table import Table

from awm.core.cli import handle_errors
from awm.core.errors import EnvNotFound, EnvUnavailable
from awm.core.labels import current_user
from awm.core.naming import image_ref
from awm.runtime import tokens
from awm.runtime.base import EnvRecord, Isolation, Protection, Resources, StartOptions
from awm.runtime.client import EnvClient, list_mcp_tools
from awm.runtime.docker_backend import DockerBackend

if TYPE_CHECKING:
    from awm.runtime.k8s_backend import KubernetesBackend

__all__ = ["register"]

env_app = typer.Typer(help="Run environments on Docker or Kubernetes: start, ls, stop, reset, verify, logs, "
                           "forward, check, gc.", no_args_is_help=True)
out = Console(soft_wrap=True, highlight=False)


def register(app: typer.Typer) -> None:
    app.add_typer(env_app, name="env")


class BackendKind(StrEnum):
    DOCKER = "docker"
    K8S = "k8s"


class Connect(StrEnum):
    POD_IP = "pod-ip"
    PORT_FORWARD = "port-forward"


BACKEND = typer.Option(BackendKind.DOCKER, "--backend", envvar="AWM_BACKEND",
                       help="docker: this machine's engine; k8s: pods on the cluster of KUBECONFIG.")
NAMESPACE = typer.Option("awm", "--namespace", envvar="AWM_K8S_NAMESPACE",
                         help="k8s: the namespace of the environment pods.")
CONNECT = typer.Option(None, "--connect", envvar="AWM_K8S_CONNECT",
                       help="k8s: reach pods at their IP (pod-ip, the default in a cluster) or through "
                            "kubectl port-forward (port-forward, the default elsewhere).")
JSON = typer.Option(False, "--json", help="Print JSON instead of text.")
TOKEN = typer.Option(None, "--token", envvar="AWM_CONTROL_TOKEN",
                     help="Control-plane token (default: the one kept when `awm env start` made it).")


@contextlib.contextmanager
def _backend(kind: BackendKind, namespace: str = "awm",
             connect: Connect | None = None) -> Iterator[DockerBackend | KubernetesBackend]:
    if kind is BackendKind.DOCKER:
        yield DockerBackend()
        return
    from awm.runtime.k8s_backend import KubernetesBackend  # lightkube is loaded only when asked for

    backend = KubernetesBackend(namespace=namespace, connect=connect.value if connect else None)
    try:
        yield backend
    finally:
        backend.close()


def _image(ref: str) -> str:
    """An image reference, or a scenario id meaning awm/<id>:latest."""
    return ref if "/" in ref or ":" in ref else image_ref(ref)


def _find(backend: DockerBackend | KubernetesBackend, ref: str) -> EnvRecord:
    matches = [r for r in backend.list() if ref in (r.name, r.id, r.id[:12], r.scenario)]
    if not matches:
        where = "container" if isinstance(backend, DockerBackend) else f"pod in namespace {backend.namespace}"
        raise EnvNotFound(f"no environment {where} named {ref!r}")
    if len(matches) > 1:
        raise EnvNotFound(f"{ref!r} matches {len(matches)} environments",
                          hint="use a name or id from `awm env ls`")
    return matches[0]


@contextlib.contextmanager
def _client(backend: DockerBackend | KubernetesBackend, ref: str, token: str | None) -> Iterator[EnvClient]:
    """A client of environment `ref`, with the given token, else the one kept when it was started."""
    record = _find(backend, ref)
    with backend.reach(record.id) as url, EnvClient(
        url, token=token or (tokens.load(record.token_key) if record.token_key else None)
    ) as client:
        yield client


def _print(data: Any) -> None:
    out.print(json.dumps(data, indent=2), markup=False)


@env_app.command("start")
@handle_errors
def start(
    image: str = typer.Argument(..., help="Image, or scenario id (awm/<id>:latest)."),
    port: int | None = typer.Option(None, "--port", help="Docker: publish on 127.0.0.1:PORT (a route out unless "
                                                         "guarded). k8s: see `awm env forward`."),
    token: str | None = typer.Option(None, "--token", envvar="AWM_CONTROL_TOKEN",
                                     help="Control-plane token (default: a random one, kept for later commands)."),
    memory: str = typer.Option("512m", help="Memory limit."),
    backend_kind: BackendKind = BACKEND,
    namespace: str = NAMESPACE,
    connect: Connect | None = CONNECT,
    as_json: bool = JSON,
) -> None:
    """Start an environment that stays up until `awm env stop` (it has no owning process).

    Its control token is kept in a file only you can read (see `awm.runtime.tokens`), so
    `awm env reset/verify NAME` need no --token. On Kubernetes the pod still ends after the
    pod template's activeDeadlineSeconds (a day in k8s/base).
    """
    if port is not None and backend_kind is BackendKind.K8S:
        raise typer.BadParameter("--port publishes a Docker container; for a pod, run `awm env forward NAME "
                                 "--backend k8s --port PORT` after it started")
    options = StartOptions(
        control_token=token,
        isolation=Isolation.PUBLISHED if port else Isolation.SEALED,
        host_port=port,
        resources=Resources(memory=memory),
        detached=True,
    )
    with _backend(backend_kind, namespace, connect) as backend:
        env = backend.start(_image(image), options)
        # On Kubernetes the URL to print is the pod's own: a port-forward ends with this command.
        record = _find(backend, env.id) if backend_kind is BackendKind.K8S else None
    base_url = record.base_url if record else env.base_url
    if as_json:
        _print({"name": env.name, "id": env.id, "image": env.image, "scenario": env.scenario,
                "backend": backend_kind.value, "namespace": namespace if record else None,
                "mcp_url": f"{base_url}/mcp", "base_url": base_url, "isolation": env.isolation.value,
                "protections": sorted(env.protections)})
        return
    if record is not None:
        out.print(f"{env.name}\n  pod:      {namespace}/{env.name}\n  MCP:      {base_url}/mcp (in the cluster)\n"
                  f"  control:  {base_url}/_awm/\n  from here: awm env forward {env.name} --backend k8s"
                  f"{'' if namespace == 'awm' else ' --namespace ' + namespace}\n"
                  f"  network:  the namespace's NetworkPolicies (k8s/base: no egress, ingress from runners only)\n"
                  f"  protections: {', '.join(sorted(env.protections))}")
        return
    out.print(f"{env.name}\n  MCP:      {env.mcp_url}\n  control:  {env.base_url}/_awm/\n"
              f"  network:  {env.isolation.value}\n  protections: {', '.join(sorted(env.protections))}")
    if Protection.EGRESS_GUARD not in env.protections:
        out.print("  warning: no egress guard (it needs root on the engine's host): the environment can open "
                  "connections to " + ("the host" if Protection.INTERNAL_NETWORK in env.protections
                                       else "the host and beyond"))


@env_app.command("ls")
@handle_errors
def ls(backend_kind: BackendKind = BACKEND, namespace: str = NAMESPACE, as_json: bool = JSON) -> None:
    """List environments of every owner."""
    with _backend(backend_kind, namespace) as backend:
        records = backend.list()
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
    backend_kind: BackendKind = BACKEND,
    namespace: str = NAMESPACE,
    as_json: bool = JSON,
) -> None:
    """Remove environments by name, id or scenario, or all of yours (--all)."""
    if bool(names) == all_:
        raise typer.BadParameter("give environment names or --all, not both" if names
                                 else "give environment names, or --all to remove all of yours")
    if all_owners and not all_:
        raise typer.BadParameter("--all-owners goes with --all")
    with _backend(backend_kind, namespace) as backend:
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
def reset(name: str, token: str | None = TOKEN, backend_kind: BackendKind = BACKEND, namespace: str = NAMESPACE,
          connect: Connect | None = CONNECT, as_json: bool = JSON) -> None:
    """Restore an environment's database from its seed."""
    with _backend(backend_kind, namespace, connect) as backend, _client(backend, name, token) as client:
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
    backend_kind: BackendKind = BACKEND,
    namespace: str = NAMESPACE,
    connect: Connect | None = CONNECT,
    as_json: bool = JSON,
) -> None:
    """Grade a task against an environment's current database. Exit 1 if the verifier failed."""
    with _backend(backend_kind, namespace, connect) as backend, _client(backend, name, token) as client:
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
def logs(name: str, tail: int = typer.Option(100, "--tail"), backend_kind: BackendKind = BACKEND,
         namespace: str = NAMESPACE) -> None:
    """Print an environment's log."""
    with _backend(backend_kind, namespace) as backend:
        out.print(backend.logs(_find(backend, name).id, tail), markup=False)


@env_app.command("forward")
@handle_errors
def forward(
    name: str,
    port: int = typer.Option(0, "--port", help="The local port (default: any free one)."),
    backend_kind: BackendKind = BACKEND,
    namespace: str = NAMESPACE,
    as_json: bool = typer.Option(False, "--json", help="Print one JSON line (name, mcp_url, base_url), then wait."),
) -> None:
    """Reach a pod from this machine: forward 127.0.0.1:PORT to its server until Ctrl-C.

    Docker environments need none: their address is printed.
    """
    def announce(url: str, text: str) -> None:
        if as_json:  # one line, so a script can read it and go on while the forward runs
            out.print(json.dumps({"name": record.name, "mcp_url": f"{url}/mcp", "base_url": url}), markup=False)
        else:
            out.print(text, markup=False)

    with _backend(backend_kind, namespace) as backend:
        record = _find(backend, name)
        if isinstance(backend, DockerBackend):
            with backend.reach(record.id) as url:
                announce(url, f"{record.name} is reachable at {url}/mcp (no forward needed)")
            return
        tunnel = backend.port_forward(record.id, port)
        announce(tunnel.url, f"{record.name}\n  MCP:      {tunnel.url}/mcp\n  control:  {tunnel.url}/_awm/\n"
                             "Ctrl-C ends the forward.")
        try:
            code = tunnel.wait()
        except KeyboardInterrupt:
            return
        finally:
            tunnel.close()
    raise EnvUnavailable(f"the port-forward to pod {namespace}/{record.id} ended (kubectl exited with {code})",
                         container_id=record.id)


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
def gc(backend_kind: BackendKind = BACKEND, namespace: str = NAMESPACE, as_json: bool = JSON) -> None:
    """Remove environments whose owning process is gone.

    Docker: containers of dead processes on this host. k8s: the pods of owner Leases that
    expired (of any machine), which Kubernetes' garbage collector then deletes.
    """
    with _backend(backend_kind, namespace) as backend:
        removed = backend.gc()
    if as_json:
        _print(removed)
    else:
        out.print(f"removed {len(removed)} orphaned environment(s)")
