"""The bundled examples are real: every task is solvable through its tools and graded right.

Each reference solution is replayed in process against the FastAPI app (DATABASE_PATH pointing
at a copy of the seed); the task's verifier, run in the sandbox, must say "complete" after the
replay and "others" on the untouched seed. The same checks run against images in tests/image.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from awm.builder.catalog.loader import load_catalog
from awm.builder.catalog.seed import build_seed
from awm.builder.catalog.solutions import load_solutions, request_for
from awm_server.sandbox import grade, run_verifier
from tests.helpers import EXAMPLES, import_env_module

CATALOG = load_catalog(EXAMPLES)
SOLUTIONS = load_solutions(EXAMPLES)
CASES = [(sid, idx) for sid, b in sorted(CATALOG.bundles.items()) for idx in range(len(b.tasks))]


def test_assembled_files_match_sources() -> None:
    sys.path.insert(0, str(EXAMPLES))
    try:
        import assemble
    finally:
        sys.path.remove(str(EXAMPLES))
    for name, text in assemble.render().items():
        assert (EXAMPLES / name).read_text() == text, f"run python examples/assemble.py ({name})"


def test_examples_are_complete_and_clean() -> None:
    assert len(CATALOG.bundles) >= 3
    assert not CATALOG.excluded
    assert CATALOG.all_problems() == []
    for sid, b in CATALOG.bundles.items():
        methods = {t.method for t in b.tools}
        assert len(b.db_schema.tables) >= 5, sid
        assert len(b.tools) >= 8
        assert "GET" in methods
        assert methods & {"POST", "PUT", "PATCH", "DELETE"}
        assert len(b.tasks) >= 5, sid
        assert sorted(b.verifiers["code"]) == list(range(len(b.tasks))), sid
        assert sorted(SOLUTIONS[sid]) == list(range(len(b.tasks))), sid
        stats = build_seed(b, None)
        assert stats.failed == [], sid
        assert stats.total_rows > 50, sid
        tool_names = {t.name for t in b.tools}
        for solution in SOLUTIONS[sid].values():
            assert {c.tool for c in solution.calls} <= tool_names, sid


@pytest.fixture(scope="module")
def seeds(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("seeds")
    return {sid: (build_seed(b, root / f"{sid}.db"), root / f"{sid}.db")[1] for sid, b in CATALOG.bundles.items()}


def _verdict(sid: str, idx: int, initial: Path, final: Path, answer: str | None) -> str:
    v = CATALOG.bundles[sid].verifier(idx)
    assert v is not None
    outcome = run_verifier(v.code, v.function, [str(initial), str(final), answer])
    assert outcome.error is None, outcome.error
    return grade(outcome.value)


@pytest.mark.parametrize(("sid", "idx"), CASES, ids=[f"{s}-task{i}" for s, i in CASES])
def test_reference_solution_completes_the_task(
    sid: str, idx: int, seeds: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seed = seeds[sid]
    solution = SOLUTIONS[sid][idx]
    # an agent that does nothing and answers nothing must not pass
    assert _verdict(sid, idx, seed, seed, None) == "others"

    work = tmp_path / "work.db"
    shutil.copy(seed, work)
    code = CATALOG.bundles[sid].env_code
    module = import_env_module(code, f"sqlite:///{work}", f"awm_example_{sid}_{idx}", monkeypatch)
    try:
        with TestClient(module.app) as client:
            openapi = module.app.openapi()
            for call in solution.calls:
                req = request_for(openapi, call.tool, call.arguments)
                resp = client.request(req.method, req.path, params=req.query, json=req.body)
                assert resp.status_code < 400, f"{call.tool}: {resp.status_code} {resp.text}"
    finally:
        module.engine.dispose()
    assert _verdict(sid, idx, seed, work, solution.final_answer) == "complete"
