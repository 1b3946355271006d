"""Scenario names: the normalised name is the scenario id, the join key and the image name."""

from __future__ import annotations

import re

__all__ = ["normalise"]

_OUTSIDE = re.compile(r"[^a-z0-9_]")
_RUNS = re.compile(r"_+")


def normalise(name: str) -> str:
    """Normalise a display name into a scenario id.

    Lowercase, every char outside ``[a-z0-9_]`` becomes ``_``, runs of ``_`` collapse to one,
    leading and trailing ``_`` are dropped.

    Example:
        >>> normalise("DoorDash Drive (Delivery Tracking)")
        'doordash_drive_delivery_tracking'
    """
    return _RUNS.sub("_", _OUTSIDE.sub("_", name.lower())).strip("_")
