"""`awm env ...` against real containers."""

from __future__ import annotations

import json

import docker
import pytest
from typer.testing import CliRunner

from awm.cli import app
from tests.helpers import free_port

pytestmark = pytest.mark.docker
runner = CliRunner()


def _invoke(*args: str) -> str:
    result = runner.invoke(app, ["env", *args])
    assert result.exit_code == 0, result.output
    return result.output


def test_env_commands_end_to_end(docker_client: docker.DockerClient, images: dict[str, str]) -> None:
    image = images["acme_helpdesk_support_tickets"]
    name = _invoke("start", image).splitlines()[0]
    try:
        listed = {r["name"]: r for r in json.loads(_invoke("ls", "--json"))}
        record = listed[name]
        assert (record["scenario"], record["status"], record["owner"]) == (
            "acme_helpdesk_support_tickets", "running", "detached")
        tools = _invoke("check", record["base_url"] + "/mcp")
        assert tools.splitlines()[-1] == f"12 tools at {record['base_url']}/mcp"
        assert json.loads(_invoke("verify", name, "--task-idx", "1", "--json"))["result"] == "others"
        assert _invoke("verify", name, "--task-idx", "1").strip() == "task 1: others (reward 0.0)"
        assert json.loads(_invoke("reset", name, "--json"))["ok"] is True
        assert _invoke("reset", name).startswith(f"reset {name} in ")
        assert _invoke("gc").strip() == "removed 0 orphaned environment(s)"  # detached: not an orphan
        assert isinstance(_invoke("logs", name), str)
        # a container needs no forward: its address is printed
        expected = f"{name} is reachable at {record['base_url']}/mcp (no forward needed)"
        assert _invoke("forward", name).strip() == expected
    finally:
        assert _invoke("stop", name).strip() == f"removed {name}"
    assert name not in {r["name"] for r in json.loads(_invoke("ls", "--json"))}


def test_env_start_with_published_port_and_errors(images: dict[str, str]) -> None:
    port = free_port()
    output = _invoke("start", images["pantrypal_recipe_planner"], "--port", str(port))
    name = output.splitlines()[0]
    try:
        assert f"MCP:      http://127.0.0.1:{port}/mcp" in output
        assert "network:  published" in output
    finally:
        _invoke("stop", name)
    missing = runner.invoke(app, ["env", "reset", "no-such-env"])
    assert missing.exit_code == 6
    assert "error: no environment container named 'no-such-env'\nhint: `awm env ls` lists" in missing.output
    no_image = runner.invoke(app, ["env", "start", "no_such_scenario"])
    assert no_image.exit_code == 5
    expected = "image awm/no_such_scenario:latest not found; build it with `awm build DATASET --only no_such_scenario`"
    assert expected in no_image.output
