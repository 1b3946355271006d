"""Print the results in bench/results/*.json as one Markdown table (for the README).

    .venv/bin/python bench/report.py [--all] [--dir bench/results]

Columns: what, variant, n, p50 ms, p95/p99 ms, target, met?. By default the rows that carry a
target, their baselines and cited references are shown; --all adds the breakdown rows ("where
the time goes"). Values in other units than ms (memory, MiB) carry their unit. Below the table:
when and where each file was measured, and whether it was a --quick smoke run.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

RESULTS_DIR = Path(__file__).resolve().parent / "results"
ORDER = ["reset", "cold_start", "tool_call", "scale", "pool"]  # as the architecture page lists the targets


def fmt(value: float | None, unit: str) -> str:
    if value is None:
        return "—"
    text = f"{value:,.0f}" if value >= 100 else f"{value:.1f}" if value >= 10 else f"{value:.2f}"
    return text if unit == "ms" else f"{text} {unit}"


def cell(text: str) -> str:
    return text.replace("|", "\\|")


def load(directory: Path) -> list[dict[str, Any]]:
    docs = []
    for path in sorted(directory.glob("*.json")):
        try:
            doc = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            print(f"skipping {path}: {exc}", file=sys.stderr)
            continue
        if isinstance(doc, dict) and "variants" in doc:
            doc["_path"] = path
            docs.append(doc)
    rank = {name: i for i, name in enumerate(ORDER)}
    return sorted(docs, key=lambda d: (rank.get(d.get("benchmark", ""), len(ORDER)), d.get("benchmark", "")))


def rows(doc: dict[str, Any], show_all: bool) -> list[list[str]]:
    out = []
    previous_what = None
    for v in doc["variants"]:
        if v.get("role") == "context" and not show_all:
            continue
        unit = v.get("unit", "ms")
        measured = v.get("measured", True)
        what = v.get("what", doc["benchmark"])
        name = v["variant"].strip()
        if v.get("role") == "context":
            name = f"↳ {name}"
        elif v.get("role") == "baseline":
            name = f"baseline: {name}"
        if doc.get("quick"):
            name += " (quick run)"
        target = (v.get("target") or {}).get("text", "—")
        met = {True: "✅ yes", False: "❌ no", None: "—"}[v.get("target_met")]
        out.append([
            cell(what if what != previous_what else ""),
            cell(name),
            str(v["n"]) if measured else "cited",
            fmt(v.get("p50"), unit),
            f"{fmt(v.get('p95'), unit)} / {fmt(v.get('p99'), unit)}" if measured else "—",
            cell(target),
            met,
        ])
        previous_what = what
    return out


def main() -> int:
    parser = argparse.ArgumentParser(prog="bench/report.py", description=__doc__.splitlines()[0])
    parser.add_argument("--all", action="store_true", help="include the breakdown (context) rows")
    parser.add_argument("--dir", type=Path, default=RESULTS_DIR, help="where the JSON files are")
    args = parser.parse_args()
    docs = load(args.dir)
    if not docs:
        print(f"no results in {args.dir}; run e.g. `.venv/bin/python bench/reset.py` first", file=sys.stderr)
        return 1
    header = ["what", "variant", "n", "p50 ms", "p95/p99 ms", "target", "met?"]
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join(["---", "---", "--:", "--:", "--:", "---", "---"]) + "|")
    for doc in docs:
        for row in rows(doc, args.all):
            print("| " + " | ".join(row) + " |")
    print()
    for doc in docs:
        m = doc.get("machine", {})
        load_avg = m.get("loadavg_at_start")
        print(
            f"- `{doc['_path'].name}`: {doc['benchmark']}, {doc.get('date')}"
            f"{' (--quick smoke run)' if doc.get('quick') else ''}; {m.get('nproc')} CPUs, "
            f"{m.get('memory_gib', '?')} GiB, Docker {m.get('docker_server_version')}, "
            f"Python {m.get('python')}; load average at start {load_avg[0] if load_avg else '?'}"
        )
    print("\nTimings are reported, not asserted (shared, noisy machines); baselines are measured "
          "in the same run; 'cited' rows are not measured here.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
