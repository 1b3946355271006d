"""`awm k8s render|apply|status`: scenario objects for a Kubernetes cluster."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.console import Console
from rich.table import Table

from awm.core.cli import handle_errors

if TYPE_CHECKING:
    import lightkube

__all__ = ["k8s_app", "register"]

k8s_app = typer.Typer(name="k8s", help="Kubernetes: render, apply and watch scenario objects.", no_args_is_help=True)
out = Console(soft_wrap=True, highlight=False)


def register(app: typer.Typer) -> None:
    app.add_typer(k8s_app, name="k8s")


def _client(namespace: str) -> lightkube.Client:
    import lightkube
    from lightkube.core.exceptions import ConfigError

    from awm.core.errors import BackendUnavailable

    try:
        return lightkube.Client(namespace=namespace, field_manager="awm")
    except ConfigError as exc:
        raise BackendUnavailable(f"no Kubernetes configuration: {exc}", hint="set KUBECONFIG") from exc


@k8s_app.command("render")
@handle_errors
def render(
    refs: list[str] = typer.Argument(..., help="Dataset folders, scenario ids, or images (pinned: ...@sha256:...)."),
    out_dir: Path = typer.Option(..., "--out", help="The kustomize folder to write."),
    registry: str | None = typer.Option(None, "--registry", help="Registry HOST[:PORT] the images were pushed to."),
    namespace: str = typer.Option("awm", "--namespace", help="Namespace of the objects."),
    warm: int = typer.Option(1, "--warm", help="Warm sandboxes per scenario (SandboxWarmPool replicas)."),
) -> None:
    """Write a SandboxTemplate + SandboxWarmPool per scenario, digest-pinned, and the pre-pull list."""
    from awm.builder.catalog.loader import load_catalog
    from awm.runtime.k8s_manifests import render as render_folder
    from awm.runtime.k8s_manifests import resolve_images

    names: list[str] = []
    for ref in refs:  # a dataset folder stands for its scenarios
        names += sorted(load_catalog(Path(ref)).bundles) if Path(ref).is_dir() else [ref]
    scenarios = resolve_images(names, registry=registry)
    written = render_folder(scenarios, out_dir, namespace=namespace, warm=warm)
    out.print(f"wrote {len(scenarios)} scenario(s), {len(written)} file(s) to {out_dir}; "
              f"`awm k8s apply {out_dir}` or `kubectl apply -k {out_dir}`", markup=False)


@k8s_app.command("apply")
@handle_errors
def apply(
    folder: Path = typer.Argument(..., help="A kustomize folder: k8s/, an overlay, or `awm k8s render` output."),
    namespace: str = typer.Option("awm", "--namespace"),
    force: bool = typer.Option(False, "--force", help="Take over fields another manager owns."),
) -> None:
    """Server-side apply every object of FOLDER (field manager `awm`)."""
    from awm.runtime.k8s_manifests import apply_folder

    for what in apply_folder(folder, _client(namespace), force=force):
        out.print(f"applied {what}", markup=False)


@k8s_app.command("status")
@handle_errors
def status(
    namespace: str = typer.Option("awm", "--namespace"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Environments, claims and warm pools by scenario."""
    from awm.runtime.k8s_manifests import cluster_status

    rows = cluster_status(_client(namespace), namespace)
    if as_json:
        out.print(json.dumps(rows, indent=2), markup=False)
        return
    table = Table(title=f"namespace {namespace}", title_justify="left")
    for col in ("scenario", "pods", "claims", "warm (ready/target)"):
        table.add_column(col)
    for scenario, r in rows.items():
        pods = ", ".join(f"{n} {phase}" for phase, n in sorted(r["pods"].items())) or "-"
        warm = "-" if r["warm"] is None else f"{r['warm_ready']}/{r['warm']}"
        table.add_row(scenario, pods, str(r["claims"]), warm)
    Console(width=160).print(table)
