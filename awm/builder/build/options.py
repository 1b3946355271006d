"""`BuildOptions`: how a batch of scenario images is built, from `awm build` to the report."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["CHECK_TIMEOUT_S", "SMOKE_TIMEOUT_S", "BuildOptions"]

CHECK_TIMEOUT_S = 60.0
SMOKE_TIMEOUT_S = 60.0


class BuildOptions(BaseModel):
    """The options of one build, given once by the caller and recorded in the build report.

    Attributes:
        only: scenario ids, display names or glob patterns to build; empty means all.
        exclude: the same, to leave out.
        limit: build at most this many scenarios (after `only` and `exclude`).
        jobs: scenarios built at once; `default_jobs()` when None.
        rebuild: build even when an image with the same digest exists (and smoke-test it again).
        check: import each new scenario's module before tagging its image.
        check_timeout_s: how long a module may take to import.
        batch_check: check new scenarios in one checker container (when the engine is on this
            host) rather than starting each new image.
        strict: refuse scenarios whose seed has failing statements.
        foreign_keys: PRAGMA foreign_keys while seeding.
        smoke: smoke-test every image (new, or cached without a smoke result on this host);
            quarantine the ones that cannot start.
        smoke_timeout_s: how long a smoke-tested server may take to become ready.

    Example:
        >>> BuildOptions(only=("shop_*",), jobs=4, smoke=True).rebuild
        False
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    only: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    limit: int | None = Field(default=None, ge=0)
    jobs: int | None = Field(default=None, ge=1)
    rebuild: bool = False
    check: bool = True
    check_timeout_s: float = Field(default=CHECK_TIMEOUT_S, gt=0)
    batch_check: bool = True
    strict: bool = False
    foreign_keys: bool = True
    smoke: bool = False
    smoke_timeout_s: float = Field(default=SMOKE_TIMEOUT_S, gt=0)
