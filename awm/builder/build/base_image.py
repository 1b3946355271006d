"""The shared base image ``awm/base:<version>`` and the OS image and wheelhouse it is built from.

Every scenario image starts ``FROM awm/base:<version>``. The base holds the pinned environment
stack (``images/base/requirements.lock``) in a virtualenv at ``/opt/awm/venv`` and the
in-container server ``awm_server`` at ``/opt/awm/lib``; it runs as uid/gid 10001.

Builds never reach the network from inside a container:

* the OS layer is ``python:3.11-slim`` when the engine has it or can pull it, else
  ``awm/os:bookworm``, made once per engine with ``debootstrap`` on the host;
* the wheels are downloaded on the host with ``pip download`` into a cache keyed by the lock
  file's digest, and installed in the image with ``pip install --no-index``.

The version in the tag is a digest of the Dockerfile, the lock file and the ``awm_server``
sources, so an image is rebuilt exactly when one of them changes.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import docker
import docker.errors

from awm.core.errors import ImageBuildError
from awm.core.naming import BASE_REPO, LATEST_TAG, base_ref
from awm.core.settings import settings

__all__ = [
    "BASE_DIR",
    "OS_IMAGE",
    "PULL_TIMEOUT_SECONDS",
    "SLIM_IMAGE",
    "base_tag",
    "base_version",
    "ensure_base_image",
    "ensure_os_image",
    "ensure_wheelhouse",
    "locked_requirements",
]

log = logging.getLogger("awm")

BASE_DIR = Path(__file__).resolve().parents[2] / "images" / "base"
"""Folder holding the Dockerfile, requirements.lock and awm_server/ of the base image."""

SLIM_IMAGE = "python:3.11-slim"
"""The OS image of choice, where a registry is reachable."""

OS_IMAGE = "awm/os:bookworm"
"""The OS image made locally with debootstrap where no registry is reachable."""

PULL_TIMEOUT_SECONDS = 120
"""Cap on the HTTP read timeout while pulling :data:`SLIM_IMAGE`."""

DEFAULT_DEBIAN_MIRROR = "http://deb.debian.org/debian"

# Wheel tags of the image: CPython 3.11 on manylinux x86_64 (glibc >= 2.17).
_PIP_TARGET = [
    "--only-binary=:all:",
    "--python-version", "3.11",
    "--implementation", "cp",
    "--platform", "manylinux2014_x86_64",
    "--platform", "manylinux_2_17_x86_64",
    "--abi", "cp311",
    "--abi", "abi3",
    "--abi", "none",
]  # fmt: skip

_BUILD_LOG_TAIL = 25


def _step(message: str, on_step: Callable[[str], None] | None) -> None:
    """Log a progress message and pass it to the caller's callback, if any."""
    log.info("%s", message)
    if on_step is not None:
        on_step(message)


def _server_dir(base_dir: Path) -> Path:
    """The in-container server's sources: beside the Dockerfile in a source checkout, else (an
    installed wheel, which carries it once, as the ``awm_server`` package) where it is installed."""
    local = base_dir / "awm_server"
    if local.is_dir():
        return local
    spec = importlib.util.find_spec("awm_server")
    if spec is None or not spec.submodule_search_locations:
        raise ImageBuildError("the in-container server (package awm_server) is not installed; reinstall awm-envs")
    return Path(next(iter(spec.submodule_search_locations)))


def _base_files(base_dir: Path) -> Iterator[tuple[str, Path]]:
    """The files that define the base image, as (relative name, path), sorted by name."""
    yield "Dockerfile", base_dir / "Dockerfile"
    yield "requirements.lock", base_dir / "requirements.lock"
    server = _server_dir(base_dir)
    found = []
    for path in server.rglob("*"):
        rel = Path("awm_server") / path.relative_to(server)
        if "__pycache__" in rel.parts or path.suffix in (".pyc", ".pyo") or not path.is_file():
            continue
        found.append((rel.as_posix(), path))
    yield from sorted(found)


