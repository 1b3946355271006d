"""The server's app in process: an example scenario as `awm build` renders it, served through
Starlette's TestClient (lifespan included), no Docker. The container tests (tests/image) cover
the same routes in the hardened image; these cover the logic, fast.

The example module is trusted code, so importing it here is fine; verifiers still run in their
own sandboxed child process, as in the image.
"""

from __future__ import annotations

import sqlite3
import sys
import types
from collections.abc import Iterator
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from awm.builder.build.render import render
from awm.builder.catalog.loader import load_catalog
from awm_server.app import create_app
from awm_server.contract import CONTEXT_DIR
from awm_server.environment import Environment
from awm_server.envmodule import MODULE_NAME
from awm_server.settings import Settings, hash_token
from tests.helpers import EXAMPLES

SID = "pantrypal_recipe_planner"
TASK = 2  # "remove the lunch planned for 2025-03-13": one DELETE of meal plan entry 10
ENTRY = 10
TOKEN = "test-control-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
def scenario_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("ctx")
    render(load_catalog(EXAMPLES).bundles[SID], "awm/base:test").write(root)
    return root / CONTEXT_DIR


def _serve(
    scenario_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, token: str | None
) -> Iterator[TestClient]:
    # Loading the module sets DATABASE_PATH and registers it in sys.modules; both are undone.
    monkeypatch.setenv("DATABASE_PATH", "")
    monkeypatch.setitem(sys.modules, MODULE_NAME, types.ModuleType(MODULE_NAME))
    settings = Settings(
        scenario_dir=scenario_dir,
        work_dir=tmp_path / "work",
        scratch_dir=tmp_path,
        control_token_sha256=hash_token(token) if token else None,
    )
    env = Environment(settings)
    try:
        with TestClient(create_app(env)) as client:
            yield client
    finally:
        env.env.dispose_engines()


@pytest.fixture
def client(scenario_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[TestClient]:
    yield from _serve(scenario_dir, tmp_path, monkeypatch, TOKEN)


def _entries(client: TestClient) -> set[int]:
    """The meal plan entry ids of a snapshot of the working database."""
    snap = client.get("/_awm/snapshot", headers=AUTH)
    assert snap.status_code == 200
    assert snap.headers["content-type"] == "application/vnd.sqlite3"
    return _ids(snap.content)


def _ids(data: bytes) -> set[int]:
    conn = sqlite3.connect(":memory:")
    try:
        conn.deserialize(data)
        return {r[0] for r in conn.execute("SELECT id FROM meal_plan_entries")}
    finally:
        conn.close()


def _verify(client: TestClient, **body: object) -> tuple[int, dict[str, object]]:
    response = client.post("/_awm/verify", json={"task_idx": TASK, **body}, headers=AUTH)
    return response.status_code, response.json()


def test_health_is_open_and_the_rest_needs_the_token(client: TestClient) -> None:
    assert client.get("/_awm/health").json() == {"status": "ok", "scenario": SID}
    for method, path in [("GET", "/_awm/info"), ("GET", "/_awm/tasks"), ("POST", "/_awm/reset"),
                         ("POST", "/_awm/verify"), ("GET", "/_awm/snapshot")]:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}):
            response = client.request(method, path, headers=headers)
            assert response.status_code == 401, (method, path, headers)
            assert "AWM_CONTROL_TOKEN" in response.json()["error"]


def test_tasks_list_every_task_with_its_verifiers(client: TestClient, scenario_dir: Path) -> None:
    bundle = load_catalog(EXAMPLES).bundles[SID]
    tasks = client.get("/_awm/tasks", headers=AUTH).json()
    assert [t["task"] for t in tasks] == bundle.tasks
    assert [t["task_idx"] for t in tasks] == list(range(len(bundle.tasks)))
    assert all(t["verifiers"] == ["code"] for t in tasks)


def test_info_says_whether_the_control_plane_is_guarded(
    scenario_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for client in _serve(scenario_dir, tmp_path, monkeypatch, token=None):
        info = client.get("/_awm/info").json()
        assert info["scenario"] == SID
        assert info["awm.runtime"]["control_token"] is False
        assert info["awm.runtime"]["control_plane"].startswith("unguarded")


def test_verify_reset_and_snapshot_follow_the_working_database(client: TestClient) -> None:
    assert ENTRY in _entries(client)
    status, before = _verify(client)
    assert status == 200
    assert (before["result"], before["reward"], before["error"]) == ("others", 0.0, None)

    # The agent's action, through the environment app mounted behind the gate.
    assert client.delete(f"/meal-plan/{ENTRY}").status_code < 300
    assert ENTRY not in _entries(client)
    status, after = _verify(client)
    assert (status, after["result"], after["reward"]) == (200, "complete", 1.0)
    assert (after["scenario"], after["task_idx"], after["flavour"]) == (SID, TASK, "code")

    reset = client.post("/_awm/reset", headers=AUTH).json()
    assert reset["ok"] is True
    assert reset["resets"] == 1
    assert ENTRY in _entries(client)
    assert _verify(client)[1]["result"] == "others"
    # The app's own connections see the restored rows too.
    assert client.get("/meal-plan", params={"start_date": "2025-03-13", "end_date": "2025-03-13"}).status_code == 200


@pytest.mark.parametrize(
    ("body", "status", "words"),
    [
        ({}, 400, "task_idx"),
        ({"task_idx": True}, 400, "task_idx must be an integer"),
        ({"task_idx": "2"}, 400, "task_idx must be an integer"),
        ({"task_idx": 2, "flavour": "python"}, 400, "flavour must be 'code' or 'sql'"),
        ({"task_idx": 2, "final_answer": 7}, 400, "final_answer must be a string"),
        ({"task_idx": 99}, 404, "no task 99"),
        ({"task_idx": 2, "flavour": "sql"}, 404, "has no sql verifier"),
    ],
)
def test_bad_verify_requests_name_the_fault(
    client: TestClient, body: dict[str, object], status: int, words: str
) -> None:
    response = client.post("/_awm/verify", json=body, headers=AUTH)
    assert response.status_code == status
    assert words in response.json()["error"]


def test_verify_of_a_body_that_is_not_json_is_a_bad_request(client: TestClient) -> None:
    response = client.post("/_awm/verify", content=b"{not json", headers=AUTH)
    assert response.status_code == 400
    assert "bad verify request" in response.json()["error"]
