"""The policy's endpoint: an `openai` client configured from flags and the original's variables.

    OPENAI_BASE_URL, OPENAI_API_KEY      any OpenAI-compatible server (vLLM, SGLang, OpenAI)
    AWM_SYN_OVERRIDE_MODEL               the model; it wins over --model, as in the original
    AWM_SYN_LLM_PROVIDER=azure           Azure OpenAI, with AZURE_ENDPOINT_URL, AZURE_OPENAI_API_KEY

Retries with backoff are the SDK's own (`max_retries`: connection errors, 408, 409, 429, 5xx) and
every request is bounded by `timeout_s`. How tool results go back is the original's rule
(`results_as_tool_role`), overridable.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import openai

from awm.core.errors import InvalidInput

__all__ = [
    "VLLM_EXTRA_BODY",
    "LLMConfig",
    "ResultsAs",
    "is_context_overflow",
    "is_local_vllm",
]

ResultsAs = Literal["auto", "tool", "user"]

# What the original sent to a local vLLM-style server along with tool-role results.
VLLM_EXTRA_BODY: dict[str, Any] = {
    "add_generation_prompt": True,
    "min_tokens": 16,
    "chat_template_kwargs": {"enable_thinking": True},
}

_OVERFLOW = re.compile(
    r"context[ _]length|maximum context|context window|too many tokens|prompt is too long|"
    r"reduce the length|input is too long|max_model_len",
    re.IGNORECASE,
)


def is_local_vllm(api_url: str | None) -> bool:
    """The original's rule for a local vLLM-style server: results then go back in the tool role."""
    url = api_url or ""
    return "localhost" in url and "v1" in url and "openai.azure.com" not in url


def is_context_overflow(exc: BaseException) -> bool:
    """Whether an API error says the conversation no longer fits the model's context."""
    if not isinstance(exc, openai.BadRequestError | openai.UnprocessableEntityError):
        return False
    body = exc.body if isinstance(exc.body, Mapping) else {}
    code = str(body.get("code") or getattr(exc, "code", "") or "")
    return code == "context_length_exceeded" or bool(_OVERFLOW.search(str(exc)))


@dataclass(frozen=True)
class LLMConfig:
    """Where the policy is served and how to ask it.

    Build it with `from_env` to get the original's environment variables.
    """

    model: str
    api_url: str | None = None
    api_key: str | None = None
    azure: bool = False
    api_version: str = "2024-10-21"
    temperature: float = 1.0
    max_tokens: int = 2048
    timeout_s: float = 600.0
    max_retries: int = 5
    results_as: ResultsAs = "auto"
    extra_body: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_env(
        cls,
        *,
        model: str | None = None,
        api_url: str | None = None,
        api_key: str | None = None,
        env: Mapping[str, str] | None = None,
        **kwargs: Any,
    ) -> LLMConfig:
        """Flags first, then the environment; `AWM_SYN_OVERRIDE_MODEL` wins over `model`.

        Raises:
            InvalidInput: no model named anywhere, or Azure without an endpoint.
        """
        env = os.environ if env is None else env
        azure = env.get("AWM_SYN_LLM_PROVIDER", "").lower() == "azure"
        chosen = env.get("AWM_SYN_OVERRIDE_MODEL") or model
        if not chosen:
            raise InvalidInput("no model: pass --model NAME (or set AWM_SYN_OVERRIDE_MODEL)")
        if azure:
            api_url = api_url or env.get("AZURE_ENDPOINT_URL")
            api_key = api_key or env.get("AZURE_OPENAI_API_KEY")
            if not api_url:
                raise InvalidInput("AWM_SYN_LLM_PROVIDER=azure needs AZURE_ENDPOINT_URL (or --api_url)")
        else:
            api_url = api_url or env.get("OPENAI_BASE_URL")
            api_key = api_key or env.get("OPENAI_API_KEY")
        return cls(model=chosen, api_url=api_url, api_key=api_key, azure=azure, **kwargs)

    @property
    def tool_role(self) -> bool:
        """Whether tool results go back as `role: tool` messages (else as user messages)."""
        if self.results_as == "auto":
            return is_local_vllm(self.api_url)
        return self.results_as == "tool"

    def request_extra_body(self) -> dict[str, Any] | None:
        """The extra body of every chat request: the original's vLLM fields with tool-role results."""
        body = {**(VLLM_EXTRA_BODY if self.tool_role else {}), **self.extra_body}
        return body or None

    def client(self) -> openai.AsyncOpenAI:
        """A new async client (one per event loop: its connections belong to the loop)."""
        key = self.api_key or "EMPTY"  # local servers take any key; the SDK insists on one
        if self.azure:
            return openai.AsyncAzureOpenAI(
                azure_endpoint=self.api_url or "", api_key=key, api_version=self.api_version,
                timeout=self.timeout_s, max_retries=self.max_retries,
            )
        return openai.AsyncOpenAI(base_url=self.api_url, api_key=key, timeout=self.timeout_s,
                                  max_retries=self.max_retries)
