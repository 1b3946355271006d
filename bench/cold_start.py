"""Cold start: `docker run` until MCP `tools/list` answers, vs the module run the original way.

    .venv/bin/python bench/cold_start.py [--quick]

Variants, interleaved round by round (the order rotates each round), on the pantrypal image:
  * `DockerBackend.start → tools/list`: the product path. The clock starts before
    `DockerBackend.start` (which runs the container and polls /_awm/health every 50 ms) and
    stops when a real MCP client (`AsyncEnvClient.list_tools`: initialize + tools/list) has the
    tool list.
  * `docker run → tools/list, 5 ms poll`: the same container options, started with
    `containers.run`, /_awm/health polled every 5 ms, then the same MCP client. This is the
    server's own floor, without DockerBackend's 50 ms poll.
  * baseline, measured: the same image and options with `--entrypoint` running the environment
    module the original way (`python /opt/awm/scenario/env.py`, DATABASE_PATH set, uvicorn and
    no MCP) until `GET /recipes/1` answers (5 ms poll). The import + uvicorn floor.
  * reference, cited: the original launcher, ~2.8 s on this machine (architecture page); it
    cannot be run here, so it is recorded, not measured.

Also recorded:
  * where the time goes: Docker's own `State.StartedAt` splits each start into the engine's part
    (create, mount, network, docker-proxy, exec) and the process's part; and a probe container
    times, inside the image, the interpreter start, the imports, the environment module and the
    MCP bridge (fastapi-mcp converting the OpenAPI document).
  * memory of an idle environment after each start: VmRSS of the server process (PID 1) and the
    container's cgroup usage minus page cache, for the awm server and for the baseline.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any, cast

import docker
import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (
    EXAMPLES,
    Target,
    Timer,
    begin_run,
    bench_arguments,
    bench_backend,
    bench_labels,
    container_of,
    container_url,
    ensure_images,
    hardened_run_options,
    log,
    parse_docker_time,
    print_table,
    reference,
    remove_container,
    results_document,
    sigterm_as_interrupt,
    variant,
    wait_http,
    write_results,
)

from awm.builder.catalog.loader import load_catalog
from awm.runtime.base import Isolation
from awm.runtime.client import AsyncEnvClient

NAME = "cold_start"
SCENARIO = "pantrypal_recipe_planner"
BASELINE_ROUTE = "/recipes/1"  # a GET route of the app: answers only once the DB is reachable
POLL_S = 0.005
IDLE_BEFORE_MEMORY_S = 0.5
COLD_TARGET = Target("p50 ≤ 1.0 s", {"p50": 1000.0})
# "80 MB" read as 80 MiB (the lenient reading); the bound is on the max over all starts.
MEMORY_TARGET = Target("≤ 80 MB RSS (max)", {"max": 80.0})
WHAT_COLD = "cold start: docker run → MCP tools/list"
WHAT_MEM = "memory per idle environment"
ORIGINAL_LAUNCHER_MS = 2800.0

COUNTS = {"starts": (20, 3), "warmup_rounds": (1, 1), "probes": (5, 1)}

BASELINE_ENTRYPOINT = [
    "/bin/sh", "-c",
    # The module reads DATABASE_PATH; the image's seed is read-only, so work on a copy in /tmp.
    "cp /opt/awm/scenario/seed.db /tmp/env.db && exec /opt/awm/venv/bin/python /opt/awm/scenario/env.py",
]
BASELINE_ENV = {"DATABASE_PATH": "sqlite:////tmp/env.db", "HOST": "0.0.0.0", "PORT": "8000"}

PROBE = r"""
import asyncio, json, os, subprocess, sys, time
marks = {}
t = time.perf_counter()
subprocess.run([sys.executable, "-c", "pass"], check=True)
marks["interpreter start + exit (python -c pass, in a child)"] = round((time.perf_counter() - t) * 1000, 3)
t0 = time.perf_counter()
def mark(name):
    marks[name] = round((time.perf_counter() - t0) * 1000, 3)  # cumulative; differenced on the host
