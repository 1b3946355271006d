"""The scenario images in the engine: list, prune, export (docker save) and push to a registry.

Images are found by their label `awm.scenario` (every scenario image has it; the base image
does not). Per scenario, the *current* image is the one `awm/<id>:latest` points to (else the
newest that is not quarantined); the others are *old* (an earlier digest), *quarantined* (tagged
`awm/<id>:quarantined` by a smoke test: it cannot start) or *dangling* (no tag left).
"""

from __future__ import annotations

import contextlib
import fnmatch
import gzip
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

import docker
import docker.errors
import requests
from pydantic import BaseModel, Field

from awm.builder.build.smoke import load_record, record_path
from awm.core.errors import AWMError, ImageNotFound
from awm.core.files import atomic_path
from awm.core.labels import LABEL_DIGEST, LABEL_SCENARIO, LABEL_SOURCE_DIGEST, LABEL_TASKS, LABEL_TOOLS, OCI_BASE_NAME
from awm.core.naming import BASE_REPO, LATEST_TAG, QUARANTINE_TAG, image_ref, image_repo, normalise, registry_ref

__all__ = [
    "ExportResult",
    "ImageInfo",
    "ImageState",
    "PruneAction",
    "PushResult",
    "export_images",
    "list_images",
    "prune_images",
    "pull_images",
    "push_images",
]

log = logging.getLogger("awm")

ImageState = Literal["current", "old", "quarantined", "dangling"]


class ImageInfo(BaseModel):
    """One scenario image in the engine."""

    scenario: str
    image_id: str
    tags: list[str] = Field(default_factory=list)  # awm/<id>:<tag> (and registry copies)
    state: ImageState
    digest: str | None = None  # the input digest it was built from (label awm.digest)
    source_digest: str | None = None
    base_image: str | None = None
    size_bytes: int = 0
    layer_bytes: int | None = None  # what it adds to its base image (None: base not present)
    created: int = 0  # epoch seconds
    tools: int | None = None
    tasks: int | None = None
    smoke: str | None = None  # passed / issues / failed, when smoke-tested on this host

    @property
    def short_id(self) -> str:
        return self.image_id.removeprefix("sha256:")[:12]


def _wanted(scenario: str, patterns: Sequence[str]) -> bool:
    if not patterns:
        return True
    return any(
        fnmatch.fnmatchcase(scenario, p) if any(c in p for c in "*?[") else normalise(p) == scenario
        for p in patterns
    )


def _int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def list_images(client: docker.DockerClient, *, scenarios: Sequence[str] = ()) -> list[ImageInfo]:
    """The scenario images in the engine, by scenario then newest first.

    Args:
        client: the Docker client.
        scenarios: ids, display names or glob patterns (`shop_*`); empty means all.

    Returns:
        One `ImageInfo` per image (not per tag), with its state (see module docstring).
    """
    by_scenario: dict[str, list[ImageInfo]] = {}
    base_sizes: dict[str, int | None] = {}

    def base_size(name: str | None) -> int | None:
        if not name:
            return None
        if name not in base_sizes:
            try:
                base_sizes[name] = int(client.images.get(name).attrs["Size"])
            except docker.errors.ImageNotFound:
                base_sizes[name] = None
        return base_sizes[name]

    for item in client.api.images(filters={"label": LABEL_SCENARIO}):
        labels = item.get("Labels") or {}
        scenario = labels.get(LABEL_SCENARIO, "")
        if not scenario or not _wanted(scenario, scenarios):
            continue
        tags = sorted(t for t in item.get("RepoTags") or [] if t != "<none>:<none>")
        record = load_record(item["Id"])
        base = labels.get(OCI_BASE_NAME)
        size = int(item.get("Size") or 0)
        info = ImageInfo(
            scenario=scenario,
            image_id=item["Id"],
            tags=tags,
            state="dangling",
            digest=labels.get(LABEL_DIGEST),
            source_digest=labels.get(LABEL_SOURCE_DIGEST),
            base_image=base,
            size_bytes=size,
            layer_bytes=None if base_size(base) is None else size - base_size(base),  # type: ignore[operator]
            created=int(item.get("Created") or 0),
            tools=_int(labels.get(LABEL_TOOLS)),
            tasks=_int(labels.get(LABEL_TASKS)),
            smoke=record.status if record else None,
        )
        by_scenario.setdefault(scenario, []).append(info)

    out: list[ImageInfo] = []
    for scenario in sorted(by_scenario):
        images = sorted(by_scenario[scenario], key=lambda i: i.created, reverse=True)
        current = next((i for i in images if image_ref(scenario) in i.tags), None)
        for info in images:
            if image_ref(scenario, QUARANTINE_TAG) in info.tags:
                info.state = "quarantined"
                if info.smoke is None:
                    info.smoke = "failed"
        if current is None:
            current = next((i for i in images if i.tags and i.state != "quarantined"), None)
        for info in images:
            if info.state == "quarantined":
                continue
            info.state = "current" if info is current else "old" if info.tags else "dangling"
        out.extend(images)
    return out


