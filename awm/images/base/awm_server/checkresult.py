"""The build check's result line: keyed, so that nothing the checked module writes passes for it.

`awm-server check --key-stdin` reads one line, a random key, from stdin before the environment
module is imported, and after the import reports its tools as one line that carries the key:

    @@awm-check <key> {"scenario": "...", "tools": [...]}

The key is in neither the arguments, the environment nor any file, and stdin is drained
before the module runs, so a module that prints a result, or writes one to every file
descriptor it can find, does not know the key and its line is ignored. What stays out of reach
of any in-process check: a module that returns from its import and then reads the key out of
the interpreter's memory could still forge the line. That module imported; it could equally
behave during the check and misbehave later, which only running the image shows (the smoke
test).
"""

from __future__ import annotations

import json
import os
import secrets
from typing import Any

__all__ = ["find_result", "new_key", "read_key", "write_result"]

_MARK = "@@awm-check"
_KEY_CHARS = 32
_MAX_TOOLS = 10_000


def new_key() -> str:
    """A fresh random key for one check."""
    return secrets.token_hex(_KEY_CHARS // 2)


def read_key(fd: int = 0) -> str:
    """Read the key line from `fd` byte by byte (no buffering keeps any of it around)."""
    data = b""
    while len(data) <= _KEY_CHARS + 1:
        byte = os.read(fd, 1)
        if not byte or byte == b"\n":
            break
        data += byte
    key = data.decode("ascii", "replace").strip()
    if len(key) != _KEY_CHARS:
        raise ValueError("check --key-stdin: expected a key line on stdin")
    return key


def write_result(key: str, result: dict[str, Any], fd: int = 1) -> None:
    """Write the keyed result line to `fd`, behind a newline in case the module left half a line."""
    data = f"\n{_MARK} {key} {json.dumps(result)}\n".encode()
    while data:
        data = data[os.write(fd, data):]


def find_result(output: str, key: str) -> list[str] | None:
    """The tool names of the result line keyed with `key` in `output`; None when there is none."""
    prefix = f"{_MARK} {key} "
    for line in reversed(output.splitlines()):
        if not line.startswith(prefix):
            continue
        try:
            tools = json.loads(line[len(prefix):])["tools"]
        except (ValueError, KeyError, TypeError):
            return None
        if isinstance(tools, list) and len(tools) <= _MAX_TOOLS and all(isinstance(t, str) for t in tools):
            return tools
        return None
    return None