import pydantic
mark("import pydantic")
import fastapi
mark("import fastapi (+ starlette)")
import sqlalchemy, sqlalchemy.orm
mark("import sqlalchemy")
import uvicorn
mark("import uvicorn")
import httpx
mark("import httpx")
import mcp, mcp.server.streamable_http_manager
mark("import mcp (server + streamable HTTP)")
import fastapi_mcp
mark("import fastapi_mcp")
from pathlib import Path
from awm_server.settings import Settings
from awm_server.environment import Environment, ScenarioFiles
from awm_server.app import create_app
mark("import awm_server")
# The steps of Environment(settings), one by one, as environment.py does them.
from awm_server.database import WorkingDatabase
from awm_server.envmodule import load_env_module
from awm_server.mcp_bridge import McpBridge
settings = Settings.from_env()
files = ScenarioFiles(settings.scenario_dir)
db = WorkingDatabase(files.seed, settings.work_dir / "env.db"); db.prepare()
mark("read scenario files, copy seed to tmpfs")
env_module = load_env_module(files.module, db.url, files.scenario)
mark("exec environment module (ORM, routes)")
bridge = McpBridge(env_module.app, env_module.app, tool_timeout_s=30.0)
mark("MCP bridge: fastapi-mcp tools from OpenAPI")
env = Environment(settings)  # the real thing, now warm, to serve below
t1 = time.perf_counter()
server = uvicorn.Server(uvicorn.Config(create_app(env), host="127.0.0.1", port=settings.port,
                                       log_level="warning", access_log=False))
async def serve():
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.0005)
    marks["create_app + uvicorn start (lifespan, bind)"] = round((time.perf_counter() - t1) * 1000, 3)
    server.should_exit = True
    await task
asyncio.run(serve())
print(json.dumps({"marks": marks, "tools": len(bridge.tools)}))
"""


async def _list_tools(base_url: str) -> list[str]:
    async with AsyncEnvClient(base_url) as client:
        return [t.name for t in await client.list_tools()]


def list_tools(base_url: str) -> list[str]:
    """tools/list through a real MCP client (initialize, then tools/list)."""
    return asyncio.run(_list_tools(base_url))


async def _list_tools_phased(base_url: str) -> dict[str, float]:
    """The same as `_list_tools`, timed phase by phase (ms)."""
    t0 = time.perf_counter_ns()
    client = AsyncEnvClient(base_url)
    t1 = time.perf_counter_ns()
    try:
        async with client.mcp_session() as session:
            t2 = time.perf_counter_ns()
            await session.list_tools()
            t3 = time.perf_counter_ns()
    finally:
        await client.aclose()
    return {"client": (t1 - t0) / 1e6, "session": (t2 - t1) / 1e6, "list": (t3 - t2) / 1e6,
            "total": (t3 - t0) / 1e6}


def idle_memory(client: docker.DockerClient, container: Any) -> dict[str, float]:
    """VmRSS of PID 1 and cgroup usage minus page cache, in MiB, after a short idle."""
    time.sleep(IDLE_BEFORE_MEMORY_S)
    status = container.exec_run(["cat", "/proc/1/status"]).output.decode()
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    rss_kib = int(fields["VmRSS"].split()[0])
    stats = client.api.stats(container.id, stream=False, one_shot=True)["memory_stats"]
    inner = stats.get("stats", {})
    cache = inner.get("cache", inner.get("inactive_file", 0))  # cgroup v1 / v2
    return {"vmrss": rss_kib / 1024, "cgroup": (stats["usage"] - cache) / 2**20,
            "rss_anon": int(fields.get("RssAnon", "0 kB").split()[0]) / 1024}


def started_offsets(container: Any, wall0: float) -> tuple[float, float]:
    """(created, started) in ms after `wall0`, from Docker's own timestamps."""
    container.reload()
    created = parse_docker_time(container.attrs["Created"])
    started = parse_docker_time(container.attrs["State"]["StartedAt"])
    return (created - wall0) * 1000, (started - wall0) * 1000


