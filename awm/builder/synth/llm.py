"""LLM access for `awm gen`: any OpenAI-compatible server through the official `openai` client.

One `LLMClient` serves a whole run, from many threads:

* **bounded concurrency**: at most `concurrency` requests in flight (a semaphore; cache hits
  do not take a slot);
* **retries with backoff** on transient faults only (connection errors, timeouts, 408, 409,
  429 and 5xx), exponential with jitter and honouring `Retry-After`; anything else (a bad
  key, an unknown model) fails at once with `SynthesisError`;
* **a per-request timeout** (`timeout_s`);
* **token accounting** per stage: requests, cache hits, prompt and completion tokens, retries;
* **the response cache** (`awm.builder.synth.cache`): a request already answered is replayed.

Settings come from keyword arguments first, then the environment (`AWM_LLM_*`, with the
`openai` client's own `OPENAI_BASE_URL` / `OPENAI_API_KEY` as fallbacks):

    AWM_LLM_BASE_URL=http://localhost:8000/v1 AWM_LLM_MODEL=Qwen/Qwen2.5-7B-Instruct awm gen all ...
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Self

import openai
from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from awm.builder.synth.cache import ResponseCache, request_key
from awm.core.errors import SynthesisError

__all__ = ["LLMClient", "LLMSettings", "Reply", "StageUsage", "Usage"]

log = logging.getLogger("awm")

_TRANSIENT_STATUS = {408, 409, 429}
_MAX_BACKOFF_S = 60.0


class LLMSettings(BaseSettings):
    """Where the model is and how to talk to it (environment prefix `AWM_LLM_`).

    Example:
        >>> LLMSettings(model="gpt-4.1-mini", base_url="http://localhost:8000/v1").concurrency
        4
    """

    model_config = SettingsConfigDict(env_prefix="AWM_LLM_", extra="ignore", populate_by_name=True)

    model: str | None = None
    base_url: str | None = Field(default=None, validation_alias=AliasChoices("AWM_LLM_BASE_URL", "OPENAI_BASE_URL", "base_url"))
    api_key: str | None = Field(default=None, validation_alias=AliasChoices("AWM_LLM_API_KEY", "OPENAI_API_KEY", "api_key"))
    # Azure OpenAI's classic endpoints need an api-version; with it set, `base_url` is the
    # resource endpoint (https://<name>.openai.azure.com) and `model` the deployment.
    api_version: str | None = None
    embedding_model: str | None = None
    # Where the embedding model is served, when not beside the chat model (vLLM serves one
    # model per server); the key is the same.
    embedding_base_url: str | None = None
    temperature: float = 0.7
    max_tokens: int | None = None
    timeout_s: float = 300.0
    max_retries: int = 5
    backoff_s: float = 2.0  # first retry waits about this long, then doubles
    concurrency: int = 4
    json_mode: bool = False  # send response_format={"type": "json_object"} for JSON replies


@dataclass
class StageUsage:
    """What one stage (or a whole run) cost."""

    requests: int = 0  # answered HTTP requests (retries of one call count once)
    cache_hits: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    retries: int = 0  # transient failures that were retried
    failures: int = 0  # calls that failed for good


@dataclass
class Usage:
    """Token and request accounting, per stage; safe to share between threads."""

    by_stage: dict[str, StageUsage] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, stage: str, **counts: int) -> None:
        with self._lock:
            entry = self.by_stage.setdefault(stage, StageUsage())
            for name, value in counts.items():
                setattr(entry, name, getattr(entry, name) + value)

    def total(self) -> StageUsage:
        with self._lock:
            out = StageUsage()
            for entry in self.by_stage.values():
                for name, value in asdict(entry).items():
                    setattr(out, name, getattr(out, name) + value)
            return out

    def as_dict(self) -> dict[str, dict[str, int]]:
        with self._lock:
            return {stage: asdict(u) for stage, u in sorted(self.by_stage.items())}


@dataclass(frozen=True)
class Reply:
    """One chat completion's text and what it cost."""

    text: str
    finish_reason: str | None
    prompt_tokens: int
    completion_tokens: int
    cached: bool


def _is_transient(exc: Exception) -> bool:
    if isinstance(exc, openai.APIConnectionError):  # includes APITimeoutError
        return True
    if isinstance(exc, openai.APIStatusError):
        return exc.status_code in _TRANSIENT_STATUS or exc.status_code >= 500
    return False


