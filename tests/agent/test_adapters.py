"""The adapters, called the way their trainers call them, on real environments of the examples.

No GPU and no weights here: TRL's side is transformers' own `get_json_schema` on the bound tool
methods plus TRL's call order; verl's is its worker's construction and `run` with a real
transformers tokenizer (a byte-level one built here, with a Qwen-style chat template) and a
server manager that answers token ids from a scripted policy.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast
from transformers.utils.chat_template_utils import get_json_schema

from awm.agent.adapters.openai_loop import run_openai_loop
from awm.agent.adapters.trl import dataset_rows, environment_factory, episode_of, reward_from_environments
from awm.agent.adapters.verl import AWMAgentLoop, verl_rows
from awm.agent.catalog import EpisodeKey
from awm.agent.llm import LLMConfig
from awm.agent.rollout import RolloutConfig, Rollouts
from awm.builder.catalog.solutions import Solution, load_solutions
from tests.agent.scripted import ScriptedModel, replay
from tests.helpers import EXAMPLES

pytestmark = pytest.mark.docker
SOLUTIONS = load_solutions(EXAMPLES)
PANTRY = "pantrypal_recipe_planner"


@pytest.fixture(scope="module")
def runtime(images: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rollouts]:
    cache = tmp_path_factory.mktemp("catalog")
    with Rollouts(RolloutConfig(envs_per_image=6, max_open_images=3, catalog_cache=cache)) as rt:
        yield rt


# -- TRL ---------------------------------------------------------------------------------------


def _trl_tools(environment: object) -> dict[str, Any]:
    """What TRL probes: every public method but reset (and get_reward, its reward hook)."""
    return {name: getattr(environment, name) for name in dir(environment)
            if not name.startswith("_") and name not in ("reset", "get_reward")
            and callable(getattr(environment, name))}


def test_trl_tool_schemas_come_from_transformers_get_json_schema(runtime: Rollouts) -> None:
    factory = environment_factory(sorted(SOLUTIONS), runtime=runtime)
    assert isinstance(factory, dict)
    assert set(factory) == set(SOLUTIONS)
    for scenario, make in factory.items():
        entry = runtime.scenario(scenario)
        schemas = {name: get_json_schema(method)["function"] for name, method in _trl_tools(make()).items()}
        assert sorted(schemas) == sorted([*entry.tool_names(), "submit_answer"])
        for tool in entry.mcp_tools():
            schema = schemas[tool["name"]]
            expected = tool["inputSchema"]
            assert set(schema["parameters"]["properties"]) == set(expected.get("properties", {}))
            assert set(schema["parameters"].get("required", [])) == set(expected.get("required", []))
            assert schema["description"] == tool["description"].strip()
    list_recipes = get_json_schema(_trl_tools(factory[PANTRY]())["list_recipes"])["function"]["parameters"]
    assert list_recipes["properties"]["meal_type"]["enum"] == ["breakfast", "lunch", "dinner", "snack"]
    assert list_recipes["properties"]["search"]["description"] == "Case-insensitive substring of the title"


def test_trl_reset_tools_and_get_reward_as_the_trainer_calls_them(runtime: Rollouts) -> None:
    make = environment_factory(PANTRY, runtime=runtime)
    assert isinstance(make, type)
    keys = [EpisodeKey(PANTRY, i) for i in sorted(SOLUTIONS[PANTRY])]
    rows = dataset_rows(keys, runtime=runtime)
    assert rows[0]["prompt"][1] == {"role": "user", "content": runtime.scenario(PANTRY).task(0)}
    assert {row["environment"] for row in rows} == {PANTRY}
    environment = make()  # one instance, reused across rows as TRL does
    for row in rows:
        solution = SOLUTIONS[PANTRY][EpisodeKey.parse(row["awm_key"]).task_idx]
        assert environment.reset(**row) is None  # every column as a keyword
        tools = _trl_tools(environment)
        for call in solution.calls:
            text = tools[call.tool](**call.arguments)
            assert isinstance(text, str)
            assert not text.startswith("Error"), text
        tools["submit_answer"](answer=solution.final_answer or "Done.")
        assert reward_from_environments([None], [environment]) == [1.0]
        assert environment.get_reward() == 1.0  # idempotent
    environment.reset(**rows[0])
    assert _trl_tools(environment)["get_recipe"](recipe_id=99999).startswith("Error: ")  # a mistake is text
    environment.reset(**rows[1])  # the unfinished episode is released, not leaked
    assert environment.get_reward() == 0.0
    episode = episode_of(environment)
    assert episode is not None
    assert episode.outcome is not None
    assert episode.outcome.result == "others"


# -- verl --------------------------------------------------------------------------------------

CHAT_TEMPLATE = (
    "{% if messages and messages[0].role == 'system' %}{{ '<|im_start|>system\\n' + messages[0].content }}"
    "{% if tools %}{{ '\\n\\n# Tools\\n<tools>' }}{% for tool in tools %}{{ '\\n' + (tool | tojson) }}{% endfor %}"
    "{{ '\\n</tools>' }}{% endif %}{{ '<|im_end|>\\n' }}{% endif %}"
    "{% for message in messages %}{% if message.role in ['user', 'assistant', 'tool'] %}"
    "{{ '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>\\n' }}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


def _tokenizer() -> PreTrainedTokenizerFast:
    """A byte-level tokenizer (every byte a token, no merges) with special chat tokens."""
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    core = Tokenizer(models.BPE(vocab={c: i for i, c in enumerate(alphabet)}, merges=[]))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    core.decoder = decoders.ByteLevel()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core, eos_token="<|im_end|>", pad_token="<|im_end|>",
        additional_special_tokens=["<|im_start|>"],
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


class ScriptedServerManager:
    """verl's AsyncLLMServerManager as the loop sees it: token ids in, a TokenOutput out."""

    def __init__(self, tokenizer: PreTrainedTokenizerFast, solutions: dict[str, Solution]) -> None:
        self.tokenizer = tokenizer
        self.solutions = solutions
        self.requests: list[str] = []

    async def generate(self, request_id: str, *, prompt_ids: list[int], sampling_params: dict[str, Any],
                       image_data: Any = None) -> Any:
        text = self.tokenizer.decode(prompt_ids, skip_special_tokens=False)
        self.requests.append(request_id)
        task = text.split("<|im_start|>user\n", 1)[1].split("<|im_end|>", 1)[0]
        turn = text.count("<|im_start|>assistant\n") - 1
        solution = self.solutions[task]
        if turn < len(solution.calls):
            call = solution.calls[turn]
            reply = f'<tool_call>\n{json.dumps({"name": call.tool, "arguments": call.arguments})}\n</tool_call>'
        else:
            reply = solution.final_answer or "Done: the task is complete."
        ids = self.tokenizer.encode(reply + "<|im_end|>", add_special_tokens=False)
        return SimpleNamespace(token_ids=ids, log_probs=[-0.5] * len(ids))


