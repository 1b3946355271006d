"""Assemble the example scenarios' sources (examples/src/<id>/) into AWM dataset files.

    python examples/assemble.py          # write examples/gen_*.jsonl and solutions.json
    python examples/assemble.py --check  # exit 1 when they are out of date with src/

The sources are plain files that are pleasant to edit (schema.sql, data.sql, app.py, one
verifier per task); the JSONL files are what the tool reads, exactly like a downloaded AWM
release. Some files name a scenario by its display name and others by its id, as real data
does, so the bundled dataset exercises the name join too.

`gen_spec.jsonl` (the API spec an AWM module is written from) is derived from each app's own
OpenAPI document, so it cannot drift from the code: one endpoint per route with its
`request_params`. Their `example` values are the arguments the reference solutions pass (the
first use of each tool), else 1 for an id in the path, else a value of the parameter's type
for a required one; optional parameters nobody passes get none. `awm build --smoke` calls the
read-only tools with these examples. Importing the apps needs fastapi (the test extra).
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import sqlite3
import sys
import tempfile
from pathlib import Path
from typing import Any

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


def _schema(src: Path) -> list[dict[str, Any]]:
    tables: list[dict[str, Any]] = []
    for stmt in _statements((src / "schema.sql").read_text()):
        if re.match(r"\s*CREATE\s+TABLE", stmt, re.I):
            name = _table_of(stmt, r"CREATE\s+TABLE\s+(?:IF\s+NOT\s+EXISTS\s+)?([\w\"`\[\]]+)")
            tables.append({"name": name, "ddl": stmt, "indexes": []})
        else:
            name = _table_of(stmt, r"\bON\s+([\w\"`\[\]]+)")
            next(t for t in tables if t["name"] == name)["indexes"].append(stmt)
    return tables


def _samples(src: Path) -> list[dict[str, Any]]:
    # Consecutive inserts into one table form one group: the order of data.sql is kept, so
    # foreign keys resolve exactly as they did when it was written.
    groups: list[dict[str, Any]] = []
    for stmt in _statements((src / "data.sql").read_text()):
        name = _table_of(stmt, r"INSERT\s+INTO\s+([\w\"`\[\]]+)")
        if not groups or groups[-1]["table_name"] != name:
            groups.append({"table_name": name, "reasoning": "", "insert_statements": []})
        groups[-1]["insert_statements"].append(stmt)
    return groups


def _openapi(src: Path) -> dict[str, Any]:
    """The OpenAPI document of an example app (imported with a throwaway database URL)."""
    name = f"_awm_example_{src.name}"
    with tempfile.TemporaryDirectory() as tmp:
        saved = os.environ.get("DATABASE_PATH")
        os.environ["DATABASE_PATH"] = f"sqlite:///{tmp}/spec.db"
        try:
            spec = importlib.util.spec_from_file_location(name, src / "app.py")
            assert spec is not None
            assert spec.loader is not None
            module = importlib.util.module_from_spec(spec)
            sys.modules[name] = module  # pydantic resolves annotations through it
            spec.loader.exec_module(module)
            return module.app.openapi()  # type: ignore[no-any-return]
        finally:
            sys.modules.pop(name, None)
            if saved is None:
                os.environ.pop("DATABASE_PATH", None)
            else:
                os.environ["DATABASE_PATH"] = saved


def _resolve(doc: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        schema = doc["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
    if "anyOf" in schema:  # Optional[X] -> X
        schema = next((s for s in schema["anyOf"] if s.get("type") != "null"), schema["anyOf"][0])
        return _resolve(doc, schema)
    return schema


def _placeholder(schema: dict[str, Any]) -> Any:
    if schema.get("enum"):
        return schema["enum"][0]
    return {"integer": 1, "number": 1.0, "boolean": False, "array": []}.get(schema.get("type", ""), "example")


def _spec(src: Path, solutions: dict[str, Any]) -> dict[str, Any]:
    """The api_spec of an example, from its app's OpenAPI document (see the module docstring)."""
    used: dict[str, dict[str, Any]] = {}
    for idx in sorted(solutions, key=int):
        for call in solutions[idx]["calls"]:
            used.setdefault(call["tool"], call["arguments"])
    doc = _openapi(src)
    groups: dict[str, list[dict[str, Any]]] = {}
    for path, methods in doc["paths"].items():
        for method, op in methods.items():
            params: dict[str, dict[str, Any]] = {}
            raw = [(p["name"], p["in"], bool(p.get("required")), _resolve(doc, p.get("schema", {})),
                    p.get("description", "")) for p in op.get("parameters", [])]
            body = op.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema")
            if body:
                body = _resolve(doc, body)
                body_required = set(body.get("required", []))
                raw += [(n, "body", n in body_required, _resolve(doc, s), s.get("description", ""))
                        for n, s in body.get("properties", {}).items()]
            for name, where, required, schema, description in raw:
                param: dict[str, Any] = {"type": schema.get("type", "string"), "param_type": where,
                                         "required": required, "description": description}
                if name in used.get(op["operationId"], {}):
                    param["example"] = used[op["operationId"]][name]
                elif where == "path" and name.endswith("id"):
                    param["example"] = 1
                elif required:
                    param["example"] = _placeholder(schema)
                params[name] = param
            groups.setdefault((op.get("tags") or ["default"])[0], []).append({
                "path": path, "method": method.upper(), "summary": op.get("summary", ""),
                "description": op.get("description", ""), "operation_id": op["operationId"],
                "tags": op.get("tags", []), "request_params": params,
            })
    return {"api_groups": [{"group_name": g, "endpoints": eps} for g, eps in groups.items()]}


def render() -> dict[str, str]:
    """File name -> content of every assembled file."""
    files: dict[str, list[str]] = {
        name: []
        for name in (
            "gen_scenario.jsonl",
            "gen_tasks.jsonl",
            "gen_db.jsonl",
            "gen_sample.jsonl",
            "gen_spec.jsonl",
            "gen_envs.jsonl",
            "gen_verifier.pure_code.jsonl",
        )
    }
    solutions: dict[str, dict[str, Any]] = {}

    def add(file: str, record: dict[str, Any]) -> None:
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
        scenario_solutions = json.loads((src / "solutions.json").read_text())
        add("gen_spec.jsonl", {"scenario": sid, "api_spec": _spec(src, scenario_solutions)})
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