def base_version() -> str:
    """Return the version of the base image: a content digest of everything it is built from.

    The digest covers the Dockerfile, ``requirements.lock`` and every file of ``awm_server/``
    (names and contents, sorted; ``__pycache__`` ignored), so it changes when any of them does.

    Returns:
        12 lowercase hex characters.

    Raises:
        ImageBuildError: when the base image's sources are not there (e.g. a non-editable install
            without the ``images/`` folder).
    """
    return _digest(BASE_DIR)


def _digest(base_dir: Path) -> str:
    """The 12-hex content digest of the base image's sources in ``base_dir``."""
    digest = hashlib.sha256()
    for name, path in _base_files(base_dir):
        try:
            content = path.read_bytes()
        except OSError as exc:
            raise ImageBuildError(
                f"cannot read {path} ({exc}): the base image is built from the project's "
                f"images/base folder; run from a source checkout"
            ) from exc
        digest.update(name.encode() + b"\0")
        digest.update(hashlib.sha256(content).digest())
    return digest.hexdigest()[:12]


def base_tag() -> str:
    """Return the full tag of the base image, ``awm/base:<base_version()>``."""
    return base_ref(base_version())


def locked_requirements(lock: Path | None = None) -> list[tuple[str, str]]:
    """Parse a lock file into (normalised name, version) pairs.

    Args:
        lock: the lock file; ``images/base/requirements.lock`` by default.

    Returns:
        One pair per ``name==version`` line, in file order.
    """
    lock = lock or BASE_DIR / "requirements.lock"
    pairs = []
    for raw in lock.read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        name, sep, version = line.partition("==")
        if not sep:
            raise ImageBuildError(f"{lock}: not pinned with '==': {raw!r}")
        pairs.append((_normalise(name), version.split(";", 1)[0].strip()))
    return pairs


def _normalise(name: str) -> str:
    """PEP 503 normalisation of a distribution name."""
    out = name.strip().lower()
    for ch in "_.":
        out = out.replace(ch, "-")
    while "--" in out:
        out = out.replace("--", "-")
    return out


@contextlib.contextmanager
def _host_lock(name: str) -> Iterator[None]:
    """Hold an exclusive lock on ``<$AWM_CACHE_DIR>/locks/<name>.lock`` (a no-op without fcntl).

    Serialises the slow builds of this module between processes on one host, so that two
    callers wanting the same image build it once; the second then finds it made.
    """
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock, at worst a duplicate build
        yield
        return
    folder = settings().cache_dir / "locks"
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / f"{name}.lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _image_exists(client: docker.DockerClient, name: str) -> bool:
    try:
        client.images.get(name)
    except docker.errors.ImageNotFound:
        return False
    return True


def ensure_os_image(
    client: docker.DockerClient, on_step: Callable[[str], None] | None = None
) -> str:
    """Return the name of a local image with CPython 3.11 and venv, making one if needed.

    Tries, in order: a local ``python:3.11-slim``; a local ``awm/os:bookworm``; pulling
    ``python:3.11-slim`` (its failure is expected without a registry and only logged); building
    ``awm/os:bookworm`` with ``debootstrap`` on the host and ``docker import``. The engine is the
    cache: the bootstrap happens once per engine.

    Args:
        client: the Docker client.
        on_step: called with a short progress message at each step.

    Returns:
        The image name, ``python:3.11-slim`` or ``awm/os:bookworm``.

    Raises:
        ImageBuildError: when no image can be had: no registry, and debootstrap is missing,
            not run as root, or failed.
    """
    found = _present_os_image(client)
    if found:
        return found
    with _host_lock("os-image"):
        found = _present_os_image(client)  # made by another process while we waited
        if found:
            return found
        _step(f"pulling {SLIM_IMAGE}", on_step)
        if _try_pull(client, SLIM_IMAGE):
            return SLIM_IMAGE
        _step(f"no registry: making {OS_IMAGE} with debootstrap (once per engine)", on_step)
        _bootstrap_os_image(client, on_step)
    return OS_IMAGE


