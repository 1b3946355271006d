"""`awm gen scenario|task|db|sample|spec|env|verifier|all`: the LLM pipeline that writes environments.

Two modes. Folder mode (`-o OUT/`): every command works on one output folder and resumes: stages
already done there with the same inputs are skipped. File mode (`--output FILE.jsonl`, the
original pipeline's): a stage reads the given files of any AWM dataset (`--input`, `--input_task`,
`--input_db`...) and writes its one output file (`awm.builder.synth.filemode`). Every flag of the
original has its underscore and hyphen forms. Progress goes to stderr, the summary to stdout.
"""

from __future__ import annotations

import inspect
import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from awm.builder.synth.base import STAGES, Event, GenOptions, Stage
from awm.core import settings as host_settings
from awm.core.cli import err_console, handle_errors
from awm.core.errors import SynthesisError

if TYPE_CHECKING:  # the pipeline imports openai and docker: only when a command runs
    from awm.builder.synth.llm import LLMSettings
    from awm.builder.synth.pipeline import BuildOutcome, GenReport

__all__ = ["gen_app", "register"]

gen_app = typer.Typer(
    help="Generate new environments with an LLM (any OpenAI-compatible server), in the AWM format.",
    no_args_is_help=True,
)

_MARKS = {
    "done": "[green]done[/green]",
    "failed": "[red]failed[/red]",
    "retry": "[yellow]retry[/yellow]",
    "skipped": "[cyan]skipped[/cyan]",
    "blocked": "[magenta]blocked[/magenta]",
    "built": "[green]built[/green]",
    "note": "[dim]note[/dim]",
}


def register(app: typer.Typer) -> None:
    app.add_typer(gen_app, name="gen")


def _param(name: str, default: Any, annotation: Any) -> inspect.Parameter:
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=annotation)


def _common() -> list[inspect.Parameter]:
    return [
        _param("output", typer.Option(..., "--output", "-o", "--output_path", "--output-path",
                                      help="Output folder (created; resumed when it exists), or an output file "
                                           "(.jsonl: file mode, the original's)."),
               Path),
        _param("model", typer.Option(None, "--model", help="Model name (env AWM_LLM_MODEL, AWM_SYN_OVERRIDE_MODEL)."),
               str | None),
        _param("base_url", typer.Option(None, "--base-url",
                                        help="OpenAI-compatible endpoint, e.g. http://localhost:8000/v1 "
                                             "(env AWM_LLM_BASE_URL or OPENAI_BASE_URL); the key comes from "
                                             "AWM_LLM_API_KEY or OPENAI_API_KEY."), str | None),
        _param("provider", typer.Option(None, "--provider", help="openai (any compatible server) or azure "
                                                                  "(env AWM_LLM_PROVIDER, AWM_SYN_LLM_PROVIDER)."),
               str | None),
        _param("concurrency", typer.Option(None, "--concurrency", min=1,
                                           help="LLM requests in flight at most (env AWM_LLM_CONCURRENCY) [4]."),
               int | None),
        _param("timeout", typer.Option(None, "--timeout", min=1, help="Seconds per LLM request [300]."), float | None),
        _param("retries", typer.Option(None, "--retries", min=0,
                                       help="The SDK's retries of a request on transient errors (429, 5xx, "
                                            "timeouts) [5]."),
               int | None),
        _param("temperature", typer.Option(None, "--temperature", help="Sampling temperature [0.7; 1 for "
                                                                        "reasoning models]."), float | None),
        _param("max_tokens", typer.Option(None, "--max-tokens", help="Output token limit per reply."), int | None),
        _param("json_mode", typer.Option(None, "--json-mode/--no-json-mode",
                                         help="Ask the server for JSON mode on JSON replies [off]."), bool | None),
        _param("attempts", typer.Option(3, "--attempts", min=1,
                                        help="Replies per request, the first included: failures are fed back."), int),
        _param("jobs", typer.Option(4, "--jobs", "-j", min=1, help="Scenarios worked on at once."), int),
        _param("cache", typer.Option(None, "--cache-dir",
                                     help="LLM response cache [$AWM_CACHE_DIR/llm, else ~/.cache/awm/llm]."),
               Path | None),
        _param("no_cache", typer.Option(False, "--no-cache", help="Neither read nor write the response cache."), bool),
        _param("refresh", typer.Option(False, "--refresh", help="Ask again even when a reply is cached (and keep "
                                                                 "the new one)."), bool),
        _param("as_json", typer.Option(False, "--json", help="Print the run's report as JSON instead of the summary."),
               bool),
    ]