def test_verl_agent_loop_runs_a_batch_as_the_agent_loop_worker_does(
    runtime: Rollouts, solutions_by_task: dict[str, Solution],
) -> None:
    tokenizer = _tokenizer()
    server = ScriptedServerManager(tokenizer, solutions_by_task)
    config = SimpleNamespace(
        actor_rollout_ref=SimpleNamespace(rollout=SimpleNamespace(
            prompt_length=32768, response_length=32768,
            multi_turn=SimpleNamespace(max_assistant_turns=10, max_parallel_calls=1, max_tool_response_length=256))),
        data=SimpleNamespace(apply_chat_template_kwargs={}))
    keys = [EpisodeKey(PANTRY, i) for i in sorted(SOLUTIONS[PANTRY])]
    rows = verl_rows(keys, runtime=runtime)
    AWMAgentLoop.runtime = runtime

    async def worker() -> list[Any]:
        async def one(row: dict[str, Any]) -> Any:
            kwargs = {**row, "raw_prompt": row["prompt"]}
            kwargs.pop("prompt")
            loop = AWMAgentLoop(trainer_config=SimpleNamespace(config=config), server_manager=server,
                                tokenizer=tokenizer, processor=None)
            return loop, await loop.run({"temperature": 1.0, "top_p": 1.0}, **kwargs)

        return list(await asyncio.gather(*(one(row) for row in rows)))  # the whole batch at once

    try:
        results = asyncio.run(worker())
    finally:
        AWMAgentLoop.runtime = None
    for (loop, output), key in zip(results, keys, strict=True):
        solution = SOLUTIONS[PANTRY][key.task_idx]
        assert output.reward_score == 1.0
        assert output.num_turns == 2 * len(solution.calls) + 2
        assert len(output.response_ids) == len(output.response_mask) == len(output.response_logprobs)
        assert loop.tool_schemas == runtime.scenario(PANTRY).openai_tools()
        assert set(loop.tools) == set(runtime.scenario(PANTRY).tool_names())
        model = [t for t, m in zip(output.response_ids, output.response_mask, strict=True) if m == 1]
        tool = [t for t, m in zip(output.response_ids, output.response_mask, strict=True) if m == 0]
        assert tokenizer.decode(model, skip_special_tokens=True).count("<tool_call>") == len(solution.calls)
        tool_text = tokenizer.decode(tool, skip_special_tokens=False)
        assert tool_text.count("<|im_start|>tool\n") == len(solution.calls)
        for message in tool_text.split("<|im_start|>tool\n")[1:]:  # cut to 256 characters, as verl does
            assert len(message.split("<|im_end|>")[0]) <= 256 + len("...(truncated)...")
        assert output.extra_fields["awm"]["result"] == "complete"
        assert tokenizer.decode(output.prompt_ids).count('"name": "list_recipes"') == 1  # tools in the prompt


# -- the OpenAI-client loop ----------------------------------------------------------------------


@pytest.mark.parametrize("protocol", ["native", "awm"])
def test_openai_loop_helper_against_the_scripted_server(
    runtime: Rollouts, solutions_by_task: dict[str, Solution], protocol: str,
) -> None:
    async def run_all(url: str) -> list[float]:
        rewards = []
        for idx in sorted(SOLUTIONS[PANTRY]):
            episode = runtime.episode(EpisodeKey(PANTRY, idx), protocol=protocol)
            result, outcome = await run_openai_loop(episode, LLMConfig(model="scripted", api_url=url))
            assert result.end_reason == "answer"
            # every MCP call went through the episode (awm's list_tools is answered from the catalog)
            assert len(episode.trajectory) == result.tool_calls - (protocol == "awm")
            rewards.append(outcome.reward)
        return rewards

    with ScriptedModel(replay(solutions_by_task, native=protocol == "native")) as model:
        assert asyncio.run(run_all(model.url)) == [1.0] * len(SOLUTIONS[PANTRY])
        first = model.chats()[0]
    if protocol == "native":
        assert {t["function"]["name"] for t in first["tools"]} == set(runtime.scenario(PANTRY).tool_names())
    else:
        assert "tools" not in first
        assert first["messages"][0]["content"].startswith("You are working inside an MCP")
