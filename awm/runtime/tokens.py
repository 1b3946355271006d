"""Control tokens: one random token per environment; the container only ever sees its hash.

The runtime makes a token for each environment it starts (`new_token`) and gives the container
`AWM_CONTROL_TOKEN_SHA256` (`token_hash`); the token itself stays with the `Env` handle, which
sends it as `Authorization: Bearer`. A detached environment (`awm env start`) outlives the
process that started it, so its token is kept in a file only the user can read:

    $AWM_STATE_DIR/tokens/<container id>            (mode 0600, folder 0700)
    $AWM_STATE_DIR defaults to $XDG_STATE_HOME/awm, else ~/.local/state/awm

`awm env reset/verify NAME` read it from there; `awm env stop` and `awm env gc` remove it.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
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


def _path(env_id: str) -> Path:
    if not env_id or not all(c.isalnum() for c in env_id):  # a container id: hex only
        raise ValueError(f"not an environment id: {env_id!r}")
    return token_dir() / env_id


def save(env_id: str, token: str) -> Path:
    """Keep a detached environment's token, readable by this user only."""
    folder = token_dir()
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    folder.chmod(0o700)
    path = _path(env_id)
    atomic_write(path, token, mode=0o600)  # made 0600 (mkstemp) and kept so
    return path


def load(env_id: str) -> str | None:
    try:
        return _path(env_id).read_text().strip() or None
    except (OSError, ValueError):
        return None


def forget(env_id: str) -> None:
    with contextlib.suppress(ValueError):  # not an id: nothing was kept under it
        _path(env_id).unlink(missing_ok=True)


def saved() -> set[str]:
    """The ids of environments whose token is kept."""
    folder = token_dir()
    return {p.name for p in folder.iterdir() if not p.name.startswith(".")} if folder.is_dir() else set()