_INPUTS = {  # parameter -> (kind, flags)
    "input_scenario": ("scenario", ("--input_scenario", "--input-scenario")),
    "input_task": ("task", ("--input_task", "--input-task")),
    "input_db": ("db", ("--input_db", "--input-db")),
    "input_sample": ("sample", ("--input_sample", "--input-sample")),
    "input_spec": ("spec", ("--input_spec", "--input-spec")),
    "input_env": ("env", ("--input_env", "--input-env", "--input_envs", "--input-envs")),
}


def _input_options(stage: Stage) -> list[inspect.Parameter]:
    """File mode: the stage's input files (the original's flags; missing ones are looked for beside the others)."""
    main = {"task": "gen_scenario.jsonl", "env": "gen_spec.jsonl"}.get(stage, "gen_tasks.jsonl")
    params = [_param("input", typer.Option(None, "--input", help=f"File mode: the stage's main input ({main})."),
                     Path | None)]
    for name, (kind, flags) in _INPUTS.items():
        file = {"scenario": "gen_scenario", "task": "gen_tasks", "env": "gen_envs"}.get(kind, f"gen_{kind}")
        params.append(_param(name, typer.Option(None, *flags, help=f"File mode: the {file}.jsonl to read."),
                             Path | None))
    return params


def _selection_options() -> list[inspect.Parameter]:
    return [
        _param("only", typer.Option([], "--only", help="Scenario ids or names (repeatable)."), list[str]),
        _param("allowed_scenarios", typer.Option(None, "--allowed_scenarios", "--allowed-scenarios",
                                                 help="Comma-separated scenario names or ids to work on."),
               str | None),
        _param("limit", typer.Option(None, "--limit", min=0, help="Only the first N scenarios."), int | None),
    ]


def _yield_options() -> list[inspect.Parameter]:
    return [
        _param("error_threshold", typer.Option(0.1, "--error_threshold", "--error-threshold", min=0.0, max=1.0,
                                               help="Share of failing DDL/index or INSERT statements a scenario may "
                                                    "keep (reported); 0 = none."), float),
        _param("strict", typer.Option(False, "--strict", help="No failing statement, and no best attempt kept "
                                                               "when the attempts run out."), bool),
    ]


def _database_option() -> list[inspect.Parameter]:
    return [_param("database_dir", typer.Option(None, "--database_dir", "--database-dir",
                                                help="Materialise each scenario's seed database here; db_path points "
                                                     "to it [folder mode: OUT/databases; file mode: none]."),
                   Path | None)]


