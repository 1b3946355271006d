"""LLM access for `awm gen`: any OpenAI-compatible server (or Azure OpenAI) through the `openai` client.

One `LLMClient` serves a whole run, from many threads:

* **bounded concurrency**: at most `concurrency` requests in flight (a semaphore; cache hits
  do not take a slot);
* **the SDK's own retries and timeout**: `max_retries` retries of connection errors, timeouts,
  408, 409, 429 and 5xx, with the SDK's exponential backoff and the server's `Retry-After`;
  anything else (a bad key, an unknown model) fails at once with `SynthesisError`;
* **reasoning-model parameters**: models named `o1`, `o3`, `o4-mini`, `gpt-5`... get
  `max_completion_tokens` instead of `max_tokens` and temperature 1; any other model whose
  server answers 400 naming a parameter (`max_tokens`, `temperature`, `response_format`...) is
  asked again without it (or with the accepted form), with a warning, and the client remembers;
* **token accounting** per stage: requests, cache hits, prompt and completion tokens, retries;
* **the response cache** (`awm.builder.synth.cache`): a request already answered is replayed;
  `forget` drops the replies of a request that ended in failure, so a rerun asks again.

Settings: keyword arguments (the CLI's flags) first, then the environment. For each setting the
first variable set wins, in the order of `LLMSettings`' aliases: the project's `AWM_LLM_*`, then
the original pipeline's (`AWM_SYN_OVERRIDE_MODEL`, `AWM_SYN_LLM_PROVIDER`, `AZURE_ENDPOINT_URL`,
`AZURE_OPENAI_API_KEY`, `EMBEDDING_OPENAI_API_KEY`, `EMBEDDING_OPENAI_BASE_URL`), then the
`openai` client's own (`OPENAI_BASE_URL`, `OPENAI_API_KEY`).

    AWM_LLM_BASE_URL=http://localhost:8000/v1 AWM_LLM_MODEL=Qwen/Qwen2.5-7B-Instruct awm gen all ...
"""

from __future__ import annotations

import contextlib
import logging
import re
import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from functools import partial
from typing import Any, Literal, Self

import httpx
import openai
from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from awm.builder.synth.cache import ResponseCache, request_key
from awm.core.errors import SynthesisError

__all__ = ["DEFAULT_AZURE_API_VERSION", "LLMClient", "LLMSettings", "Reply", "StageUsage", "Usage",
           "is_reasoning_model"]

log = logging.getLogger("awm")

DEFAULT_AZURE_API_VERSION = "2025-04-01-preview"  # the first with max_completion_tokens for o-series and gpt-5
DEFAULT_EMBEDDING_MODEL = "text-embedding-3-small"  # when only an embedding key or endpoint is set
_REASONING = re.compile(r"^(o\d|gpt-5)")
# Optional request parameters a server may refuse for a model; each has a fallback (below).
_ADJUSTABLE = ("max_tokens", "max_completion_tokens", "temperature", "response_format")
_MAX_ADJUSTMENTS = len(_ADJUSTABLE)


def _env(*names: str) -> Any:
    return Field(default=None, validation_alias=AliasChoices(*names))


class LLMSettings(BaseSettings):
    """Where the model is and how to talk to it (see the module docstring for the precedence).

    Example:
        >>> LLMSettings(model="gpt-4.1-mini", base_url="http://localhost:8000/v1").concurrency
        4
    """

    model_config = SettingsConfigDict(env_prefix="AWM_LLM_", extra="ignore", populate_by_name=True)

    model: str | None = _env("model", "AWM_LLM_MODEL", "AWM_SYN_OVERRIDE_MODEL")
    provider: Literal["openai", "azure"] | None = _env("provider", "AWM_LLM_PROVIDER", "AWM_SYN_LLM_PROVIDER")
    base_url: str | None = _env("base_url", "AWM_LLM_BASE_URL", "OPENAI_BASE_URL")
    api_key: str | None = _env("api_key", "AWM_LLM_API_KEY", "OPENAI_API_KEY")
    # Azure OpenAI: the resource endpoint (https://<name>.openai.azure.com), its key, and the
    # api-version; `model` is the deployment. Setting an api-version alone also selects Azure.
    azure_endpoint: str | None = _env("azure_endpoint", "AZURE_ENDPOINT_URL", "AZURE_OPENAI_ENDPOINT")
    azure_api_key: str | None = _env("azure_api_key", "AZURE_OPENAI_API_KEY")
    api_version: str | None = _env("api_version", "AWM_LLM_API_VERSION", "OPENAI_API_VERSION")
    embedding_model: str | None = _env("embedding_model", "AWM_LLM_EMBEDDING_MODEL", "EMBEDDING_MODEL")
    # The embedding model's own server and key (a local chat model with a hosted embedding
    # model). Unset: beside the chat model; a key without a URL means OpenAI's API.
    embedding_base_url: str | None = _env("embedding_base_url", "AWM_LLM_EMBEDDING_BASE_URL",
                                          "EMBEDDING_OPENAI_BASE_URL")
    embedding_api_key: str | None = _env("embedding_api_key", "AWM_LLM_EMBEDDING_API_KEY", "EMBEDDING_OPENAI_API_KEY")
    temperature: float = 0.7
    max_tokens: int | None = None
    timeout_s: float = 300.0
    max_retries: int = 5
    concurrency: int = 4
    json_mode: bool = False  # send response_format={"type": "json_object"} for JSON replies

    @property
    def is_azure(self) -> bool:
        return self.provider == "azure" or (self.provider is None and self.api_version is not None)

    @property
    def embeddings(self) -> str | None:
        """The embedding model in use (None: near-duplicates are found by the lexical rule)."""
        if self.embedding_model:
            return self.embedding_model
        return DEFAULT_EMBEDDING_MODEL if (self.embedding_api_key or self.embedding_base_url) else None

    def endpoint(self) -> str:
        """Where chat requests go, for messages."""
        if self.is_azure:
            return self.azure_endpoint or self.base_url or "an unset Azure endpoint"
        return self.base_url or "the OpenAI API"


