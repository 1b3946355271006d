"""The static catalog of a trainer: episode keys, each scenario's tasks and tools, without a lease.

Trainers need the tools before any environment is leased (TRL probes tool methods at start, verl
filters prompts by their schemas), and the task travels as a small key through dataset rows,
pickles and Ray actors. AWM tools are static per image, so one look serves a whole run:

    key = EpisodeKey("pantrypal_recipe_planner", 3)          # picklable, JSON-able, str-able
    entry = Catalog().get(key.scenario)
    entry.task(key.task_idx)                                  # the task text
    entry.openai_tools()                                      # OpenAI function schemas
    entry.mcp_tools()                                         # MCP tool dicts, the server's order
    entry.awm_text()                                          # the `list_tools` text of the AWM protocol
    entry.python_tools(call)                                  # typed callables (TRL, get_json_schema)

Where the facts come from: tasks from a dataset folder (`load_catalog`) when one is given, else
from the image; tools from the image. An environment module is untrusted code and its tool
schemas exist only once it is imported, so the first look at an image starts one sandboxed
environment of it (like any other), reads ``/_awm/tasks`` and the MCP tool list, and removes it.
The answer is cached per process and on disk under ``AWM_CACHE_DIR/catalog/<image id>.json``
(the image id is the digest of its content), so later processes and runs start nothing.
"""

from __future__ import annotations

import inspect
import json
import keyword
import re
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Optional, Union

from awm.agent import protocol
from awm.builder.catalog.loader import load_catalog
from awm.core.errors import ImageNotFound, InvalidInput
from awm.core.files import atomic_write
from awm.core.naming import image_ref, normalise
from awm.core.settings import settings
from awm.runtime import Backend, DockerBackend

__all__ = [
    "Catalog",
    "EpisodeKey",
    "ScenarioCatalog",
    "ToolCaller",
    "python_identifier",
    "typed_tool",
]

ToolCaller = Callable[[str, dict[str, Any]], str]
_KEY_TEXT = re.compile(r"^([a-z0-9_]+)[/:](\d+)$")


@dataclass(frozen=True, order=True)
class EpisodeKey:
    """Which task an episode works: a scenario id and a task index.

    Small and plain so that it survives dataset rows, pickling into spawned processes and Ray
    actors, and string fields (``str(key)`` is ``"<scenario>/<task_idx>"``, `parse` reads it).
    """

    scenario: str
    task_idx: int

    def __post_init__(self) -> None:
        if not isinstance(self.task_idx, int) or isinstance(self.task_idx, bool) or self.task_idx < 0:
            raise InvalidInput(f"scenario {self.scenario!r}: task_idx must be an int >= 0, not {self.task_idx!r}")
        if not self.scenario or normalise(self.scenario) != self.scenario:
            raise InvalidInput(f"{self.scenario!r} is not a scenario id (e.g. {normalise(self.scenario or 'x')!r})")

    def __str__(self) -> str:
        return f"{self.scenario}/{self.task_idx}"

    def to_dict(self) -> dict[str, Any]:
        return {"scenario": self.scenario, "task_idx": self.task_idx}

    def to_json(self) -> str:
        return json.dumps(self.to_dict())

    @classmethod
    def parse(cls, value: EpisodeKey | str | Mapping[str, Any]) -> EpisodeKey:
        """A key from itself, ``"<scenario>/<idx>"``, its JSON, or a mapping with the two fields.

        Raises:
            InvalidInput: it names no scenario and task index.
        """
        if isinstance(value, EpisodeKey):
            return value
        if isinstance(value, str):
            text = value.strip()
            if match := _KEY_TEXT.match(text):
                return cls(match.group(1), int(match.group(2)))
            try:
                value = json.loads(text)
            except ValueError:
                raise InvalidInput(f"{value!r} is not an episode key (\"<scenario>/<task_idx>\" or its JSON)") from None
        if isinstance(value, Mapping) and "scenario" in value and "task_idx" in value:
            try:
                return cls(str(value["scenario"]), int(value["task_idx"]))
            except (TypeError, ValueError):
                pass
        raise InvalidInput(f"{value!r} is not an episode key: give a scenario and a task_idx")

    @classmethod
    def from_row(cls, row: Mapping[str, Any], scenario: str | None = None) -> EpisodeKey:
        """The key of a dataset row: an ``awm_key`` column, or ``scenario`` and ``task_idx`` columns,
        also inside ``extra_info`` (verl); `scenario` fills in a row that only has ``task_idx``.

        Raises:
            InvalidInput: the row names no task.
        """
        for source in (row, row.get("extra_info")):
            if not isinstance(source, Mapping):
                continue
            if source.get("awm_key") is not None:
                return cls.parse(source["awm_key"])
            if "task_idx" in source and (source.get("scenario") or scenario):
                return cls.parse({"scenario": source.get("scenario") or scenario, "task_idx": source["task_idx"]})
        raise InvalidInput(f"the row names no task: give an awm_key column, or scenario and task_idx "
                           f"(columns: {sorted(row)})")


# -- tool formats --------------------------------------------------------------------------