def _scenario_options() -> list[inspect.Parameter]:
    return [
        _param("seeds", typer.Option(None, "--seeds", "--input_path", "--input-path", exists=True, dir_okay=False,
                                     help="Seed scenarios: JSONL/JSON with name and description, or one name a line."),
               Path | None),
        _param("count", typer.Option(10, "--count", "-n", min=0, help="New scenarios to generate."), int),
        _param("target_count", typer.Option(None, "--target_count", "--target-count", min=1,
                                            help="Scenarios in total, the seeds included (the original's); "
                                                 "implies keeping the seeds."), int | None),
        _param("keep_seeds", typer.Option(False, "--keep-seeds", help="Generate environments for the seeds too."),
               bool),
        _param("similarity_threshold", typer.Option(0.85, "--similarity_threshold", "--similarity-threshold",
                                                    min=0.0, max=1.0, help="Embedding cosine at which a scenario is "
                                                                           "a near-duplicate (the original's)."),
               float),
        _param("similarity_warn", typer.Option(0.75, "--similarity_warn", "--similarity-warn", min=0.0, max=1.0,
                                               help="Embedding cosine from which an accepted scenario is reported "
                                                    "as close to another."), float),
        _param("few_shot", typer.Option(8, "--few_shot", "--few-shot", min=1,
                                        help="Seed examples per request, sampled from the suitable seeds."), int),
        _param("max_per_category", typer.Option(None, "--max_per_category", "--max-per-category", min=1,
                                                help="New scenarios per category at most [ceil(1.5 N / categories)]."),
               int | None),
        _param("stall_rounds", typer.Option(2, "--stall_rounds", "--stall-rounds", min=1,
                                            help="Stop after this many rounds in a row without a new scenario."), int),
        _param("embedding_model", typer.Option(None, "--embedding-model",
                                               help="Reject near-duplicates by embedding similarity with this model "
                                                    "(env AWM_LLM_EMBEDDING_MODEL); else a lexical rule."),
               str | None),
        _param("embedding_base_url", typer.Option(None, "--embedding-base-url",
                                                  help="Endpoint of the embedding model, if not --base-url "
                                                       "(env AWM_LLM_EMBEDDING_BASE_URL)."),
               str | None),
    ]


def _task_options() -> list[inspect.Parameter]:
    return [_param("tasks", typer.Option(10, "--tasks", "-k", "--num_tasks", "--num-tasks", min=1,
                                         help="Tasks per scenario."), int)]


def _mode_option(name: str, flags: tuple[str, ...]) -> list[inspect.Parameter]:
    return [_param(name, typer.Option("sql", *flags, help="Verifier flavour of the output file: sql (evidence for "
                                                          "an LLM judge, gen_verifier.jsonl) or code (graders, "
                                                          "gen_verifier.pure_code.jsonl). Both are generated and "
                                                          "checked; folder mode writes both files."), str)]


def _settings(opts: dict[str, Any]) -> LLMSettings:
    from awm.builder.synth.llm import LLMSettings

    given = {
        "model": opts.get("model"), "base_url": opts.get("base_url"), "provider": opts.get("provider"),
        "concurrency": opts.get("concurrency"),
        "timeout_s": opts.get("timeout"), "max_retries": opts.get("retries"),
        "temperature": opts.get("temperature"), "max_tokens": opts.get("max_tokens"),
        "json_mode": opts.get("json_mode"), "embedding_model": opts.get("embedding_model"),
        "embedding_base_url": opts.get("embedding_base_url"),
    }
    from pydantic import ValidationError

    try:
        return LLMSettings(**{k: v for k, v in given.items() if v is not None})
    except ValidationError as exc:
        first = exc.errors()[0]
        raise SynthesisError(f"bad LLM setting {'.'.join(map(str, first['loc']))}: {first['msg']} "
                             f"(got {first.get('input')!r})") from None


def _builder() -> Any:
    """`--build`: one Docker client and base image for the run, made on first use."""
    state: dict[str, Any] = {}

    def build(bundle: Any) -> BuildOutcome:
        from awm.builder.build.base_image import ensure_base_image
        from awm.builder.build.batch import build_bundle
        from awm.builder.synth.pipeline import BuildOutcome
        from awm.runtime.docker_backend import engine_client

        if "client" not in state:
            state["client"] = engine_client()
            state["base"] = ensure_base_image(state["client"])
        result = build_bundle(state["client"], bundle, state["base"])
        return BuildOutcome(status=result.status, tag=result.tag, error=result.error)

    return build


def _file_mode(opts: dict[str, Any]) -> bool:
    return Path(opts["output"]).suffix in (".jsonl", ".json")


def _names(opts: dict[str, Any]) -> list[str]:
    allowed = [n.strip() for n in (opts.get("allowed_scenarios") or "").split(",") if n.strip()]
    return [*opts.get("only", []), *allowed]


