"""Reset: in place (POST /_awm/reset) vs restarting the container vs rebuilding the DB from SQL.

    .venv/bin/python bench/reset.py [--quick] [--no-synthetic] [--keep-images]

Variants, all in the same run:
  * in place: `POST /_awm/reset` on a running environment, timed on the client (round trip
    through docker-proxy, uvicorn, the reset gate and SQLite's backup API) and as the server
    reports it (`duration_ms`). Before every reset one write tool call dirties the database
    (task 0's `add_meal_plan_entry` of pantrypal, sent as plain HTTP to its route); it must
    answer 201 every time, which proves that the previous reset really restored the seed.
  * container restart: `container.restart()`, then poll `/_awm/health` every 5 ms until it
    answers 200 (the working copy lives on a tmpfs, so a restart is a reset too).
  * rebuild from SQL: `awm.builder.catalog.seed.build_seed` into a fresh SQLite file on the host, every
    statement of the scenario's schema and sample data, as the original pipeline did per episode.
In-place resets and SQL rebuilds alternate one by one, so that noise hits both alike.

The target (p50 <= 5 ms, p99 <= 20 ms) was stated for a ~300 KB database; the bundled examples
are ~70-95 KB. So the in-place and SQL variants run twice: on the pantrypal example as it is, and
on a synthetic ~300 KB copy of it (pantrypal plus filler meal-plan rows of other users, built as
its own image `awm/bench_pantrypal_300k`, removed afterwards unless --keep-images).
"""

from __future__ import annotations

import math
import sqlite3
import sys
import tempfile
from pathlib import Path
from typing import Any

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
    log,
    print_table,
    results_document,
    sigterm_as_interrupt,
    variant,
    wait_http,
    write_results,
)

from awm.builder.catalog.loader import load_catalog
from awm.builder.catalog.models import SampleData, SampleTable, ScenarioBundle
from awm.builder.catalog.seed import build_seed
from awm.builder.catalog.solutions import load_solutions, request_for
from awm.core.naming import image_ref
from awm.runtime.base import Isolation

NAME = "reset"
SCENARIO = "pantrypal_recipe_planner"
SYNTHETIC_ID = "bench_pantrypal_300k"
SYNTHETIC_BYTES = 300 * 1024
DIRTY_TASK = 0  # its solution's first write call dirties the database
TARGET = Target("p50 ≤ 5 ms, p99 ≤ 20 ms", {"p50": 5.0, "p99": 20.0})
WHAT = "reset (in place, 300 KB DB)"

COUNTS = {  # default, quick
    "in_place": (200, 10),
    "sql_rebuild": (200, 10),
    "restart": (20, 3),
    "warmup": (10, 2),
}


def kb(n: int) -> str:
    return f"{n / 1024:.0f} KB"


# ---- the synthetic ~300 KB scenario -----------------------------------------------------------


