"""The AWM text protocol: what the original agent showed a model, and how it read the replies.

Models trained on AWM environments saw exactly this text, so every character here is part of the
interface (see the README's "Agents" section): two functions, `list_tools` and `call_tool`, called
as ``<tool_call>{"name": ..., "arguments": ...}</tool_call>``; the tool list in a fixed layout with
the names the original's MCP client presented (``mcp_tool_mcp_server_<tool>``); results and errors
as plain text. The system prompt is this project's own wording of the same rules.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import json_repair

__all__ = [
    "CALL_TOOL",
    "LIST_TOOLS",
    "SYSTEM_PROMPT",
    "FunctionCall",
    "ToolRequest",
    "error_text",
    "format_tool_list",
    "lenient_json",
    "parse_reply",
    "resolve_call_tool",
    "result_text",
    "timeout_text",
    "unknown_function_text",
]

LIST_TOOLS = "list_tools"
CALL_TOOL = "call_tool"
TOOL_PREFIX = "mcp_tool_"
# The original's MCP client prefixed every tool with its server's name.
SERVER_PREFIX = "mcp_server_"
_RULER = "=" * 80
_CALL = re.compile(r"<tool_call>\s*(.*?)\s*</tool_call>", re.DOTALL)

SYSTEM_PROMPT = """\
You are working inside an MCP (Model Context Protocol) environment on behalf of a user. You are \
already logged in as the user with id 1.

You can call exactly two functions, one function per step:
- list_tools: takes no arguments and returns the tools of the environment. Call it first, and only once.
- call_tool: runs one tool. Its arguments are "tool_name" (a name from the list_tools result) and \
"arguments" (the tool's arguments as a JSON string).

To call a function, write:
<tool_call>
{"name": <function-name>, "arguments": <args-json-object>}
</tool_call>

After each call you receive its result. When the task is done, reply with your final answer and \
no function call."""


@dataclass(frozen=True)
class FunctionCall:
    """One function call read from a model's reply."""

    name: str
    arguments: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ToolRequest:
    """A `call_tool` call resolved to the environment's own tool name and arguments."""

    tool: str
    arguments: dict[str, Any]


def lenient_json(text: str) -> Any:
    """Plain JSON first, then a repairing parser; an empty text is ``{}``."""
    if not text.strip():
        return {}
    try:
        return json.loads(text)
    except ValueError:
        return json_repair.loads(text)


def parse_reply(text: str) -> FunctionCall | None:
    """The first function call of a reply, or None when it has none (the final answer)."""
    match = _CALL.search(text or "")
    if match is None:
        return None
    body = lenient_json(match.group(1))
    if isinstance(body, list) and body and isinstance(body[0], dict):
        body = body[0]
    if not isinstance(body, dict):
        body = {}
    name = str(body.get("name") or "")
    arguments = body.get("arguments")
    if isinstance(arguments, str):
        arguments = lenient_json(arguments)
    if not isinstance(arguments, dict):
        arguments = {}
    if name.startswith(TOOL_PREFIX):
        # a model that calls a listed tool directly: the original treated it as call_tool
        return FunctionCall(CALL_TOOL, {"tool_name": name, "arguments": arguments})
    return FunctionCall(name, arguments)


def resolve_call_tool(arguments: Mapping[str, Any]) -> ToolRequest:
    """The environment's tool and its arguments for a `call_tool` call's arguments."""
    tool = str(arguments.get("tool_name") or "")
    tool = tool.removeprefix(TOOL_PREFIX).removeprefix(SERVER_PREFIX)
    raw = arguments.get("arguments")
    args = lenient_json(raw) if isinstance(raw, str) else raw
    return ToolRequest(tool, args if isinstance(args, dict) else {})


def _parameters(schema: Mapping[str, Any], indent: int) -> list[str]:
    required = set(schema.get("required") or ())
    lines: list[str] = []
    pad = " " * (indent + 2)
    for prop, spec in (schema.get("properties") or {}).items():
        spec = spec if isinstance(spec, Mapping) else {}
        kind = spec.get("type", "unknown")
        lines.append(f"{' ' * indent}- {prop}: {kind} ({'required' if prop in required else 'optional'})")
        if spec.get("description"):
            lines.append(f"{pad}Description: {spec['description']}")
        if spec.get("default") is not None:
            lines.append(f"{pad}Default: {spec['default']}")
        if "enum" in spec:
            lines.append(f"{pad}Allowed values: {spec['enum']}")
        if kind == "object" and spec.get("properties"):
            lines.append(f"{pad}Properties:")
            lines.extend(_parameters(spec, indent + 4))
    return lines


def format_tool_list(tools: Sequence[Any]) -> str:
    """The `list_tools` result text, in the original's layout.

    Args:
        tools: MCP tools (objects with ``name``, ``description``, ``inputSchema``) or dicts with
            those keys, in the server's order, named as the server names them.
    """
    entries = [_tool_fields(tool) for tool in tools]
    entries = [entry for entry in entries if entry[0] != LIST_TOOLS]
    lines = [f"Available MCP Tools ({len(entries)} tools):", _RULER, ""]
    for number, (name, description, schema) in enumerate(entries, start=1):
        lines.append(f"{number}. {TOOL_PREFIX}{SERVER_PREFIX}{name}")
        first, *rest = (description or "").split("\n")
        lines.append(f"   Description: {first.strip()}")
        lines.extend(f"   {line.strip()}" for line in rest if line.strip())
        if schema.get("properties"):
            lines.append("   Parameters:")
            lines.extend(_parameters(schema, 6))
        else:
            lines.append("   Parameters: None")
        lines.append("")
    return "\n".join(lines).strip()


def _tool_fields(tool: Any) -> tuple[str, str, Mapping[str, Any]]:
    if isinstance(tool, Mapping):
        return str(tool["name"]), str(tool.get("description") or ""), tool.get("inputSchema") or {}
    return str(tool.name), str(tool.description or ""), tool.inputSchema or {}


def result_text(texts: Sequence[str], *, is_error: bool) -> str:
    """A tool result as the model sees it: its text parts joined, ``Error: `` before an error."""
    text = "\n".join(texts)
    return f"Error: {text}" if is_error else text


def timeout_text(seconds: float) -> str:
    return f"Error: Tool call timed out after {float(seconds)}s"


def error_text(exc: BaseException | str) -> str:
    return f"Error: {exc}"


def unknown_function_text(name: str) -> str:
    return f"Error: Unknown tool '{name}'. Only '{LIST_TOOLS}' and '{CALL_TOOL}' are available."