def _options(opts: dict[str, Any]) -> GenOptions:
    return GenOptions(
        scenarios=opts.get("count", 10), keep_seeds=opts.get("keep_seeds", False), tasks=opts.get("tasks", 10),
        attempts=opts["attempts"], jobs=opts["jobs"],
        error_threshold=0.0 if opts.get("strict") else opts.get("error_threshold", 0.1),
        strict=opts.get("strict", False), embedding_threshold=opts.get("similarity_threshold", 0.85),
        embedding_warn=opts.get("similarity_warn", 0.75), few_shot=opts.get("few_shot", 8),
        max_per_category=opts.get("max_per_category"), stall_rounds=opts.get("stall_rounds", 2),
    )


def _progress_events(progress: Progress, per_scenario: list[str]) -> Any:
    bar = progress.add_task("", total=None)

    def on_event(e: Event) -> None:  # called from worker threads; rich's console serialises its output
        who = f"{e.scenario} " if e.scenario else ""
        if e.kind == "start":
            progress.update(bar, description=f"{who}{e.stage}")
            return
        if e.kind == "plan":
            progress.update(bar, total=e.count or None)
        elif e.kind in ("done", "skipped", "failed", "blocked") and e.stage in per_scenario:
            progress.advance(bar)
        progress.console.print(f"{_MARKS.get(e.kind, e.kind)} {escape(who)}{e.stage}: {escape(e.detail)}",
                               highlight=False, soft_wrap=True)

    return on_event


