"""The wheel as a user gets it: built from the sources, installed in a fresh venv, run elsewhere.

The venv is clean (no system site-packages, no PYTHONPATH) and every command runs from a
folder outside the checkout, so nothing can be found through the source tree by accident.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import docker
import pytest

from awm import __version__
from awm.builder.catalog.loader import load_catalog
from awm.core.naming import base_ref
from tests.helpers import EXAMPLES

ROOT = Path(__file__).resolve().parents[1]
SERVER_SRC = ROOT / "awm" / "images" / "base" / "awm_server"
# What a build of the wheel reads; copied alone, so a file the build needs and the wheel
# misses cannot come from the checkout.
SOURCES = ("awm", "pyproject.toml", "README.md", "LICENSE")


def _run(args: list[str | Path], *, cwd: Path, env: dict[str, str] | None = None) -> str:
    proc = subprocess.run(
        [str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, f"{args} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A snapshot of the sources the wheel is built from."""
    src = tmp_path_factory.mktemp("src")
    for name in SOURCES:
        path = ROOT / name
        if path.is_dir():
            shutil.copytree(path, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(path, src / name)
    return src


@pytest.fixture(scope="module")
def wheel(source: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    src = source
    dist = tmp_path_factory.mktemp("dist")
    _run([sys.executable, "-m", "build", "--wheel", "--outdir", dist, src], cwd=src)
    (built,) = dist.glob("*.whl")
    return built


@pytest.fixture(scope="module")
def user_env(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A fresh venv with the wheel installed; the environment to run its commands with."""
    root = tmp_path_factory.mktemp("venv")
    venv.create(root, with_pip=True, clear=True)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    env["PATH"] = f"{root / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    env["VIRTUAL_ENV"] = str(root)
    _run([root / "bin" / "python", "-m", "pip", "install", "-q", wheel], cwd=root, env=env)
    return env


@pytest.fixture
def elsewhere(tmp_path: Path) -> Path:
    """An empty folder outside the checkout holding a copy of the examples."""
    assert ROOT not in tmp_path.parents
    shutil.copytree(EXAMPLES, tmp_path / "examples-copy")
    return tmp_path


def test_wheel_installs_only_awm_import_names(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        (top_level,) = [n for n in names if n.endswith(".dist-info/top_level.txt")]
        declared = set(zf.read(top_level).decode().split())
    installed = {n.split("/")[0] for n in names if ".dist-info/" not in n}
    assert installed == declared == {"awm", "awm_server"}


def test_wheel_carries_what_awm_build_reads(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
    server = {f"awm_server/{p.name}" for p in SERVER_SRC.glob("*.py")}
    templates = {f"awm/templates/{p.name}" for p in (ROOT / "awm" / "templates").glob("*.j2")}
    needed = {
        "awm/py.typed",
        "awm_server/py.typed",
        "awm/images/base/Dockerfile",
        "awm/images/base/requirements.lock",
        *server,
        *templates,
    }
    assert templates
    assert "awm_server/__main__.py" in server
    assert needed <= names, sorted(needed - names)
    # The server is carried once, as its own package; the base image takes it from there.
    assert not [n for n in names if n.startswith("awm/images/base/awm_server/")]


def test_installed_wheel_runs_outside_the_checkout(user_env: dict[str, str], elsewhere: Path) -> None:
    python = Path(user_env["VIRTUAL_ENV"]) / "bin" / "python"
    assert _run(["awm", "--version"], cwd=elsewhere, env=user_env).strip() == f"awm {__version__}"
    assert _run([python, "-m", "awm", "--version"], cwd=elsewhere, env=user_env).strip() == f"awm {__version__}"
    where = _run(
        [python, "-c", "import awm, awm.runtime, awm_server; print(awm.__file__); print(awm_server.__file__)"],
        cwd=elsewhere,
        env=user_env,
    ).split()
    for path in where:
        assert Path(path).is_relative_to(user_env["VIRTUAL_ENV"]), where

    listed = json.loads(_run(["awm", "catalog", "--json", "examples-copy"], cwd=elsewhere, env=user_env))
    scenarios = {row["id"] for row in listed["scenarios"]}
    assert scenarios == set(load_catalog(EXAMPLES).bundles)


@pytest.mark.docker
def test_installed_wheel_builds_and_runs_the_examples(
    source: Path, user_env: dict[str, str], elsewhere: Path, docker_client: docker.DockerClient
) -> None:
    python = Path(user_env["VIRTUAL_ENV"]) / "bin" / "python"
    # Same Dockerfile, lock and server sources in the wheel as in the checkout: the same base
    # image. (Taken from the snapshot the wheel was built from, not from a tree being edited.)
    code = "from awm.builder.build.base_image import base_version; print(base_version())"
    ask: list[str | Path] = [python, "-c", code]
    installed_base = _run(ask, cwd=elsewhere, env=user_env).strip()
    ask[0] = sys.executable
    checkout_base = _run(ask, cwd=source, env={**os.environ, "PYTHONPATH": str(source)}).strip()
    assert installed_base == checkout_base

    # The images are the examples' own (same digests), shared with the other tests: they stay.
    _run(["awm", "build", "examples-copy", "--report", "report.json"], cwd=elsewhere, env=user_env)
    report = json.loads((elsewhere / "report.json").read_text())
    assert report["base_image"] == base_ref(installed_base)
    assert report["counts"]["failed"] == report["counts"]["quarantined"] == 0
    tags = {r["scenario"]: r["tag"] for r in report["results"]}
    assert set(tags) == set(load_catalog(EXAMPLES).bundles)
    for scenario, tag in tags.items():
        assert tag.startswith(f"awm/{scenario}:")
        docker_client.images.get(tag)

    demo = _run(["awm", "demo", "examples-copy"], cwd=elsewhere, env=user_env)
    assert "verify after the reference solution: complete" in demo
