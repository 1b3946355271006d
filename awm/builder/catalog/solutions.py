"""Reference solutions and the mapping of a tool call onto the HTTP request it stands for.

A tool call is `{tool, arguments}` with one flat argument object, as an MCP client sends it.
`request_for` splits it the way fastapi-mcp 0.4.0 does: path parameters into the path, query
parameters into the query string, everything else into the JSON body (sent for POST, PUT and
PATCH only). Replays in tests and in-process checks use it to reach a route without MCP.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import AliasChoices, BaseModel, Field, RootModel

__all__ = ["HttpRequest", "Solution", "ToolCall", "ToolCheck", "load_solutions", "request_for"]

SOLUTIONS_FILE = "solutions.json"


class ToolCall(BaseModel):
    """One tool call as an MCP client sends it: the tool's name and one flat argument object."""

    tool: str
    arguments: dict[str, Any] = Field(default_factory=dict)


class ToolCheck(ToolCall):
    """A tool called with example arguments, and what came back.

    Smoke tests (`awm build --smoke`) report ok, error (a non-5xx error), server_error or skipped
    (no example arguments); the probe of `awm gen` reports ok, client_error (4xx), server_error,
    exception (the route raised) or missing (no such tool).
    """

    # smoke results kept before the two checks were one model name the tool `name`
    tool: str = Field(validation_alias=AliasChoices("tool", "name"))
    outcome: Literal["ok", "error", "client_error", "server_error", "exception", "missing", "skipped"]
    status_code: int | None = None
    detail: str = ""


class Solution(BaseModel):
    """The tool calls that solve one task, and the final answer an agent would give."""

    calls: list[ToolCall]
    final_answer: str | None = None


class _Solutions(RootModel[dict[str, dict[int, Solution]]]):
    pass


def load_solutions(dataset: str | Path) -> dict[str, dict[int, Solution]]:
    """Reference solutions of a dataset folder, by scenario id and task index ({} if none)."""
    path = Path(dataset) / SOLUTIONS_FILE
    if not path.is_file():
        return {}
    return _Solutions.model_validate(json.loads(path.read_text())).root


class HttpRequest(BaseModel):
    method: str
    path: str
    query: dict[str, Any]
    body: dict[str, Any] | None


def request_for(openapi: dict[str, Any], tool: str, arguments: dict[str, Any]) -> HttpRequest:
    """The HTTP request a tool call becomes.

    Raises:
        KeyError: no operation of that name in the OpenAPI document.
    """
    for path, operations in openapi.get("paths", {}).items():
        for method, op in operations.items():
            if not isinstance(op, dict) or op.get("operationId") != tool:
                continue
            args = dict(arguments)
            query: dict[str, Any] = {}
            for param in op.get("parameters", []):
                name = param.get("name")
                if name not in args:
                    continue
                if param.get("in") == "path":
                    path = path.replace("{" + name + "}", str(args.pop(name)))
                elif param.get("in") == "query":
                    query[name] = args.pop(name)
            body = args or None if method in ("post", "put", "patch") else None
            return HttpRequest(method=method.upper(), path=path, query=query, body=body)
    raise KeyError(f"no tool named {tool!r}")
