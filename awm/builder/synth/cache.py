"""The on-disk cache of LLM responses, keyed by the request.

A key is the SHA-256 of the request as canonical JSON (sorted keys, no whitespace): the kind of
call, the model and every parameter that changes the answer (messages, temperature, max
tokens, response format...). The endpoint and the API key are not part of it: the same model
asked the same thing gives an answer worth replaying wherever it was served. So an interrupted
or repeated run replays what it already paid for, and a run with the same inputs makes no
request at all.

Entries live in `<root>/<first two hex>/<key>.json`, written to a temporary file and renamed
into place: a reader never sees half an entry, and a killed run leaves at worst a temporary
file that is ignored. An entry that does not parse counts as a miss and is overwritten.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

from awm.core.files import PRIVATE, atomic_write

__all__ = ["ResponseCache", "request_key"]

log = logging.getLogger("awm")


def request_key(kind: str, request: dict[str, Any]) -> str:
    """The cache key of a request: hex SHA-256 of `{"kind": kind, **request}` as canonical JSON."""
    canonical = json.dumps({"kind": kind, **request}, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


class ResponseCache:
    """Responses by request key, one JSON file each.

    Args:
        root: the cache folder (created on first write).
        read: use cached responses (False: ask again, but still store what comes back).
        write: store new responses.
    """

    def __init__(self, root: str | Path, *, read: bool = True, write: bool = True) -> None:
        self.root = Path(root)
        self.read = read
        self.write = write

    def path(self, key: str) -> Path:
        """Where the entry of `key` lives."""
        return self.root / key[:2] / f"{key}.json"

    def get(self, key: str) -> dict[str, Any] | None:
        """The stored response of `key`, or None (missing, unreadable, or reads are off)."""
        if not self.read:
            return None
        try:
            entry = json.loads(self.path(key).read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            log.warning("LLM cache entry %s is unreadable (%s); asking again", key[:12], exc)
            return None
        response = entry.get("response") if isinstance(entry, dict) else None
        return response if isinstance(response, dict) else None

    def put(self, key: str, request: dict[str, Any], response: dict[str, Any]) -> None:
        """Store a response (atomically); the request is kept beside it for inspection."""
        if not self.write:
            return
        entry = json.dumps({"key": key, "request": request, "response": response}, ensure_ascii=False)
        atomic_write(self.path(key), entry, mode=PRIVATE)

    def forget(self, key: str) -> None:
        """Drop the entry of `key` (a reply that led to a failure is not replayed on a rerun)."""
        if self.write:
            self.path(key).unlink(missing_ok=True)

    def count(self) -> int:
        """How many responses are stored."""
        return sum(1 for _ in self.root.glob("*/*.json")) if self.root.is_dir() else 0
