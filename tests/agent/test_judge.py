"""The sql-mode LLM judge against the scripted server: its input, its reply parsed, a malformed reply."""

from __future__ import annotations

import asyncio
import json

import pytest

from awm.agent.judge import JUDGE_PROMPT, RewardMap, llm_judge, parse_judge_reply, verify_document
from awm.agent.llm import LLMConfig
from tests.agent.scripted import ScriptedModel

REPLY = {"reasoning": "The ticket exists with the tag.", "confidence_score": [0.9, 0.05, 0.0, 0.05],
         "classification": "complete",
         "evidence": {"status": "done", "iterations": 4, "error_signals": [], "last_actions": ["add_ticket_tag"],
                      "database_verification": "ticket 37 tagged billing"}}
TRAJECTORY = [{"iteration": 1, "role": "assistant", "content": "ok", "tool_calls": [], "is_final": True}]


@pytest.mark.parametrize(("reply", "label"), [
    (json.dumps(REPLY), "complete"),
    (
        "Here is my verdict:\n```json\n" + json.dumps({**REPLY, "classification": "agent_error"}) + "\n```",
        "agent_error",
    ),
    ("I think it is complete.", "judge_error"),
    (json.dumps({**REPLY, "classification": "mostly_done"}), "judge_error"),
    ('{"classification": "complete",', "judge_error"),
])
def test_judge_replies_are_parsed_or_judge_error(reply: str, label: str) -> None:
    with ScriptedModel(lambda body: {"content": reply}) as model:
        llm = LLMConfig(model="judge", api_url=model.url, max_retries=0)
        judged = asyncio.run(llm_judge(llm, "Tag the ticket.", TRAJECTORY, {"tagged": True}))
        (request,) = model.chats()
    assert judged["classification"] == label
    assert request["temperature"] == 1.0
    assert request["max_completion_tokens"] == 4096
    assert request["messages"][0] == {"role": "system", "content": JUDGE_PROMPT}
    user = request["messages"][1]["content"]
    assert "Tag the ticket." in user
    assert "Number of steps: 1" in user
    assert '"code_execution_result": {\n    "tagged": true\n  }' in user
    doc = verify_document({"scenario": "s", "task_id": 0, "task": "t"}, "sql", {"result": "evidence"},
                          llm_judgement=judged)
    assert doc["reward_type"] == label
    assert doc["reward"] == (1.0 if label == "complete" else 0.0)
    assert doc["llm_judge"]["classification"] == label


def test_reward_map_is_configurable() -> None:
    rewards = RewardMap({"complete": 1.0, "incomplete": 0.25})
    assert (rewards("complete"), rewards("incomplete"), rewards("agent_error")) == (1.0, 0.25, 0.0)
    assert parse_judge_reply("[1, 2]") == ("judge_error", None)
