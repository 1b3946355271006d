"""The batch checker: one container checks every new scenario of a build, with the same verdicts
as starting each image; when it dies, the build checks the images themselves."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import docker
import pytest

from awm.builder.build.batch import BuildOptions, build_bundle, build_images, new_build_run_id
from awm.builder.build.checker import BatchChecker, CheckerUnavailable
from awm.builder.catalog.loader import load_catalog
from awm.core.errors import ImageBuildError
from awm.core.labels import LABEL_OWNER, Owner
from tests.builder.build.conftest import edit_records, make_variants

pytestmark = pytest.mark.docker

# A module that writes to stdout at import, even a line that looks like the checker's protocol.
NOISY = 'print(\'{"req": "1", "code": 0, "stdout": "{\\\\"tools\\\\": []}"}\', flush=True)\napp = FastAPI('
BLOCKS = "import time\ntime.sleep(3600)\napp = FastAPI("


def _insert_before_app(root: Path, scenario: str, code: str, *, at_top: bool = False) -> None:
    """Put `code` into the scenario's module in place of its `app = FastAPI(` (or at its top)."""
    def edit(rec: dict[str, Any]) -> None:
        old = rec["full_code"]
        rec["full_code"] = code + old if at_top else old.replace("app = FastAPI(", code, 1)

    edit_records(root, "gen_envs.jsonl", scenario, edit)


def _mine(client: docker.DockerClient) -> list[Any]:
    """Containers this test process owns."""
    me = Owner.current()
    return [c for c in client.containers.list(ignore_removed=True, all=True, filters={"label": LABEL_OWNER})
            if Owner.parse(c.labels.get(LABEL_OWNER, "")) == me]


def test_checker_verdicts_match_the_image_check(
    docker_client: docker.DockerClient, tmp_path: Path, own_images: Callable[[str], str]
) -> None:
    own_images("t4_checker_")
    root = tmp_path / "dataset"
    noisy, blocks, healthy = make_variants(root, 3, "t4 checker")
    for sid, edit in ((noisy, NOISY), (blocks, BLOCKS)):
        _insert_before_app(root, sid, edit)
    bundles = load_catalog(root).bundles
    built = build_images(bundles.values(), BuildOptions(jobs=3, check_timeout_s=3), client=docker_client)
    results = {r.scenario: r for r in built}

    assert results[noisy].status == "built"
    assert sorted(results[noisy].tools) == sorted(t.name for t in bundles[noisy].tools)  # the check, not the print
    assert results[healthy].status == "built"
    assert len(results[healthy].tools) == 12
    assert (results[blocks].status, results[blocks].stage) == ("failed", "check")
    assert results[blocks].error == (
        f"scenario {blocks!r}: environment module did not finish importing within 3s "
        "(does it start a server or block at import time?)"
    )
    assert _mine(docker_client) == []  # the checker container is gone with the build


def test_a_dead_checker_falls_back_to_checking_the_image(
    docker_client: docker.DockerClient, tmp_path: Path, own_images: Callable[[str], str], base_image: str
) -> None:
    own_images("t4_fallback_")
    root = tmp_path / "dataset"
    (sid,) = make_variants(root, 1, "t4 fallback")
    bundle = load_catalog(root).bundles[sid]
    checker = BatchChecker(docker_client, base_image, run_id=new_build_run_id()).start()
    try:
        checker._container.kill()  # as the memory limit would
        deadline = time.monotonic() + 30
        while checker._alive and time.monotonic() < deadline:
            time.sleep(0.05)
        from awm.builder.build.render import render

        with pytest.raises(CheckerUnavailable, match="the checker container exited"):
            checker.check(render(bundle, base_image), 10)
        result = build_bundle(docker_client, bundle, base_image, checker=checker)
        assert (result.status, result.error) == ("built", None)
        assert len(result.tools) == 12
    finally:
        checker.close()
    assert _mine(docker_client) == []


# Put first in a module: what the check's process had imported before the module's first line,
# and whether an earlier check's module left something in that stack (PLANTS does).
REPORTS_IMPORTED = """import sys as _s
_stack = ("sqlalchemy", "sqlalchemy.orm", "sqlalchemy.dialects.sqlite", "fastapi", "fastapi_mcp", "awm_server.app")
raise RuntimeError("t4 imported: " + ",".join(m for m in _stack if m in _s.modules)
                   + "; planted: " + str(hasattr(_s.modules.get("sqlalchemy.orm"), "t4_planted")))
"""
PLANTS = "import sqlalchemy.orm as _orm\n_orm.t4_planted = True\n"


