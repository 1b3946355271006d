"""A chat-completions tool loop against an `Episode`, with any OpenAI-compatible client.

    from awm.agent.adapters.openai_loop import run_openai_loop

    async with rollouts().episode(key, protocol="native") as episode:
        result, outcome = await run_openai_loop(episode, LLMConfig(model="my-policy", api_url=URL))

It is `awm agent`'s own loop (`awm.agent.loop.run_episode`, either protocol, the same
trajectory and end reasons) with the episode's MCP session as its tools, then the episode is
graded with the loop's final answer. For trainers that capture tokens at an OpenAI-compatible
proxy (rLLM, ART, TRL's harness path): point `llm.api_url` at the proxy.
"""

from __future__ import annotations

from typing import Any

import openai
from mcp.types import Tool

from awm.agent.llm import LLMConfig
from awm.agent.loop import EpisodeResult, McpTools, run_episode
from awm.agent.rollout import Episode, Outcome
from awm.core.errors import EnvUnavailable

__all__ = ["EpisodeTools", "run_openai_loop"]


class EpisodeTools(McpTools):
    """`McpTools` over an episode: the loop's calls go through the episode (and its trajectory)."""

    def __init__(self, episode: Episode) -> None:
        # no session of its own: every call goes through the episode's session
        super().__init__(None, timeout_s=episode.rollouts.config.tool_timeout_s)  # type: ignore[arg-type]
        self.episode = episode

    async def tools(self) -> list[Tool]:
        return [Tool.model_validate(t) for t in self.episode.entry.mcp_tools()]

    async def call(self, name: str, arguments: dict[str, Any]) -> tuple[str, bool]:
        return await self.episode.acall_tool(name, arguments)


async def run_openai_loop(
    episode: Episode,
    llm: LLMConfig,
    *,
    client: openai.AsyncOpenAI | None = None,
    max_iterations: int = 30,
) -> tuple[EpisodeResult, Outcome]:
    """Run the episode's task with the model behind `llm` (the episode's protocol and system
    prompt), then grade the final answer; the episode is finished either way.

    Raises:
        EnvUnavailable: the environment stopped answering (the lease is discarded).
    """
    await episode.astart()
    own = client is None
    client = client or llm.client()
    try:
        result = await run_episode(client, llm, EpisodeTools(episode), episode.task,
                                   protocol_name=episode.protocol, max_iterations=max_iterations,
                                   system_prompt=episode.system_text())
    finally:
        if own:
            await client.close()
    if result.end_reason == "env_error":
        await episode.aabort()
        raise EnvUnavailable(result.error or "the environment stopped answering", scenario=episode.key.scenario)
    return result, await episode.afinish(result.final_answer)
