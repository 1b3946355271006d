"""Episodes plugged into trainers and agent loops, each adapter in its own module.

- `awm.agent.adapters.trl`: TRL's ``GRPOTrainer(environment_factory=...)``.
- `awm.agent.adapters.verl`: an agent loop of verl's ``AgentLoopBase`` shape (``agent_name: awm_agent``).
- `awm.agent.adapters.openai_loop`: a chat-completions tool loop with any OpenAI-compatible client.

Importing this package imports none of them (nor TRL, verl or transformers).
"""

__all__: list[str] = []
