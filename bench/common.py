"""Shared helpers of the benchmarks in bench/: statistics, targets, machine facts, results files.

Every benchmark writes one JSON document to ``bench/results/<name>.json`` (a temporary file
renamed into place) holding the benchmark's name, the date (UTC), facts about the machine, the
parameters, and one entry per measured variant with n, p50, p95, p99, mean, min and max, the
target from the architecture page (shared/docs/architecture.md) ("Performance targets") and whether it was met.

Timings are reported, never asserted: the machines are shared and noisy. A benchmark fails only
when the thing it measures does not work (a reset that does not reset, a tool call that errors).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import signal
import socket
import sqlite3
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import docker
import docker.errors
import httpx
from docker.models.containers import Container

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
RESULTS_DIR = ROOT / "bench" / "results"

# Every container a benchmark starts carries this label, so leftovers are easy to find:
#   docker ps -a --filter label=awm-bench
# (The `awm.` namespace is the runtime's own and refused as a user label, see runtime/labels.py;
# the tests use `awm-test` alike.) Containers also carry the runtime's owner labels (awm.run-id
# = bench-<name>-..., awm.owner), so `awm env gc` removes them if a benchmark is SIGKILLed.
BENCH_LABEL = "awm-bench"

ARCHITECTURE_PAGE = "the architecture page (shared/docs/architecture.md), section 'Performance targets'"

__all__ = [
    "ARCHITECTURE_PAGE",
    "BENCH_LABEL",
    "EXAMPLES",
    "RESULTS_DIR",
    "ROOT",
    "Target",
    "Timer",
    "begin_run",
    "bench_arguments",
    "bench_backend",
    "bench_labels",
    "container_of",
    "container_url",
    "docker_client",
    "ensure_images",
    "hardened_run_options",
    "log",
    "machine_facts",
    "parse_docker_time",
    "percentile",
    "print_table",
    "reference",
    "remove_container",
    "results_document",
    "sigterm_as_interrupt",
    "summarise",
    "variant",
    "wait_for_quiet",
    "wait_http",
    "write_results",
]


# ---- statistics -------------------------------------------------------------------------------


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100), linear interpolation between closest ranks (numpy's default)."""
    if not sorted_values:
        return math.nan
    pos = (len(sorted_values) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = math.ceil(pos)
    if lo == hi:
        return float(sorted_values[lo])
    return float(sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo))


def summarise(samples: Sequence[float], digits: int = 3) -> dict[str, Any]:
    """n, p50, p95, p99, mean, min and max of `samples`."""
    values = sorted(float(s) for s in samples)
    if not values:
        return {"n": 0, "p50": None, "p95": None, "p99": None, "mean": None, "min": None, "max": None}
    return {
        "n": len(values),
        "p50": round(percentile(values, 50), digits),
        "p95": round(percentile(values, 95), digits),
        "p99": round(percentile(values, 99), digits),
        "mean": round(sum(values) / len(values), digits),
        "min": round(values[0], digits),
        "max": round(values[-1], digits),
    }


@dataclass(frozen=True)
class Target:
    """A target of the architecture page: upper bounds on some statistics, e.g. p50 <= 5 ms."""

    text: str
    bounds: dict[str, float] = field(default_factory=dict)  # statistic -> upper bound, same unit

    def met(self, stats: dict[str, Any]) -> bool | None:
        if not self.bounds or not stats.get("n"):
            return None
        return all(stats[k] is not None and stats[k] <= bound for k, bound in self.bounds.items())

    def as_json(self) -> dict[str, Any]:
        return {"text": self.text, "bounds": self.bounds, "source": ARCHITECTURE_PAGE}


def variant(
    name: str,
    samples: Sequence[float],
    *,
    what: str,
    role: str = "measured",
    target: Target | None = None,
    unit: str = "ms",
    notes: str | None = None,
    raw: bool = True,
) -> dict[str, Any]:
    """One measured variant: its statistics, its target and whether the target was met.

    `role` is "measured" (the thing the target is about), "baseline" (what it is compared with,
    measured in the same run) or "context" (a breakdown or a floor, no target).
    """
    stats = summarise(samples)
    entry: dict[str, Any] = {"what": what, "variant": name, "role": role, "unit": unit, "measured": True,
                             **stats}
    entry["target"] = target.as_json() if target else None
    entry["target_met"] = target.met(stats) if target else None
    if notes:
        entry["notes"] = notes
    if raw:
        entry["samples"] = [round(float(s), 3) for s in samples]
    return entry


