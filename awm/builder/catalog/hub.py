"""Datasets on the Hugging Face Hub: `hf://<org>/<name>[@<revision>][/<folder>]` as a dataset reference.

    awm catalog hf://Snowflake/AgentWorldModel-1K
    awm build   hf://Snowflake/AgentWorldModel-1K@main --only e_commerce_33

The reference is resolved with `huggingface_hub.snapshot_download` (the dataset's JSON Lines
files only) into the Hugging Face cache (`HF_HUB_CACHE`, else `$HF_HOME/hub`, else
`~/.cache/huggingface/hub`), and the snapshot folder is loaded like any local dataset folder.
`HF_HUB_OFFLINE=1` uses the cache only (nothing is asked of the Hub); `HF_TOKEN` is the token for
private or gated datasets. Both are read when the reference is resolved, not at import.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from awm.core.errors import DatasetError

__all__ = ["HF_PREFIX", "HubReference", "is_hub_reference", "parse_reference", "resolve_dataset"]

HF_PREFIX = "hf://"
# `Path("hf://a/b")` is `hf:/a/b`: a reference that went through a Path keeps one slash.
_REFERENCE = re.compile(r"^hf:/{1,2}(?P<org>[\w.-]+)/(?P<name>[\w.-]+?)(?:@(?P<rev>[\w./-]+?))?(?:/(?P<sub>.+))?/?$")
_TRUE = {"1", "on", "yes", "true"}


class HubReference:
    """A parsed `hf://` reference."""

    def __init__(self, repo_id: str, revision: str | None, folder: str | None) -> None:
        self.repo_id = repo_id
        self.revision = revision
        self.folder = folder

    def __str__(self) -> str:
        return f"{HF_PREFIX}{self.repo_id}" + (f"@{self.revision}" if self.revision else "") + (
            f"/{self.folder}" if self.folder else "")


def is_hub_reference(root: str | Path) -> bool:
    """Whether `root` is an `hf://` reference (also after a trip through `Path`)."""
    return str(root).startswith("hf:/")


def parse_reference(root: str | Path) -> HubReference:
    """The repository, revision and folder of an `hf://` reference.

    Raises:
        DatasetError: not of the form `hf://<org>/<name>[@<revision>][/<folder>]`.

    Example:
        >>> r = parse_reference("hf://Snowflake/AgentWorldModel-1K@v1.0")
        >>> (r.repo_id, r.revision, r.folder)
        ('Snowflake/AgentWorldModel-1K', 'v1.0', None)
    """
    match = _REFERENCE.match(str(root))
    if match is None:
        raise DatasetError(f"{root}: a Hub dataset is named hf://<org>/<name>[@<revision>][/<folder>]",
                           hint="e.g. hf://Snowflake/AgentWorldModel-1K")
    return HubReference(f"{match['org']}/{match['name']}", match["rev"], match["sub"])


def _offline() -> bool:
    return (os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or "").lower() in _TRUE


def _cache_dir() -> Path:
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"])
    home = os.environ.get("HF_HOME") or os.path.join(os.environ.get("XDG_CACHE_HOME", "~/.cache"), "huggingface")
    return Path(home).expanduser() / "hub"


def resolve_dataset(root: str | Path) -> Path:
    """The local folder of a dataset reference: `root` itself, or the Hub snapshot it names.

    Raises:
        DatasetError: the reference is malformed, or the snapshot cannot be had (offline and
            not cached, unknown repository or revision, no access), naming the reference.
    """
    if not is_hub_reference(root):
        return Path(root)
    ref = parse_reference(root)
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    offline = _offline()
    try:
        folder = Path(snapshot_download(
            ref.repo_id, repo_type="dataset", revision=ref.revision, cache_dir=_cache_dir(),
            local_files_only=offline, token=os.environ.get("HF_TOKEN") or None,
            allow_patterns=["*.jsonl", "*.json", "*/*.jsonl", "*/*.json"],
        ))
    except LocalEntryNotFoundError as exc:
        why = "HF_HUB_OFFLINE is set and the cache holds no snapshot of it" if offline else \
            f"the Hub cannot be reached and the cache holds no snapshot of it ({exc})"
        raise DatasetError(f"{ref}: {why} (cache: {_cache_dir()})",
                           hint="download it once with network access, or unset HF_HUB_OFFLINE") from exc
    except (HfHubHTTPError, OSError, ValueError) as exc:
        raise DatasetError(f"{ref}: cannot download the dataset: {exc}",
                           hint="check the name and revision; set HF_TOKEN for a private or gated dataset") from exc
    return folder / ref.folder if ref.folder else folder