def python_identifier(name: str, taken: Sequence[str] = ()) -> str:
    """`name` as a Python identifier (TRL names tools after methods); changed only where needed."""
    ident = re.sub(r"\W", "_", name)
    if not ident or ident[0].isdigit() or ident.startswith("_") or keyword.iskeyword(ident) or ident in taken:
        ident = f"tool_{ident.lstrip('_')}"
    while ident in taken or keyword.iskeyword(ident):
        ident += "_"
    return ident


_JSON_TYPES: dict[str, Any] = {"string": str, "integer": int, "number": float, "boolean": bool, "object": dict}


def _python_type(spec: Mapping[str, Any]) -> Any:
    """A type hint that `transformers.utils.get_json_schema` turns back into (about) `spec`."""
    if isinstance(spec.get("enum"), list) and spec["enum"] and all(
            isinstance(v, str | int | float | bool) for v in spec["enum"]):
        return Literal[tuple(spec["enum"])]
    options = spec.get("anyOf") or spec.get("oneOf")
    if isinstance(options, list):
        kinds = [_python_type(o) for o in options if isinstance(o, Mapping) and o.get("type") != "null"]
        nullable = any(isinstance(o, Mapping) and o.get("type") == "null" for o in options)
        hint: Any = kinds[0] if len(kinds) == 1 else (Union[tuple(kinds)] if kinds else Any)  # noqa: UP007
        return Optional[hint] if nullable and hint is not Any else hint  # noqa: UP045
    kind = spec.get("type")
    if kind == "array":
        items = spec.get("items")
        return list[_python_type(items)] if isinstance(items, Mapping) and items else list  # type: ignore[misc]
    return _JSON_TYPES.get(kind, Any) if isinstance(kind, str) else Any


def _one_line(text: str) -> str:
    return " ".join(text.split())


def typed_tool(tool: Mapping[str, Any], call: Callable[..., str], *, name: str | None = None,
               method: bool = False) -> Callable[..., str]:
    """A Python function for an MCP tool: keyword parameters with type hints from its schema, a
    Google-style docstring, and a body that sends the call through `call(tool_name, arguments)`.

    Arguments left at None are not sent (the tool's own defaults apply). With `method`, the
    function takes ``self`` first, to be set on a class, and calls ``call(self, tool_name,
    arguments)``. Parameter names that are not Python identifiers are renamed and mapped back.
    """
    tool_name = str(tool["name"])
    schema = tool.get("inputSchema") or {}
    required = set(schema.get("required") or ())
    params: list[inspect.Parameter] = []
    names: dict[str, str] = {}  # python parameter -> schema property
    lines: list[str] = []
    for prop, spec in (schema.get("properties") or {}).items():
        spec = spec if isinstance(spec, Mapping) else {}
        ident = python_identifier(prop, list(names)) if not prop.isidentifier() or keyword.iskeyword(prop) else prop
        names[ident] = prop
        hint = _python_type(spec)
        if prop in required:
            params.append(inspect.Parameter(ident, inspect.Parameter.KEYWORD_ONLY, annotation=hint))
        else:
            params.append(inspect.Parameter(ident, inspect.Parameter.KEYWORD_ONLY, default=None,
                                            annotation=Optional[hint] if hint is not Any else Any))  # noqa: UP045
        about = _one_line(str(spec.get("description") or spec.get("title") or "")) or f"The {prop} argument."
        lines.append(f"    {ident}: {about}")
    description = str(tool.get("description") or tool_name).strip()
    doc = description + ("\n\nArgs:\n" + "\n".join(lines) if lines else "") + \
        "\n\nReturns:\n    The tool's result as text (an error starts with 'Error:')."

    def bound(*args: Any, **kwargs: Any) -> str:
        arguments = {names[k]: v for k, v in kwargs.items() if v is not None}
        return call(*args[:1], tool_name, arguments) if method else call(tool_name, arguments)

    signature_params = params
    if method:
        signature_params = [inspect.Parameter("self", inspect.Parameter.POSITIONAL_ONLY), *params]
    function_name = name or python_identifier(tool_name)
    bound.__name__ = bound.__qualname__ = function_name
    bound.__doc__ = doc
    bound.__signature__ = inspect.Signature(signature_params, return_annotation=str)  # type: ignore[attr-defined]
    bound.__annotations__ = {**{p.name: p.annotation for p in params}, "return": str}
    return bound