def reference(name: str, value: float, *, what: str, source: str, unit: str = "ms",
              notes: str | None = None) -> dict[str, Any]:
    """A cited number that this run did not measure (e.g. the original launcher's start time)."""
    entry: dict[str, Any] = {
        "what": what, "variant": name, "role": "reference", "unit": unit, "measured": False,
        "n": None, "p50": value, "p95": None, "p99": None, "mean": None, "min": None, "max": None,
        "target": None, "target_met": None, "source": source,
    }
    if notes:
        entry["notes"] = notes
    return entry


class Timer:
    """Wall-clock intervals in milliseconds from a monotonic, high-resolution clock."""

    def __init__(self) -> None:
        self.start_ns = time.perf_counter_ns()

    def ms(self) -> float:
        return (time.perf_counter_ns() - self.start_ns) / 1e6


# ---- machine facts and results files -------------------------------------------------------


def _meminfo_total_bytes() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _loadavg() -> list[float] | None:
    try:
        return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]
    except OSError:
        return None


def machine_facts(client: docker.DockerClient | None) -> dict[str, Any]:
    """nproc, memory, docker server version, python version and a few more facts."""
    facts: dict[str, Any] = {
        "hostname": socket.gethostname(),
        "nproc": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "cpu_count": os.cpu_count(),
        "memory_bytes": _meminfo_total_bytes(),
        "python": platform.python_version(),
        "python_implementation": platform.python_implementation(),
        "sqlite_host": sqlite3.sqlite_version,
        "platform": platform.platform(),
        "loadavg_at_start": _loadavg(),
    }
    if facts["memory_bytes"]:
        facts["memory_gib"] = round(facts["memory_bytes"] / 2**30, 1)
    if client is not None:
        version = client.version()
        info = client.info()
        facts.update(
            docker_server_version=version.get("Version"),
            docker_api_version=version.get("ApiVersion"),
            docker_storage_driver=info.get("Driver"),
            docker_cgroup_version=info.get("CgroupVersion"),
            docker_ncpu=info.get("NCPU"),
            other_running_containers_at_start=info.get("ContainersRunning"),
        )
    return facts


