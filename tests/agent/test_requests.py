"""What `awm agent` sends in the awm protocol, character for character, and how it copes with faults."""

from __future__ import annotations

import asyncio
import gc
import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, cast

import pytest
from mcp.server.fastmcp import FastMCP
from typer.testing import CliRunner

from awm.builder.catalog.loader import load_catalog
from awm.cli import app
from tests.agent.scripted import OVERFLOW, ScriptedModel, awm_call, script
from tests.helpers import EXAMPLES, serve_app, stop_server

# The list_tools text of pantrypal_recipe_planner, written out from the layout rules of the
# protocol page: header with the count, 80 '=', numbered `mcp_tool_mcp_server_<tool>` entries,
# first description line, further non-empty lines stripped and indented 3, parameters with type,
# required/optional, Description/Default/Allowed values, a blank line between tools, no final newline.
PANTRY_TOOLS = """Available MCP Tools (12 tools):
================================================================================

1. mcp_tool_mcp_server_list_recipes
   Description: Search recipes
   List recipes, optionally filtered by title text, cuisine, meal type, vegetarian flag and maximum total time (prep + cook).
   ### Responses:
   **200**: Successful Response (Success Response)
   Content-Type: application/json
   **Example Response:**
   ```json
   [
   {
   "id": 1,
   "title": "Title",
   "cuisine": "Cuisine",
   "meal_type": "Meal Type",
   "servings": 1,
   "prep_minutes": 1,
   "cook_minutes": 1,
   "total_minutes": 1,
   "is_vegetarian": true,
   "author_id": 1
   }
   ]
   ```
   Parameters:
      - search: string (optional)
        Description: Case-insensitive substring of the title
      - cuisine: string (optional)
      - meal_type: string (optional)
      - vegetarian: boolean (optional)
      - max_total_minutes: integer (optional)
      - limit: integer (optional)
        Default: 20

2. mcp_tool_mcp_server_get_recipe
   Description: Get a recipe with its ingredients
   Return one recipe including every ingredient with quantity and unit for the recipe's base servings.
   ### Responses:
   **200**: Successful Response (Success Response)
   Content-Type: application/json
   **Example Response:**
   ```json
   {
   "id": 1,
   "title": "Title",
   "cuisine": "Cuisine",
   "meal_type": "Meal Type",
   "servings": 1,
   "prep_minutes": 1,
   "cook_minutes": 1,
   "total_minutes": 1,
   "is_vegetarian": true,
   "author_id": 1,
   "ingredients": [
   {
   "ingredient_id": 1,
   "ingredient_name": "Ingredient Name",
   "quantity": 1.0,
   "unit": "Unit"
   }
   ]
   }
   ```
   Parameters:
      - recipe_id: integer (required)

3. mcp_tool_mcp_server_list_ingredients
   Description: List ingredients
   List known ingredients with their category and default unit.
   ### Responses:
   **200**: Successful Response (Success Response)
   Content-Type: application/json
   **Example Response:**
   ```json
   [
   {
   "id": 1,
   "name": "Name",
   "category": "Category",
   "default_unit": "Default Unit"
   }
   ]
   ```
   Parameters:
      - search: string (optional)
        Description: Case-insensitive substring of the name
      - category: string (optional)
      - limit: integer (optional)
        Default: 50

4. mcp_tool_mcp_server_list_meal_plan
   Description: List my meal plan
   List the current user's planned meals, ordered by date and slot, optionally within a date range and for one meal slot.
   ### Responses:
   **200**: Successful Response (Success Response)
   Content-Type: application/json
   **Example Response:**
   ```json
   [
   {
   "id": 1,
   "recipe_id": 1,
   "recipe_title": "Recipe Title",
   "plan_date": "Plan Date",
   "meal_slot": "Meal Slot",
   "servings": 1,
   "created_at": "Created At"
   }
   ]
   ```
   Parameters:
      - start_date: string (optional)
        Description: First day (inclusive), YYYY-MM-DD
      - end_date: string (optional)
        Description: Last day (inclusive), YYYY-MM-DD
      - meal_slot: string (optional)
      - limit: integer (optional)
        Default: 50

5. mcp_tool_mcp_server_add_meal_plan_entry
   Description: Plan a meal
   Put a recipe on the current user's meal plan for a date and meal slot. Each slot of a day holds one meal.
   ### Responses:
   **201**: Successful Response (Success Response)
   Content-Type: application/json
   **Example Response:**
   ```json
   {
   "id": 1,
   "recipe_id": 1,
   "recipe_title": "Recipe Title",
   "plan_date": "Plan Date",
   "meal_slot": "Meal Slot",
   "servings": 1,
   "created_at": "Created At"
   }
   ```
   Parameters:
      - recipe_id: integer (required)
        Description: Recipe to cook
      - plan_date: string (required)
        Description: Day of the meal, YYYY-MM-DD
      - meal_slot: string (required)
        Description: breakfast, lunch, dinner or snack
        Allowed values: ['breakfast', 'lunch', 'dinner', 'snack']
      - servings: integer (required)
        Description: Number of servings to cook
      - notes: string (optional)

6. mcp_tool_mcp_server_update_meal_plan_entry
   Description: Change a planned meal
   Move a planned meal to another date or slot, swap its recipe, or change servings or notes. Only the fields sent are changed.
   ### Responses:
   **200**: Successful Response (Success Response)
   Content-Type: application/json
   **Example Response:**
   ```json
   {
   "id": 1,
   "recipe_id": 1,
   "recipe_title": "Recipe Title",
   "plan_date": "Plan Date",
   "meal_slot": "Meal Slot",
   "servings": 1,
   "created_at": "Created At"
   }
   ```
   Parameters:
      - entry_id: integer (required)
      - recipe_id: integer (optional)
      - plan_date: string (optional)
      - meal_slot: string (optional)
      - servings: integer (optional)
      - notes: string (optional)

7. mcp_tool_mcp_server_delete_meal_plan_entry
   Description: Remove a planned meal
   Delete one of the current user's meal plan entries and return the removed entry.
   ### Responses:
   **200**: Successful Response (Success Response)
   Content-Type: application/json
   **Example Response:**
   ```json
   {
   "id": 1,
   "recipe_id": 1,
   "recipe_title": "Recipe Title",
   "plan_date": "Plan Date",
   "meal_slot": "Meal Slot",
   "servings": 1,
   "created_at": "Created At"
   }
   ```
   Parameters:
      - entry_id: integer (required)

8. mcp_tool_mcp_server_list_pantry_items
   Description: List my pantry
   List what the current user has at home, optionally filtered by ingredient name, category or expiry date.
   ### Responses:
   **200**: Successful Response (Success Response)
   Content-Type: application/json
   **Example Response:**
   ```json
   [
   {
   "ingredient_id": 1,
   "ingredient_name": "Ingredient Name",
   "quantity": 1.0,
   "unit": "Unit",
   "id": 1,
   "category": "Category",
   "updated_at": "Updated At"
   }
   ]
   ```
   Parameters:
      - search: string (optional)
        Description: Case-insensitive substring of the ingredient name
      - category: string (optional)
      - expiring_before: string (optional)
        Description: Only items expiring on or before this date
      - limit: integer (optional)
        Default: 100

9. mcp_tool_mcp_server_set_pantry_item
   Description: Set pantry stock of an ingredient
   Set the absolute quantity the current user has of an ingredient; creates the pantry item if it does not exist yet.
   ### Responses:
   **200**: Successful Response (Success Response)
   Content-Type: application/json
   **Example Response:**
   ```json
   {
   "ingredient_id": 1,
   "ingredient_name": "Ingredient Name",
   "quantity": 1.0,
   "unit": "Unit",
   "id": 1,
   "category": "Category",
   "updated_at": "Updated At"
   }
   ```
   Parameters:
      - ingredient_id: integer (required)
      - quantity: number (required)
        Description: New total quantity on hand (absolute, not a delta)
      - unit: string (optional)
        Description: Unit; defaults to the existing or the ingredient's default unit
      - expires_on: string (optional)
        Description: Best-before date, YYYY-MM-DD

10. mcp_tool_mcp_server_list_shopping_list
   Description: List my shopping list
   List the current user's shopping list items; purchased items are hidden unless include_purchased is true.
   ### Responses:
   **200**: Successful Response (Success Response)
   Content-Type: application/json
   **Example Response:**
   ```json
   [
   {
   "ingredient_id": 1,
   "ingredient_name": "Ingredient Name",
   "quantity": 1.0,
   "unit": "Unit",
   "id": 1,
   "is_purchased": true,
   "added_at": "Added At"
   }
   ]
   ```
   Parameters:
      - include_purchased: boolean (optional)
        Default: False
      - limit: integer (optional)
        Default: 100

11. mcp_tool_mcp_server_add_shopping_list_item
   Description: Add to my shopping list
   Add an ingredient to the current user's shopping list. Fails with 409 if an unpurchased item for the same ingredient exists (update that one instead).
   ### Responses:
   **201**: Successful Response (Success Response)
   Content-Type: application/json
   **Example Response:**
   ```json
   {
   "ingredient_id": 1,
   "ingredient_name": "Ingredient Name",
   "quantity": 1.0,
   "unit": "Unit",
   "id": 1,
   "is_purchased": true,
   "added_at": "Added At"
   }
   ```
   Parameters:
      - ingredient_id: integer (required)
      - quantity: number (required)
      - unit: string (optional)
        Description: Defaults to the ingredient's default unit

12. mcp_tool_mcp_server_update_shopping_list_item
   Description: Update a shopping list item
   Change the quantity of a shopping list item or mark it as purchased (or not purchased).
   ### Responses:
   **200**: Successful Response (Success Response)
   Content-Type: application/json
   **Example Response:**
   ```json
   {
   "ingredient_id": 1,
   "ingredient_name": "Ingredient Name",
   "quantity": 1.0,
   "unit": "Unit",
   "id": 1,
   "is_purchased": true,
   "added_at": "Added At"
   }
   ```
   Parameters:
      - item_id: integer (required)
      - quantity: number (optional)
      - is_purchased: boolean (optional)"""

