"""Reply parsing: every recorded fixture reply parses into its stage's model, the malformed one fails."""

from __future__ import annotations

from typing import Any

import pytest

from awm.builder.catalog.models import ApiSpec, DbSchema, SampleData
from awm.builder.synth.env import extract_module
from awm.builder.synth.replies import ReplyError, code_blocks, extract_json, parse_model
from awm.builder.synth.scenario import ScenarioBatch
from awm.builder.synth.task import TaskList
from awm.builder.synth.verifier import parse_reply
from tests.builder.synth.scripted import load_entries

ENTRIES = load_entries()
PARSERS: dict[str, Any] = {
    "scenario": lambda text: parse_model(text, ScenarioBatch),
    "task": lambda text: parse_model(text, TaskList),
    "db": lambda text: parse_model(text, DbSchema),
    "sample": lambda text: parse_model(text, SampleData),
    "spec": lambda text: parse_model(text, ApiSpec),
    "env": extract_module,
    "verifier": parse_reply,
}


@pytest.mark.parametrize("entry", ENTRIES, ids=[e["id"] for e in ENTRIES])
def test_fixture_reply_parses_as_its_stage_expects(entry: dict[str, Any]) -> None:
    parse = PARSERS[entry["stage"]]
    if entry["fault"] == "malformed JSON":
        with pytest.raises(ReplyError, match="does not parse: Expecting ',' delimiter at line 4"):
            parse(entry["reply"])
        return
    value = parse(entry["reply"])
    if entry["stage"] == "verifier":
        assert "def verify_task_completion(" in value.code
        assert "def verify_task(" in (value.sql or "")
        assert value.calls
        assert all(set(c) == {"tool", "arguments"} for c in value.calls)
    elif entry["stage"] == "env":
        assert value.startswith("import os")
        assert "app = FastAPI(" in value
    elif entry["stage"] == "task":
        assert len(value.tasks) == 6


def test_every_fault_is_followed_by_the_reply_its_feedback_gets() -> None:
    faults = [e for e in ENTRIES if e["fault"]]
    assert sorted(e["fault"] for e in faults) == sorted([
        "malformed JSON", "failing DDL", "foreign key violation", "tool raises", "complete on the seed",
    ])
    for fault in faults:
        fixes = [e for e in ENTRIES if e["match"] == fault["match"] and e["feedback"]]
        assert len(fixes) == 1, fault["id"]
        assert fixes[0]["fault"] is None, fault["id"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('```json\n{"a": 1}\n```', {"a": 1}),
        ('Sure! Here it is:\n\n```json\n{"a": [1, 2]}\n```\nAnything else?', {"a": [1, 2]}),
        ('```\n{"a": 1}\n```', {"a": 1}),
        ('{"a": 1}', {"a": 1}),
        ('The object is {"a": {"b": 2}} as requested.', {"a": {"b": 2}}),
        ('```json\n{"a": 1}', {"a": 1}),  # a fence never closed
    ],
)
def test_extract_json_finds_the_object(text: str, expected: Any) -> None:
    assert extract_json(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("I cannot help with that.", "holds no JSON object"),
        ('```json\n{"a": 1,,}\n```', "does not parse: Expecting property name enclosed in double quotes at line 1"),
        ('```json\n{"tasks": [1\n```', "does not parse"),
    ],
)
def test_extract_json_says_why_it_fails(text: str, message: str) -> None:
    with pytest.raises(ReplyError, match=message):
        extract_json(text)


def test_parse_model_names_the_fields_at_fault() -> None:
    with pytest.raises(ReplyError, match=r"tables\.0\.ddl: Field required; tables\.1\.name: Field required"):
        parse_model('```json\n{"tables": [{"name": "a"}, {"ddl": "CREATE TABLE b (id INTEGER)"}]}\n```', DbSchema)


def test_code_blocks_by_language() -> None:
    text = "```python\nA = 1\n```\ntext\n```json\n{}\n```\n```\nB = 2\n```\n```py\nC = 3\n```"
    assert code_blocks(text) == ["A = 1\n", "B = 2\n", "C = 3\n"]
    assert code_blocks(text, "json", untagged=False) == ["{}\n"]


def test_verifier_reply_missing_parts_is_rejected_naming_them() -> None:
    with pytest.raises(ReplyError) as info:
        parse_reply("```python\ndef verify_task_completion(a, b, final_answer=None):\n    return {}\n```")
    assert "verify_task(initial_db_path, final_db_path)" in str(info.value)
    assert "```json block with the reference solution" in str(info.value)
    assert "verify_task_completion" not in str(info.value).split("lacks", 1)[1].split(";")[0]
