"""TRL's ``environment_factory``: one class per scenario whose methods are the scenario's tools.

    from awm.agent.adapters.trl import environment_factory, dataset_rows

    factory = environment_factory(["pantrypal_recipe_planner", "acme_helpdesk_support_tickets"])
    rows = dataset_rows(keys)   # prompt (system + task), awm_key, environment (the factory entry)
    GRPOTrainer(..., train_dataset=Dataset.from_list(rows), environment_factory=factory,
                reward_funcs=reward_from_environments)

What TRL does with it (TRL >= 1.10, ``GRPOTrainer``/``AsyncGRPOTrainer``): it calls the factory
(zero arguments) for environment instances and reuses them across batches; it probes every public
method but `reset` as a tool once, building the schema from its type hints and Google-style
docstring with ``transformers.utils.get_json_schema`` (method name = tool name); before each
episode it calls ``reset(**row)`` with every dataset column (a returned string is appended to the
last user message; here the prompt already holds the task, so it returns None); the model's tool
calls call the methods, whose return value (text) the model reads; the reward is read with
``get_reward()``. Tool sets differ per scenario, so a dict ``{scenario: class}`` gives each its
entry and every row names its entry in the ``environment`` column.

`reset` leases an environment (waiting with back-pressure); `get_reward` grades and releases it
(TRL has no close hook). An unfinished earlier episode of the instance is aborted by `reset`.
`submit_answer` is offered by default because ``get_reward`` receives no completion: the answer
reaches the verifier only through it. Tool names that are not Python identifiers are renamed
(``python_identifier``) and mapped back.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from awm.agent.catalog import EpisodeKey, python_identifier, typed_tool
from awm.agent.rollout import SUBMIT_ANSWER_TOOL, Episode, Outcome, Rollouts, rollouts
from awm.core.errors import InvalidInput

__all__ = ["AWMEnvironment", "dataset_rows", "environment_factory", "episode_of", "outcome_of",
           "reward_from_environments"]

_RESERVED = ("reset", "get_reward")


class AWMEnvironment:
    """The base of the generated per-scenario classes (tool methods are added by `environment_factory`)."""

    scenario: ClassVar[str]
    _runtime: ClassVar[Rollouts | None] = None  # None: this process's shared rollouts
    _submit_answer: ClassVar[bool] = True

    def __init__(self) -> None:
        self._episode: Episode | None = None

    def reset(self, **row: Any) -> str | None:
        """Start the episode of this row (its ``awm_key``, or ``task_idx`` for this scenario)."""
        if self._episode is not None and self._episode.outcome is None:
            self._episode.abort()
        key = EpisodeKey.from_row(row, scenario=self.scenario)
        if key.scenario != self.scenario:
            raise InvalidInput(f"row {key} was given to the environment of {self.scenario!r}; "
                               f"name {key.scenario!r} in its 'environment' column")
        runtime = self._runtime or rollouts()
        self._episode = runtime.episode(key, protocol="native", submit_answer=self._submit_answer)
        self._episode.start()
        return None

    def get_reward(self) -> float:
        """Grade the episode and release its environment (idempotent)."""
        if self._episode is None:
            raise RuntimeError(f"{type(self).__name__}: get_reward before reset")
        return self._episode.finish().reward

    def _tool(self, name: str, arguments: dict[str, Any]) -> str:
        if self._episode is None:
            raise RuntimeError(f"{type(self).__name__}: tool {name!r} called before reset")
        return self._episode.call(name, arguments)


def _environment_class(scenario: str, runtime: Rollouts | None, submit_answer: bool) -> type[AWMEnvironment]:
    entry = (runtime or rollouts()).scenario(scenario)
    tools = list(entry.tools) + ([SUBMIT_ANSWER_TOOL] if submit_answer else [])
    taken: list[str] = list(_RESERVED)
    namespace: dict[str, Any] = {"scenario": scenario, "_runtime": runtime, "_submit_answer": submit_answer,
                                 "__module__": __name__}
    for tool in tools:
        name = python_identifier(str(tool["name"]), taken)
        taken.append(name)
        namespace[name] = typed_tool(tool, AWMEnvironment._tool, name=name, method=True)
    title = "".join(part.capitalize() for part in scenario.split("_"))
    return type(f"AWM{title}Environment", (AWMEnvironment,), namespace)


def environment_factory(
    scenarios: str | Sequence[str], *, runtime: Rollouts | None = None, submit_answer: bool = True,
) -> type[AWMEnvironment] | dict[str, type[AWMEnvironment]]:
    """For one scenario, a class (TRL calls it with no arguments); for several, ``{scenario: class}``.

    Reads each scenario's tools from the catalog (no lease). `runtime`: the `Rollouts` episodes
    use (this process's shared one when None, made lazily in each process).
    """
    if isinstance(scenarios, str):
        return _environment_class(scenarios, runtime, submit_answer)
    return {s: _environment_class(s, runtime, submit_answer) for s in scenarios}


def dataset_rows(keys: Sequence[EpisodeKey | str | Mapping[str, Any]], *, runtime: Rollouts | None = None,
                 submit_answer: bool = True) -> list[dict[str, Any]]:
    """Dataset rows for the keys: ``prompt`` (system prompt and task), ``awm_key``, ``environment``."""
    rows = []
    for key in map(EpisodeKey.parse, keys):
        episode = (runtime or rollouts()).episode(key, protocol="native", submit_answer=submit_answer)
        rows.append({"prompt": episode.messages(), "awm_key": str(key), "environment": key.scenario})
    return rows


def episode_of(environment: AWMEnvironment) -> Episode | None:
    """The instance's current episode (its trajectory and, once graded, its outcome)."""
    return environment._episode


def reward_from_environments(completions: Sequence[Any], environments: Sequence[AWMEnvironment],
                             **kwargs: Any) -> list[float]:
    """A TRL reward function: each environment's `get_reward()`."""
    return [environment.get_reward() for environment in environments]


def outcome_of(environment: AWMEnvironment) -> Outcome | None:
    """The instance's last outcome (None before its episode is graded)."""
    episode = environment._episode
    return episode.outcome if episode is not None else None
