"""Read an environment module's routes from its source with `ast`, without importing it.

Environment modules are untrusted generated code: the catalog must list their tools before any
image exists, so it never executes them. This covers the shapes real modules use: decorators
on the app (`@app.get(...)`) and on `APIRouter`s included into it, with their prefixes.
"""

from __future__ import annotations

import ast
import re
import threading
from dataclasses import dataclass, field

from awm.builder.catalog.models import Route

__all__ = ["ModuleFacts", "parse", "read_routes"]

# CPython 3.11 can fail ("AST constructor recursion depth mismatch") when threads parse at
# once (python/cpython#106905); the synthesis pipeline parses from a thread pool.
_PARSE_LOCK = threading.Lock()


def parse(source: str) -> ast.Module:
    """`ast.parse`, safe to call from several threads."""
    with _PARSE_LOCK:
        return ast.parse(source)

HTTP_METHODS = ("get", "post", "put", "patch", "delete", "head", "options", "trace")


@dataclass
class ModuleFacts:
    routes: list[Route] = field(default_factory=list)
    syntax_error: str | None = None
    syntax_error_line: int | None = None
    has_app: bool = False
    has_main_guard: bool = False


def _const_str(node: ast.AST | None) -> str | None:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    return None


def _kwarg(call: ast.Call, name: str) -> ast.AST | None:
    return next((k.value for k in call.keywords if k.arg == name), None)


def generated_operation_id(function: str, path: str, method: str) -> str:
    """FastAPI's `generate_unique_id`: the name a route without `operation_id` gets."""
    return re.sub(r"\W", "_", f"{function}{path}") + f"_{method.lower()}"


def read_routes(source: str) -> ModuleFacts:
    """Return the module's routes in registration order, with the facts the catalog checks."""
    facts = ModuleFacts()
    try:
        tree = parse(source)
    except SyntaxError as exc:
        facts.syntax_error = f"{exc.msg} (line {exc.lineno})"
        facts.syntax_error_line = exc.lineno
        return facts

    # Router variables and their own prefixes, then the prefixes they are included with.
    router_prefix: dict[str, str] = {}
    include_prefix: dict[str, str] = {}
    app_names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Call):
            callee = node.value.func
            callee_name = callee.id if isinstance(callee, ast.Name) else getattr(callee, "attr", "")
            for target in node.targets:
                if not isinstance(target, ast.Name):
                    continue
                if callee_name == "FastAPI":
                    app_names.add(target.id)
                elif callee_name == "APIRouter":
                    router_prefix[target.id] = _const_str(_kwarg(node.value, "prefix")) or ""
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "include_router"
            and node.args
            and isinstance(node.args[0], ast.Name)
        ):
            include_prefix[node.args[0].id] = _const_str(_kwarg(node, "prefix")) or ""
        elif isinstance(node, ast.If) and _is_main_guard(node.test):
            facts.has_main_guard = True
    facts.has_app = "app" in app_names

    for node in ast.walk(tree):
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        for deco in node.decorator_list:
            route = _route_from_decorator(deco, node, app_names, router_prefix, include_prefix)
            facts.routes.extend(route)
    # ast.walk is breadth-first; registration order is source order.
    facts.routes.sort(key=lambda r: r.line)
    return facts


def _is_main_guard(test: ast.AST) -> bool:
    return (
        isinstance(test, ast.Compare)
        and isinstance(test.left, ast.Name)
        and test.left.id == "__name__"
        and any(_const_str(c) == "__main__" for c in test.comparators)
    )


def _route_from_decorator(
    deco: ast.AST,
    func: ast.FunctionDef | ast.AsyncFunctionDef,
    app_names: set[str],
    router_prefix: dict[str, str],
    include_prefix: dict[str, str],
) -> list[Route]:
    if not (
        isinstance(deco, ast.Call)
        and isinstance(deco.func, ast.Attribute)
        and isinstance(deco.func.value, ast.Name)
    ):
        return []
    owner, verb = deco.func.value.id, deco.func.attr
    if owner in app_names:
        prefix = ""
    elif owner in router_prefix:
        prefix = include_prefix.get(owner, "") + router_prefix[owner]
    else:
        return []
    if verb in HTTP_METHODS:
        methods = [verb.upper()]
    elif verb == "api_route":
        listed = _kwarg(deco, "methods")
        elts = listed.elts if isinstance(listed, (ast.List, ast.Tuple)) else []
        methods = [m.upper() for m in (_const_str(e) for e in elts) if m] or ["GET"]
    else:
        return []
    path = _const_str(deco.args[0] if deco.args else _kwarg(deco, "path"))
    if path is None:
        return []
    full_path = prefix + path
    op_id = _const_str(_kwarg(deco, "operation_id"))
    return [
        Route(
            name=op_id or generated_operation_id(func.name, full_path, method),
            method=method,
            path=full_path,
            function=func.name,
            line=deco.lineno,
            has_operation_id=op_id is not None,
        )
        for method in methods
    ]
