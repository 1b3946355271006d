"""The LLM client against the scripted server: real HTTP, the real `openai` client, no patching."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from awm.builder.synth import LLMClient, LLMSettings
from awm.builder.synth.dialogue import FEEDBACK_HEADER, Dialogue, converse
from awm.builder.synth.replies import parse_model
from awm.builder.synth.task import TaskList
from awm.core.errors import SynthesisError
from tests.builder.synth.conftest import make_llm
from tests.builder.synth.scripted import ScriptedLLM

HELLO = [{"role": "system", "content": "s"}, {"role": "user", "content": "say hello"}]


def _entry(id_: str, match: str, reply: str, feedback: str | None = None) -> dict[str, Any]:
    return {"id": id_, "stage": "t", "match": [match], "feedback": feedback, "fault": None, "reply": reply}


@pytest.fixture
def server() -> Any:
    s = ScriptedLLM([
        _entry("hello", "say hello", "Hello!"),
        _entry("hello-again", "say hello", "Hello again!", feedback="never good enough"),
        _entry("tasks-bad", "list tasks", '```json\n{"tasks": ["Book site 7 for July 18."\n "Cancel my stay."]}\n```'),
        _entry("tasks-good", "list tasks", '```json\n{"tasks": ["Book site 7 for July 18.", "Cancel my stay."]}\n```',
               feedback="does not parse"),
    ]).start()
    yield s
    s.stop()


def test_chat_counts_tokens_and_replays_from_the_cache(server: ScriptedLLM, tmp_path: Path) -> None:
    llm = make_llm(server, cache=tmp_path / "cache")
    first = llm.chat(HELLO, stage="task", scenario="s1")
    assert (first.text, first.cached, first.finish_reason) == ("Hello!", False, "stop")
    assert first.prompt_tokens > 0
    assert first.completion_tokens > 0
    again = make_llm(server, cache=tmp_path / "cache").chat(HELLO, stage="task", scenario="s1")
    assert (again.text, again.cached) == ("Hello!", True)
    assert len(server.chats()) == 1  # the second answer came from disk
    usage = llm.usage.as_dict()["task"]
    assert (usage["requests"], usage["cache_hits"], usage["prompt_tokens"]) == (1, 0, first.prompt_tokens)


def test_the_sdk_retries_a_429_with_retry_after_and_a_500(server: ScriptedLLM) -> None:
    llm = make_llm(server)
    server.fail_next(429, retry_after="1")
    server.fail_next(500)
    assert llm.chat(HELLO, stage="db").text == "Hello!"
    chats = server.chats()
    assert [r["status"] for r in chats] == [429, 500, 200]
    assert [r["headers"]["x-stainless-retry-count"] for r in chats] == ["0", "1", "2"]  # the SDK's own loop
    assert llm.usage.as_dict()["db"]["retries"] == 2
    assert llm.usage.as_dict()["db"]["requests"] == 1


def test_a_request_past_its_timeout_is_retried(server: ScriptedLLM) -> None:
    llm = make_llm(server, timeout_s=1.0)
    server.delay_next(3.0)
    assert llm.chat(HELLO, stage="env").text == "Hello!"
    assert len(server.chats()) == 2
    assert llm.usage.as_dict()["env"]["retries"] == 1


def test_permanent_errors_fail_at_once_naming_scenario_and_stage(server: ScriptedLLM) -> None:
    llm = make_llm(server)
    server.fail_next(401)
    with pytest.raises(SynthesisError) as info:
        llm.chat(HELLO, stage="spec", scenario="shop")
    assert len(server.chats()) == 1
    assert info.value.scenario == "shop"
    assert str(info.value).startswith("scenario 'shop', stage spec: the LLM chat request to http://127.0.0.1:")
    assert llm.usage.as_dict()["spec"]["failures"] == 1
    assert "HTTP 401" in str(info.value)


def test_retries_run_out(server: ScriptedLLM) -> None:
    llm = make_llm(server, max_retries=2)
    server.fail_next(500, times=3)
    with pytest.raises(SynthesisError, match="failed after 3 tries: HTTP 500"):
        llm.chat(HELLO, stage="task")
    assert llm.usage.as_dict()["task"]["failures"] == 1


def test_unknown_request_is_not_retried(server: ScriptedLLM) -> None:
    with pytest.raises(SynthesisError, match=r"HTTP 400: .*no scripted reply"):
        make_llm(server).chat([{"role": "user", "content": "something else"}], stage="task")
    assert len(server.chats()) == 1


def test_malformed_json_is_retried_with_the_parse_error(server: ScriptedLLM) -> None:
    llm = make_llm(server)
    dialogue = Dialogue(llm, system="s", prompt="list tasks", stage="task", scenario="s1", attempts=3)
    tasks = converse(dialogue, lambda t: parse_model(t, TaskList), lambda _v: [])
    assert tasks is not None
    assert tasks.tasks[1] == "Cancel my stay."
    assert server.replied() == ["tasks-bad", "tasks-good"]
    retry = server.chats()[1]["body"]["messages"]
    assert [m["role"] for m in retry] == ["system", "user", "assistant", "user"]
    assert retry[2]["content"].startswith('```json\n{"tasks": ["Book site 7 for July 18."\n')  # its own reply
    assert retry[3]["content"].startswith(f"{FEEDBACK_HEADER} (attempt 1 of 3)")
    assert "the JSON does not parse: Expecting ',' delimiter at line 2 column 2" in retry[3]["content"]
    assert [r.problems != [] for r in dialogue.records] == [True, False]


def test_attempts_are_bounded(server: ScriptedLLM) -> None:
    llm = make_llm(server)
    dialogue = Dialogue(llm, system="s", prompt="say hello", stage="task", scenario=None, attempts=2)
    assert converse(dialogue, lambda t: t, lambda _v: ["never good enough"]) is None
    assert server.replied() == ["hello", "hello-again"]
    assert [r.problems for r in dialogue.records] == [["never good enough"]] * 2


def test_embeddings_are_cached(server: ScriptedLLM, tmp_path: Path) -> None:
    llm = make_llm(server, cache=tmp_path, embedding_model="embed")
    vectors = llm.embed(["a cat sat", "a dog ran"])
    assert len(vectors) == 2
    assert vectors[0] != vectors[1]
    assert make_llm(server, cache=tmp_path, embedding_model="embed").embed(["a cat sat", "a dog ran"]) == vectors
    assert len(server.requests) == 1
    assert json.loads(json.dumps(server.requests[0]["body"]))["input"] == ["a cat sat", "a dog ran"]


def test_embeddings_from_their_own_endpoint(server: ScriptedLLM) -> None:
    other = ScriptedLLM([]).start()
    try:
        llm = make_llm(server, embedding_model="embed", embedding_base_url=other.url)
        assert len(llm.embed(["a"])) == 1
        assert len(other.requests) == 1
        assert server.requests == []
    finally:
        other.stop()


def test_azure_endpoints(server: ScriptedLLM) -> None:
    base = server.url.removesuffix("/v1")
    llm = make_llm(server, base_url=base, api_version="2024-10-21")
    assert llm.chat(HELLO, stage="task").text == "Hello!"
    request = server.chats()[0]
    assert (request["path"], request["query"]) == ("/openai/deployments/scripted/chat/completions",
                                                   "api-version=2024-10-21")


def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("AWM_LLM_MODEL", "AWM_LLM_BASE_URL", "AWM_LLM_API_KEY", "AWM_LLM_PROVIDER", "AWM_LLM_API_VERSION",
                 "AWM_LLM_EMBEDDING_MODEL", "AWM_LLM_EMBEDDING_BASE_URL", "AWM_LLM_EMBEDDING_API_KEY",
                 "EMBEDDING_MODEL",
                 "AWM_SYN_OVERRIDE_MODEL", "AWM_SYN_LLM_PROVIDER", "AZURE_ENDPOINT_URL", "AZURE_OPENAI_ENDPOINT",
                 "AZURE_OPENAI_API_KEY", "OPENAI_API_VERSION", "OPENAI_BASE_URL", "OPENAI_API_KEY",
                 "EMBEDDING_OPENAI_API_KEY", "EMBEDDING_OPENAI_BASE_URL"):
        monkeypatch.delenv(name, raising=False)


def test_the_original_variables_select_model_and_server(server: ScriptedLLM, monkeypatch: pytest.MonkeyPatch) -> None:
    _clean_environment(monkeypatch)
    monkeypatch.setenv("AWM_SYN_OVERRIDE_MODEL", "gpt-4.1-synth")
    monkeypatch.setenv("OPENAI_BASE_URL", server.url)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-original")
    llm = LLMClient(LLMSettings())
    assert llm.chat(HELLO, stage="task").text == "Hello!"
    request = server.chats()[0]
    assert request["body"]["model"] == "gpt-4.1-synth"
    assert request["headers"]["authorization"] == "Bearer sk-original"
    monkeypatch.setenv("AWM_LLM_MODEL", "project-model")  # the project's variable wins over the original's
    assert LLMSettings().model == "project-model"
    assert LLMSettings(model="flag-model").model == "flag-model"  # and a flag over both


def test_the_original_azure_variables_give_azure_urls(server: ScriptedLLM, monkeypatch: pytest.MonkeyPatch) -> None:
    _clean_environment(monkeypatch)
    monkeypatch.setenv("AWM_SYN_LLM_PROVIDER", "azure")
    monkeypatch.setenv("AZURE_ENDPOINT_URL", server.url.removesuffix("/v1") + "/")
    monkeypatch.setenv("AZURE_OPENAI_API_KEY", "azure-key")
    monkeypatch.setenv("AWM_SYN_OVERRIDE_MODEL", "my-gpt5-deployment")
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/v1")  # ignored: Azure has its own endpoint
    llm = LLMClient(LLMSettings())
    assert llm.chat(HELLO, stage="task").text == "Hello!"
    request = server.chats()[0]
    assert request["path"] == "/openai/deployments/my-gpt5-deployment/chat/completions"
    assert request["query"] == "api-version=2025-04-01-preview"
    assert request["headers"]["api-key"] == "azure-key"
    assert "temperature" in request["body"]


def test_the_original_embedding_variables_select_a_separate_endpoint_and_key(
    server: ScriptedLLM, monkeypatch: pytest.MonkeyPatch,
) -> None:
    _clean_environment(monkeypatch)
    embedder = ScriptedLLM([]).start()
    try:
        monkeypatch.setenv("OPENAI_BASE_URL", server.url)
        monkeypatch.setenv("OPENAI_API_KEY", "chat-key")
        monkeypatch.setenv("AWM_SYN_OVERRIDE_MODEL", "local-chat")
        monkeypatch.setenv("EMBEDDING_OPENAI_BASE_URL", embedder.url)
        monkeypatch.setenv("EMBEDDING_OPENAI_API_KEY", "embedding-key")
        llm = LLMClient(LLMSettings())
        assert len(llm.embed(["a cat", "a dog"])) == 2
        assert llm.chat(HELLO, stage="task").text == "Hello!"
        (embedding,) = embedder.requests
        assert embedding["path"] == "/v1/embeddings"
        assert embedding["headers"]["authorization"] == "Bearer embedding-key"
        assert embedding["body"]["model"] == "text-embedding-3-small"  # the default with only a key and URL set
        assert [r["path"] for r in server.requests] == ["/v1/chat/completions"]
        assert server.requests[0]["headers"]["authorization"] == "Bearer chat-key"
    finally:
        embedder.stop()


def test_a_reasoning_model_by_name_gets_max_completion_tokens_and_temperature_1(server: ScriptedLLM) -> None:
    server.reasoning = True
    llm = make_llm(server, model="gpt-5-mini", max_tokens=2000)
    assert llm.chat(HELLO, stage="task").text == "Hello!"
    (request,) = server.chats()
    assert request["body"]["max_completion_tokens"] == 2000
    assert "max_tokens" not in request["body"]
    assert request["body"]["temperature"] == 1


def test_a_server_refusing_parameters_is_asked_again_without_them(
    server: ScriptedLLM, caplog: pytest.LogCaptureFixture,
) -> None:
    server.reasoning = True  # the model's name does not tell: the 400s do
    llm = make_llm(server, max_tokens=2000, temperature=0.3)
    with caplog.at_level("WARNING", logger="awm"):
        assert llm.chat(HELLO, stage="task").text == "Hello!"
    assert [r["status"] for r in server.chats()] == [400, 400, 200]
    assert "the server refused `max_tokens` for model scripted" in caplog.text
    assert "sending max_completion_tokens instead of max_tokens from now on" in caplog.text
    assert "sending temperature 1 from now on" in caplog.text
    server.clear()
    dialogue = Dialogue(llm, system="s", prompt="list tasks", stage="task", scenario="s1", attempts=3)
    assert converse(dialogue, lambda t: parse_model(t, TaskList), lambda _v: []) is not None
    assert [r["status"] for r in server.chats()] == [200, 200]  # learnt: no more 400s
    assert llm.usage.as_dict()["task"]["failures"] == 0


def test_a_failed_dialogue_is_not_replayed_from_the_cache(server: ScriptedLLM, tmp_path: Path) -> None:
    llm = make_llm(server, cache=tmp_path)
    dialogue = Dialogue(llm, system="s", prompt="say hello", stage="task", scenario=None, attempts=2)
    assert converse(dialogue, lambda t: t, lambda _v: ["never good enough"]) is None
    again = Dialogue(make_llm(server, cache=tmp_path), system="s", prompt="say hello", stage="task", scenario=None,
                     attempts=2)
    assert converse(again, lambda t: t, lambda _v: ["never good enough"]) is None
    assert server.replied() == ["hello", "hello-again"] * 2  # asked again, not replayed


def test_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    _clean_environment(monkeypatch)
    monkeypatch.setenv("AWM_LLM_MODEL", "qwen")
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/v1")
    monkeypatch.setenv("AWM_LLM_CONCURRENCY", "16")
    s = LLMSettings()
    assert (s.model, s.base_url, s.concurrency) == ("qwen", "http://127.0.0.1:9/v1", 16)
    monkeypatch.setenv("AWM_LLM_BASE_URL", "http://127.0.0.1:8/v1")
    assert LLMSettings().base_url == "http://127.0.0.1:8/v1"
    assert LLMSettings(base_url="http://x/v1").base_url == "http://x/v1"  # keyword beats environment


def test_no_model_is_an_error_that_says_what_to_set(monkeypatch: pytest.MonkeyPatch) -> None:
    _clean_environment(monkeypatch)
    with pytest.raises(SynthesisError, match="no model configured: pass --model or set AWM_LLM_MODEL"):
        LLMClient(LLMSettings())


def test_a_bad_provider_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from awm.cli import app

    _clean_environment(monkeypatch)
    result = CliRunner().invoke(app, ["gen", "task", "-o", "out", "--model", "m"],
                                env={"AWM_SYN_LLM_PROVIDER": "bedrock", "COLUMNS": "200"})
    assert result.exit_code == SynthesisError.exit_code
    assert "bad LLM setting provider: Input should be 'openai' or 'azure' (got 'bedrock')" in result.output
