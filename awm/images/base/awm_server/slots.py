"""Episode slots: one container serving `AWM_SLOTS=N` independent episodes of its scenario.

Slot k has its own working database, MCP endpoint `/e/<k>/mcp`, control plane
`/e/<k>/_awm/{health,info,tasks,reset,verify,snapshot}`, the app's own routes under `/e/<k>/`,
its own reset gate and its own MCP sessions. `/mcp` and `/_awm/*` are slot 0 (with one slot,
the only paths there are, exactly as before).

How a slot is made: the environment module is imported once per slot, under its own module
name (`awm_env_e<k>`) with DATABASE_PATH pointing at the slot's database. The alternative, one
import whose engine is picked per request, was rejected: AWM modules create their engine,
sessionmaker and any caches, counters or ids at module level, and a routed engine would leave
all of that shared, so one episode's module-level state would show in another's. A separate
import gives each slot exactly what a one-slot container has: its own module globals, app,
routes, engine and pool, and tools converted from its own app by fastapi-mcp (so the tool
list, descriptions, schemas and result text are those of a one-slot container by
construction). It costs about 1 MiB of memory per slot for the example modules: the Python
runtime, the libraries and the server are shared, only the module's own objects are not.

What slots share, and what that means:
- one process and one event loop. A request that hangs in a tool (sync handler in a worker
  thread, or an awaiting async handler) is answered with a tool error after the per-call
  timeout and holds nothing of the other slots. A handler that raises gives its caller an
  error result; the slot goes on serving. A handler that blocks the event loop itself (a
  blocking call inside `async def`), or that kills the process, stalls or ends every slot:
  the runtime then fails all of the container's slots with one clear error;
- the worker threads of sync handlers (anyio's default limiter), the verifier limiter
  (AWM_VERIFY_CONCURRENCY per container) and the container's memory, CPU and /tmp;
- the process environment: DATABASE_PATH is read by AWM modules at import, as the original
  launcher assumes; a module that read it again while serving would see the last slot's path.
Slots isolate episodes from each other's data and state; they are not a security boundary
between modules (all slots run the same scenario's module, which is trusted as much as in a
one-slot container).
"""

from __future__ import annotations

import anyio

from awm_server.environment import Environment, ScenarioFiles
from awm_server.settings import Settings

__all__ = ["load_slots", "slot_prefix"]


def slot_prefix(slot: int) -> str:
    """The path prefix of slot `slot`'s endpoints: `/e/<k>`."""
    return f"/e/{slot}"


def load_slots(settings: Settings) -> list[Environment]:
    """The container's `settings.slots` environments, slot 0 first.

    Raises:
        ModuleImportError: the module failed to import (for the first slot that failed).
    """
    files = ScenarioFiles(settings.scenario_dir)
    verifiers = anyio.CapacityLimiter(settings.verify_concurrency)
    return [Environment(settings, slot=k, files=files, verifiers=verifiers) for k in range(settings.slots)]