class PruneAction(BaseModel):
    """One image `prune_images` removed (or would remove, in a dry run), and why."""

    scenario: str
    image_id: str
    tags: list[str]
    state: ImageState
    size_bytes: int
    layer_bytes: int | None = None
    removed: bool = False
    error: str | None = None


def prune_images(
    client: docker.DockerClient,
    *,
    scenarios: Sequence[str] = (),
    old: bool = True,
    broken: bool = True,
    dry_run: bool = False,
) -> list[PruneAction]:
    """Remove old and quarantined scenario images; current ones are never touched.

    An image still used by a container is not removed (its error says so).

    Args:
        client: the Docker client.
        scenarios: ids, display names or glob patterns; empty means every scenario.
        old: remove earlier digests and dangling images of a scenario.
        broken: remove quarantined images.
        dry_run: only say what would be removed.

    Returns:
        One `PruneAction` per image chosen, with `removed` or `error`.
    """
    states: set[ImageState] = set()
    if old:
        states |= {"old", "dangling"}
    if broken:
        states.add("quarantined")
    actions = []
    for info in list_images(client, scenarios=scenarios):
        if info.state not in states:
            continue
        action = PruneAction(
            scenario=info.scenario, image_id=info.image_id, tags=info.tags, state=info.state,
            size_bytes=info.size_bytes, layer_bytes=info.layer_bytes,
        )
        actions.append(action)
        if dry_run:
            continue
        try:
            # Untag one tag at a time (never `force`, which would pull an image from under a
            # container); the last one removes the image.
            for tag in info.tags:
                client.api.remove_image(tag)
            if not info.tags:
                client.api.remove_image(info.image_id)
            action.removed = True
        except docker.errors.ImageNotFound:
            action.removed = True
        except docker.errors.APIError as exc:
            action.error = f"{info.scenario}: could not remove {info.short_id}: {exc.explanation or exc}"
            log.warning("%s", action.error)
        if action.removed:
            record_path(info.image_id).unlink(missing_ok=True)  # its smoke result goes with it
    return actions


def _current(client: docker.DockerClient, scenarios: Sequence[str]) -> list[ImageInfo]:
    """The current image of every scenario selected; raise when a named one has none."""
    current = [i for i in list_images(client, scenarios=scenarios) if i.state == "current"]
    found = {i.scenario for i in current}
    missing = [s for s in scenarios if not any(c in s for c in "*?[") and normalise(s) not in found]
    if missing:
        raise ImageNotFound(
            f"no image of {', '.join(missing)}; run `awm build DIR --only {missing[0]}` first",
            scenario=normalise(missing[0]),
        )
    if not current:
        raise ImageNotFound("no scenario image to export or push; run `awm build DIR` first")
    return current