# A user's prompt file: odd bytes that a reimplementation would be tempted to normalise.
USER_PROMPT = "You are an agent.\r\nCall list_tools first.  \n\n\tThen work.\u00a0Ünïcode — done"


def _agent(*args: str, exit_code: int = 0) -> str:
    result = CliRunner().invoke(app, ["agent", "--model", "scripted", *args], catch_exceptions=False)
    assert result.exit_code == exit_code, result.output
    return result.output


def _trajectory(out: Path) -> dict[str, Any]:
    return cast(dict[str, Any], json.loads((out / "trajectory.json").read_text()))


@pytest.mark.docker
@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_requests_in_the_awm_protocol_are_exact(host: str, images: dict[str, str], tmp_path: Path,
                                                 no_leftovers: None) -> None:
    prompt = tmp_path / "prompt.txt"
    prompt.write_bytes(USER_PROMPT.encode())
    task = load_catalog(EXAMPLES).get("pantrypal_recipe_planner").tasks[2]
    with ScriptedModel(script([awm_call("list_tools", {}), "All done."])) as model:
        url = model.url.replace("127.0.0.1", host)
        _agent("--scenario", "pantrypal_recipe_planner", "--task_id", "2", "--api-url", url,
               "--system_prompt", str(prompt), "--output-dir", str(tmp_path / "run"))
        first, second = model.chats()
    tool_role = host == "localhost"  # the original's rule: a local vLLM URL gets tool-role results
    vllm = {"add_generation_prompt": True, "min_tokens": 16, "chat_template_kwargs": {"enable_thinking": True}}
    assert first == {"model": "scripted", "temperature": 1.0, "max_completion_tokens": 2048,
                     "messages": [{"role": "system", "content": USER_PROMPT}, {"role": "user", "content": task}],
                     **(vllm if tool_role else {})}
    result = ({"role": "tool", "tool_call_id": "call_1", "content": PANTRY_TOOLS} if tool_role
              else {"role": "user", "content": "Tool response:\n" + PANTRY_TOOLS})
    assert second["messages"] == [*first["messages"], {"role": "assistant", "content": awm_call("list_tools", {})},
                                  result]
    assert second["messages"][-1]["content"].endswith(PANTRY_TOOLS)  # character for character


