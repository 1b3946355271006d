"""The AWM text protocol, character for character (see awm.agent.protocol)."""

from __future__ import annotations

import pytest

from awm.agent.protocol import (
    FunctionCall,
    ToolRequest,
    error_text,
    format_tool_list,
    lenient_json,
    parse_reply,
    resolve_call_tool,
    result_text,
    timeout_text,
    unknown_function_text,
)

TOOLS = [
    {
        "name": "search_sites",
        "description": "Search campsites.\n\n  Filters by park and size.  \n",
        "inputSchema": {
            "type": "object",
            "properties": {
                "park_id": {"type": "integer", "description": "The park"},
                "size": {"type": "string", "enum": ["small", "large"], "default": "small"},
                "filters": {
                    "type": "object",
                    "properties": {"max_price": {"type": "number"}, "pets": {"type": "boolean"}},
                    "required": ["pets"],
                },
                "anything": {"description": ""},
            },
            "required": ["park_id"],
        },
    },
    {"name": "list_tools", "description": "shadows the function", "inputSchema": {}},
    {"name": "ping", "description": None, "inputSchema": {"type": "object", "properties": {}}},
]

EXPECTED = (
    "Available MCP Tools (2 tools):\n"
    + "=" * 80
    + "\n"
    "\n"
    "1. mcp_tool_mcp_server_search_sites\n"
    "   Description: Search campsites.\n"
    "   Filters by park and size.\n"
    "   Parameters:\n"
    "      - park_id: integer (required)\n"
    "        Description: The park\n"
    "      - size: string (optional)\n"
    "        Default: small\n"
    "        Allowed values: ['small', 'large']\n"
    "      - filters: object (optional)\n"
    "        Properties:\n"
    "          - max_price: number (optional)\n"
    "          - pets: boolean (required)\n"
    "      - anything: unknown (optional)\n"
    "\n"
    "2. mcp_tool_mcp_server_ping\n"
    "   Description: \n"
    "   Parameters: None"
)


def test_tool_list_layout_is_exact() -> None:
    assert format_tool_list(TOOLS) == EXPECTED


def test_empty_tool_list() -> None:
    assert format_tool_list([]) == "Available MCP Tools (0 tools):\n" + "=" * 80


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        ("I am done.", None),
        ('<tool_call>\n{"name": "list_tools", "arguments": {}}\n</tool_call>', FunctionCall("list_tools", {})),
        ("<tool_call></tool_call>", FunctionCall("", {})),
        # only the first call of a turn counts
        (
            '<tool_call>{"name": "list_tools"}</tool_call><tool_call>{"name": "call_tool"}</tool_call>',
            FunctionCall("list_tools", {}),
        ),
        # a list whose first element is an object stands for it
        ('<tool_call>[{"name": "list_tools", "arguments": {}}]</tool_call>', FunctionCall("list_tools", {})),
        # broken JSON is repaired
        ('<tool_call>{"name": "call_tool", "arguments": {"tool_name": "ping"</tool_call>',
         FunctionCall("call_tool", {"tool_name": "ping"})),
        # a listed tool called directly becomes call_tool
        (
            '<tool_call>{"name": "mcp_tool_mcp_server_ping", "arguments": {"x": 1}}</tool_call>',
            FunctionCall("call_tool", {"tool_name": "mcp_tool_mcp_server_ping", "arguments": {"x": 1}}),
        ),
        ("<tool_call>\n  \"just a string\"\n</tool_call>", FunctionCall("", {})),
    ],
)
def test_parse_reply(reply: str, expected: FunctionCall | None) -> None:
    assert parse_reply(reply) == expected


@pytest.mark.parametrize(
    ("arguments", "expected"),
    [
        ({"tool_name": "mcp_tool_mcp_server_ping", "arguments": '{"a": 1}'}, ToolRequest("ping", {"a": 1})),
        ({"tool_name": "mcp_tool_ping", "arguments": {"a": 1}}, ToolRequest("ping", {"a": 1})),
        ({"tool_name": "ping", "arguments": "[1, 2]"}, ToolRequest("ping", {})),
        ({"tool_name": "ping", "arguments": '{"a": 1'}, ToolRequest("ping", {"a": 1})),
        ({"tool_name": "ping"}, ToolRequest("ping", {})),
    ],
)
def test_resolve_call_tool(arguments: dict[str, object], expected: ToolRequest) -> None:
    assert resolve_call_tool(arguments) == expected


def test_texts() -> None:
    assert lenient_json("  ") == {}
    assert result_text(["a", "b"], is_error=False) == "a\nb"
    assert result_text(["404: not found"], is_error=True) == "Error: 404: not found"
    assert timeout_text(30) == "Error: Tool call timed out after 30.0s"
    assert error_text(ValueError("boom")) == "Error: boom"
    expected = "Error: Unknown tool 'book'. Only 'list_tools' and 'call_tool' are available."
    assert unknown_function_text("book") == expected
