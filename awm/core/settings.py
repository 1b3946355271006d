"""`AWMSettings`: the host-side settings that come from the environment (prefix `AWM_`).

    AWM_CACHE_DIR        the host cache: wheelhouse, smoke results, LLM responses, locks
                         (default ~/.cache/awm)
    AWM_DEBIAN_MIRROR    the Debian mirror to debootstrap the OS image from, when no
                         debian:bookworm-slim can be pulled (default: deb.debian.org)

The environment is read once, by the first `settings()` call; an empty variable counts as
unset. Code takes an `AWMSettings` argument where a caller may want another value, and the
`awm gen` model settings are separate (`AWM_LLM_*`, `awm.builder.synth.llm.LLMSettings`).
"""

from __future__ import annotations

import functools
from pathlib import Path

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["AWMSettings", "settings"]


class AWMSettings(BaseSettings):
    """Host settings; keyword arguments override the environment.

    Example:
        >>> AWMSettings(cache_dir="/tmp/awm-cache").cache_dir
        PosixPath('/tmp/awm-cache')
    """

    model_config = SettingsConfigDict(env_prefix="AWM_", env_ignore_empty=True, extra="ignore", frozen=True)

    cache_dir: Path = Field(default_factory=lambda: Path.home() / ".cache" / "awm")
    debian_mirror: str | None = None  # None: the builder's default mirror

    @field_validator("cache_dir")
    @classmethod
    def _expand(cls, value: Path) -> Path:
        return value.expanduser()


@functools.cache
def settings() -> AWMSettings:
    """The settings of this process, read from the environment on first use.

    Tests that change the environment call `settings.cache_clear()` afterwards.
    """
    return AWMSettings()