def write_results(path: Path, document: dict[str, Any]) -> Path:
    """Write `document` as JSON to `path` atomically (a temporary file, then a rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as handle:
        json.dump(document, handle, indent=2, sort_keys=False, allow_nan=False)
        handle.write("\n")
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    return path


def results_document(name: str, *, quick: bool, machine: dict[str, Any], parameters: dict[str, Any],
                     variants: list[dict[str, Any]], started: datetime, **extra: Any) -> dict[str, Any]:
    """The JSON document every benchmark writes."""
    machine = {**machine, "loadavg_at_end": _loadavg()}
    with suppress(docker.errors.DockerException):
        machine["other_running_containers_at_end"] = len(docker.from_env().containers.list(ignore_removed=True))
    return {
        "benchmark": name,
        "date": started.isoformat(timespec="seconds").replace("+00:00", "Z"),
        "finished": datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
        "quick": quick,
        "machine": machine,
        "parameters": parameters,
        "variants": variants,
        **extra,
        "notes_on_method": (
            "Timings are reported, not asserted: the machine is shared and noisy. Percentiles "
            "interpolate linearly between closest ranks. Baselines are measured in the same run; "
            "entries with role 'reference' are cited, not measured."
        ),
    }


def _fmt(value: Any, unit: str) -> str:
    if value is None:
        return "-"
    if unit == "ms" and value >= 1000:
        return f"{value / 1000:.2f} s"
    return f"{value:.1f}" if value >= 10 else f"{value:.2f}"


def print_table(variants: list[dict[str, Any]], *, file: Any = None) -> None:
    """A short plain-text table of the variants."""
    rows = [("variant", "n", "p50", "p95", "p99", "unit", "target", "met")]
    for v in variants:
        met = {True: "yes", False: "NO", None: "-"}[v.get("target_met")]
        n = "cited" if not v.get("measured", True) else str(v["n"])
        target = (v.get("target") or {}).get("text", "-")
        rows.append((v["variant"], n, _fmt(v["p50"], v["unit"]), _fmt(v["p95"], v["unit"]),
                     _fmt(v["p99"], v["unit"]), v["unit"], target, met))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    out = file or sys.stdout
    for i, row in enumerate(rows):
        print("  ".join(cell.ljust(widths[j]) if j in (0, 6) else cell.rjust(widths[j])
                        for j, cell in enumerate(row)), file=out)
        if i == 0:
            print("  ".join("-" * w for w in widths), file=out)


def bench_arguments(name: str, description: str) -> argparse.ArgumentParser:
    """The command line every benchmark shares: --quick, --out and --wait-quiet."""
    parser = argparse.ArgumentParser(prog=f"bench/{name}.py", description=description)
    parser.add_argument("--quick", action="store_true",
                        help="small counts, for a smoke run (the JSON records quick=true)")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / f"{name}.json",
                        help=f"where to write the JSON (default: bench/results/{name}.json)")
    parser.add_argument("--wait-quiet", type=float, default=0.0, metavar="SECONDS",
                        help="first wait up to SECONDS for a quiet machine (no other running "
                             "containers, 1-minute load average < 1); the JSON records the outcome")
    return parser


@dataclass
class Run:
    """What every benchmark sets up first: its counts, its start time, the engine and the machine."""

    counts: dict[str, int]
    started: datetime
    client: docker.DockerClient
    machine: dict[str, Any]


def begin_run(args: argparse.Namespace, counts: dict[str, tuple[int, int]]) -> Run:
    """Pick the default or --quick counts, connect, wait for quiet if asked, read the machine."""
    started = datetime.now(UTC)
    client = docker_client()
    quiet = wait_for_quiet(client, args.wait_quiet)
    return Run(
        counts={k: v[1 if args.quick else 0] for k, v in counts.items()},
        started=started,
        client=client,
        machine={**machine_facts(client), "quiet_check": quiet},
    )


def wait_for_quiet(client: docker.DockerClient, max_wait_s: float, *, load_below: float = 1.0) -> dict[str, Any]:
    """Wait until no other container runs and the load is low, at most `max_wait_s`; what was seen."""
    deadline = time.monotonic() + max_wait_s
    waited = Timer()
    while True:
        running = len(client.containers.list(ignore_removed=True))
        load = (_loadavg() or [0.0])[0]
        quiet = running == 0 and load < load_below
        if quiet or time.monotonic() >= deadline:
            break
        log(f"waiting for a quiet machine: {running} other containers running, load {load:.2f}")
        time.sleep(10)
    outcome = {"asked_s": max_wait_s, "waited_s": round(waited.ms() / 1000, 1), "quiet": quiet,
               "other_running_containers": running, "loadavg_1m": load}
    if max_wait_s and not quiet:
        log(f"machine still busy after {max_wait_s:g}s ({running} containers, load {load:.2f}); measuring anyway")
    return outcome


def log(message: str) -> None:
    """Progress on stderr, so that stdout holds only the table."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# ---- Docker ----------------------------------------------------------------------------------


def docker_client() -> docker.DockerClient:
    """The local engine's client, or exit with the reason and what to do."""
    from awm.core.errors import BackendUnavailable
    from awm.runtime.docker_backend import engine_client as project_client

    try:
        return project_client()
    except BackendUnavailable as exc:
        sys.exit(f"bench: {exc}; run `bash .ci/docker-up` first")


def ensure_images(client: docker.DockerClient, bundles: list[Any]) -> dict[str, Any]:
    """Build (or find cached) the images of `bundles`; scenario id -> BuildResult."""
    from awm.builder.build.batch import build_images

    results = build_images(bundles, client=client)
    failed = [f"{r.scenario}: {r.error}" for r in results if r.status == "failed"]
    if failed:
        sys.exit("bench: image build failed: " + "; ".join(failed))
    return {r.scenario: r for r in results}


def bench_labels(name: str) -> dict[str, str]:
    """The user label of this benchmark's containers."""
    return {BENCH_LABEL: name}


