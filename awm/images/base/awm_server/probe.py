"""Call an environment module's tools in process, as the server would, and record every call.

    python -m awm_server probe --dir /x --out /y

`/x` (read-only) holds `env.py` (the module), `seed.db` and `runs.json`:

    {"runs": [{"id": "t0", "calls": [{"tool": "list_recipes", "arguments": {}}], "keep_db": false}]}

Each run starts from a fresh copy of the seed (restored in place, as a reset does) and makes its
calls in order, through fastapi-mcp's converter exactly as `/mcp` does: same tool names, same
argument mapping, same result and error texts. `/y` (writable) receives `results.jsonl`, written
line by line so that a module that kills the process leaves what was found before:

    {"kind": "tools", "tools": [...]}                   once, after the import
    {"kind": "import_error", "error": "..."}            instead, when the import fails
    {"kind": "call", "run", "index", "tool", "is_error", "status_code", "text", "exception"}
    {"kind": "run", "run": "t0", "db": "t0.db"}         when `keep_db`: the database after the run

`exception` is set when the route raised (the response was a 500): the exception and the lines
of the module it passed through, which is what an author needs to fix it. The synthesis
pipeline (`awm gen`) runs this in a container with no network; nothing here trusts the module.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import shutil
import sys
import tempfile
import traceback
from pathlib import Path
from typing import Any, TextIO

__all__ = ["describe_exception", "probe", "run_verifiers"]

_STATUS = re.compile(r"Status code: (\d{3})\b")
_TEXT_CHARS = 1500


class _Recorder:
    """The app as the tool client reaches it, keeping the exception a route raised."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.last: BaseException | None = None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await self.app(scope, receive, send)
        except Exception as exc:  # the 500 was sent already; keep why, let the transport go on
            self.last = exc
            raise


def describe_exception(exc: BaseException, module_path: Path) -> str:
    """`Type: message`, then the module's own frames (the lines its author can fix)."""
    head = f"{type(exc).__name__}: {exc}"
    frames = [
        f"  {module_path.name} line {f.lineno}, in {f.name}: {(f.line or '').strip()}"
        for f in traceback.extract_tb(exc.__traceback__)
        if f.filename == str(module_path)
    ]
    return "\n".join([head, *frames[-6:]])[:_TEXT_CHARS]


def _emit(out: TextIO, record: dict[str, Any]) -> None:
    out.write(json.dumps(record, default=repr) + "\n")
    out.flush()


async def _run_all(directory: Path, out_dir: Path, work: Path, out: TextIO, tool_timeout_s: float) -> None:
    from fastapi_mcp import FastApiMCP
    from mcp import types

    from awm_server.database import WorkingDatabase
    from awm_server.envmodule import ModuleImportError, load_env_module
    from awm_server.mcp_bridge import _AppClient

    module_path = directory / "env.py"
    runs = json.loads((directory / "runs.json").read_text())["runs"]
    db = WorkingDatabase(directory / "seed.db", work / "env.db")
    db.prepare()
    try:
        env = load_env_module(module_path, db.url, "probe")
    except ModuleImportError as exc:
        _emit(out, {"kind": "import_error", "error": str(exc)[:4000]})
        return
    recorder = _Recorder(env.app)
    client = _AppClient(recorder, tool_timeout_s)
    try:
        mcp = FastApiMCP(env.app, http_client=client)
    except Exception as exc:  # a module whose OpenAPI document cannot be made has no tools
        _emit(out, {"kind": "import_error", "error": f"cannot list the tools: {describe_exception(exc, module_path)}"})
        return
    _emit(out, {"kind": "tools", "tools": [t.name for t in mcp.tools]})
    handler = mcp.server.request_handlers[types.CallToolRequest]
    try:
        for n, run in enumerate(runs):
            if n:
                db.reset(env.dispose_engines)
            for index, call in enumerate(run.get("calls", [])):
                recorder.last = None
                request = types.CallToolRequest(
                    method="tools/call",
                    params=types.CallToolRequestParams(name=call["tool"], arguments=call.get("arguments") or {}),
                )
                try:
                    result = (await asyncio.wait_for(handler(request), tool_timeout_s + 5)).root
                    text = "\n".join(getattr(c, "text", "") for c in result.content)
                    is_error = bool(getattr(result, "isError", False))
                except Exception as exc:  # the MCP layer itself failed: report, go on
                    text, is_error = f"{type(exc).__name__}: {exc}", True
                match = _STATUS.search(text) if is_error else None
                _emit(out, {
                    "kind": "call", "run": run["id"], "index": index, "tool": call["tool"],
                    "is_error": is_error, "status_code": int(match.group(1)) if match else None,
                    "text": text[:_TEXT_CHARS],
                    "exception": describe_exception(recorder.last, module_path) if recorder.last else None,
                })
            if run.get("keep_db"):
                name = f"{run['id']}.db"
                db.snapshot(out_dir / name)
                _emit(out, {"kind": "run", "run": run["id"], "db": name})
    finally:
        await client.aclose()
        env.dispose_engines()


def probe(directory: Path, out_dir: Path, *, tool_timeout_s: float = 10.0) -> int:
    """Run every call of `directory/runs.json`; write `out_dir/results.jsonl`. Returns the exit code."""
    # The module's prints and the libraries' logs must not mix with the results: they go to
    # stderr, the results to their own file.
    sys.stdout = sys.stderr
    logging.getLogger("fastapi_mcp").setLevel(logging.CRITICAL)
    work = Path(tempfile.mkdtemp(prefix="awm-probe-"))  # under /tmp: a tmpfs in the container
    try:
        with (out_dir / "results.jsonl").open("w") as out:
            asyncio.run(_run_all(directory, out_dir, work, out, tool_timeout_s))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


def run_verifiers(directory: Path, out_dir: Path) -> int:
    """Run each verifier job of `directory/verifiers.json` in the verifier sandbox; write `out_dir/verdicts.jsonl`.

        {"jobs": [{"id", "code", "function", "initial", "final", "final_answer", "pass_answer", "timeout_s"}]}

    `initial` and `final` name database files in `directory`. Each job runs in
    `awm_server.sandbox` with the image's verifier limits, as `/_awm/verify` runs it; no
    environment module is imported in this process, so none can touch the verdicts. One line
    per job: `{"id", "value", "error", "traceback"}`.
    """
    from awm_server.sandbox import Limits, run_verifier

    jobs = json.loads((directory / "verifiers.json").read_text())["jobs"]
    with (out_dir / "verdicts.jsonl").open("w") as out:
        for job in jobs:
            args: list[Any] = [str(directory / job["initial"]), str(directory / job["final"])]
            if job.get("pass_answer", True):
                args.append(job.get("final_answer"))
            outcome = run_verifier(job["code"], job["function"], args, filename="verifier.py",
                                   limits=Limits(timeout_s=float(job["timeout_s"])))
            _emit(out, {"id": job["id"], "value": outcome.value, "error": outcome.error,
                        "traceback": outcome.traceback})
    return 0
