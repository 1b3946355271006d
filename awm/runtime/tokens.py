"""Control tokens: one random token per environment; the container only ever sees its hash.

The runtime makes a token for each environment it starts (`new_token`) and gives the container
`AWM_CONTROL_TOKEN_SHA256` (`token_hash`); the token itself stays with the `Env` handle, which
sends it as `Authorization: Bearer`. A detached environment (`awm env start`) outlives the
process that started it, so its token is kept in a file only the user can read:

    $AWM_STATE_DIR/tokens/<key>            (mode 0600, folder 0700)
    $AWM_STATE_DIR defaults to $XDG_STATE_HOME/awm, else ~/.local/state/awm

The key is a Docker container's id, or `k8s_<namespace>_<pod>` for a pod (`_` is in no
container id, namespace or pod name, so keys never meet); `EnvRecord.token_key` names it.

`awm env reset/verify NAME` read it from there; `awm env stop` and `awm env gc` remove it.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import secrets
from pathlib import Path

from awm.core.files import atomic_write

__all__ = ["TOKEN_HASH_VAR", "forget", "load", "new_token", "save", "saved", "token_dir", "token_hash"]

TOKEN_HASH_VAR = "AWM_CONTROL_TOKEN_SHA256"


def new_token() -> str:
    return secrets.token_urlsafe(32)


def token_hash(token: str) -> str:
    """What the container gets: the lowercase hex sha256 of the token."""
    return hashlib.sha256(token.encode()).hexdigest()


def token_dir() -> Path:
    state = os.environ.get("AWM_STATE_DIR") or os.path.join(
        os.environ.get("XDG_STATE_HOME") or os.path.expanduser("~/.local/state"), "awm"
    )
    return Path(state) / "tokens"


_KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,299}")  # a file name, never a path or a dotfile


def _path(key: str) -> Path:
    if not _KEY.fullmatch(key):
        raise ValueError(f"not an environment's token key: {key!r}")
    return token_dir() / key


def save(key: str, token: str) -> Path:
    """Keep a detached environment's token, readable by this user only."""
    folder = token_dir()
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    folder.chmod(0o700)
    path = _path(key)
    atomic_write(path, token, mode=0o600)  # made 0600 (mkstemp) and kept so
    return path


def load(key: str) -> str | None:
    try:
        return _path(key).read_text().strip() or None
    except (OSError, ValueError):
        return None


def forget(key: str) -> None:
    with contextlib.suppress(ValueError):  # not a key: nothing was kept under it
        _path(key).unlink(missing_ok=True)


def saved() -> set[str]:
    """The keys of the kept tokens."""
    folder = token_dir()
    return {p.name for p in folder.iterdir() if not p.name.startswith(".")} if folder.is_dir() else set()