@dataclass(frozen=True)
class ScenarioCatalog:
    """One scenario's tasks and tools (MCP tool dicts, in the server's order)."""

    scenario: str
    image: str
    tasks: tuple[str, ...]
    tools: tuple[dict[str, Any], ...]

    def task(self, task_idx: int) -> str:
        """The text of task `task_idx`.

        Raises:
            InvalidInput: no such task.
        """
        if not 0 <= task_idx < len(self.tasks):
            raise InvalidInput(f"scenario {self.scenario!r} has {len(self.tasks)} tasks; no task {task_idx}")
        return self.tasks[task_idx]

    def keys(self) -> list[EpisodeKey]:
        return [EpisodeKey(self.scenario, i) for i in range(len(self.tasks))]

    def tool_names(self) -> list[str]:
        return [str(t["name"]) for t in self.tools]

    def mcp_tools(self) -> list[dict[str, Any]]:
        return [dict(t) for t in self.tools]

    def openai_tools(self) -> list[dict[str, Any]]:
        """OpenAI function-tool schemas (names as the server names them)."""
        return [{"type": "function",
                 "function": {"name": t["name"], "description": t.get("description") or "",
                              "parameters": t.get("inputSchema") or {"type": "object", "properties": {}}}}
                for t in self.tools]

    def awm_text(self) -> str:
        """The `list_tools` result of the AWM text protocol."""
        return protocol.format_tool_list(self.tools)

    def python_tools(self, call: ToolCaller) -> list[Callable[..., str]]:
        """One typed function per tool (see `typed_tool`), named as Python identifiers."""
        taken: list[str] = []
        out = []
        for tool in self.tools:
            taken.append(python_identifier(str(tool["name"]), taken))
            out.append(typed_tool(tool, call, name=taken[-1]))
        return out

    def to_json(self) -> dict[str, Any]:
        return {"scenario": self.scenario, "image": self.image, "tasks": list(self.tasks), "tools": list(self.tools)}


class Catalog:
    """Scenario catalogs, looked up once per process (thread-safe) and cached on disk.

    Args:
        images: scenario -> image reference; others are ``awm/<scenario>:latest``.
        dataset: a dataset folder whose tasks are used instead of reading them from the image.
        backend: starts the one environment a first look at an image needs (Docker by default).
        cache_dir: the on-disk cache (``AWM_CACHE_DIR/catalog`` by default).
    """

    def __init__(self, *, images: Mapping[str, str] | None = None, dataset: Path | None = None,
                 backend: Backend | None = None, cache_dir: Path | None = None) -> None:
        self.images = dict(images or {})
        self.dataset = dataset
        self._backend = backend
        self.cache_dir = cache_dir or settings().cache_dir / "catalog"
        self._entries: dict[str, ScenarioCatalog] = {}
        self._lock = threading.Lock()
        self._dataset_tasks: dict[str, list[str]] | None = None

    def image_of(self, scenario: str) -> str:
        return self.images.get(scenario) or image_ref(scenario)

    def get(self, scenario: str) -> ScenarioCatalog:
        """The catalog of `scenario`.

        Raises:
            ImageNotFound: its image is not in the engine.
            InvalidInput: the dataset has no such scenario.
        """
        with self._lock:
            entry = self._entries.get(scenario)
            if entry is None:
                entry = self._entries[scenario] = self._load(scenario)
            return entry

    def _load(self, scenario: str) -> ScenarioCatalog:
        image = self.image_of(scenario)
        image_id, labels = self._inspect(image)
        if labels.get("awm.scenario") != scenario:
            raise InvalidInput(f"image {image} is not scenario {scenario!r} "
                               f"(its awm.scenario label is {labels.get('awm.scenario')!r})")
        path = self.cache_dir / f"{image_id.removeprefix('sha256:')}.json"
        try:
            cached = json.loads(path.read_text())
            tasks, tools = list(cached["tasks"]), list(cached["tools"])
        except (OSError, ValueError, KeyError, TypeError):
            tasks, tools = self._probe(image)
            atomic_write(path, json.dumps({"scenario": scenario, "image": image, "tasks": tasks, "tools": tools}))
        if self.dataset is not None:
            tasks = self._tasks_of_dataset(scenario)
        return ScenarioCatalog(scenario, image, tuple(tasks), tuple(tools))

    def _tasks_of_dataset(self, scenario: str) -> list[str]:
        if self._dataset_tasks is None:
            assert self.dataset is not None
            self._dataset_tasks = {sid: list(b.tasks) for sid, b in load_catalog(self.dataset).bundles.items()}
        if scenario not in self._dataset_tasks:
            raise InvalidInput(f"scenario {scenario!r} is not in the dataset {self.dataset}")
        return self._dataset_tasks[scenario]

    def backend(self) -> Backend:
        if self._backend is None:  # made on first use: nothing touches the engine at import
            self._backend = DockerBackend()
        return self._backend

    def _inspect(self, image: str) -> tuple[str, dict[str, str]]:
        import docker.errors

        backend = self.backend()
        client = backend.client if isinstance(backend, DockerBackend) else DockerBackend().client
        try:
            found = client.images.get(image)
        except docker.errors.ImageNotFound as exc:
            raise ImageNotFound(f"image {image} not found; build it with `awm build DATASET`", image=image) from exc
        return str(found.id), dict(found.labels or {})

    def _probe(self, image: str) -> tuple[list[str], list[dict[str, Any]]]:
        with self.backend().start(image) as env:
            listed = env.client.tasks()
            tools = [t.model_dump(mode="json", exclude_none=True) for t in env.client.list_tools()]
        tasks = [str(t["task"]) for t in sorted(listed, key=lambda t: int(t["task_idx"]))]
        keep = ("name", "description", "inputSchema")
        return tasks, [{k: t[k] for k in keep if k in t} for t in tools]