def _present_os_image(client: docker.DockerClient) -> str | None:
    for name in (SLIM_IMAGE, OS_IMAGE):
        if _image_exists(client, name):
            log.debug("OS image %s is present", name)
            return name
    return None


def _try_pull(client: docker.DockerClient, name: str) -> bool:
    """Pull an image with a capped read timeout; False (logged) on any failure."""
    repository, _, tag = name.partition(":")
    saved = client.api.timeout
    client.api.timeout = PULL_TIMEOUT_SECONDS
    try:
        client.images.pull(repository, tag or "latest")
    except Exception as exc:  # no registry, DNS, timeout, auth: all mean "not from here"
        log.info("pulling %s failed (%s); falling back to debootstrap", name, _first_line(exc))
        return False
    finally:
        client.api.timeout = saved
    return True


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _bootstrap_os_image(
    client: docker.DockerClient, on_step: Callable[[str], None] | None
) -> None:
    """Make ``awm/os:bookworm`` with debootstrap and import it into the engine."""
    debootstrap = shutil.which("debootstrap")
    if debootstrap is None:
        raise ImageBuildError(
            f"no {SLIM_IMAGE} image in the engine and none can be pulled, and `debootstrap` is "
            f"not installed to make {OS_IMAGE} instead: install it (Debian/Ubuntu: "
            f"`apt-get install debootstrap`, as root), or load {SLIM_IMAGE} into the engine "
            f"(`docker load`), or make a registry reachable",
            image=OS_IMAGE,
        )
    if hasattr(os, "geteuid") and os.geteuid() != 0:
        raise ImageBuildError(
            f"no {SLIM_IMAGE} image in the engine and none can be pulled; making {OS_IMAGE} "
            f"with debootstrap needs root: run once as root, or load {SLIM_IMAGE} into the "
            f"engine (`docker load`), or make a registry reachable",
            image=OS_IMAGE,
        )
    mirror = settings().debian_mirror or DEFAULT_DEBIAN_MIRROR
    work = Path(tempfile.mkdtemp(prefix="awm-os-"))
    rootfs = work / "rootfs"
    tarball = work / "rootfs.tar"
    try:
        started = time.monotonic()
        _step(f"debootstrap bookworm from {mirror} (about a minute)", on_step)
        _run(
            [
                debootstrap,
                "--variant=minbase",
                "--include=python3,python3-venv,ca-certificates",
                "bookworm",
                str(rootfs),
                mirror,
            ],
            what="debootstrap",
        )
        _unmount_under(rootfs)
        # Downloaded .debs and package lists are not needed in the image.
        for leftover in ("var/cache/apt/archives", "var/lib/apt/lists"):
            for path in (rootfs / leftover).glob("*"):
                if path.is_file():
                    path.unlink()
        _step(f"importing the root filesystem as {OS_IMAGE}", on_step)
        _run(
            ["tar", "--numeric-owner", "-C", str(rootfs), "-c", "-f", str(tarball), "."],
            what="tar",
        )
        repository, _, tag = OS_IMAGE.partition(":")
        try:
            client.api.import_image(
                src=str(tarball),
                repository=repository,
                tag=tag,
                changes=['ENV LANG=C.UTF-8', 'CMD ["/bin/bash"]'],
            )
        except docker.errors.APIError as exc:
            raise ImageBuildError(
                f"docker import of {OS_IMAGE} failed: {exc}", image=OS_IMAGE
            ) from exc
        if not _image_exists(client, OS_IMAGE):
            raise ImageBuildError(f"docker import did not create {OS_IMAGE}", image=OS_IMAGE)
        log.info("made %s in %.1f s", OS_IMAGE, time.monotonic() - started)
    finally:
        if _unmount_under(rootfs):
            shutil.rmtree(work, ignore_errors=True)
        else:
            log.warning("left %s in place: something is still mounted under it", work)