class Runs:
    def __init__(self, client: docker.DockerClient, image: str, expected_tools: int) -> None:
        self.client = client
        self.image = image
        self.expected_tools = expected_tools
        self.backend = bench_backend(client, NAME)
        self.samples: dict[str, list[float]] = {}
        self._seal_marks: tuple[float, float] | None = None  # (start, end) in ms of the current timer
        self._timer: Timer | None = None
        self._time_seal()

    def _time_seal(self) -> None:
        """Time DockerBackend's egress-guard step (a private method: skipped if it is gone)."""
        original = getattr(self.backend, "_seal", None)
        if not callable(original):
            return

        def timed(*args: Any, **kwargs: Any) -> Any:
            begin = self._timer.ms() if self._timer else 0.0
            try:
                return original(*args, **kwargs)
            finally:
                if self._timer:
                    self._seal_marks = (begin, self._timer.ms())

        self.backend._seal = timed

    def add(self, key: str, value: float, record: bool) -> None:
        if record:
            self.samples.setdefault(key, []).append(value)

    def _check_tools(self, tools: list[str]) -> None:
        if len(tools) != self.expected_tools:
            raise RuntimeError(f"tools/list gave {len(tools)} tools, expected {self.expected_tools}")

    def backend_start(self, record: bool, isolation: Isolation = Isolation.SEALED) -> float:
        key = f"backend_{isolation}"
        wall0 = time.time()
        timer = self._timer = Timer()
        self._seal_marks = None
        env = self.backend.start(self.image, labels=bench_labels(NAME), isolation=isolation)
        try:
            health_ms = timer.ms()
            tools = list_tools(env.base_url)
            total = timer.ms()
            self._check_tools(tools)
            container = container_of(self.client, env)
            _, started = started_offsets(container, wall0)
            self.add(f"{key}_total", total, record)
            self.add(f"{key}_health", health_ms, record)
            self.add(f"{key}_started", started, record)
            # timed() sets the marks during backend.start, which mypy cannot see from here
            marks = cast("tuple[float, float] | None", self._seal_marks)
            if marks is not None:
                begin, end = marks
                self.add(f"{key}_seal", end - begin, record)
                self.add(f"{key}_started_to_seal", begin - started, record)
                self.add(f"{key}_seal_to_health", health_ms - end, record)
            else:
                self.add(f"{key}_started_to_health", health_ms - started, record)
            if isolation is Isolation.SEALED:
                for k, v in idle_memory(self.client, container).items():
                    self.add(f"mem_awm_{k}", v, record)
        finally:
            env.stop()
        return total

    def published_start(self, record: bool) -> float:
        return self.backend_start(record, Isolation.PUBLISHED)

    def direct_start(self, record: bool) -> float:
        container = None
        wall0 = time.time()
        timer = Timer()
        try:
            container = self.client.containers.run(self.image, **hardened_run_options(self.backend, NAME))
            run_ms = timer.ms()
            url = container_url(container)
            with httpx.Client(timeout=2.0) as http:
                wait_http(http, f"{url}/_awm/health", interval_s=POLL_S, container=container)
            health_ms = timer.ms()
            tools = list_tools(url)
            total = timer.ms()
            self._check_tools(tools)
            # The same once more, on a server that has served once, phase by phase.
            for phase, ms in asyncio.run(_list_tools_phased(url)).items():
                self.add(f"direct_tools_warm_{phase}", ms, record)
            _created, started = started_offsets(container, wall0)
            self.add("direct_total", total, record)
            self.add("direct_run_call", run_ms, record)
            self.add("direct_started", started, record)
            self.add("direct_started_to_health", health_ms - started, record)
            self.add("direct_health_to_tools", total - health_ms, record)
        finally:
            remove_container(container)
        return total

    def baseline_start(self, record: bool) -> float:
        container = None
        wall0 = time.time()
        timer = Timer()
        try:
            container = self.client.containers.run(
                self.image, entrypoint=BASELINE_ENTRYPOINT, command=[], environment=BASELINE_ENV,
                **hardened_run_options(self.backend, NAME),
            )
            url = container_url(container)
            with httpx.Client(timeout=2.0) as http:
                wait_http(http, f"{url}{BASELINE_ROUTE}", interval_s=POLL_S,
                          container=container)
            total = timer.ms()
            _, started = started_offsets(container, wall0)
            self.add("baseline_total", total, record)
            self.add("baseline_started", started, record)
            self.add("baseline_started_to_answer", total - started, record)
            mem = idle_memory(self.client, container)
            for k, v in mem.items():
                self.add(f"mem_baseline_{k}", v, record)
        finally:
            remove_container(container)
        return total

    def probe(self) -> dict[str, Any]:
        """Time the server's start-up steps inside the image (no network, hardened)."""
        options = hardened_run_options(self.backend, NAME)
        options.pop("ports")
        options.pop("detach")
        container = self.client.containers.run(
            self.image, entrypoint=["/opt/awm/venv/bin/python", "-c", PROBE], command=[],
            network_mode="none", detach=True, **options,
        )
        try:
            result = container.wait(timeout=60)
            out = container.logs(stdout=True, stderr=False).decode()
            if result.get("StatusCode") != 0:
                raise RuntimeError(f"probe failed: {container.logs().decode()[-2000:]}")
            data: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
            return data
        finally:
            remove_container(container)