def _run(stages: tuple[Stage, ...], opts: dict[str, Any]) -> None:
    from awm.builder.synth import LLMClient, ResponseCache, generate
    from awm.builder.synth.scenario import load_seeds

    started = time.monotonic()
    settings = _settings(opts)
    cache = None if opts["no_cache"] else ResponseCache(opts["cache"] or host_settings.settings().cache_dir / "llm",
                                                        read=not opts["refresh"])
    if opts.get("target_count") is not None:
        # The original's total, seeds included: the seeds are kept, the rest is new.
        if opts.get("seeds") is None:
            raise SynthesisError("--target_count needs the seed list (--input_path or --seeds)")
        opts["count"] = max(0, opts["target_count"] - len(load_seeds(opts["seeds"])))
        opts["keep_seeds"] = True
    options = _options(opts)
    for flag in ("mode", "verifier_mode"):
        if opts.get(flag, "sql") not in ("sql", "code"):
            raise SynthesisError(f"--{flag} {opts[flag]}: choose sql or code")
    file_mode = _file_mode(opts) and stages != STAGES
    with LLMClient(settings, cache=cache) as llm, Progress(
        TextColumn("[bold]generating"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        TextColumn("{task.description}"), console=err_console, transient=True,
    ) as progress:
        on_event = _progress_events(progress, [s for s in stages if s != "scenario"])
        try:
            if file_mode:
                _run_file_mode(stages[0], opts, llm, options, on_event)
                return
            report = generate(
                opts["output"], stages=stages, llm=llm, options=options, seeds=opts.get("seeds"),
                only=_names(opts), limit=opts.get("limit"), database_dir=opts.get("database_dir"),
                build_fn=_builder() if opts.get("build") else None,
                on_event=on_event,
            )
        except KeyboardInterrupt:
            err_console.print(f"interrupted; finished stages are kept in {opts['output']}. "
                              "Run the same command to resume.")
            raise typer.Exit(130) from None
    if opts["as_json"]:
        print(report.model_dump_json(indent=2))
    else:
        _print_summary(report, time.monotonic() - started)
    if report.error or report.failed:
        raise typer.Exit(1)


def _run_file_mode(stage: Stage, opts: dict[str, Any], llm: Any, options: GenOptions, on_event: Any) -> None:
    """One stage, input files to one output file (the original's way)."""
    import tempfile

    from awm.builder.synth.filemode import run_file_stage, write_scenarios

    output = Path(opts["output"])
    if stage == "scenario":
        if opts.get("seeds") is None:
            raise SynthesisError("`awm gen scenario` needs the seed list: --input_path FILE (or --seeds FILE)")
        made = write_scenarios(llm, options, Path(opts["seeds"]), output, on_event=on_event)
        if opts["as_json"]:
            print(made.model_dump_json(indent=2, exclude={"attempts"}))
        else:
            out = Console(width=200)
            out.print(f"{len(made.scenarios)} scenario(s) written to {output}; {len(made.rejected)} rejected",
                      highlight=False)
            _print_scenario_stage(out, made.stop_reason, made.categories, made.duplicate_rate, made.warnings)
        if made.status != "done":
            Console(width=200).print(f"[red]failed[/red] {escape(made.error or '')}", highlight=False)
            raise typer.Exit(1)
        return
    main_kind = {"task": "scenario", "db": "task", "sample": "task", "spec": "task", "env": "spec",
                 "verifier": "task"}[stage]
    given: dict[Any, Path] = {kind: Path(opts[name]) for name, (kind, _) in _INPUTS.items() if opts.get(name)}
    if opts.get("input"):
        given = {main_kind: Path(opts["input"]), **{k: v for k, v in given.items() if k != main_kind}}
    mode = opts.get("mode", "sql")
    with tempfile.TemporaryDirectory(prefix="awm-gen-file-") as work:
        report = run_file_stage(stage, llm=llm, inputs=given, output=output, options=options,
                                allowed=_names(opts), limit=opts.get("limit"), database_dir=opts.get("database_dir"),
                                mode=mode, workdir=Path(work), on_event=on_event)
    out = Console(width=200)
    if opts["as_json"]:
        print(json.dumps(report.as_dict(), indent=2))
    else:
        out.print(f"{stage}: {len(report.written)} scenario(s) written to {output}, {len(report.failed)} failed; "
                  f"LLM: {llm.usage.total().requests} requests, {llm.usage.total().cache_hits} cache hits",
                  highlight=False)
        for sid, notes in report.notes.items():
            for note in notes:
                out.print(f"[yellow]note[/yellow] {sid}: {escape(note)}", highlight=False, soft_wrap=True)
        for error in report.failed.values():
            out.print(f"[red]failed[/red] {escape(error)}", highlight=False, soft_wrap=True)
        if report.probe:
            out.print(f"probe: {escape(report.probe)}", highlight=False, soft_wrap=True)
    if report.failed:
        raise typer.Exit(1)


def _print_scenario_stage(out: Console, stop: str, categories: dict[str, int], duplicate_rate: float,
                          warnings: list[str]) -> None:
    if not stop:
        return
    spread = ", ".join(f"{c} {n}" for c, n in categories.items()) or "none"
    out.print(f"scenario stage: {escape(stop)}; duplicate rate {duplicate_rate:.0%}; categories: {escape(spread)}",
              highlight=False, soft_wrap=True)
    for w in warnings:
        out.print(f"[yellow]close[/yellow] {escape(w)}", highlight=False, soft_wrap=True)


def _print_summary(report: GenReport, seconds: float) -> None:
    out = Console(width=200)
    counts = report.counts()
    if counts:
        table = Table(title=f"awm gen: {report.output}", title_justify="left")
        for col in ("stage", "done", "skipped (done before)", "failed", "blocked", "requests", "cache hits",
                    "prompt tokens", "completion tokens"):
            table.add_column(col, justify="left" if col == "stage" else "right")
        if report.scenario_stage is not None:  # a batch stage: it counts the scenarios it made
            made = sum(1 for _ in report.scenarios) if report.scenario_stage != "failed" else 0
            counts["scenario"] = {"done": made if report.scenario_stage == "done" else 0,
                                  "skipped": made if report.scenario_stage == "skipped" else 0,
                                  "failed": int(report.scenario_stage == "failed"), "blocked": 0}
        for stage in STAGES:
            c = counts.get(stage, {})
            u = report.llm.get(stage, {})
            if not c and not u:
                continue
            table.add_row(stage, *(str(c.get(k, 0)) for k in ("done", "skipped", "failed", "blocked")),
                          *(str(u.get(k, 0)) for k in ("requests", "cache_hits", "prompt_tokens", "completion_tokens")))
        out.print(table)
    t = report.llm.get("total", {})
    out.print(
        f"{len(report.scenarios)} scenario(s), {len(report.failed)} failed; LLM: {t.get('requests', 0)} requests, "
        f"{t.get('cache_hits', 0)} cache hits, {t.get('prompt_tokens', 0)} prompt + {t.get('completion_tokens', 0)} "
        f"completion tokens, {t.get('retries', 0)} transient retries; {seconds:.1f} s", highlight=False,
    )
    for r in report.rejected_scenarios:
        out.print(f"rejected scenario {escape(r.name)!r}: {escape(r.reason)}", highlight=False)
    _print_scenario_stage(out, report.scenario_stop, report.scenario_categories, report.duplicate_rate,
                          report.scenario_warnings)
    for s in report.scenarios:
        if s.failing_tools:
            out.print(f"[yellow]tools failing[/yellow] {s.id}: {', '.join(s.failing_tools)}", highlight=False)
        if s.flagged_tasks:
            out.print(f"[yellow]flagged tasks[/yellow] {s.id}: {', '.join(map(str, s.flagged_tasks))}",
                      highlight=False)
        for p in s.catalog_problems:
            out.print(f"[yellow]catalog[/yellow] {escape(p)}", highlight=False, soft_wrap=True)
        if s.build is not None:
            out.print(f"{_MARKS.get(s.build.status, s.build.status)} image {s.id}: "
                      f"{escape(s.build.error or s.build.tag or '')}", highlight=False, soft_wrap=True)
        if s.error:
            out.print(f"[red]failed[/red] {escape(s.error)}", highlight=False, soft_wrap=True)
    if report.probe:
        out.print(f"probe: {escape(report.probe)}", highlight=False, soft_wrap=True)
    if report.error:
        out.print(f"[red]error[/red] {escape(report.error)}", highlight=False, soft_wrap=True)


def _command(stages: tuple[Stage, ...], params: list[inspect.Parameter], doc: str) -> Any:
    def command(**opts: Any) -> None:
        _run(stages, opts)

    command.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    command.__doc__ = doc
    return handle_errors(command)


_DOCS: dict[str, str] = {
    "scenario": "Propose N new scenarios from a seed list; near-duplicates are rejected.",
    "task": "Write k user tasks per scenario.",
    "db": "Design each scenario's SQLite schema (executed; errors fed back).",
    "sample": "Write each scenario's seed rows (executed with foreign keys on; errors fed back).",
    "spec": "Specify each scenario's API (the tools).",
    "env": "Write each scenario's FastAPI module; every tool is called in a container, failures fed back.",
    "verifier": "Write per task a code and a sql verifier and a reference solution, checked on the seed.",
}

for _stage in STAGES:
    _params = _common()
    if _stage == "scenario":
        _params += _scenario_options() + _task_options()
    else:
        _params += _input_options(_stage) + _selection_options() + _database_option()
        _params += _task_options() if _stage == "task" else []
        _params += _yield_options() if _stage in ("db", "sample") else []
        _params += _mode_option("mode", ("--mode",)) if _stage == "verifier" else []
    gen_app.command(_stage)(_command((_stage,), _params, _DOCS[_stage] + "\n\nFolder mode resumes: done stages are "
                                                                          "skipped. File mode: --input... FILE "
                                                                          "--output FILE.jsonl."))

gen_app.command("all")(_command(
    STAGES,
    _common() + _scenario_options() + _task_options() + _selection_options() + _yield_options() + _database_option()
    + _mode_option("verifier_mode", ("--verifier_mode", "--verifier-mode")) + [
        _param("build", typer.Option(False, "--build", help="Build each scenario's image as soon as it is done."),
               bool),
    ],
    "Run every stage: scenarios, then each scenario through task, db, sample, spec, env and verifier "
    "(no barrier between scenarios).\n\nResumes: done stages are skipped; the LLM cache replays paid replies.",
))