@pytest.mark.docker
def test_model_mistakes_and_endpoint_faults_are_handled_and_recorded(images: dict[str, str], tmp_path: Path,
                                                                      no_leftovers: None) -> None:
    replies = [
        awm_call("list_tools", {}),
        # malformed but repairable: single quotes, trailing comma, arguments as a loose string
        ("<tool_call>{'name': 'call_tool', 'arguments': {'tool_name': 'mcp_tool_mcp_server_list_recipes', "
         "'arguments': '{limit: 1,}'},}</tool_call>"),
        "<tool_call>this is not json</tool_call>",
        awm_call("search_web", {"q": "pasta"}),
        awm_call("call_tool", {"tool_name": "mcp_tool_mcp_server_no_such_tool", "arguments": "{}"}),
        awm_call("mcp_tool_mcp_server_list_recipes", {"limit": 1}),  # a listed tool called directly
        awm_call("list_tools", {}),
    ]
    out = tmp_path / "run"
    with ScriptedModel(script(replies)) as model:
        model.fail_next(500, times=2)  # the SDK retries with backoff, then the endpoint recovers
        _agent("--scenario", "pantrypal_recipe_planner", "--task_id", "0", "--api_url", model.url,
               "--max_iterations", "8", "--output_dir", str(out))
        assert model.statuses[:3] == [500, 500, 200]
    doc = _trajectory(out)
    steps = doc["trajectory"]
    assert isinstance(steps, list)
    texts = [s["tool_response"]["content"] for s in steps]
    assert doc["end_reason"] == "max_iterations"
    assert doc["total_iterations"] == 8
    assert len(json.loads(texts[1])) == 1  # the repaired call ran with limit 1
    assert texts[2] == "Error: Unknown tool ''. Only 'list_tools' and 'call_tool' are available."
    assert texts[3] == "Error: Unknown tool 'search_web'. Only 'list_tools' and 'call_tool' are available."
    assert texts[4].startswith("Error: ")
    assert "no_such_tool" in texts[4]
    assert steps[5]["tool_calls"][0]["name"] == "call_tool"
    assert len(json.loads(texts[5])) == 1
    assert [s["is_error"] for s in steps] == [False, False, True, True, True, False, False, False]
    assert doc["tool_errors"] == 3