def _unmount_under(root: Path) -> bool:
    """Unmount anything debootstrap left mounted under ``root``; True when nothing remains."""
    prefix = str(root.resolve()) + "/"

    def mounted() -> list[str]:
        try:
            lines = Path("/proc/self/mounts").read_text().splitlines()
        except OSError:
            return []
        points = [line.split()[1].replace("\\040", " ") for line in lines if line.strip()]
        return [p for p in points if p.startswith(prefix)]

    for point in sorted(mounted(), key=len, reverse=True):
        subprocess.run(["umount", "-l", point], check=False, capture_output=True)
    return not mounted()


def _run(argv: list[str], *, what: str, env: dict[str, str] | None = None) -> None:
    """Run a host command; raise ImageBuildError with the tail of its output when it fails."""
    log.debug("running %s", " ".join(argv))
    try:
        done = subprocess.run(argv, capture_output=True, text=True, check=False, env=env)
    except OSError as exc:
        raise ImageBuildError(f"{what} could not be started: {exc}") from exc
    if done.returncode != 0:
        tail = _tail((done.stdout + "\n" + done.stderr).splitlines(), _BUILD_LOG_TAIL)
        raise ImageBuildError(f"{what} failed (exit {done.returncode}):\n{tail}")


def _tail(lines: Iterable[str], count: int) -> str:
    kept = [line.rstrip() for line in lines if line.strip()]
    return "\n".join(kept[-count:])


def ensure_wheelhouse(on_step: Callable[[str], None] | None = None) -> Path:
    """Return a folder holding a wheel for every line of ``requirements.lock``.

    The wheels are downloaded on the host with ``pip download --no-deps`` for CPython 3.11 on
    manylinux x86_64, into ``<$AWM_CACHE_DIR>/wheelhouse/<digest of the lock>``. The download goes
    to a temporary folder renamed into place when complete, so an interrupted one is redone.

    Args:
        on_step: called with a short progress message at each step.

    Returns:
        The wheelhouse folder.

    Raises:
        ImageBuildError: when pip fails or a locked package has no wheel.
    """
    lock = BASE_DIR / "requirements.lock"
    try:
        lock_bytes = lock.read_bytes()
    except OSError as exc:
        raise ImageBuildError(f"cannot read {lock}: {exc}") from exc
    digest = hashlib.sha256(lock_bytes).hexdigest()[:16]
    root = settings().cache_dir / "wheelhouse"
    final = root / digest
    if final.is_dir():
        log.debug("wheelhouse %s is cached", final)
        return final

    root.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    _step(f"downloading the locked wheels into {final}", on_step)
    partial = Path(tempfile.mkdtemp(prefix=f".partial-{digest}-", dir=root))
    try:
        _run(
            [
                sys.executable, "-m", "pip", "download",
                "--no-deps", "--disable-pip-version-check", "--no-input", "--progress-bar", "off",
                *_PIP_TARGET,
                "-r", str(lock),
                "-d", str(partial),
            ],
            what="pip download of the base image's wheels",
        )  # fmt: skip
        _check_wheelhouse(partial, locked_requirements(lock))
        try:
            partial.rename(final)
        except OSError:
            if not final.is_dir():  # another process finished first: theirs is as good
                raise
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    log.info("downloaded the wheelhouse in %.1f s", time.monotonic() - started)
    return final


def _check_wheelhouse(folder: Path, pins: list[tuple[str, str]]) -> None:
    """Raise ImageBuildError unless every (name, version) pin has a wheel in ``folder``."""
    have = set()
    for wheel in folder.glob("*.whl"):
        name, version = wheel.name.split("-")[:2]
        have.add((_normalise(name), version))
    missing = [f"{n}=={v}" for n, v in pins if (n, v) not in have]
    if missing:
        raise ImageBuildError(
            f"no wheel downloaded for {', '.join(missing)} (the base image installs wheels only)"
        )


