"""Assemble the example scenarios' sources (examples/src/<id>/) into AWM dataset files.

    python examples/assemble.py          # write examples/gen_*.jsonl and solutions.json
    python examples/assemble.py --check  # exit 1 when they are out of date with src/

The sources are plain files that are pleasant to edit (schema.sql, data.sql, app.py, one
verifier per task); the JSONL files are what the tool reads, exactly like a downloaded AWM
release. Some files name a scenario by its display name and others by its id, as real data
does, so the bundled dataset exercises the name join too.
"""

from __future__ import annotations

import json
import re
import sqlite3
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
SRC = HERE / "src"


def _statements(sql: str) -> list[str]:
    out, buf = [], ""
    for line in sql.splitlines(keepends=True):
        if not buf and line.strip().startswith("--"):
            continue
        buf += line
        if sqlite3.complete_statement(buf):
            out.append(buf.strip())
            buf = ""
    if buf.strip():
        out.append(buf.strip())
    return out


def _table_of(stmt: str, pattern: str) -> str:
    match = re.search(pattern, stmt, re.I | re.S)
    if not match:
        raise SystemExit(f"cannot find the table of: {stmt[:80]}")
    return match.group(1).strip('"`[]')


def _schema(src: Path) -> list[dict]:
    tables: list[dict] = []
    for stmt in _statements((src / "schema.sql").read_text()):
        if re.match(r"\s*CREATE\s+TABLE", stmt, re.I):
            name = _table_of(stmt, r"CREATE\s+TABLE\s+(?:IF\s+NOT\s+EXISTS\s+)?([\w\"`\[\]]+)")
            tables.append({"name": name, "ddl": stmt, "indexes": []})
        else:
            name = _table_of(stmt, r"\bON\s+([\w\"`\[\]]+)")
            next(t for t in tables if t["name"] == name)["indexes"].append(stmt)
    return tables


def _samples(src: Path) -> list[dict]:
    # Consecutive inserts into one table form one group: the order of data.sql is kept, so
    # foreign keys resolve exactly as they did when it was written.
    groups: list[dict] = []
    for stmt in _statements((src / "data.sql").read_text()):
        name = _table_of(stmt, r"INSERT\s+INTO\s+([\w\"`\[\]]+)")
        if not groups or groups[-1]["table_name"] != name:
            groups.append({"table_name": name, "reasoning": "", "insert_statements": []})
        groups[-1]["insert_statements"].append(stmt)
    return groups


def render() -> dict[str, str]:
    """File name -> content of every assembled file."""
    files: dict[str, list[str]] = {
        name: []
        for name in (
            "gen_scenario.jsonl",
            "gen_tasks.jsonl",
            "gen_db.jsonl",
            "gen_sample.jsonl",
            "gen_envs.jsonl",
            "gen_verifier.pure_code.jsonl",
        )
    }
    solutions: dict[str, dict] = {}

    def add(file: str, record: dict) -> None:
        files[file].append(json.dumps(record, ensure_ascii=False))

    for src in sorted(p for p in SRC.iterdir() if p.is_dir()):
        sid = src.name
        meta = json.loads((src / "scenario.json").read_text())
        display = meta["name"]
        add("gen_scenario.jsonl", {"name": display, "description": meta["description"]})
        add("gen_tasks.jsonl", {"scenario": display, "tasks": meta["tasks"]})
        add(
            "gen_db.jsonl",
            {"scenario": sid, "db_path": f"outputs/databases/{sid}.db", "db_schema": {"tables": _schema(src)}},
        )
        samples = _samples(src)
        add(
            "gen_sample.jsonl",
            {
                "scenario": sid,
                "tables_count": len({g["table_name"] for g in samples}),
                "inserts_count": sum(len(g["insert_statements"]) for g in samples),
                "sample_data": {"tables": samples},
            },
        )
        add(
            "gen_envs.jsonl",
            {"scenario": sid, "db_path": f"outputs/databases/{sid}.db", "full_code": (src / "app.py").read_text()},
        )
        for idx, task in enumerate(meta["tasks"]):
            code = (src / "verifiers" / f"task_{idx}.py").read_text()
            add(
                "gen_verifier.pure_code.jsonl",
                {"scenario": display, "task_idx": idx, "task": task, "verification": {"code": code}},
            )
        solutions[sid] = json.loads((src / "solutions.json").read_text())

    out = {name: "\n".join(lines) + "\n" for name, lines in files.items()}
    out["solutions.json"] = json.dumps(solutions, indent=2, ensure_ascii=False) + "\n"
    return out


def main(argv: list[str]) -> int:
    rendered = render()
    if "--check" in argv:
        stale = [n for n, text in rendered.items() if not (HERE / n).is_file() or (HERE / n).read_text() != text]
        if stale:
            print(f"out of date with examples/src: {', '.join(stale)}; run python examples/assemble.py")
            return 1
        return 0
    for name, text in rendered.items():
        (HERE / name).write_text(text)
    print(f"wrote {', '.join(rendered)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
