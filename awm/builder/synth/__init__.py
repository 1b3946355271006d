"""`awm gen`: the LLM pipeline that writes new environments in the AWM format.

Stages (one module each): `scenario`, `task`, `db`, `sample`, `spec`, `env`, `verifier`; the
client (`llm`), its response cache (`cache`), reply parsing (`replies`), the feedback loop
(`dialogue`), checks (`validation`), the environment probe (`probe`), the output folder
(`state`) and the orchestration (`pipeline`).

    from awm.builder.synth import STAGES, GenOptions, LLMClient, LLMSettings, ResponseCache, generate

    llm = LLMClient(LLMSettings(model="Qwen/Qwen2.5-Coder-32B-Instruct", base_url="http://localhost:8000/v1"),
                    cache=ResponseCache("~/.cache/awm/llm"))
    report = generate("out/", stages=STAGES, llm=llm, seeds="seeds.jsonl", options=GenOptions(scenarios=5))
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from awm.builder.synth.base import STAGES, Draft, Event, GenOptions, StageContext, StageResult
    from awm.builder.synth.cache import ResponseCache, request_key
    from awm.builder.synth.llm import LLMClient, LLMSettings, Reply, Usage
    from awm.builder.synth.pipeline import GenReport, ScenarioReport, generate
    from awm.builder.synth.probe import DockerProber, ProbeResult, ProbeRun
    from awm.builder.synth.state import OutputFolder

__all__ = [
    "STAGES",
    "DockerProber",
    "Draft",
    "Event",
    "GenOptions",
    "GenReport",
    "LLMClient",
    "LLMSettings",
    "OutputFolder",
    "ProbeResult",
    "ProbeRun",
    "Reply",
    "ResponseCache",
    "ScenarioReport",
    "StageContext",
    "StageResult",
    "Usage",
    "generate",
    "request_key",
]

# Names are imported on first use: `openai` and `docker` are not needed to list the CLI's
# commands, and importing them costs about a second.
_HOMES = {
    "STAGES": "base", "Draft": "base", "Event": "base", "GenOptions": "base", "StageContext": "base",
    "StageResult": "base", "ResponseCache": "cache", "request_key": "cache", "LLMClient": "llm",
    "LLMSettings": "llm", "Reply": "llm", "Usage": "llm", "GenReport": "pipeline", "ScenarioReport": "pipeline",
    "generate": "pipeline", "DockerProber": "probe", "ProbeResult": "probe", "ProbeRun": "probe",
    "OutputFolder": "state",
}


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module 'awm.builder.synth' has no attribute {name!r}")
    return getattr(importlib.import_module(f"awm.builder.synth.{_HOMES[name]}"), name)
