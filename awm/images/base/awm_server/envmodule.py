"""Import a scenario's environment module as it is, with DATABASE_PATH pointing at the working copy.

The module's source is never rewritten: the original launcher patched `create_engine(` and
injected an MCP mount; here the module is imported unchanged and its `app` is wrapped.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import traceback
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

__all__ = ["EnvModule", "ModuleImportError", "load_env_module"]

MODULE_NAME = "awm_env"


class ModuleImportError(Exception):
    """The environment module raised while importing, or has no FastAPI `app`."""


@dataclass
class EnvModule:
    module: ModuleType
    app: Any  # fastapi.FastAPI

    def engines(self) -> list[Any]:
        """The SQLAlchemy engines the module holds at module level (to dispose on reset)."""
        from sqlalchemy.engine import Engine

        return [v for v in vars(self.module).values() if isinstance(v, Engine)]

    def dispose_engines(self) -> None:
        for engine in self.engines():
            engine.dispose()


def load_env_module(path: Path, database_url: str, scenario: str, module_name: str = MODULE_NAME) -> EnvModule:
    """Import the module at `path` as `module_name` with DATABASE_PATH set; return it with its app.

    Raises:
        ModuleImportError: naming the scenario and the exception, with the traceback's tail.
    """
    from fastapi import FastAPI

    os.environ["DATABASE_PATH"] = database_url
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise ModuleImportError(f"scenario {scenario!r}: cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module  # pydantic resolves the module's annotations through it
    try:
        spec.loader.exec_module(module)
    except BaseException as exc:  # SystemExit included: a module must not end the server
        sys.modules.pop(module_name, None)
        tail = "".join(traceback.format_exception(exc)[-6:]).rstrip()
        raise ModuleImportError(
            f"scenario {scenario!r}: environment module failed on import: "
            f"{type(exc).__name__}: {exc}\n{tail}"
        ) from exc
    app = getattr(module, "app", None)
    if not isinstance(app, FastAPI):
        raise ModuleImportError(
            f"scenario {scenario!r}: environment module defines no FastAPI `app` "
            f"(found {type(app).__name__})"
        )
    return EnvModule(module=module, app=app)
