"""`awm agent`, `awm verify`, `awm eval`: a policy on the environments, graded in their sandboxes.

Flags take the original agent's spellings (`--task_id`, `--max_iterations`) and hyphenated ones.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any, Literal, cast

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from awm.agent.evaluate import EvalConfig, run_eval, select_items, summarise
from awm.agent.judge import JUDGE_PROMPT, RewardMap, verify_run
from awm.agent.llm import LLMConfig, ResultsAs
from awm.agent.loop import DEFAULT_TOOL_TIMEOUT_S
from awm.agent.report import write_report
from awm.agent.run import EpisodeOptions, run_agent
from awm.core.cli import handle_errors
from awm.core.errors import InvalidInput

__all__ = ["register"]

_PROTOCOLS = ("awm", "native")
_RESULTS_AS = ("auto", "tool", "user")


def register(app: typer.Typer) -> None:
    app.command("agent")(agent)
    app.command("verify")(verify)
    app.command("eval")(evaluate)


def _choice(value: str, allowed: tuple[str, ...], flag: str) -> str:
    if value not in allowed:
        raise InvalidInput(f"{flag} {value!r}: one of {', '.join(allowed)}")
    return value


def _read_text(path: Path | None, flag: str) -> str | None:
    if path is None:
        return None
    try:
        return path.read_bytes().decode("utf-8")  # byte for byte: no newline translation
    except OSError as exc:
        raise InvalidInput(f"{flag} {path}: {exc.strerror}") from exc


def _rewards(spec: str | None) -> RewardMap:
    if not spec:
        return RewardMap()
    try:
        values = json.loads(spec)
        return RewardMap({str(k): float(v) for k, v in values.items()})
    except (ValueError, AttributeError, TypeError) as exc:
        raise InvalidInput(f"--reward_map {spec!r}: a JSON object of class -> number, "
                           'e.g. {"complete": 1, "incomplete": 0.1}') from exc


def _llm(model: str | None, api_url: str | None, temperature: float, max_tokens: int,
         results_as: str = "auto", timeout_s: float = 600.0, max_retries: int = 5) -> LLMConfig:
    return LLMConfig.from_env(model=model, api_url=api_url, temperature=temperature, max_tokens=max_tokens,
                              results_as=cast(ResultsAs, _choice(results_as, _RESULTS_AS, "--tool_results")),
                              timeout_s=timeout_s, max_retries=max_retries)


_MODEL = typer.Option(None, "--model", help="Model name (AWM_SYN_OVERRIDE_MODEL wins, as in the original).")
_API_URL = typer.Option(None, "--api_url", "--api-url", help="OpenAI-compatible base URL (else OPENAI_BASE_URL).")
_TEMPERATURE = typer.Option(1.0, "--temperature")
_MAX_TOKENS = typer.Option(2048, "--max_tokens", "--max-tokens", help="max_completion_tokens per reply.")
_MAX_ITER = typer.Option(30, "--max_iterations", "--max-iterations", help="Model replies per episode.")
_PROTOCOL = typer.Option("awm", "--protocol", help="awm (the original's text protocol) or native (tool calling).")
_SYSTEM = typer.Option(None, "--system_prompt", "--system-prompt", help="File whose bytes replace the system prompt.")
_RESULTS = typer.Option("auto", "--tool_results", "--tool-results",
                        help="How tool results go back: auto (role tool for a local vLLM URL, else a user "
                             "message, the original's rule), tool, or user.")
_TOOL_TIMEOUT = typer.Option(DEFAULT_TOOL_TIMEOUT_S, "--tool_timeout", "--tool-timeout", help="Seconds per tool call.")
_LLM_TIMEOUT = typer.Option(600.0, "--llm_timeout", "--llm-timeout", help="Seconds per model request.")
_RETRIES = typer.Option(5, "--max_retries", "--max-retries", help="Retries of a failed model request (SDK backoff).")


@handle_errors
def agent(
    task: str | None = typer.Option(None, "--task", help="The task text."),
    scenario: str | None = typer.Option(None, "--scenario", help="Scenario (its image is started unless --mcp_url)."),
    task_id: int | None = typer.Option(None, "--task_id", "--task-id", help="Task index of the scenario."),
    mcp_url: str | None = typer.Option(None, "--mcp_url", "--mcp-url", help="An MCP endpoint already running."),
    token: str | None = typer.Option(None, "--token", envvar="AWM_CONTROL_TOKEN",
                                     help="Control token of the environment at --mcp_url (for snapshots)."),
    dataset: Path | None = typer.Option(None, "--dataset", "--dataset_dir", "--dataset-dir",
                                        help="Dataset folder to read the task from (else the image's tasks)."),
    image: str | None = typer.Option(None, "--image", help="Image to start (default awm/<scenario>:latest)."),
    api_url: str | None = _API_URL,
    model: str | None = _MODEL,
    max_iterations: int = _MAX_ITER,
    temperature: float = _TEMPERATURE,
    max_tokens: int = _MAX_TOKENS,
    output_dir: Path | None = typer.Option(None, "--output_dir", "--output-dir",
                                           help="Run folder (default outputs/agents/<stamp>_<scenario>_task_<id>)."),
    protocol: str = _PROTOCOL,
    system_prompt: Path | None = _SYSTEM,
    tool_results: str = _RESULTS,
    tool_timeout: float = _TOOL_TIMEOUT,
    llm_timeout: float = _LLM_TIMEOUT,
    max_retries: int = _RETRIES,
) -> None:
    """Run one task with a model behind an OpenAI-compatible endpoint; write its run folder."""
    llm = _llm(model, api_url, temperature, max_tokens, tool_results, llm_timeout, max_retries)
    options = EpisodeOptions(protocol=cast(Literal["awm", "native"], _choice(protocol, _PROTOCOLS, "--protocol")),
                             max_iterations=max_iterations, system_prompt=_read_text(system_prompt, "--system_prompt"),
                             tool_timeout_s=tool_timeout)
    result, out = asyncio.run(run_agent(llm=llm, options=options, task=task, scenario=scenario, task_id=task_id,
                                        mcp_url=mcp_url, token=token, dataset=dataset, image=image,
                                        output_dir=output_dir))
    print(f"{result.end_reason}: {result.iterations} turns, {result.tool_calls} tool calls "
          f"({result.tool_errors} errors); run folder {out}")
    if result.final_answer and result.end_reason == "answer":
        print(result.final_answer)
    if result.end_reason in ("env_error", "llm_error"):
        raise typer.Exit(1)


@handle_errors
def verify(
    run_dir: Path = typer.Argument(..., help="A run folder of `awm agent` or `awm eval`."),
    mode: str = typer.Option("code", "--mode", help="code (the code verifier) or sql (verifier facts + LLM judge)."),
    image: str | None = typer.Option(None, "--image", help="Image to grade in (default awm/<scenario>:latest)."),
    api_url: str | None = _API_URL,
    model: str | None = _MODEL,
    judge_prompt: Path | None = typer.Option(None, "--judge_prompt", "--judge-prompt",
                                             help="File whose text replaces the judge's prompt."),
    reward_map: str | None = typer.Option(None, "--reward_map", "--reward-map",
                                          help='JSON class -> reward (default {"complete": 1}, others 0).'),
) -> None:
    """Grade a run folder inside the scenario image's sandbox; write verify.<mode>.json."""
    mode = _choice(mode, ("code", "sql"), "--mode")
    llm = _llm(model, api_url, 1.0, 4096) if mode == "sql" else None
    doc = asyncio.run(verify_run(run_dir, cast(Literal["code", "sql"], mode), image=image, llm=llm,
                                 prompt=_read_text(judge_prompt, "--judge_prompt") or JUDGE_PROMPT,
                                 rewards=_rewards(reward_map)))
    print(f"{doc['reward_type']} (reward {doc['reward']:g}); {run_dir / f'verify.{mode}.json'}")


