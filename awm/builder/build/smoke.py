"""Smoke-test a built scenario image: start it, list its tools, call the read-only ones, grade.

What one smoke test does, in this order:

1. starts the image hardened (as the runtime does) and waits for its health route; an image
   that cannot start fails the smoke test (the build quarantines it);
2. lists the tools over MCP and compares them with the manifest (`missing_tools`);
3. runs every task's verifier against the untouched seed: a task graded `complete` there is
   already done before the agent acts (`complete_at_seed`), a common defect of generated data;
4. calls every read-only tool (a `GET` route) with the example arguments of the dataset's spec
   (`gen_spec.jsonl`) when it has one; a tool with a required argument that has no example is
   skipped, saying which. Server errors (5xx, as the tool's error text names them) are recorded
   per tool. Verifiers run before the tool calls so that a buggy `GET` that writes cannot make a
   task look complete.

Only a failure to start (or to serve MCP at all) fails the smoke test; tools that answer 5xx and
tasks complete at seed are `issues`: the image works and the report says what is wrong.
"""

from __future__ import annotations

import logging
import re
import time
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field

from awm.builder.catalog.models import ApiSpec, ScenarioBundle
from awm.builder.catalog.solutions import ToolCheck
from awm.core.errors import AWMError
from awm.core.files import atomic_write
from awm.core.settings import settings
from awm.runtime.base import Timeouts

__all__ = [
    "SmokeResult",
    "SmokeStatus",
    "TaskCheck",
    "ToolCheck",
    "example_arguments",
    "load_record",
    "record_path",
    "save_record",
    "smoke_test",
    "status_code_of",
]

log = logging.getLogger("awm")

SmokeStatus = Literal["passed", "issues", "failed"]

_STATUS_CODE = re.compile(r"Status code: (\d{3})\b")
_DETAIL_CHARS = 300


class TaskCheck(BaseModel):
    """One task's verifier run against the untouched seed database."""

    task_idx: int
    result: str
    error: str | None = None


class SmokeResult(BaseModel):
    """What the smoke test of one image found."""

    status: SmokeStatus
    # failed: why it could not start or serve MCP; issues: what broke it during the test
    error: str | None = None
    tools_listed: int = 0
    missing_tools: list[str] = Field(default_factory=list)
    tools: list[ToolCheck] = Field(default_factory=list)
    tasks: list[TaskCheck] = Field(default_factory=list)
    complete_at_seed: list[int] = Field(default_factory=list)
    server_errors: dict[str, int] = Field(default_factory=dict)  # tool -> status code
    duration_s: float = 0.0

    def issues(self) -> list[str]:
        """Human-readable lines, one per defect found (empty when it passed)."""
        out = []
        if self.error:
            out.append(f"cannot start: {self.error}" if self.status == "failed" else self.error)
        if self.missing_tools:
            out.append(f"tools in the manifest but not served: {', '.join(self.missing_tools)}")
        for idx in self.complete_at_seed:
            out.append(f"task {idx} is already complete on the untouched seed")
        for task in self.tasks:
            if task.result == "error":
                out.append(f"task {task.task_idx}: verifier error: {task.error}")
        for name, code in self.server_errors.items():
            out.append(f"tool {name} answered {code} to its example arguments")
        return out


def status_code_of(text: str) -> int | None:
    """The HTTP status code a tool's error text names ("... Status code: 500. ..."), if any."""
    match = _STATUS_CODE.search(text)
    return int(match.group(1)) if match else None


def example_arguments(spec: ApiSpec | None) -> dict[str, dict[str, Any]]:
    """Example arguments per tool name from a dataset spec (`request_params[*].example`).

    Endpoints are keyed by `operation_id`; parameters without an `example` are left out.
    """
    out: dict[str, dict[str, Any]] = {}
    if spec is None:
        return out
    for group in spec.api_groups:
        for endpoint in group.endpoints:
            if not endpoint.operation_id:
                continue
            args = {
                name: param["example"]
                for name, param in endpoint.request_params.items()
                if isinstance(param, dict) and param.get("example") is not None
            }
            out.setdefault(endpoint.operation_id, args)
    return out


def _plan_calls(
    bundle: ScenarioBundle, served: dict[str, dict[str, Any]]
) -> tuple[list[tuple[str, dict[str, Any]]], list[ToolCheck]]:
    """The read-only tool calls to make, and the tools skipped with the reason."""
    examples = example_arguments(bundle.spec)
    calls: list[tuple[str, dict[str, Any]]] = []
    skipped: list[ToolCheck] = []
    for route in bundle.tools:
        if route.method != "GET" or route.name not in served:
            continue
        schema = served[route.name]
        properties = set((schema.get("properties") or {}).keys())
        given = {k: v for k, v in examples.get(route.name, {}).items() if k in properties}
        missing = [p for p in schema.get("required") or [] if p not in given]
        if missing:
            where = "the spec has no example" if bundle.spec else "the dataset has no spec"
            skipped.append(ToolCheck(
                tool=route.name, outcome="skipped", arguments=given,
                detail=f"required argument(s) {', '.join(missing)}: {where}",
            ))
            continue
        calls.append((route.name, given))
    return calls, skipped