def _copy_tree(src: Path, dst: Path) -> None:
    """Copy a source folder, leaving out byte-code caches."""
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.pyo"))


def _link_or_copy(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def _build_log_tail(log_lines: Iterable[Any]) -> str:
    """The last lines of a docker build log (JSON chunks as the SDK yields them)."""
    lines: list[str] = []
    for chunk in log_lines:
        text = (chunk.get("stream") or chunk.get("error") or "") if isinstance(chunk, dict) else str(chunk)
        lines.extend(text.splitlines())
    return _tail(lines, _BUILD_LOG_TAIL)


def ensure_base_image(
    client: docker.DockerClient,
    *,
    rebuild: bool = False,
    on_step: Callable[[str], None] | None = None,
) -> str:
    """Return the tag of the base image, building it first when the engine does not have it.

    When ``awm/base:<base_version()>`` is present (and ``rebuild`` is false) this only looks it
    up. Otherwise it makes sure of the OS image and the wheelhouse, builds the image from a
    temporary context (Dockerfile, requirements.lock, wheels/, awm_server/) and tags it also
    ``awm/base:latest``.

    Args:
        client: the Docker client.
        rebuild: build even when the tag is present.
        on_step: called with a short progress message at each step.

    Returns:
        The tag, ``awm/base:<version>`` (the version of the sources as copied for the build).

    Raises:
        ImageBuildError: when the OS image, the wheels or the build fail; the message ends with
            the last lines of the build log.
    """
    version = base_version()
    tag = base_ref(version)
    if not rebuild and _image_exists(client, tag):
        log.debug("base image %s is present", tag)
        return tag

    os_image = ensure_os_image(client, on_step=on_step)
    wheelhouse = ensure_wheelhouse(on_step=on_step)
    with _host_lock(f"base-{version}"):
        if not rebuild and _image_exists(client, tag):  # built by another process meanwhile
            return tag
        return _build_base(client, os_image, wheelhouse, on_step)


def _build_base(
    client: docker.DockerClient,
    os_image: str,
    wheelhouse: Path,
    on_step: Callable[[str], None] | None,
) -> str:
    """Build and tag the base image from a temporary context; return its tag.

    The tag is the digest of the copied context, so an edit made to ``images/base`` while this
    runs cannot give an image a tag that does not match its contents.
    """
    with tempfile.TemporaryDirectory(prefix="awm-base-ctx-") as tmp:
        ctx = Path(tmp)
        for name in ("Dockerfile", "requirements.lock"):
            shutil.copy2(BASE_DIR / name, ctx / name)
        _copy_tree(_server_dir(BASE_DIR), ctx / "awm_server")
        version = _digest(ctx)
        tag = base_ref(version)
        (ctx / "wheels").mkdir()
        for wheel in wheelhouse.glob("*.whl"):
            _link_or_copy(wheel, ctx / "wheels" / wheel.name)

        started = time.monotonic()
        _step(f"building {tag} from {os_image}", on_step)
        try:
            image, build_log = client.images.build(
                path=str(ctx),
                tag=tag,
                buildargs={"BASE_OS": os_image, "AWM_BASE_VERSION": version},
                rm=True,
                forcerm=True,
                pull=False,
            )
        except docker.errors.BuildError as exc:
            raise ImageBuildError(
                f"building {tag} failed: {exc.msg}\n{_build_log_tail(exc.build_log)}",
                image=tag,
            ) from exc
        except docker.errors.APIError as exc:
            raise ImageBuildError(f"building {tag} failed: {exc}", image=tag) from exc
        for chunk in build_log:
            stream = chunk.get("stream") if isinstance(chunk, dict) else None
            text = stream.rstrip() if isinstance(stream, str) else ""
            if text:
                log.debug("build: %s", text)

    image.tag(BASE_REPO, LATEST_TAG)
    _step(f"built {tag} in {time.monotonic() - started:.1f} s", on_step)
    return tag