def is_reasoning_model(model: str) -> bool:
    """Whether `model` is a reasoning model by name (o-series, gpt-5...): no temperature, no max_tokens.

    Example:
        >>> [is_reasoning_model(m) for m in ("gpt-5-mini", "o3", "openai/o4-mini", "gpt-4.1", "Qwen/QwQ-32B")]
        [True, True, True, False, False]
    """
    return bool(_REASONING.match(model.rsplit("/", 1)[-1].lower()))


@dataclass
class StageUsage:
    """What one stage (or a whole run) cost."""

    requests: int = 0  # answered calls (the SDK's retries of one call count once)
    cache_hits: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    retries: int = 0  # transient failures the SDK retried
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


def _describe(exc: Exception) -> str:
    if isinstance(exc, openai.APIStatusError):
        body = exc.body
        message = body.get("message") if isinstance(body, dict) else None  # the server's own words
        return f"HTTP {exc.status_code}: {message or exc.message}"
    return f"{type(exc).__name__}: {exc}"


def _rejected_parameter(exc: openai.BadRequestError, sent: dict[str, Any]) -> str | None:
    """The optional parameter a 400 names (OpenAI's `param` field, else the message), if any."""
    body = exc.body if isinstance(exc.body, dict) else {}
    param = body.get("param")
    if isinstance(param, str) and param in sent and param in _ADJUSTABLE:
        return param
    message = str(body.get("message") or exc.message)
    for name in _ADJUSTABLE:  # longest names first would matter only for prefixes; none here
        if name in sent and re.search(rf"['\"`]?\b{name}\b", message):
            return name
    return None


class _Parameters:
    """How requests to one model are shaped, learned from the server's 400s; shared by threads."""

    def __init__(self, model: str) -> None:
        reasoning = is_reasoning_model(model)
        self.tokens_param = "max_completion_tokens" if reasoning else "max_tokens"
        self.fixed_temperature: float | None = 1.0 if reasoning else None
        self.dropped: set[str] = set()
        self.lock = threading.Lock()

    def shape(self, logical: dict[str, Any]) -> dict[str, Any]:
        """The request to send for a logical request (`max_tokens` is the logical name)."""
        with self.lock:
            out = {k: v for k, v in logical.items() if k not in self.dropped}
            if "max_tokens" in out and self.tokens_param != "max_tokens":
                out[self.tokens_param] = out.pop("max_tokens")
            if "temperature" in out and self.fixed_temperature is not None:
                out["temperature"] = self.fixed_temperature
            return out

    def adjust(self, param: str, sent: dict[str, Any]) -> str | None:
        """Change the rule for `param` after the server refused it; what changed, or None if nothing can."""
        with self.lock:
            if param in ("max_tokens", "max_completion_tokens"):
                other = "max_completion_tokens" if param == "max_tokens" else "max_tokens"
                if self.tokens_param == param and other not in self.dropped:
                    self.tokens_param = other
                    return f"sending {other} instead of {param}"
                self.dropped.add("max_tokens")
                return "sending no output token limit"
            if param == "temperature":
                if sent.get("temperature") != 1.0 and self.fixed_temperature is None:
                    self.fixed_temperature = 1.0
                    return "sending temperature 1"
                self.dropped.add("temperature")
                return "sending no temperature"
            if param not in self.dropped:
                self.dropped.add(param)
                return f"sending no {param}"
            return None