def smoke_test(
    backend: Any,
    image: str,
    bundle: ScenarioBundle,
    *,
    labels: dict[str, str] | None = None,
    ready_timeout_s: float = 60.0,
    call_timeout_s: float = 10.0,
) -> SmokeResult:
    """Start `image` once and check it as the module docstring says. Never raises for the image.

    Args:
        backend: a runtime backend (`awm.runtime.docker_backend.DockerBackend`); it starts the
            container as environments are run (hardened, isolated, labelled with its run id).
        image: the image to test, e.g. `awm/shop:1a2b3c`.
        bundle: the scenario the image was built from (tools, tasks, spec).
        labels: extra labels for the container (outside the reserved `awm.` namespace).
        ready_timeout_s: how long the server may take to answer its health route.
        call_timeout_s: the container's per tool call and per verifier timeout.

    Returns:
        A `SmokeResult`: `failed` (with `error`) when the image cannot start or serve MCP,
        `issues` when it works but something is wrong, else `passed`.
    """
    started = time.monotonic()
    result = SmokeResult(status="passed")
    try:
        limits = {"AWM_TOOL_TIMEOUT": f"{call_timeout_s:g}", "AWM_VERIFY_TIMEOUT": f"{call_timeout_s:g}"}
        env = backend.start(
            image, env=limits, labels=labels or {},
            timeouts=Timeouts(start_s=ready_timeout_s, request_s=max(60.0, 3 * call_timeout_s)),
        )
    except AWMError as exc:
        result.status = "failed"
        result.error = exc.message
        result.duration_s = round(time.monotonic() - started, 3)
        return result
    try:
        try:
            tools = env.client.list_tools()
        except Exception as exc:  # the MCP client raises many kinds; all mean "no MCP here"
            result.status = "failed"
            result.error = f"the server started but MCP tools/list failed: {type(exc).__name__}: {exc}"
            return result
        served = {t.name: dict(t.inputSchema or {}) for t in tools}
        result.tools_listed = len(served)
        result.missing_tools = sorted({t.name for t in bundle.tools} - set(served))

        for idx in range(len(bundle.tasks)):
            if bundle.verifier(idx, "code") is None:
                continue
            try:
                graded = env.client.verify(idx)
            except AWMError as exc:
                result.tasks.append(TaskCheck(task_idx=idx, result="error", error=exc.message))
                continue
            result.tasks.append(TaskCheck(task_idx=idx, result=graded.result, error=graded.error))
            if graded.result == "complete":
                result.complete_at_seed.append(idx)

        calls, skipped = _plan_calls(bundle, served)
        outcomes = env.client.call_tools(calls) if calls else []
        for (name, args), outcome in zip(calls, outcomes, strict=True):
            code = status_code_of(outcome.text) if outcome.is_error else None
            kind: Literal["ok", "error", "server_error"] = (
                "ok" if not outcome.is_error else "server_error" if code is not None and code >= 500 else "error"
            )
            result.tools.append(ToolCheck(
                tool=name, outcome=kind, arguments=args, status_code=code,
                detail=outcome.text[:_DETAIL_CHARS] if outcome.is_error else "",
            ))
            if kind == "server_error" and code is not None:
                result.server_errors[name] = code
        result.tools.extend(skipped)
    except Exception as exc:  # e.g. a tool that kills the server: the image did start
        result.error = f"the server stopped answering during the smoke test: {type(exc).__name__}: {exc}"
    finally:
        env.stop()
        result.duration_s = round(time.monotonic() - started, 3)
    if result.status == "passed" and (
        result.error or result.missing_tools or result.complete_at_seed or result.server_errors
        or any(t.result == "error" for t in result.tasks)
    ):
        result.status = "issues"
    return result


# Labels are fixed when an image is built, so what a smoke test found is kept on the host, per
# image id: `awm images ls` shows it and a resumed build does not smoke an image twice.


def record_path(image_id: str) -> Path:
    """Where the smoke result of an image is kept: `$AWM_CACHE_DIR/smoke/<image id>.json`."""
    return settings().cache_dir / "smoke" / f"{image_id.removeprefix('sha256:')}.json"


def save_record(image_id: str, result: SmokeResult) -> None:
    """Keep an image's smoke result (atomically: a temporary file renamed into place)."""
    atomic_write(record_path(image_id), result.model_dump_json(indent=1))


def load_record(image_id: str) -> SmokeResult | None:
    """The kept smoke result of an image, or None when it was never smoke-tested here."""
    try:
        return SmokeResult.model_validate_json(record_path(image_id).read_bytes())
    except (OSError, ValueError):
        return None