def _scenario_tags(info: ImageInfo) -> list[str]:
    """The image's own tags in the `awm/` namespace (no registry copies, no quarantine tag)."""
    repo = image_repo(info.scenario)
    return [t for t in info.tags if t.startswith(f"{repo}:") and t != image_ref(info.scenario, QUARANTINE_TAG)]


class ExportResult(BaseModel):
    """What `export_images` wrote."""

    path: str
    images: list[str]  # the tags in the tarball
    bytes: int


def export_images(
    client: docker.DockerClient,
    output: Path,
    *,
    scenarios: Sequence[str] = (),
    with_base: bool = False,
    on_progress: Callable[[int], None] | None = None,
) -> ExportResult:
    """Write the current scenario images as one `docker save` tarball (for `docker load`).

    Layers are stored once in the tarball, so the base image's layers, which every scenario
    image shares, cost their size once. A name ending in `.gz` or `.tgz` is gzip-compressed
    (`docker load` reads both). The tarball is written to a temporary file and renamed.

    Args:
        client: the Docker client.
        output: a file, or an existing folder (then `<folder>/awm-images.tar`).
        scenarios: ids, display names or glob patterns; empty means every scenario.
        with_base: also tag-export `awm/base:<version>` (its layers are in the tarball anyway).
        on_progress: called with the bytes written so far.

    Returns:
        An `ExportResult` (path, tags, size).

    Raises:
        ImageNotFound: no current image for a named scenario, or none at all.
        AWMError: the engine could not save the images or the file could not be written.
    """
    images = _current(client, scenarios)
    names = [tag for info in images for tag in _scenario_tags(info)]
    if with_base:
        bases = {i.base_image for i in images if i.base_image and i.base_image.startswith(BASE_REPO)}
        names.extend(sorted(bases))
    path = output / "awm-images.tar" if output.is_dir() else output
    written = 0
    try:
        with atomic_path(path) as tmp:
            response = _save_stream(client, names)
            compress = path.suffix in (".gz", ".tgz")
            with gzip.open(tmp, "wb", compresslevel=1) if compress else open(tmp, "wb") as handle:
                for chunk in response.iter_content(chunk_size=1 << 20):
                    handle.write(chunk)
                    written += len(chunk)
                    if on_progress:
                        on_progress(written)
    except docker.errors.APIError as exc:
        raise AWMError(f"docker save of {len(names)} image(s) failed: {exc.explanation or exc}") from exc
    except OSError as exc:
        raise AWMError(f"cannot write {path}: {exc}") from exc
    log.info("exported %d image(s) to %s (%d bytes)", len(names), path, path.stat().st_size)
    return ExportResult(path=str(path), images=names, bytes=path.stat().st_size)


def _save_stream(client: docker.DockerClient, names: list[str]) -> requests.Response:
    """The engine's `GET /images/get?names=...`, streamed: what `docker save a b c` calls.

    One tarball, each layer once; the SDK's `Image.save()` takes one image only. The request
    goes through the SDK's own helpers (engine URL and API version, timeout, configured headers,
    `APIError` on failure), which are private, so the stubs leave them out: hence `Any`.
    """
    api: Any = client.api
    response: requests.Response = api._get(api._url("/images/get"), params={"names": names}, stream=True)
    api._raise_for_status(response)
    return response


class PushResult(BaseModel):
    """One tag pushed to a registry (or the reason it was not)."""

    scenario: str
    local: str
    remote: str
    digest: str | None = None  # the registry's manifest digest
    layers_pushed: int = 0  # uploaded by this push
    layers_existing: int = 0  # already in the registry (or mounted from another repository)
    error: str | None = None