@pytest.mark.docker
def test_context_overflow_ends_the_episode_with_its_reason(images: dict[str, str], tmp_path: Path,
                                                            no_leftovers: None) -> None:
    out = tmp_path / "run"
    with ScriptedModel(script([awm_call("list_tools", {})])) as model:
        model.fail_at(2, 400, OVERFLOW)  # the second request no longer fits
        _agent("--scenario", "pantrypal_recipe_planner", "--task_id", "0", "--api_url", model.url,
               "--output_dir", str(out))
    doc = _trajectory(out)
    assert doc["end_reason"] == "context_overflow"
    assert "maximum context length" in str(doc["error"])
    assert doc["total_iterations"] == 1
    assert len(doc["trajectory"]) == 1


@contextmanager
def hanging_mcp() -> Iterator[str]:
    """A real MCP server (FastMCP, streamable HTTP) with a tool that never returns."""
    server = FastMCP("hang", stateless_http=False)

    @server.tool()
    async def wait_forever() -> str:
        """Never returns."""
        await asyncio.Event().wait()
        return "unreachable"

    @server.tool()
    def echo(text: str) -> str:
        """Echo the text."""
        return text

    url, uv, thread = serve_app(server.streamable_http_app())
    try:
        yield f"{url}/mcp"
    finally:
        stop_server(uv, thread)
        gc.collect()  # its streams of the hung request go now, inside this test's warning filter


# mcp's FastMCP settings class trips a pydantic-settings warning at construction (their code)
@pytest.mark.filterwarnings("ignore::pydantic_settings.exceptions.IncompleteFieldDefinitionWarning")
# the test's own server is stopped with the hung request still open: its streams are collected late
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_a_hanging_tool_gives_the_timeout_text_and_the_episode_goes_on(tmp_path: Path) -> None:
    replies = [awm_call("call_tool", {"tool_name": "mcp_tool_mcp_server_wait_forever", "arguments": "{}"}),
               awm_call("call_tool", {"tool_name": "mcp_tool_mcp_server_echo", "arguments": '{"text": "still here"}'}),
               "Finished."]
    out = tmp_path / "run"
    with hanging_mcp() as url, ScriptedModel(script(replies)) as model:
        _agent("--task", "Echo something.", "--mcp_url", url, "--api_url", model.url,
               "--tool_timeout", "1.5", "--output_dir", str(out))
    doc = _trajectory(out)
    steps = doc["trajectory"]
    assert steps[0]["tool_response"]["content"] == "Error: Tool call timed out after 1.5s"
    assert steps[1]["tool_response"]["content"] == "still here"  # the same session still works
    assert doc["end_reason"] == "answer"
    assert doc["final_answer"] == "Finished."
    assert not (out / "initial.db").exists()  # a plain MCP server has no AWM control plane
