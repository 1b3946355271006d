"""The prompts carry the constraints of the original that change the data, and the checks hold them."""

from __future__ import annotations

from awm.builder.catalog.models import ApiSpec, DbSchema
from awm.builder.synth import env, sample, spec, task
from awm.builder.synth.base import Draft
from awm.builder.synth.task import TaskList

USERS = {"tables": [{"name": "users", "ddl": "CREATE TABLE users (id INTEGER)"}]}
DRAFT = Draft(id="shop", name="Shop", description="A shop.", tasks=["Find the cheapest red mug and order two."],
              db_schema=DbSchema.model_validate(USERS))


def test_task_rules() -> None:
    text = task.prompt(DRAFT, 3)
    assert "is a single sentence" in text
    assert "never logging in, signing up" in text
    assert "never\n  about the user interface" in text
    problems = task.check(TaskList(tasks=["Log in to my account and show my last order, please.",
                                          "Register an account for my sister Jane Doe with jane@example.org.",
                                          "Cancel my order of March 3, 2025 for the blue teapot."]), 3)
    assert [p.split(" is about ")[0] for p in problems] == ["task 0", "task 1"]


def test_sample_data_coverage_rules() -> None:
    text = sample.prompt(DRAFT)
    assert "rows that match it and rows that do not" in text
    assert "every aggregation a task implies" in text
    assert "no placeholder text" in text


def test_tool_fields_carry_description_and_example() -> None:
    draft = DRAFT.model_copy(update={"spec": None})
    assert "a `description` an assistant can act\n  on" in spec.prompt(draft)
    with_spec = draft.model_copy(update={"spec": ApiSpec.model_validate({"api_groups": []})})
    text = env.prompt(with_spec)
    assert "`Path(...)` / `Query(...)`,\n  each with a `description=` and `examples=[...]`" in text
    assert "`Field(..., description=..., examples=[...])`" in text