def push_images(
    client: docker.DockerClient,
    registry: str,
    *,
    scenarios: Sequence[str] = (),
    keep_tags: bool = False,
    on_result: Callable[[PushResult], None] | None = None,
) -> list[PushResult]:
    """Tag the current scenario images `<registry>/awm/<id>:<tag>` and push them.

    The registry stores each layer once, so the base layers are uploaded with the first image
    and only mounted or skipped for the others. A failed push is reported and the others go on.

    Args:
        client: the Docker client.
        registry: `HOST:PORT` (e.g. `127.0.0.1:5000`; the engine treats 127.0.0.0/8 as an
            insecure registry, others need TLS or `insecure-registries`).
        scenarios: ids, display names or glob patterns; empty means every scenario.
        keep_tags: keep the local `<registry>/...` tags afterwards (removed by default).
        on_result: called with each pushed tag's result.

    Returns:
        One `PushResult` per tag (`awm/<id>:<digest>` and `awm/<id>:latest`).

    Raises:
        ImageNotFound: no current image for a named scenario, or none at all.
    """
    out = []
    for info in _current(client, scenarios):
        for local in _scenario_tags(info):
            repo, _, tag = local.rpartition(":")
            remote_repo = registry_ref(registry, repo)
            result = PushResult(scenario=info.scenario, local=local, remote=f"{remote_repo}:{tag}")
            try:
                client.api.tag(info.image_id, remote_repo, tag)
                for line in client.api.push(remote_repo, tag=tag, stream=True, decode=True):
                    status = str(line.get("status", ""))
                    if status == "Pushed":
                        result.layers_pushed += 1
                    elif status == "Layer already exists" or status.startswith("Mounted from"):
                        result.layers_existing += 1
                    if "error" in line:
                        result.error = f"{info.scenario}: push of {result.remote} failed: {line['error']}"
                    digest = (line.get("aux") or {}).get("Digest")
                    if digest:
                        result.digest = digest
                if result.error is None and result.digest is None:
                    result.error = f"{info.scenario}: push of {result.remote} reported no digest"
            except docker.errors.APIError as exc:
                result.error = f"{info.scenario}: push of {result.remote} failed: {exc.explanation or exc}"
            finally:
                if not keep_tags:
                    with contextlib.suppress(docker.errors.APIError):
                        client.api.remove_image(result.remote)
            if result.error:
                log.warning("%s", result.error)
            out.append(result)
            if on_result:
                on_result(result)
    return out


def pull_images(
    client: docker.DockerClient,
    registry: str,
    scenarios: Sequence[str],
    *,
    tag: str = "latest",
    on_result: Callable[[PushResult], None] | None = None,
) -> list[PushResult]:
    """Pull `<registry>/awm/<id>:<tag>` and tag it `awm/<id>:<digest>` and `awm/<id>:latest`.

    The local names are the ones `awm build` gives, so the runtime finds pulled images as it
    finds built ones. A failed pull is reported and the others go on.

    Args:
        client: the Docker client.
        registry: `HOST:PORT`.
        scenarios: scenario ids or display names (a registry cannot be listed portably).
        tag: the tag to pull.
        on_result: called with each pulled image's result.

    Returns:
        One `PushResult` per scenario (`local` is the digest tag, `remote` what was pulled).
    """
    out = []
    for name in scenarios:
        sid = normalise(name)
        repo = image_repo(sid)
        remote = registry_ref(registry, image_ref(sid, tag))
        result = PushResult(scenario=sid, local=image_ref(sid, tag), remote=remote)
        try:
            image = client.images.pull(registry_ref(registry, repo), tag=tag)
            digest = (image.labels or {}).get(LABEL_DIGEST)
            if (image.labels or {}).get(LABEL_SCENARIO) != sid or not digest:
                result.error = f"{sid}: {remote} is not an awm image of scenario {sid!r} (labels)"
            else:
                client.api.tag(image.id, repo, digest)
                client.api.tag(image.id, repo, LATEST_TAG)
                result.local = image_ref(sid, digest)
                repo_digests = image.attrs.get("RepoDigests") or []
                result.digest = repo_digests[0].rpartition("@")[2] if repo_digests else None
        except docker.errors.APIError as exc:
            result.error = f"{sid}: pull of {remote} failed: {exc.explanation or exc}"
        if result.error:
            log.warning("%s", result.error)
        out.append(result)
        if on_result:
            on_result(result)
    return out
