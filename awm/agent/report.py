"""report.html of `awm eval`: one self-contained page (inline CSS and SVG, no external assets).

It shows the overall success rate, a table per scenario, and three plots: success rate per
scenario, the distribution of turns (model replies per episode), and the failure classes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from html import escape
from pathlib import Path
from typing import Any

from awm.core.files import atomic_write

__all__ = ["bar_chart", "render_report", "write_report"]

_CSS = """
body{font-family:system-ui,sans-serif;margin:2em auto;max-width:60em;color:#222}
h1{font-size:1.5em}h2{font-size:1.15em;margin-top:2em}
table{border-collapse:collapse;width:100%}td,th{padding:.3em .6em;border-bottom:1px solid #ddd;text-align:right}
td:first-child,th:first-child{text-align:left}.big{font-size:2.2em;font-weight:600}
svg text{font-size:12px;fill:#333}
"""


def bar_chart(bars: Sequence[tuple[str, float]], *, maximum: float | None = None, fmt: str = "{:.0%}",
              color: str = "#3b7dd8") -> str:
    """A horizontal bar chart as inline SVG: one labelled bar per (label, value)."""
    top = maximum if maximum is not None else max((v for _, v in bars), default=0.0) or 1.0
    label_w, bar_w, row_h = 260, 360, 24
    height = row_h * len(bars) + 10
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{label_w + bar_w + 70}" height="{height}" role="img">']
    for row, (label, value) in enumerate(bars):
        y = 5 + row * row_h
        width = 0 if top <= 0 else max(0.0, min(1.0, value / top)) * bar_w
        parts.append(f'<text x="{label_w - 6}" y="{y + 15}" text-anchor="end">{escape(label)}</text>')
        parts.append(f'<rect x="{label_w}" y="{y + 3}" width="{width:.1f}" height="{row_h - 8}" fill="{color}"/>')
        parts.append(f'<text x="{label_w + width + 5:.1f}" y="{y + 15}">{escape(fmt.format(value))}</text>')
    parts.append("</svg>")
    return "".join(parts)


def _turns(results: Sequence[Mapping[str, Any]]) -> list[tuple[str, float]]:
    counts: dict[int, int] = {}
    for line in results:
        counts[int(line.get("iterations", 0))] = counts.get(int(line.get("iterations", 0)), 0) + 1
    return [(f"{turns} turns", float(n)) for turns, n in sorted(counts.items())]


def render_report(results: Sequence[Mapping[str, Any]], summary: Mapping[str, Mapping[str, Any]], *,
                  title: str = "awm eval", facts: Mapping[str, Any] | None = None) -> str:
    """The page as a string."""
    overall = summary.get("all", {})
    scenarios = [(name, s) for name, s in summary.items() if name != "all"]
    rows = "".join(
        f"<tr><td>{escape(name)}</td><td>{s['episodes']}</td><td>{s['success']}</td>"
        f"<td>{s['success_rate']:.1%}</td><td>{s['mean_iterations']}</td><td>{s['tool_errors']}</td>"
        f"<td>{s['tokens']}</td></tr>"
        for name, s in [*scenarios, ("all", overall)] if s
    )
    failures = sorted((overall.get("failures") or {}).items(), key=lambda kv: -kv[1])
    fact_rows = "".join(f"<tr><td>{escape(str(k))}</td><td>{escape(str(v))}</td></tr>"
                        for k, v in (facts or {}).items())
    episodes = "".join(
        f"<tr><td>{escape(str(r['scenario']))}</td><td>{r['task_idx']}</td><td>{escape(str(r.get('result')))}</td>"
        f"<td>{r.get('reward', 0):g}</td><td>{r.get('iterations', 0)}</td><td>{r.get('tool_errors', 0)}</td>"
        f"<td>{escape(str(r.get('error_class') or ''))}</td></tr>"
        for r in sorted(results, key=lambda r: (str(r["scenario"]), int(r["task_idx"])))
    )
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{escape(title)}</title><style>{_CSS}</style></head>
<body>
<h1>{escape(title)}</h1>
<p><span class="big">{overall.get('success_rate', 0.0):.1%}</span> success over
{overall.get('episodes', 0)} episodes ({overall.get('success', 0)} complete)</p>
<table>{fact_rows}</table>
<h2>Per scenario</h2>
<table><tr><th>scenario</th><th>episodes</th><th>complete</th><th>success rate</th><th>mean turns</th>
<th>tool errors</th><th>tokens</th></tr>{rows}</table>
<h2>Success rate per scenario</h2>
{bar_chart([(name, float(s['success_rate'])) for name, s in scenarios], maximum=1.0)}
<h2>Turns per episode</h2>
{bar_chart(_turns(results), fmt="{:.0f}", color="#6a9f4b")}
<h2>Failure classes</h2>
{bar_chart([(k, float(v)) for k, v in failures], fmt="{:.0f}", color="#c9503c") if failures else "<p>none</p>"}
<h2>Episodes</h2>
<table><tr><th>scenario</th><th>task</th><th>result</th><th>reward</th><th>turns</th><th>tool errors</th>
<th>error class</th></tr>{episodes}</table>
</body></html>
"""


def write_report(path: Path, results: Sequence[Mapping[str, Any]], summary: Mapping[str, Mapping[str, Any]],
                 **kwargs: Any) -> Path:
    atomic_write(path, render_report(results, summary, **kwargs))
    return path