class _HttpClient(openai.DefaultHttpxClient):
    """The SDK's HTTP client with its defaults, closed when dropped (as the SDK's own one is)."""

    def __del__(self) -> None:
        if not self.is_closed:
            with contextlib.suppress(Exception):  # interpreter shutdown: nothing left to do
                self.close()


class _RetryCounter:
    """Counts the SDK's retries of the call in progress on this thread (its retry-count header)."""

    def __init__(self) -> None:
        self.local = threading.local()

    def hook(self, request: httpx.Request) -> None:
        tries = int(request.headers.get("x-stainless-retry-count", "0") or 0)
        if tries:
            log.warning("transient LLM error on %s; retry %d", request.url.path, tries)
        self.local.retries = max(tries, getattr(self.local, "retries", 0))

    def reset(self) -> None:
        self.local.retries = 0

    @property
    def retries(self) -> int:
        return int(getattr(self.local, "retries", 0))


class LLMClient:
    """Chat completions and embeddings with a concurrency bound, the SDK's retries, cache, accounting.

    Args:
        settings: model and endpoint; `LLMSettings()` (the environment) by default.
        cache: the response cache; None disables caching.
        usage: where to count requests and tokens (a new `Usage` by default).

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
    ) -> None:
        self.settings = settings or LLMSettings()
        if not self.settings.model:
            raise SynthesisError(
                "no model configured: pass --model or set AWM_LLM_MODEL or AWM_SYN_OVERRIDE_MODEL (and "
                "AWM_LLM_BASE_URL for a server other than OpenAI's)"
            )
        self.cache = cache
        self.usage = usage or Usage()
        self._slots = threading.BoundedSemaphore(max(1, self.settings.concurrency))
        self._client: openai.OpenAI | None = None
        self._embedding_client: openai.OpenAI | None = None
        self._client_lock = threading.Lock()
        self._chat_params = _Parameters(self.model)
        self._retries = _RetryCounter()

    @property
    def model(self) -> str:
        return str(self.settings.model)

    def _http(self) -> httpx.Client:
        return _HttpClient(event_hooks={"request": [self._retries.hook]}, timeout=self.settings.timeout_s)

    def _openai(self) -> openai.OpenAI:
        # Made on first real request: a fully cached run needs neither a key nor a server.
        with self._client_lock:
            if self._client is None:
                s = self.settings
                common: dict[str, Any] = {"timeout": s.timeout_s, "max_retries": s.max_retries,
                                          "http_client": self._http()}
                if s.is_azure:
                    endpoint = s.azure_endpoint or s.base_url
                    if not endpoint:
                        raise SynthesisError("the provider is Azure but no endpoint is set: set AZURE_ENDPOINT_URL "
                                             "(https://<resource>.openai.azure.com)")
                    self._client = openai.AzureOpenAI(
                        azure_endpoint=endpoint, api_key=s.azure_api_key or s.api_key or "EMPTY",
                        api_version=s.api_version or DEFAULT_AZURE_API_VERSION, **common,
                    )
                else:
                    key = s.api_key or ("EMPTY" if s.base_url else None)  # vLLM & co. accept any key
                    try:
                        self._client = openai.OpenAI(base_url=s.base_url, api_key=key, **common)
                    except openai.OpenAIError as exc:
                        raise SynthesisError(f"cannot create the LLM client: {exc}; set OPENAI_API_KEY or "
                                             "AWM_LLM_API_KEY") from exc
            return self._client

    def _embedder(self) -> openai.OpenAI:
        s = self.settings
        if not (s.embedding_base_url or s.embedding_api_key):
            return self._openai()
        with self._client_lock:
            if self._embedding_client is None:
                key = s.embedding_api_key or ("EMPTY" if s.embedding_base_url else None)
                self._embedding_client = openai.OpenAI(base_url=s.embedding_base_url, api_key=key,
                                                       timeout=s.timeout_s, max_retries=s.max_retries,
                                                       http_client=self._http())
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

    def chat_request(self, messages: list[dict[str, str]], *, json_reply: bool = False) -> dict[str, Any]:
        """The logical request of a chat call: what the cache key is made of."""
        s = self.settings
        request: dict[str, Any] = {"model": self.model, "messages": messages, "temperature": s.temperature}
        if s.max_tokens:
            request["max_tokens"] = s.max_tokens
        if json_reply and s.json_mode:
            request["response_format"] = {"type": "json_object"}
        return request

    def forget(self, messages: list[dict[str, str]], *, json_reply: bool = False) -> None:
        """Drop the cached reply of a request (it led to a failure: a rerun should ask again)."""
        if self.cache is not None:
            self.cache.forget(request_key("chat", self.chat_request(messages, json_reply=json_reply)))

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
            SynthesisError: the request failed for good (after the SDK's retries of transient faults).
        """
        request = self.chat_request(messages, json_reply=json_reply)
        key = request_key("chat", request)
        cached = self.cache.get(key) if self.cache is not None else None
        if cached is not None and isinstance(cached.get("text"), str):
            self.usage.add(stage, cache_hits=1)
            return Reply(cached["text"], cached.get("finish_reason"), 0, 0, cached=True)

        completion = self._chat_call(request, stage, scenario)
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
        if self.cache is not None and choice is not None and reply.finish_reason != "length":
            self.cache.put(key, request, {
                "text": reply.text, "finish_reason": reply.finish_reason,
                "prompt_tokens": reply.prompt_tokens, "completion_tokens": reply.completion_tokens,
            })
        return reply

    def _chat_call(self, request: dict[str, Any], stage: str, scenario: str | None) -> Any:
        """Send a chat request shaped for the model; on a 400 naming a parameter, adjust and resend."""
        for _ in range(_MAX_ADJUSTMENTS + 1):
            sent = self._chat_params.shape(request)
            try:
                return self._call(partial(self._create_chat, sent), stage, scenario, "chat", raise_bad_request=True)
            except openai.BadRequestError as exc:
                param = _rejected_parameter(exc, sent)
                change = self._chat_params.adjust(param, sent) if param else None
                if change is None:
                    self.usage.add(stage, failures=1)
                    raise self._failure(exc, stage, scenario, "chat") from exc
                log.warning("the server refused `%s` for model %s (%s); %s from now on", param, self.model,
                            _describe(exc), change)
        raise SynthesisError(f"stage {stage}: the server kept refusing the request's parameters", scenario=scenario)

    def _create_chat(self, body: dict[str, Any]) -> Any:
        return self._openai().chat.completions.create(**body)

    def embed(self, texts: list[str], *, stage: str = "scenario") -> list[list[float]]:
        """Embedding vectors of `texts` with the configured embedding model (cached as a batch).

        Raises:
            SynthesisError: no embedding model configured, or the request failed for good.
        """
        model = self.settings.embeddings
        if not model:
            raise SynthesisError("no embedding model configured (--embedding-model, AWM_LLM_EMBEDDING_MODEL or "
                                 "EMBEDDING_MODEL)")
        request: dict[str, Any] = {"model": model, "input": texts}
        key = request_key("embeddings", request)
        cached = self.cache.get(key) if self.cache is not None else None
        if cached is not None and isinstance(cached.get("vectors"), list):
            self.usage.add(stage, cache_hits=1)
            return [list(map(float, v)) for v in cached["vectors"]]
        response = self._call(lambda: self._embedder().embeddings.create(**request), stage, None, "embeddings")
        vectors = [list(map(float, d.embedding)) for d in sorted(response.data, key=lambda d: d.index)]
        if len(vectors) != len(texts):
            raise SynthesisError(f"stage {stage}: the embedding server returned {len(vectors)} vectors for "
                                 f"{len(texts)} texts")
        prompt_tokens = response.usage.prompt_tokens if response.usage else 0
        self.usage.add(stage, prompt_tokens=prompt_tokens)
        if self.cache is not None:
            self.cache.put(key, request, {"vectors": vectors})
        return vectors

    def _failure(self, exc: Exception, stage: str, scenario: str | None, what: str) -> SynthesisError:
        where = f"scenario {scenario!r}, stage {stage}" if scenario else f"stage {stage}"
        tries = self._retries.retries + 1
        endpoint = self.settings.embedding_base_url if what == "embeddings" and self.settings.embedding_base_url \
            else self.settings.endpoint()
        return SynthesisError(
            f"{where}: the LLM {what} request to {endpoint} failed{f' after {tries} tries' if tries > 1 else ''}: "
            f"{_describe(exc)}", scenario=scenario,
        )

    def _call(self, send: Callable[[], Any], stage: str, scenario: str | None, what: str, *,
              raise_bad_request: bool = False) -> Any:
        """Send (the SDK retries transient faults); count one request per answered call."""
        self._retries.reset()
        try:
            with self._slots:
                result = send()
        except openai.OpenAIError as exc:
            if raise_bad_request and isinstance(exc, openai.BadRequestError):
                raise  # the caller may fix the parameters and send again
            self.usage.add(stage, failures=1, retries=self._retries.retries)
            raise self._failure(exc, stage, scenario, what) from exc
        self.usage.add(stage, requests=1, retries=self._retries.retries)
        return result