def _filler(count: int) -> list[str]:
    """Meal-plan rows of users 2-4 (the app's current user is 1): valid, unique, deterministic."""
    slots = ["breakfast", "lunch", "dinner", "snack"]
    rows = []
    for k in range(count):
        user = 2 + k % 3
        slot = slots[(k // 3) % 4]
        day = k // 12
        date = f"{2022 + day // 336:04d}-{1 + (day // 28) % 12:02d}-{1 + day % 28:02d}"
        notes = (f"bench filler {k}: batch-cook on Sunday, double the garlic, freeze half in "
                 f"portions for weeknights; swap the herbs for whatever is in season and left "
                 f"in the fridge; serve with a green salad and crusty bread (row {k:05d})")
        rows.append(
            "INSERT INTO meal_plan_entries (id, user_id, recipe_id, plan_date, meal_slot, servings, "
            f"notes, created_at) VALUES ({10000 + k}, {user}, {1 + k % 15}, '{date}', '{slot}', "
            f"{1 + k % 6}, '{notes}', '2024-12-01T08:00:00');"
        )
    return rows


def synthetic_bundle(base: ScenarioBundle, target_bytes: int, workdir: Path) -> tuple[ScenarioBundle, int]:
    """`base` plus filler rows, sized so its seed is about `target_bytes`; (bundle, filler rows)."""
    assert base.sample is not None
    base_tables = base.sample.tables

    def with_rows(count: int) -> ScenarioBundle:
        sample = SampleData(tables=[*base_tables,
                                    SampleTable(table_name="meal_plan_entries", insert_statements=_filler(count))])
        return base.model_copy(update={"id": SYNTHETIC_ID, "name": "Bench PantryPal 300 KB", "sample": sample})

    def size(count: int) -> int:
        path = workdir / f"probe-{count}.db"
        stats = build_seed(with_rows(count), path, strict=True)
        path.unlink()
        return stats.bytes

    base_size, probe = size(0), 500
    per_row = (size(probe) - base_size) / probe
    count = max(0, math.ceil((target_bytes - base_size) / per_row))
    return with_rows(count), count


# ---- the variants ----------------------------------------------------------------------------


class InPlace:
    """A running environment: dirty it with one write call, then time POST /_awm/reset."""

    def __init__(self, base_url: str, dirty: tuple[str, dict[str, Any]]) -> None:
        self.http = httpx.Client(base_url=base_url, timeout=30.0)
        openapi = self.http.get("/openapi.json").raise_for_status().json()
        self.request = request_for(openapi, *dirty)
        self.resets_seen = 0

    def dirty(self) -> None:
        r = self.request
        response = self.http.request(r.method, r.path, params=r.query, json=r.body)
        if response.status_code != 201:
            raise RuntimeError(
                f"dirtying write {r.method} {r.path} answered {response.status_code} "
                f"({response.text[:200]}): the previous reset did not restore the seed"
            )

    def step(self) -> tuple[float, float]:
        """One dirty write (untimed) and one timed reset; (client ms, server-side ms)."""
        self.dirty()
        timer = Timer()
        response = self.http.post("/_awm/reset")
        client_ms = timer.ms()
        body = response.raise_for_status().json()
        if not body.get("ok") or body["resets"] <= self.resets_seen:
            raise RuntimeError(f"reset did not report success: {body}")
        self.resets_seen = body["resets"]
        return client_ms, float(body["duration_ms"])

    def close(self) -> None:
        self.http.close()


def sql_rebuild_step(bundle: ScenarioBundle, path: Path) -> float:
    """Build the seed from SQL into a fresh file; ms."""
    path.unlink(missing_ok=True)
    timer = Timer()
    build_seed(bundle, path)
    return timer.ms()


def run_in_place_and_sql(backend: Any, image: str, bundle: ScenarioBundle,
                         dirty: tuple[str, dict[str, Any]], n_in_place: int, n_sql: int, warmup: int,
                         workdir: Path) -> dict[str, list[float]]:
    """In-place resets and SQL rebuilds, alternating one by one."""
    out: dict[str, list[float]] = {"client": [], "server": [], "sql": []}
    env = backend.start(image, labels=bench_labels(NAME))  # default isolation (SEALED)
    try:
        bench = InPlace(env.base_url, dirty)
        try:
            seed_path = workdir / f"{bundle.id}.db"
            for _ in range(warmup):
                bench.step()
                sql_rebuild_step(bundle, seed_path)
            for i in range(max(n_in_place, n_sql)):
                if i < n_in_place:
                    client_ms, server_ms = bench.step()
                    out["client"].append(client_ms)
                    out["server"].append(server_ms)
                if i < n_sql:
                    out["sql"].append(sql_rebuild_step(bundle, seed_path))
            bench.dirty()  # the last reset restored the seed too
        finally:
            bench.close()
    finally:
        env.stop()
    return out


def run_restarts(backend: Any, client: Any, image: str, dirty: tuple[str, dict[str, Any]],
                 count: int, warmup: int) -> dict[str, list[float]]:
    """container.restart() then poll /_awm/health until 200; total, restart() call, ready wait.

    Isolation.INTERNAL (the default's network without its egress guard): a SEALED container
    cannot simply be restarted, since its guard lives in the network namespace that a restart
    replaces and its server waits for the runtime's signal that a new guard is in place.
    """
    out: dict[str, list[float]] = {"total": [], "restart_call": [], "ready_wait": []}
    env = backend.start(image, labels=bench_labels(NAME), isolation=Isolation.INTERNAL)
    container = container_of(client, env)
    try:
        for i in range(warmup + count):
            writer = InPlace(container_url(container), dirty)
            try:
                writer.dirty()  # fails unless the restart before it restored the seed
            finally:
                writer.close()
            with httpx.Client(timeout=2.0) as http:
                timer = Timer()
                container.restart(timeout=10)
                restart_ms = timer.ms()
                url = container_url(container)  # address and port may change on every start
                wait_http(http, f"{url}/_awm/health", interval_s=0.005, container=container)
                total_ms = timer.ms()
            if i >= warmup:
                out["total"].append(total_ms)
                out["restart_call"].append(restart_ms)
                out["ready_wait"].append(total_ms - restart_ms)
            log(f"restart {i + 1 - warmup}/{count}: {total_ms:.0f} ms" if i >= warmup else "restart warm-up")
    finally:
        env.stop()
    return out


def main() -> int:
    parser = bench_arguments(NAME, __doc__.splitlines()[0])
    parser.add_argument("--no-synthetic", action="store_true", help="skip the synthetic ~300 KB seed")
    parser.add_argument("--keep-images", action="store_true",
                        help="keep the synthetic scenario's image (awm/bench_pantrypal_300k)")
    args = parser.parse_args()
    run = begin_run(args, COUNTS)
    counts, started, client, machine = run.counts, run.started, run.client, run.machine
    catalog = load_catalog(EXAMPLES)
    bundle = catalog.bundles[SCENARIO]
    solution = load_solutions(EXAMPLES)[SCENARIO][DIRTY_TASK]
    write = next(c for c in solution.calls if c.tool.startswith(("add_", "update_", "create_", "set_")))
    dirty = (write.tool, write.arguments)
    backend = bench_backend(client, NAME)

    variants: list[dict[str, Any]] = []
    parameters: dict[str, Any] = {
        "scenario": SCENARIO,
        "counts": counts,
        "dirty_call": {"tool": write.tool, "arguments": write.arguments, "sent_as": "plain HTTP to the route"},
        "isolation": {
            "in_place": "default (SEALED)", "restart": "INTERNAL (a SEALED container cannot be restarted as is)",
        },
        "restart": {"timeout_s": 10, "ready": "GET /_awm/health == 200, polled every 5 ms"},
        "sql_rebuild": (
            "awm.builder.catalog.seed.build_seed into a fresh file on the host (foreign_keys=ON, VACUUM, rename)"
        ),
        "interleaving": "in-place resets and SQL rebuilds alternate one by one",
    }
    built_here: list[str] = []
    with sigterm_as_interrupt(), tempfile.TemporaryDirectory(prefix="awm-bench-reset-") as tmp:
        workdir = Path(tmp)
        sizes = {}
        for sid, b in sorted(catalog.bundles.items()):
            sizes[sid] = build_seed(b, workdir / f"size-{sid}.db").bytes
        parameters["example_seed_bytes"] = sizes

        scenarios: list[tuple[ScenarioBundle, str]] = []
        bundles = [bundle]
        if not args.no_synthetic:
            log("deriving the synthetic ~300 KB scenario")
            synthetic, filler = synthetic_bundle(bundle, SYNTHETIC_BYTES, workdir)
            bundles.append(synthetic)
            parameters["synthetic"] = {
                "scenario": SYNTHETIC_ID, "derived_from": SCENARIO, "filler_rows": filler,
                "filler_table": "meal_plan_entries (users 2-4; the app's current user is 1)",
                "target_bytes": SYNTHETIC_BYTES,
            }
        log("building (or finding cached) images")
        results = ensure_images(client, bundles)
        built_here = [r.tag for sid, r in results.items() if sid == SYNTHETIC_ID and r.status == "built" and r.tag]
        for b in bundles:
            scenarios.append((b, str(results[b.id].tag)))

        try:
            for b, image in scenarios:
                seed_bytes = build_seed(b, workdir / f"size-{b.id}.db").bytes
                label = f"{kb(seed_bytes)} seed" + (" (synthetic)" if b.id == SYNTHETIC_ID else "")
                parameters.setdefault("images", {})[b.id] = {"image": image, "seed_bytes": seed_bytes,
                                                             "seed_rows": results[b.id].seed_rows}
                log(f"in place + SQL rebuild on {b.id} ({label}): {counts['in_place']} + {counts['sql_rebuild']}")
                m = run_in_place_and_sql(backend, image, b, dirty, counts["in_place"], counts["sql_rebuild"],
                                         counts["warmup"], workdir)
                variants += [
                    variant(f"in place, client round trip, {label}", m["client"], what=WHAT, target=TARGET,
                            notes="POST /_awm/reset timed on the host, after one write call"),
                    variant(f"in place, server-side duration_ms, {label}", m["server"], what=WHAT, target=TARGET,
                            role="context", notes="duration_ms reported by the server (gate + SQLite backup)"),
                    variant(f"rebuild DB from SQL (build_seed), {label}", m["sql"], what=WHAT, role="baseline"),
                ]
            log(f"container restarts on {SCENARIO}: {counts['restart']}")
            image = scenarios[0][1]
            r = run_restarts(backend, client, image, dirty, counts["restart"], 1 if counts["warmup"] else 0)
            label = f"{kb(sizes[SCENARIO])} seed"
            variants += [
                variant(f"container restart → health 200, {label}", r["total"], what=WHAT, role="baseline",
                        notes=f"{counts['restart']} restarts (slow); container.restart(timeout=10) + 5 ms health poll; "
                              "isolation INTERNAL"),
                variant("  of which container.restart() call", r["restart_call"], what=WHAT, role="context"),
                variant("  of which waiting for health 200", r["ready_wait"], what=WHAT, role="context"),
            ]
        finally:
            if built_here and not args.keep_images:
                for tag in (*built_here, image_ref(SYNTHETIC_ID)):
                    try:
                        client.images.remove(tag)
                    except Exception as exc:  # cleanup is best effort, and said
                        log(f"could not remove {tag}: {exc}")

    parameters["sqlite_host"] = sqlite3.sqlite_version
    document = results_document(NAME, quick=args.quick, machine=machine, parameters=parameters,
                                variants=variants, started=started)
    path = write_results(args.out, document)
    print_table(variants)
    print(f"\nwritten to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
