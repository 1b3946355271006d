"""The image's command line.

    serve                                   (default) serve MCP and the control plane
    verify --task-idx N --final-db PATH     grade a saved database offline; prints JSON, exit 1 on "error"
    tasks                                   print the tasks as JSON
    info                                    print the manifest as JSON
    check                                   import the module and list its tools (build check)
    probe --dir D --out O                   call a module's tools on a scratch seed (awm gen)
    probe-verifiers --dir D --out O         run verifiers in the verifier sandbox (awm gen)
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import gc
import json
import os
import signal
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

from awm_server.checkresult import read_key, write_result
from awm_server.settings import Settings, hash_token, scrub_control_env

# httpx imports its command-line client whenever click, rich and pygments are installed (they
# come with fastapi-mcp); the server never uses it, and it costs about 3 MB in every
# environment. httpx falls back to a stub when the import fails.
sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]

# Queue the runtime's go-ahead signal (see _await_seal) from the first moment: a signal sent
# while the stack imports is kept pending instead of discarded.
if os.environ.get("AWM_AWAIT_SEAL") == "1":
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1})


def _fail(message: str, code: int = 3) -> int:
    print(f"awm-server: error: {message}", file=sys.stderr, flush=True)
    return code


def _reexec_without_plain_token() -> None:
    """Hash a control token given in plain (`-e AWM_CONTROL_TOKEN=...`) and restart without it.

    os.environ can be cleaned, but the environment block the process was started with stays
    readable in /proc/1/environ; only a new exec (same PID, same signal mask and pending
    signals) replaces it. The new process gets the hash only.
    """
    token = os.environ.get("AWM_CONTROL_TOKEN")
    if token is None:
        return
    env = {k: v for k, v in os.environ.items() if k != "AWM_CONTROL_TOKEN"}
    if token:
        given = env.get("AWM_CONTROL_TOKEN_SHA256")
        if given and given != hash_token(token):
            sys.exit(_fail("AWM_CONTROL_TOKEN and AWM_CONTROL_TOKEN_SHA256 are both set and disagree", 2))
        env["AWM_CONTROL_TOKEN_SHA256"] = hash_token(token)
    os.execve(sys.executable, [sys.executable, "-m", "awm_server", *sys.argv[1:]], env)


def _await_seal(timeout_s: float = 60.0) -> bool:
    """Wait for SIGUSR1 before any environment code runs.

    The runtime starts the container, installs the egress guard in its network namespace, then
    signals; so even the module's import-time code never runs with the network open. SIGUSR1
    is blocked from the start of this module, so the signal waits here as pending; one sent in
    the few milliseconds before that is discarded (PID 1 ignores signals it has no handler
    for), so the runtime repeats it now and then until the server answers; repeats after the
    wait are ignored.
    """
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1})
    got = signal.sigtimedwait({signal.SIGUSR1}, timeout_s)
    signal.signal(signal.SIGUSR1, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGUSR1})
    return got is not None


def _release_startup_memory() -> None:
    """Hand the heap that imports and schema building freed back to the OS (idle RSS)."""
    gc.collect()
    gc.freeze()  # what start-up built lives as long as the process: keep it out of GC passes
    with contextlib.suppress(OSError, AttributeError):  # not glibc
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="awm-server", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command")
    sub.add_parser("serve", help="serve /mcp and /_awm (default)")
    verify = sub.add_parser("verify", help="grade a saved database")
    verify.add_argument("--task-idx", type=int, required=True)
    verify.add_argument("--final-db", type=Path, required=True)
    verify.add_argument("--final-answer", default=None)
    verify.add_argument("--flavour", choices=["code", "sql"], default="code")
    sub.add_parser("tasks", help="print the tasks")
    sub.add_parser("info", help="print the manifest")
    check_cmd = sub.add_parser("check", help="import the environment module and list its tools")
    check_cmd.add_argument("--key-stdin", action="store_true",
                           help="read a key line from stdin first; report one keyed line (see checkresult)")
    probe_cmd = sub.add_parser("probe", help="call a module's tools on a scratch copy of a seed")
    probe_cmd.add_argument("--dir", type=Path, required=True, help="holds env.py, seed.db, runs.json")
    probe_cmd.add_argument("--out", type=Path, required=True, help="writable: results.jsonl, kept dbs")
    probe_cmd.add_argument("--tool-timeout", type=float, default=10.0)
    verifiers_cmd = sub.add_parser("probe-verifiers", help="run verifier jobs in the verifier sandbox (awm gen)")
    verifiers_cmd.add_argument("--dir", type=Path, required=True, help="holds verifiers.json and the databases")
    verifiers_cmd.add_argument("--out", type=Path, required=True, help="writable: verdicts.jsonl")
    args = parser.parse_args(argv)
    # Before anything of the scenario runs: the module must not find the key (checkresult).
    check_key = read_key() if args.command == "check" and args.key_stdin else None
    if args.command == "probe":  # needs no scenario directory: it brings its own files
        from awm_server.probe import probe as run_probe

        return run_probe(args.dir, args.out, tool_timeout_s=args.tool_timeout)
    if args.command == "probe-verifiers":
        from awm_server.probe import run_verifiers

        return run_verifiers(args.dir, args.out)
    try:
        settings = Settings.from_env()
    except ValueError as exc:
        return _fail(f"bad setting: {exc}", 2)
    command = args.command or "serve"

    from awm_server.environment import ScenarioFiles, grade_databases

    files = ScenarioFiles(settings.scenario_dir)
    if command == "tasks":
        print(json.dumps(files.tasks, indent=2))
        return 0
    if command == "info":
        print(json.dumps(files.manifest.model_dump(mode="json"), indent=2))
        return 0
    if command == "verify":
        if not args.final_db.is_file():
            return _fail(f"--final-db {args.final_db} is not a file (mount it, e.g. -v $PWD:/data)", 2)
        try:
            result = grade_databases(files, args.task_idx, args.final_db,
                                     final_answer=args.final_answer, flavour=args.flavour,
                                     limits=settings.verifier)
        except LookupError as exc:
            return _fail(str(exc.args[0]), 2)
        print(json.dumps(result.model_dump(mode="json"), indent=2))
        return 1 if result.result == "error" else 0  # as `awm env verify`: the verifier failed

    # The whole trusted stack is imported before waiting for the network guard, so this half
    # second overlaps the runtime's own start-up work; only the scenario's module waits.
    import sqlalchemy  # noqa: F401  (the environment modules' ORM)
    import uvicorn

    from awm_server.app import create_app
    from awm_server.environment import Environment
    from awm_server.envmodule import ModuleImportError
    from awm_server.slots import load_slots

    if command == "serve" and os.environ.get("AWM_AWAIT_SEAL") == "1" and not _await_seal():
        return _fail("no SIGUSR1 within 60s: the runtime did not confirm the network guard", 4)

    if command == "check":
        settings = replace(settings, work_dir=Path(tempfile.mkdtemp(prefix="awm-check-")), slots=1)
    scrub_control_env()  # the module gets DATABASE_PATH, never the control variables
    try:
        slots = load_slots(settings) if command == "serve" else [Environment(settings)]
    except ModuleImportError as exc:
        return _fail(str(exc))
    if command == "check":
        env = slots[0]
        listed = {"scenario": env.scenario, "tools": [t.name for t in env.mcp.tools]}
        if check_key is None:
            print(json.dumps(listed))
        else:
            write_result(check_key, listed)
        return 0

    app = create_app(slots)
    _release_startup_memory()
    uvicorn.run(app, host=settings.host, port=settings.port, log_level="warning",
                access_log=False, timeout_graceful_shutdown=2)
    return 0


if __name__ == "__main__":
    _reexec_without_plain_token()
    sys.exit(main())