def _retry_after(exc: Exception) -> float | None:
    response = getattr(exc, "response", None)
    value = response.headers.get("retry-after") if response is not None else None
    try:
        return min(float(value), _MAX_BACKOFF_S) if value is not None else None
    except ValueError:
        return None


def _describe(exc: Exception) -> str:
    if isinstance(exc, openai.APIStatusError):
        body = exc.body
        message = body.get("message") if isinstance(body, dict) else None  # the server's own words
        return f"HTTP {exc.status_code}: {message or exc.message}"
    return f"{type(exc).__name__}: {exc}"


class LLMClient:
    """Chat completions and embeddings with concurrency bound, retries, timeout, cache, accounting.

    Args:
        settings: model and endpoint; `LLMSettings()` (the environment) by default.
        cache: the response cache; None disables caching.
        usage: where to count requests and tokens (a new `Usage` by default).
        sleep: how to wait between retries (tests pass a fake).

    Raises:
        SynthesisError: no model configured.

    Example:
        >>> llm = LLMClient(LLMSettings(model="m", base_url="http://127.0.0.1:9/v1"), cache=None)
        >>> llm.settings.model
        'm'
    """

    def __init__(
        self,
        settings: LLMSettings | None = None,
        *,
        cache: ResponseCache | None = None,
        usage: Usage | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.settings = settings or LLMSettings()
        if not self.settings.model:
            raise SynthesisError(
                "no model configured: pass --model or set AWM_LLM_MODEL (and AWM_LLM_BASE_URL for a "
                "server other than OpenAI's)"
            )
        self.cache = cache
        self.usage = usage or Usage()
        self._sleep = sleep
        self._slots = threading.BoundedSemaphore(max(1, self.settings.concurrency))
        self._client: openai.OpenAI | None = None
        self._embedding_client: openai.OpenAI | None = None
        self._client_lock = threading.Lock()

    @property
    def model(self) -> str:
        return str(self.settings.model)

    def _openai(self) -> openai.OpenAI:
        # Made on first real request: a fully cached run needs neither a key nor a server.
        with self._client_lock:
            if self._client is None:
                s = self.settings
                key = s.api_key or ("EMPTY" if s.base_url else None)  # vLLM & co. accept any key
                if s.api_version:
                    if not s.base_url:
                        raise SynthesisError("AWM_LLM_API_VERSION is set (Azure) but no endpoint: set AWM_LLM_BASE_URL")
                    self._client = openai.AzureOpenAI(
                        azure_endpoint=s.base_url, api_key=key, api_version=s.api_version,
                        timeout=s.timeout_s, max_retries=0,
                    )
                else:
                    try:
                        self._client = openai.OpenAI(base_url=s.base_url, api_key=key, timeout=s.timeout_s, max_retries=0)
                    except openai.OpenAIError as exc:
                        raise SynthesisError(f"cannot create the LLM client: {exc}; set AWM_LLM_API_KEY") from exc
            return self._client

    def _embedder(self) -> openai.OpenAI:
        s = self.settings
        if not s.embedding_base_url:
            return self._openai()
        with self._client_lock:
            if self._embedding_client is None:
                key = s.api_key or "EMPTY"
                self._embedding_client = openai.OpenAI(base_url=s.embedding_base_url, api_key=key,
                                                       timeout=s.timeout_s, max_retries=0)
            return self._embedding_client

    def close(self) -> None:
        """Close the HTTP connections (the client stays usable: a new one is made on demand)."""
        with self._client_lock:
            for client in (self._client, self._embedding_client):
                if client is not None:
                    client.close()
            self._client = self._embedding_client = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def chat(
        self,
        messages: list[dict[str, str]],
        *,
        stage: str,
        scenario: str | None = None,
        json_reply: bool = False,
    ) -> Reply:
        """One chat completion (from the cache when this exact request was answered before).

        Args:
            messages: OpenAI-style `{"role", "content"}` messages.
            stage: the pipeline stage, for accounting and error messages.
            scenario: the scenario id, for error messages.
            json_reply: the reply must be one JSON object; sends `response_format` when the
                settings enable `json_mode`.

        Raises:
            SynthesisError: the request failed for good (after retries of transient faults).
        """
        s = self.settings
        request: dict[str, Any] = {"model": self.model, "messages": messages, "temperature": s.temperature}
        if s.max_tokens:
            request["max_tokens"] = s.max_tokens
        if json_reply and s.json_mode:
            request["response_format"] = {"type": "json_object"}
        key = request_key("chat", request)
        cached = self.cache.get(key) if self.cache is not None else None
        if cached is not None and isinstance(cached.get("text"), str):
            self.usage.add(stage, cache_hits=1)
            return Reply(cached["text"], cached.get("finish_reason"), 0, 0, cached=True)

        completion = self._call(lambda: self._openai().chat.completions.create(**request), stage, scenario, "chat")
        choice = completion.choices[0] if completion.choices else None
        text = (choice.message.content if choice and choice.message else None) or ""
        usage = completion.usage
        reply = Reply(
            text=text,
            finish_reason=choice.finish_reason if choice else None,
            prompt_tokens=usage.prompt_tokens if usage else 0,
            completion_tokens=usage.completion_tokens if usage else 0,
            cached=False,
        )
        self.usage.add(stage, prompt_tokens=reply.prompt_tokens, completion_tokens=reply.completion_tokens)
        if self.cache is not None and choice is not None:
            self.cache.put(key, request, {
                "text": reply.text, "finish_reason": reply.finish_reason,
                "prompt_tokens": reply.prompt_tokens, "completion_tokens": reply.completion_tokens,
            })
        return reply

    def embed(self, texts: list[str], *, stage: str = "scenario") -> list[list[float]]:
        """Embedding vectors of `texts` with the configured embedding model (cached as a batch).

        Raises:
            SynthesisError: no embedding model configured, or the request failed for good.
        """
        if not self.settings.embedding_model:
            raise SynthesisError("no embedding model configured (--embedding-model or AWM_LLM_EMBEDDING_MODEL)")
        request: dict[str, Any] = {"model": self.settings.embedding_model, "input": texts}
        key = request_key("embeddings", request)
        cached = self.cache.get(key) if self.cache is not None else None
        if cached is not None and isinstance(cached.get("vectors"), list):
            self.usage.add(stage, cache_hits=1)
            return [list(map(float, v)) for v in cached["vectors"]]
        response = self._call(lambda: self._embedder().embeddings.create(**request), stage, None, "embeddings")
        vectors = [list(map(float, d.embedding)) for d in sorted(response.data, key=lambda d: d.index)]
        if len(vectors) != len(texts):
            raise SynthesisError(f"stage {stage}: the embedding server returned {len(vectors)} vectors for {len(texts)} texts")
        prompt_tokens = response.usage.prompt_tokens if response.usage else 0
        self.usage.add(stage, prompt_tokens=prompt_tokens)
        if self.cache is not None:
            self.cache.put(key, request, {"vectors": vectors})
        return vectors

    def _call(self, send: Callable[[], Any], stage: str, scenario: str | None, what: str) -> Any:
        """Send with retries on transient faults; count one request per answered call."""
        s = self.settings
        where = f"scenario {scenario!r}, stage {stage}" if scenario else f"stage {stage}"
        attempt = 0
        while True:
            attempt += 1
            try:
                with self._slots:
                    result = send()
                self.usage.add(stage, requests=1)
                return result
            except openai.OpenAIError as exc:
                if not _is_transient(exc) or attempt > s.max_retries:
                    self.usage.add(stage, failures=1)
                    tries = f" after {attempt} tries" if attempt > 1 else ""
                    raise SynthesisError(
                        f"{where}: the LLM {what} request to {s.base_url or 'the OpenAI API'} failed{tries}: "
                        f"{_describe(exc)}", scenario=scenario,
                    ) from exc
                delay = _retry_after(exc)
                if delay is None:
                    delay = min(_MAX_BACKOFF_S, s.backoff_s * 2 ** (attempt - 1))
                    delay += random.uniform(0, s.backoff_s)  # jitter: parallel retries spread out
                self.usage.add(stage, retries=1)
                log.warning("%s: transient LLM error (%s); retry %d/%d in %.1fs", where, _describe(exc),
                            attempt, s.max_retries, delay)
                self._sleep(delay)
