"""Derive many distinct scenarios from a small dataset, for scale benchmarks and tests.

Each variant is a copy of one source scenario with a new name (so a new id and image), one seed
row changed (the first text value of the first insert gets the variant's tag) and tasks that
carry the tag too. Every input of the image differs, so nothing is served from any cache: not
the digest cache of `awm build`, nor Docker's layer cache. Tools, verifiers and the rest of the
seed are the source's, so a variant builds and behaves like its source.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from awm.builder.catalog.loader import DATASET_FILES
from awm.core.naming import normalise

__all__ = ["derive_variants"]

_STRING_LITERAL = re.compile(r"'((?:[^']|'')*)'")


def _scenario_key(record: dict[str, Any]) -> str:
    """The field naming the scenario: `name` in gen_scenario.jsonl, `scenario` elsewhere."""
    return "name" if "name" in record and "scenario" not in record else "scenario"


def _tag_first_literal(statement: str, tag: str) -> str:
    """Append ` <tag>` inside the first SQL string literal of a statement (unchanged if none)."""
    return _STRING_LITERAL.sub(lambda m: f"'{m.group(1)} {tag}'", statement, count=1)


def _vary(record: dict[str, Any], key: str, new_name: str, new_id: str, tag: str) -> dict[str, Any]:
    out: dict[str, Any] = json.loads(json.dumps(record))  # a deep copy that keeps unknown fields
    # Keep the form of the reference: display name where the source had one, else the id.
    out[key] = new_name if normalise(record[key]) != record[key] else new_id
    if isinstance(out.get("tasks"), list):
        out["tasks"] = [f"[{tag}] {task}" for task in out["tasks"]]
    if "task" in out and isinstance(out["task"], str):
        out["task"] = f"[{tag}] {out['task']}"
    tables = (out.get("sample_data") or {}).get("tables") or []
    for table in tables:
        statements = table.get("insert_statements") or []
        if statements:
            statements[0] = _tag_first_literal(statements[0], tag)
            break
    return out


def derive_variants(source: Path, dest: Path, count: int, *, prefix: str = "Variant") -> list[str]:
    """Write a dataset of `count` distinct scenarios derived round-robin from `source`'s.

    Variant `i` of source scenario "Foo Bar" is named "<prefix> <i:04d> Foo Bar" (id
    `<prefix>_<i:04d>_foo_bar`); its first seed text value and its tasks carry the tag `v<i:04d>`.

    Args:
        source: an AWM dataset folder (e.g. `examples/`).
        dest: the folder to write the derived dataset into (created; files are overwritten).
        count: how many scenarios to write.
        prefix: the start of every variant's display name; keep it unique per use, so that the
            image names `awm/<prefix>_...` are too.

    Returns:
        The ids of the written scenarios, in order.

    Raises:
        ValueError: `source` has no scenario in gen_scenario.jsonl or gen_tasks.jsonl.
    """
    records: dict[str, list[dict[str, Any]]] = {}
    for file in DATASET_FILES:
        path = source / file
        if path.is_file():
            records[file] = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    names: dict[str, str] = {}
    for file in ("gen_scenario.jsonl", "gen_tasks.jsonl"):
        for rec in records.get(file, []):
            raw = rec[_scenario_key(rec)]
            if normalise(raw) not in names or names[normalise(raw)] == normalise(raw):
                names[normalise(raw)] = raw
    sources = sorted(names)
    if not sources:
        raise ValueError(f"{source} has no scenario to derive variants from")

    by_file: dict[str, list[str]] = {file: [] for file in records}
    ids = []
    for i in range(count):
        sid = sources[i % len(sources)]
        tag = f"v{i:04d}"
        new_name = f"{prefix} {i:04d} {names[sid]}"
        new_id = normalise(new_name)
        ids.append(new_id)
        for file, rows in records.items():
            for rec in rows:
                key = _scenario_key(rec)
                if normalise(rec[key]) == sid:
                    by_file[file].append(json.dumps(_vary(rec, key, new_name, new_id, tag), ensure_ascii=False))
    dest.mkdir(parents=True, exist_ok=True)
    for file, lines in by_file.items():
        (dest / file).write_text("\n".join(lines) + "\n" if lines else "")
    return ids