@handle_errors
def evaluate(
    sources: list[str] = typer.Argument(..., help="Dataset folders and/or image references."),
    api_url: str | None = _API_URL,
    model: str | None = _MODEL,
    out: Path = typer.Option(..., "--out", "--output_dir", "--output-dir", help="Results folder."),
    scenarios: str | None = typer.Option(None, "--scenarios", help="Comma-separated scenarios (default all)."),
    tasks: str | None = typer.Option(None, "--tasks", help="Task indices, e.g. 0,2,4-5 (default all)."),
    concurrency: int = typer.Option(4, "--concurrency", "-j", help="Episodes at once (one environment each)."),
    protocol: str = _PROTOCOL,
    max_iterations: int = _MAX_ITER,
    temperature: float = _TEMPERATURE,
    max_tokens: int = _MAX_TOKENS,
    judge: str = typer.Option("code", "--judge", help="code or sql (verifier facts + LLM judge)."),
    judge_prompt: Path | None = typer.Option(None, "--judge_prompt", "--judge-prompt"),
    system_prompt: Path | None = _SYSTEM,
    tool_results: str = _RESULTS,
    tool_timeout: float = _TOOL_TIMEOUT,
    llm_timeout: float = _LLM_TIMEOUT,
    max_retries: int = _RETRIES,
    reward_map: str | None = typer.Option(None, "--reward_map", "--reward-map"),
) -> None:
    """Run every selected task through pooled environments; results.jsonl, run folders, report.html."""
    llm = _llm(model, api_url, temperature, max_tokens, tool_results, llm_timeout, max_retries)
    options = EpisodeOptions(protocol=cast(Literal["awm", "native"], _choice(protocol, _PROTOCOLS, "--protocol")),
                             max_iterations=max_iterations, system_prompt=_read_text(system_prompt, "--system_prompt"),
                             tool_timeout_s=tool_timeout)
    config = EvalConfig(out=out, llm=llm, options=options, concurrency=concurrency,
                        judge=cast(Literal["code", "sql"], _choice(judge, ("code", "sql"), "--judge")),
                        judge_prompt=_read_text(judge_prompt, "--judge_prompt"), rewards=_rewards(reward_map))
    items = select_items(sources, scenarios=scenarios.split(",") if scenarios else None, tasks=tasks)
    console = Console(stderr=True)
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console, transient=False) as progress:
        bar = progress.add_task("episodes", total=len(items))

        def started(total: int, done: int) -> None:
            progress.update(bar, total=total, completed=done)
            if done:
                console.print(f"resuming: {done} of {total} episodes already in {out / 'results.jsonl'}")

        def finished(line: dict[str, Any]) -> None:
            progress.update(bar, advance=1, description=f"{line['scenario']} task {line['task_idx']}: {line['result']}")

        results = asyncio.run(run_eval(items, config, on_start=started, on_done=finished))
    lines = list(results.values())
    summary = summarise(lines)
    facts = {"model": llm.model, "api_url": llm.api_url, "protocol": options.protocol, "judge": config.judge,
             "max_iterations": max_iterations, "concurrency": concurrency, "sources": ", ".join(sources)}
    report = write_report(out / "report.html", lines, summary, title=f"awm eval: {llm.model}", facts=facts)
    Console(soft_wrap=True).print(_summary_table(summary))
    print(f"results: {out / 'results.jsonl'}; report: {report}")


def _summary_table(summary: dict[str, dict[str, Any]]) -> Table:
    table = Table("scenario", "episodes", "complete", "success", "mean turns", "tool errors", "failures")
    for name, s in summary.items():
        failures = ", ".join(f"{k} {v}" for k, v in s["failures"].items())
        table.add_row(name, str(s["episodes"]), str(s["success"]), f"{s['success_rate']:.1%}",
                      f"{s['mean_iterations']:g}", str(s["tool_errors"]), failures, end_section=name == "all")
    return table
