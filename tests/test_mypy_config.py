"""`make lint` type-checks every bench script: the `modules` list of [tool.mypy] names them all."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_mypy_checks_every_bench_script() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["mypy"]
    assert sorted(config["modules"]) == sorted(p.stem for p in (ROOT / "bench").glob("*.py"))
    assert "tests" in config["packages"]