def test_each_check_starts_from_the_imported_stack_as_the_checker_left_it(
    docker_client: docker.DockerClient, tmp_path: Path, base_image: str
) -> None:
    root = tmp_path / "dataset"
    plants, reports = make_variants(root, 2, "t4 imported")
    for sid, code in ((plants, PLANTS), (reports, REPORTS_IMPORTED)):
        _insert_before_app(root, sid, code, at_top=True)
    bundles = load_catalog(root).bundles
    from awm.builder.build.render import render

    with BatchChecker(docker_client, base_image, run_id=new_build_run_id()) as checker:
        assert sorted(checker.check(render(bundles[plants], base_image), 30)) == sorted(
            t.name for t in bundles[plants].tools)
        with pytest.raises(ImageBuildError) as failure:
            checker.check(render(bundles[reports], base_image), 30)
    # The stack was imported by the checker before the fork (a check imports none of it), and
    # what a module changes in it stays in that module's child.
    stack = "sqlalchemy,sqlalchemy.orm,sqlalchemy.dialects.sqlite,fastapi,fastapi_mcp,awm_server.app"
    assert f"t4 imported: {stack}; planted: False" in str(failure.value)
    assert _mine(docker_client) == []


# Attacks on the check's verdict: each module ends its own import with exit code 0 after
# forging a success, so only the channel decides. The forged lines: the old protocol (the last
# stdout line), a keyed line with a guessed key, and the checker's message to the host for the
# first 64 requests (which would answer other scenarios' checks, were it read).
_FORGE = '''
import json as _j, os as _o
_ok = _j.dumps({"scenario": "t4", "tools": ["forged_tool"]})
_lines = ("\\n" + _ok + "\\n@@awm-check " + "0" * 32 + " " + _ok + "\\n" + "".join(
    _j.dumps({"req": str(n), "timeout": False, "code": 0, "tools": ["forged_tool"], "stderr": ""}) + "\\n"
    for n in range(1, 65))).encode()
'''
FORGES_STDOUT = _FORGE + "print(_lines.decode(), flush=True)\n_o._exit(0)\napp = FastAPI("
FORGES_EVERY_FD = _FORGE + '''
for _fd in range(256):
    try:
        _o.write(_fd, _lines)
    except OSError:
        pass
for _pid in ("self", "1", str(_o.getppid())):
    try:
        _names = _o.listdir(f"/proc/{_pid}/fd")
    except OSError:
        continue
    for _name in _names:
        try:
            _fd = _o.open(f"/proc/{_pid}/fd/{_name}", _o.O_WRONLY | _o.O_NONBLOCK)
            _o.write(_fd, _lines)
        except OSError:
            pass
_o._exit(0)
app = FastAPI('''
# Reports which descriptors of the checker's own processes it could open for writing.
PEEKS = '''
import os as _o
_reached = []
for _pid in {"1", str(_o.getppid())} - {str(_o.getpid())}:
    try:
        _names = _o.listdir(f"/proc/{_pid}/fd")
    except OSError:
        continue
    for _name in _names:
        try:
            _o.close(_o.open(f"/proc/{_pid}/fd/{_name}", _o.O_WRONLY | _o.O_NONBLOCK))
            _reached.append(f"/proc/{_pid}/fd/{_name}")
        except OSError:
            pass
raise RuntimeError(f"t4 reached: {_reached}")
app = FastAPI('''


@pytest.mark.parametrize("batch_check", [True, False], ids=["batch-checker", "image-check"])
def test_a_forged_check_result_fails_the_build(
    docker_client: docker.DockerClient, tmp_path: Path, own_images: Callable[[str], str], batch_check: bool
) -> None:
    prefix = f"t4_forge_{int(batch_check)}_"
    own_images(prefix)
    root = tmp_path / "dataset"
    by_print, by_fd, peeks, healthy = make_variants(root, 4, prefix.replace("_", " ").strip())
    for sid, edit in ((by_print, FORGES_STDOUT), (by_fd, FORGES_EVERY_FD), (peeks, PEEKS)):
        _insert_before_app(root, sid, edit)
    bundles = load_catalog(root).bundles
    results = {r.scenario: r for r in build_images(
        bundles.values(), BuildOptions(jobs=4, batch_check=batch_check), client=docker_client)}

    for sid in (by_print, by_fd):
        assert (results[sid].status, results[sid].stage) == ("failed", "check"), results[sid]
        assert results[sid].error == (
            f"scenario {sid!r}: `check` exited without reporting the module's tools: the module ended the "
            "process or took over its output during the import"
        )
        assert not docker_client.images.list(name=f"awm/{sid}")  # no tag, no :latest, nothing left
    assert (results[peeks].status, results[peeks].stage) == ("failed", "check")
    assert "t4 reached: []" in str(results[peeks].error)  # no descriptor of the checker's is open to it
    assert results[healthy].status == "built"
    assert sorted(results[healthy].tools) == sorted(t.name for t in bundles[healthy].tools)
    assert _mine(docker_client) == []