def bench_backend(client: docker.DockerClient, name: str) -> Any:
    """A DockerBackend whose containers carry the run id `bench-<name>-<random>`."""
    from awm.core.labels import new_run_id
    from awm.runtime.docker_backend import DockerBackend

    return DockerBackend(client, run_id=f"bench-{name}-{new_run_id()[:6]}")


def container_of(client: docker.DockerClient, env: Any) -> Container:
    """The docker SDK container behind a runtime `Env`."""
    return client.containers.get(env.id)


def hardened_run_options(backend: Any, name: str) -> dict[str, Any]:
    """`containers.run` options equal to what DockerBackend.start uses with Isolation.PUBLISHED.

    Hardened (read-only, tmpfs /tmp, cap-drop ALL, no-new-privileges, uid 10001, memory, pids
    and CPU limits from awm.runtime.base.Resources) and the server port published on 127.0.0.1.
    Derived from the runtime's defaults, so a change there shows here.
    """
    from awm.core.labels import owner_labels
    from awm.runtime.docker_backend import SERVER_PORT, sandbox_options

    return dict(
        detach=True,
        labels={**bench_labels(name), **owner_labels(backend.run_id)},
        ports={f"{SERVER_PORT}/tcp": ("127.0.0.1", None)},
        **sandbox_options(),
    )


def container_url(container: Container, timeout_s: float = 10.0) -> str:
    """The server's URL: the published 127.0.0.1 port, else the container's own address.

    Both change when a container restarts, so read them again after each start.
    """
    from awm.runtime.docker_backend import SERVER_PORT

    deadline = time.monotonic() + timeout_s
    while True:
        container.reload()
        settings = container.attrs["NetworkSettings"]
        published = f"{SERVER_PORT}/tcp" in (container.attrs["HostConfig"].get("PortBindings") or {})
        bindings = (settings.get("Ports") or {}).get(f"{SERVER_PORT}/tcp")
        if published and bindings:
            return f"http://127.0.0.1:{bindings[0]['HostPort']}"
        ips = [n.get("IPAddress") for n in (settings.get("Networks") or {}).values() if n.get("IPAddress")]
        if not published and ips:
            return f"http://{ips[0]}:{SERVER_PORT}"
        if container.status in ("exited", "dead") or time.monotonic() > deadline:
            logs = container.logs(tail=20).decode(errors="replace")
            raise RuntimeError(f"container {container.short_id} has no address (status "
                               f"{container.status}); logs:\n{logs}")
        time.sleep(0.005)


def wait_http(http: httpx.Client, url: str, *, timeout_s: float = 30.0, interval_s: float = 0.01,
              container: Container | None = None) -> httpx.Response:
    """GET `url` every `interval_s` until it answers 200; the response.

    Raises:
        RuntimeError: no 200 in time (with the container's last log lines when given).
    """
    deadline = time.monotonic() + timeout_s
    last: object = None
    while time.monotonic() < deadline:
        try:
            response = http.get(url)
            if response.status_code == 200:
                return response
            last = response.status_code
        except httpx.TransportError as exc:  # not listening yet (docker-proxy resets, refuses)
            last = exc
        time.sleep(interval_s)
    logs = container.logs(tail=20).decode(errors="replace") if container is not None else ""
    raise RuntimeError(f"{url} did not answer 200 within {timeout_s:g}s (last: {last!r}); logs:\n{logs}")


def remove_container(container: Container | None) -> None:
    """Force-remove one container this benchmark started (already gone is fine)."""
    if container is None:
        return
    with suppress(docker.errors.NotFound):
        container.remove(force=True)


def parse_docker_time(text: str) -> float:
    """Epoch seconds of a Docker RFC 3339 timestamp with nanoseconds (2026-01-01T00:00:00.123456789Z)."""
    main, _, frac = text.rstrip("Z").partition(".")
    seconds = datetime.strptime(main, "%Y-%m-%dT%H:%M:%S").replace(tzinfo=UTC).timestamp()
    return seconds + (float("0." + frac) if frac else 0.0)


@contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Turn SIGTERM into KeyboardInterrupt, so `finally` blocks stop the containers we started."""

    def handler(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