def main() -> int:
    parser = bench_arguments(NAME, __doc__.splitlines()[0])
    args = parser.parse_args()
    run = begin_run(args, COUNTS)
    counts, started, client, machine = run.counts, run.started, run.client, run.machine
    bundle = load_catalog(EXAMPLES).bundles[SCENARIO]
    log("building (or finding cached) the image")
    image = str(ensure_images(client, [bundle])[SCENARIO].tag)
    runs = Runs(client, image, expected_tools=len(bundle.tools))
    kinds = [("sealed", runs.backend_start), ("published", runs.published_start),
             ("direct", runs.direct_start), ("baseline", runs.baseline_start)]

    probes: list[dict[str, Any]] = []
    with sigterm_as_interrupt():
        rounds = counts["warmup_rounds"] + counts["starts"]
        for r in range(rounds):
            record = r >= counts["warmup_rounds"]
            order = kinds[r % len(kinds):] + kinds[:r % len(kinds)]
            times = {name: fn(record) for name, fn in order}
            log((f"round {r + 1 - counts['warmup_rounds']}/{counts['starts']}: " if record else "warm-up: ")
                + ", ".join(f"{k} {v:.0f} ms" for k, v in times.items()))
        for i in range(counts["probes"]):
            probes.append(runs.probe())
            log(f"probe {i + 1}/{counts['probes']}")

    s = runs.samples
    variants = [
        variant("awm: DockerBackend.start (default, SEALED) → tools/list", s["backend_sealed_total"],
                what=WHAT_COLD, target=COLD_TARGET,
                notes="product path: internal network, egress guard via nsenter, SIGUSR1 go-ahead, 20 ms health poll"),
        variant("awm: DockerBackend.start (PUBLISHED) → tools/list", s["backend_published_total"], what=WHAT_COLD,
                target=COLD_TARGET, notes="port on 127.0.0.1, no egress guard; 20 ms health poll"),
        variant("awm: docker run → tools/list (5 ms poll)", s["direct_total"], what=WHAT_COLD,
                target=COLD_TARGET, notes="containers.run with PUBLISHED's options, health polled every 5 ms"),
        variant("original way, measured: python env.py (no MCP) → GET answers", s["baseline_total"],
                what=WHAT_COLD, role="baseline",
                notes=f"same image and options, --entrypoint runs the module with uvicorn; GET {BASELINE_ROUTE}"),
        reference("reference: original launcher (cited, not measured here)", ORIGINAL_LAUNCHER_MS, what=WHAT_COLD,
                  source="the architecture page (shared/docs/architecture.md), 'Performance targets': "
                         "the original launcher: ~2.8 s on this machine"),
        variant("  5 ms path: docker run → process started (engine)", s["direct_started"], what=WHAT_COLD,
                role="context", notes="State.StartedAt minus the time before containers.run"),
        variant("  5 ms path: process started → /_awm/health 200", s["direct_started_to_health"],
                what=WHAT_COLD, role="context", notes="interpreter, imports, module, MCP bridge, uvicorn"),
        variant("  5 ms path: health 200 → tools/list answered", s["direct_health_to_tools"], what=WHAT_COLD,
                role="context", notes="MCP client: initialize + notifications/initialized + tools/list"),
        variant("  same tools/list again on the warm server (new client)", s["direct_tools_warm_total"],
                what=WHAT_COLD, role="context", notes="the three rows below, together"),
        variant("    of which AsyncEnvClient() (builds an httpx client)", s["direct_tools_warm_client"],
                what=WHAT_COLD, role="context", notes="host side; httpx loads an SSL context even for http://"),
        variant("    of which mcp_session() open: second httpx client + initialize", s["direct_tools_warm_session"],
                what=WHAT_COLD, role="context"),
        variant("    of which tools/list round trip", s["direct_tools_warm_list"], what=WHAT_COLD, role="context"),
        variant("  baseline: process started → GET answered", s["baseline_started_to_answer"], what=WHAT_COLD,
                role="context"),
        variant("  DockerBackend.start alone, SEALED (→ health 200)", s["backend_sealed_health"], what=WHAT_COLD,
                role="context"),
        variant("  DockerBackend.start alone, PUBLISHED (→ health 200)", s["backend_published_health"],
                what=WHAT_COLD, role="context"),
        variant("  SEALED: docker run → process started (engine)", s["backend_sealed_started"], what=WHAT_COLD,
                role="context"),
        *([
            variant("  SEALED: process started → guard install begins (backend's poll)",
                    s["backend_sealed_started_to_seal"], what=WHAT_COLD, role="context"),
            variant("  SEALED: egress guard install (nsenter iptables-restore)", s["backend_sealed_seal"],
                    what=WHAT_COLD, role="context", notes="DockerBackend._seal, timed by wrapping it"),
            variant("  SEALED: guard in place → health 200 (go-ahead signal, imports, module, uvicorn)",
                    s["backend_sealed_seal_to_health"], what=WHAT_COLD, role="context",
                    notes="the server imports nothing heavy before the go-ahead signal"),
        ] if "backend_sealed_seal" in s else []),
        variant("  PUBLISHED: docker run → process started (engine)", s["backend_published_started"],
                what=WHAT_COLD, role="context"),
        variant("  PUBLISHED: process started → health 200", s["backend_published_started_to_health"],
                what=WHAT_COLD, role="context"),
    ]
    # In-container start-up steps, from the probe runs (cumulative marks, differenced here).
    if probes:
        cumulative = [k for k in probes[0]["marks"] if not k.startswith(("interpreter", "create_app"))]
        for name in probes[0]["marks"]:
            if name in cumulative:
                i = cumulative.index(name)
                values = [p["marks"][name] - (p["marks"][cumulative[i - 1]] if i else 0.0) for p in probes]
            else:
                values = [p["marks"][name] for p in probes]
            variants.append(variant(f"  in image: {name}", values, what=WHAT_COLD, role="context"))
    variants += [
        variant("idle awm server: VmRSS of PID 1", s["mem_awm_vmrss"], what=WHAT_MEM, unit="MiB",
                target=MEMORY_TARGET, notes="after start + tools/list and 0.5 s idle; includes shared file pages"),
        variant("idle awm server: cgroup usage − cache", s["mem_awm_cgroup"], what=WHAT_MEM, unit="MiB",
                target=MEMORY_TARGET, notes="docker stats memory_stats.usage minus stats.cache (cgroup v1)"),
        variant("idle awm server: RssAnon of PID 1", s["mem_awm_rss_anon"], what=WHAT_MEM, unit="MiB",
                role="context", notes="anonymous memory only (heap), no shared library pages"),
        variant("idle baseline (env.py, no MCP): VmRSS of PID 1", s["mem_baseline_vmrss"], what=WHAT_MEM,
                unit="MiB", role="baseline"),
        variant("idle baseline (env.py, no MCP): cgroup usage − cache", s["mem_baseline_cgroup"],
                what=WHAT_MEM, unit="MiB", role="baseline"),
    ]
    parameters = {
        "scenario": SCENARIO,
        "image": image,
        "tools": len(bundle.tools),
        "counts": counts,
        "interleaving": "one start of each variant per round, order rotated each round",
        "memory_from": "the SEALED starts (product default) and the baseline starts",
        "container_options_direct_and_baseline": {k: v for k, v in hardened_run_options(runs.backend, NAME).items()
                                                  if k not in ("detach", "labels")},
        "poll_interval_ms": POLL_S * 1000,
        "baseline": {
            "entrypoint": BASELINE_ENTRYPOINT, "environment": BASELINE_ENV, "ready": f"GET {BASELINE_ROUTE} == 200",
        },
        "memory": {"idle_before_s": IDLE_BEFORE_MEMORY_S, "unit": "MiB (2^20 bytes)"},
        "mcp_client": "awm.runtime.client.AsyncEnvClient.list_tools (mcp 1.26 streamable HTTP client)",
    }
    document = results_document(NAME, quick=args.quick, machine=machine, parameters=parameters,
                                variants=variants, started=started,
                                probes=probes)
    path = write_results(args.out, document)
    print_table(variants)
    print(f"\nwritten to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
