"""Tool call: a read tool through `/mcp` vs the same route straight over HTTP, same container.

    .venv/bin/python bench/tool_call.py [--quick]

On one environment, a read tool with fixed arguments is called
  * through `/mcp`: one MCP session (`AsyncEnvClient.mcp_session()`, mcp 1.26 streamable HTTP
    client; the server keeps the session, so every call is one POST to it), `session.call_tool`;
  * straight to the FastAPI route: httpx to base_url + the path that
    `awm.builder.catalog.solutions.request_for` maps the call to (e.g. GET /recipes/8), keep-alive;
  * as one JSON-RPC `tools/call` POSTed to `/mcp` with plain httpx on a kept session (opened
    with `initialize` and `notifications/initialized` POSTed the same way; no MCP client
    library): the server does for it what it does for the MCP client's call, so raw minus
    direct is the server's part of the MCP overhead, and MCP minus raw the client library's;
  * and, as the floor of the transport, `GET /_awm/health` (no app code, no database).
Calls alternate in blocks of 10 after a warm-up (which also fills the MCP client's cache of
output schemas: its first `call_tool` runs a `tools/list` first). Both clients live on one
event loop in this process. The MCP result must be the route's JSON, else the run fails.

Two read tools: pantrypal's `get_recipe` (recipe 8 with its ingredient list: a typical read)
and helpdesk's `list_tags` (one small table: about the cheapest tool there is). Each runs on two
environments at once, their blocks interleaved: one with the runtime's default isolation
(SEALED: the host talks to the container's address on an internal network) and one PUBLISHED
(127.0.0.1 port via docker-proxy), because the path between client and server is part of
every call.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (
    EXAMPLES,
    Target,
    begin_run,
    bench_arguments,
    bench_backend,
    bench_labels,
    ensure_images,
    log,
    print_table,
    results_document,
    sigterm_as_interrupt,
    variant,
    write_results,
)
from mcp.types import LATEST_PROTOCOL_VERSION

from awm.builder.catalog.loader import load_catalog
from awm.builder.catalog.solutions import request_for
from awm.runtime.base import Isolation
from awm.runtime.client import AsyncEnvClient

NAME = "tool_call"
CASES = [  # scenario, read tool, arguments
    ("pantrypal_recipe_planner", "get_recipe", {"recipe_id": 8}),  # a recipe with 6 ingredients
    ("acme_helpdesk_support_tickets", "list_tags", {}),  # a dozen rows of one table
]
TARGET = Target("p50 ≤ 5 ms", {"p50": 5.0})
WHAT = "tool call through /mcp"
BLOCK = 10
COUNTS = {"calls": (200, 20), "warmup": (20, 5)}


now_ns = time.perf_counter_ns


async def measure(endpoints: dict[str, str], tool: str, arguments: dict[str, Any], calls: int,
                  warmup: int) -> tuple[dict[tuple[str, str], list[float]], dict[str, Any]]:
    """Blocks of MCP, raw JSON-RPC, direct HTTP and health calls on every endpoint; ms per call.

    `endpoints` maps a label to a base URL (one running environment each). The blocks of all
    (endpoint, kind) pairs are interleaved and the order rotates each round, so noise from
    other work on the machine falls on every variant alike.
    """
    samples: dict[tuple[str, str], list[float]] = {}
    info: dict[str, Any] = {}
    rpc = {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": tool, "arguments": arguments}}
    rpc_headers = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json",
                   "MCP-Protocol-Version": LATEST_PROTOCOL_VERSION}

    async def raw_session(http: httpx.AsyncClient) -> str:
        """A kept MCP session opened with plain JSON-RPC POSTs: its id."""
        init = {"jsonrpc": "2.0", "id": 0, "method": "initialize",
                "params": {"protocolVersion": LATEST_PROTOCOL_VERSION, "capabilities": {},
                           "clientInfo": {"name": "bench-raw", "version": "1"}}}
        opened = (await http.post("/mcp", json=init, headers=rpc_headers)).raise_for_status()
        session_id = opened.headers["mcp-session-id"]
        note = {"jsonrpc": "2.0", "method": "notifications/initialized"}
        (await http.post("/mcp", json=note, headers={**rpc_headers, "mcp-session-id": session_id})).raise_for_status()
        return session_id

    async with AsyncExitStack() as stack:
        kinds: list[tuple[tuple[str, str], Callable[[], Awaitable[Any]]]] = []
        for label, base_url in endpoints.items():
            http = await stack.enter_async_context(httpx.AsyncClient(base_url=base_url, timeout=30.0))
            openapi = (await http.get("/openapi.json")).raise_for_status().json()
            req = request_for(openapi, tool, arguments)
            env_client = await stack.enter_async_context(AsyncEnvClient(base_url))
            session = await stack.enter_async_context(env_client.mcp_session())

            async def mcp_call(session: Any = session) -> Any:
                result = await session.call_tool(tool, arguments)
                if result.isError:
                    raise RuntimeError(f"{tool} through /mcp failed: {result.content}")
                return result

            async def http_call(http: httpx.AsyncClient = http, req: Any = req) -> httpx.Response:
                response = await http.request(req.method, req.path, params=req.query, json=req.body)
                if response.status_code != 200:
                    raise RuntimeError(f"{req.method} {req.path} answered {response.status_code}")
                return response

            raw_headers = {**rpc_headers, "mcp-session-id": await raw_session(http)}

            async def raw_call(http: httpx.AsyncClient = http, headers: dict[str, str] = raw_headers) -> httpx.Response:
                response = await http.post("/mcp", json=rpc, headers=headers)
                if response.status_code != 200 or response.json()["result"].get("isError"):
                    raise RuntimeError(f"raw tools/call answered {response.status_code}: {response.text[:300]}")
                return response

            async def health_call(http: httpx.AsyncClient = http) -> httpx.Response:
                return (await http.get("/_awm/health")).raise_for_status()

            # The MCP result must be what the route returns.
            mcp_text = "\n".join(c.text for c in (await mcp_call()).content if hasattr(c, "text"))
            same = json.loads(mcp_text) == (await http_call()).json()
            if not same:
                raise RuntimeError(f"MCP result of {tool} differs from the route's JSON: {mcp_text[:300]}")
            info[label] = {"request": req.model_dump(), "mcp_result_equals_route_json": same,
                           "result_bytes": len(mcp_text)}
            kinds += [((label, "mcp"), mcp_call), ((label, "raw"), raw_call),
                      ((label, "http"), http_call), ((label, "health"), health_call)]
        for _ in range(warmup):
            for _, fn in kinds:
                await fn()
        done = 0
        while done < calls:
            n = min(BLOCK, calls - done)
            for key, fn in kinds:
                for _ in range(n):
                    t = now_ns()
                    await fn()
                    samples.setdefault(key, []).append((now_ns() - t) / 1e6)
            kinds = kinds[1:] + kinds[:1]  # rotate which pair goes first
            done += n
    return samples, info


def main() -> int:
    parser = bench_arguments(NAME, __doc__.splitlines()[0])
    args = parser.parse_args()
    run = begin_run(args, COUNTS)
    counts, started, client, machine = run.counts, run.started, run.client, run.machine
    catalog = load_catalog(EXAMPLES)
    log("building (or finding cached) the images")
    images = {sid: str(r.tag) for sid, r in
              ensure_images(client, [catalog.bundles[sid] for sid, _, _ in CASES]).items()}
    backend = bench_backend(client, NAME)

    variants: list[dict[str, Any]] = []
    details: dict[str, Any] = {}
    with sigterm_as_interrupt():
        for scenario, tool, arguments in CASES:
            isolations = [(Isolation.SEALED, "sealed (default)"), (Isolation.PUBLISHED, "published port")]
            log(f"{tool}: {counts['calls']} calls of each kind after {counts['warmup']} warm-up, "
                f"on a sealed and a published environment at once")
            envs = []
            try:
                for isolation, _ in isolations:
                    envs.append(backend.start(images[scenario], labels=bench_labels(NAME), isolation=isolation))
                endpoints = {label: env.base_url for (_, label), env in zip(isolations, envs, strict=True)}
                samples, info = asyncio.run(measure(endpoints, tool, arguments, counts["calls"], counts["warmup"]))
            finally:
                for env in envs:
                    env.stop()
            for isolation, label in isolations:
                rows = [
                    variant(f"{tool} via /mcp, one session [{label}]", samples[label, "mcp"], what=WHAT,
                            target=TARGET, notes="session.call_tool; a kept MCP session, one POST per call"),
                    variant(f"{tool}: raw JSON-RPC POST /mcp, no MCP client [{label}]", samples[label, "raw"],
                            what=WHAT, role="context",
                            notes="one tools/call POSTed with httpx on a kept session: server-side MCP cost"),
                    variant(f"{tool} straight to the route over HTTP [{label}]", samples[label, "http"],
                            what=WHAT, role="baseline", notes="httpx keep-alive to base_url + request_for(...) path"),
                    variant(f"GET /_awm/health, transport floor [{label}]", samples[label, "health"], what=WHAT,
                            role="context", notes="no app code, no database"),
                ]
                variants += rows
                details[f"{tool} [{isolation}]"] = {
                    **info[label], "scenario": scenario,
                    "path": "container IP" if isolation is not Isolation.PUBLISHED else "127.0.0.1 via docker-proxy",
                    "mcp_overhead_p50_ms": round(rows[0]["p50"] - rows[2]["p50"], 3),
                    "of_which_server_p50_ms": round(rows[1]["p50"] - rows[2]["p50"], 3),
                    "of_which_client_library_p50_ms": round(rows[0]["p50"] - rows[1]["p50"], 3),
                }

    parameters = {
        "cases": [{"scenario": s_, "tool": t, "arguments": a, "image": images[s_]} for s_, t, a in CASES],
        "counts": counts,
        "interleaving": (f"both environments of a tool run at once; blocks of {BLOCK} calls per "
                         "(environment, kind), rotated each round"),
        "mcp_client": "awm.runtime.client.AsyncEnvClient.mcp_session (mcp 1.26), one session for all calls",
        "http_client": "httpx.AsyncClient, keep-alive, same event loop",
    }
    document = results_document(NAME, quick=args.quick, machine=machine, parameters=parameters,
                                variants=variants, started=started, details=details)
    path = write_results(args.out, document)
    print_table(variants)
    for iso, d in details.items():
        print(f"MCP overhead over the direct route, p50, {iso}: {d['mcp_overhead_p50_ms']} ms "
              f"(server {d['of_which_server_p50_ms']} ms, client library {d['of_which_client_library_p50_ms']} ms)")
    print(f"\nwritten to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
