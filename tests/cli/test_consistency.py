"""The command line's conventions: --json where a command lists or reports, exit codes of verify,
and `awm env stop` that removes only what it is asked to."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import pytest
import typer.main
from typer.testing import CliRunner

from awm.builder.build.render import render
from awm.builder.catalog.loader import load_catalog
from awm.cli import app
from awm.runtime.base import EnvRecord
from awm.runtime.docker_backend import DockerBackend
from awm.runtime.env import Env
from awm_server.__main__ import main as image_main
from awm_server.contract import CONTEXT_DIR, SEED_FILE
from tests.helpers import derive_dataset

runner = CliRunner()
SID = "pantrypal_recipe_planner"
# Commands whose output is the thing itself (a log, manifests, a narrated demo).
WITHOUT_JSON = {"demo", "env logs", "k8s render"}
# Commands added while this convention was introduced; each still has to decide on --json.
PENDING = {"k8s apply", "agent", "verify", "eval"}


def _commands(group: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    for name, command in group.commands.items():
        path = f"{prefix}{name}"
        if hasattr(command, "commands"):
            yield from _commands(command, f"{path} ")
        else:
            yield path, command


def test_every_command_that_lists_or_reports_has_json() -> None:
    commands = dict(_commands(typer.main.get_command(app)))
    assert {"catalog", "build", "seed", "images ls", "env ls", "env verify", "env check", "gen all"} <= set(commands)
    missing = [path for path, command in commands.items()
               if path not in WITHOUT_JSON | PENDING and not any("--json" in p.opts for p in command.params)]
    assert missing == []


def test_the_image_verify_command_exits_1_on_an_error_result(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    broken = ("def verify_task_completion(initial_db_path, final_db_path, final_answer=None):\n"
              "    raise RuntimeError('x')\n")
    dataset = derive_dataset(tmp_path / "ds", SID, "verify_exit_probe", verifiers={0: broken})
    render(load_catalog(dataset).bundles["verify_exit_probe"], "awm/base:test").write(tmp_path / "ctx")
    scenario_dir = tmp_path / "ctx" / CONTEXT_DIR
    monkeypatch.setenv("AWM_SCENARIO_DIR", str(scenario_dir))
    seed = str(scenario_dir / SEED_FILE)
    assert image_main(["verify", "--task-idx", "0", "--final-db", seed]) == 1
    assert json.loads(capsys.readouterr().out)["result"] == "error"
    assert image_main(["verify", "--task-idx", "1", "--final-db", seed]) == 0
    assert json.loads(capsys.readouterr().out)["result"] == "others"


# -- awm env stop --all ---------------------------------------------------------------------


@pytest.fixture
def two_users_envs(
    docker_client: docker.DockerClient, images: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> Iterator[dict[str, Env]]:
    """One environment of each of two made-up users (so no one else's environment is touched)."""
    backend = DockerBackend(docker_client)
    users = {who: f"awm-test-{who}-{uuid.uuid4().hex[:8]}" for who in ("me", "other")}
    envs = {}
    try:
        for user in users.values():
            monkeypatch.setattr("awm.core.labels.current_user", lambda user=user: user)
            envs[user] = backend.start(images[SID])
        monkeypatch.setattr("awm.core.labels.current_user", lambda: users["me"])
        monkeypatch.setattr("awm.runtime.cli.current_user", lambda: users["me"])
        yield envs
    finally:
        for env in envs.values():
            env.stop()


def _names(output: str) -> set[str]:
    return {r["name"] for r in json.loads(output)}


@pytest.mark.docker
def test_stop_all_removes_only_this_users_environments(
    two_users_envs: dict[str, Env], monkeypatch: pytest.MonkeyPatch
) -> None:
    me, other = two_users_envs
    listed = {r["name"]: r for r in json.loads(runner.invoke(app, ["env", "ls", "--json"]).output)}
    assert listed[two_users_envs[me].name]["user"] == me

    result = runner.invoke(app, ["env", "stop", "--all", "--json"])
    assert result.exit_code == 0, result.output
    assert _names(result.output) == {two_users_envs[me].name}
    assert two_users_envs[other].backend.is_running(two_users_envs[other].id)

    # --all-owners: everyone's. Shown on these two only, as the engine is shared with others.
    ours = {env.id for env in two_users_envs.values()}
    real_list = DockerBackend.list

    def only_ours(self: DockerBackend, **kwargs: Any) -> list[EnvRecord]:
        return [r for r in real_list(self, **kwargs) if r.id in ours]

    monkeypatch.setattr(DockerBackend, "list", only_ours)
    result = runner.invoke(app, ["env", "stop", "--all", "--all-owners", "--json"])
    assert result.exit_code == 0, result.output
    assert _names(result.output) == {two_users_envs[other].name}
    assert not two_users_envs[other].backend.is_running(two_users_envs[other].id)
