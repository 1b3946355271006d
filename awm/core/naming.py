"""Scenario names and image names: the one definition of how a scenario maps onto an image.

    awm/<scenario>:<digest>       the image of one build of a scenario (digest of its inputs)
    awm/<scenario>:latest         the scenario's current image
    awm/<scenario>:quarantined    an image that cannot start (kept, never `:latest`)
    awm/base:<version>            the shared base image every scenario image starts from
    <registry>/awm/<scenario>:<tag>   the same names in a registry

The normalised display name is the scenario id: the join key of the dataset files and the
repository name of its images.
"""

from __future__ import annotations

import re

__all__ = [
    "BASE_REPO",
    "IMAGE_NAMESPACE",
    "LATEST_TAG",
    "MAX_SCENARIO_ID",
    "QUARANTINE_TAG",
    "base_ref",
    "image_ref",
    "image_repo",
    "invalid_scenario_id",
    "normalise",
    "registry_ref",
]

IMAGE_NAMESPACE = "awm"
"""The repository namespace of every image this project builds."""

BASE_REPO = f"{IMAGE_NAMESPACE}/base"
"""Repository of the shared base image; its tag is the base version."""

LATEST_TAG = "latest"
"""The tag of a scenario's current image."""

QUARANTINE_TAG = "quarantined"
"""The tag that marks a scenario's image that cannot start."""

MAX_SCENARIO_ID = 100
"""The longest scenario id. The id is the path component of `awm/<id>` (Docker allows 255
characters for a whole image name, registry host included, and registries such as Docker Hub
cap a repository name lower) and the start of every Kubernetes name made for the scenario (a
DNS-1123 label holds 63; longer ones are cut and end in a hash). 100 keeps the longest AWM
names whole (about 60) with room for a registry prefix, and makes a runaway name an error in
the catalog instead of a failed `docker build`."""

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


def base_ref(version: str) -> str:
    """The base image of a version: ``awm/base:<version>``."""
    return f"{BASE_REPO}:{version}"


def invalid_scenario_id(name: str) -> str | None:
    """Why a display name cannot be a scenario, or None when its id is usable.

    Example:
        >>> invalid_scenario_id("!!!")
        "scenario name '!!!' has no letter or digit of a-z, 0-9, so its id would be empty; rename it"
    """
    sid = normalise(name)
    if not sid:
        return f"scenario name {name!r} has no letter or digit of a-z, 0-9, so its id would be empty; rename it"
    if len(sid) > MAX_SCENARIO_ID:
        return (f"scenario name {name[:60]!r}... gives an id of {len(sid)} characters, more than "
                f"{MAX_SCENARIO_ID} (the image name awm/<id> is made from it); shorten it")
    return None


def image_repo(scenario_id: str) -> str:
    """The repository of a scenario's images: ``awm/<id>``."""
    return f"{IMAGE_NAMESPACE}/{scenario_id}"


def image_ref(scenario_id: str, tag: str = LATEST_TAG) -> str:
    """A scenario's image reference: ``awm/<id>:<tag>`` (``:latest`` by default)."""
    return f"{image_repo(scenario_id)}:{tag}"


def registry_ref(registry: str, ref: str) -> str:
    """``ref`` (e.g. ``awm/<id>:<tag>``) qualified by a registry ``HOST[:PORT]``."""
    return f"{registry.rstrip('/')}/{ref}"

