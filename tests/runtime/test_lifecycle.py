"""Nothing leaks and nothing gets out: owner labels, gc, signals, network isolation."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import cast

import docker
import pytest
from typer.testing import CliRunner

from awm.cli import app
from awm.core.labels import LABEL_OWNER, LABEL_RUN_ID, check_user_labels, new_run_id
from awm.runtime.base import Isolation, StartOptions
from awm.runtime.docker_backend import DockerBackend
from tests.helpers import free_port

pytestmark = pytest.mark.docker
ROOT = Path(__file__).resolve().parents[2]

OWNER_SCRIPT = """
import sys, time
from awm.runtime.docker_backend import DockerBackend
backend = DockerBackend(run_id=sys.argv[1])
envs = [backend.start(sys.argv[2]) for _ in range(2)]
print("ready", flush=True)
time.sleep(600)
"""


def _owned_by(client: docker.DockerClient, run_id: str) -> list[str]:
    run: dict[str, str | list[str] | bool] = {"label": f"{LABEL_RUN_ID}={run_id}"}
    return sorted(cast(str, c.id) for c in client.containers.list(ignore_removed=True, all=True, filters=run))


def _spawn_owner(run_id: str, image: str) -> subprocess.Popen[str]:
    proc = subprocess.Popen([sys.executable, "-c", OWNER_SCRIPT, run_id, image], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line.strip() == "ready", proc.stderr.read() if proc.stderr else line
    return proc


def test_gc_removes_containers_of_a_killed_owner_only(
    docker_client: docker.DockerClient, images: dict[str, str]
) -> None:
    image = images["pantrypal_recipe_planner"]
    dead_run, live_run = new_run_id(), new_run_id()
    proc = _spawn_owner(dead_run, image)
    mine = DockerBackend(docker_client, run_id=live_run).start(image)  # owned by this live process
    detached = DockerBackend(docker_client, run_id=live_run).start(image, detached=True)
    try:
        assert len(_owned_by(docker_client, dead_run)) == 2
        proc.kill()
        proc.wait()
        assert len(_owned_by(docker_client, dead_run)) == 2  # SIGKILL: no chance to clean up
        result = CliRunner().invoke(app, ["env", "gc"])
        assert result.exit_code == 0, result.output
        assert "removed 2 orphaned environment(s)" in result.output
        assert _owned_by(docker_client, dead_run) == []
        assert _owned_by(docker_client, live_run) == sorted([mine.id, detached.id])
        assert mine.healthy()
        assert detached.healthy()
    finally:
        proc.kill()
        proc.communicate()
        mine.stop()
        detached.stop()
        DockerBackend(docker_client).gc()


@pytest.mark.parametrize("how", [signal.SIGTERM, signal.SIGINT])
def test_owner_cleans_up_on_signal(
    how: signal.Signals, docker_client: docker.DockerClient, images: dict[str, str]
) -> None:
    run_id = new_run_id()
    proc = _spawn_owner(run_id, images["acme_helpdesk_support_tickets"])
    try:
        assert len(_owned_by(docker_client, run_id)) == 2
        proc.send_signal(how)
        proc.wait(timeout=60)
        assert _owned_by(docker_client, run_id) == []
    finally:
        proc.kill()
        proc.communicate()


def test_labels(docker_client: docker.DockerClient, images: dict[str, str]) -> None:
    backend = DockerBackend(docker_client)
    with backend.start(images["pantrypal_recipe_planner"], labels={"team": "rl"}) as env:
        labels = docker_client.containers.get(env.id).labels
        assert labels["team"] == "rl"
        assert labels["awm.scenario"] == "pantrypal_recipe_planner"
        assert labels[LABEL_RUN_ID] == backend.run_id
        assert labels[LABEL_OWNER].split(":")[1] == str(os.getpid())
    with pytest.raises(ValueError, match=r"labels in the awm\. namespace are reserved: awm\.scenario"):
        check_user_labels({"awm.scenario": "x"})


class _Listener:
    """A TCP listener on every host address: what an escaping environment would reach."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("0.0.0.0", 0))
        self.sock.listen()
        self.port = self.sock.getsockname()[1]
        self.accepted = 0
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            conn.close()


PROBE = """
import json, socket, sys
out = {}
for host in sys.argv[2:]:
    s = socket.socket(); s.settimeout(3)
    try:
        s.connect((host, int(sys.argv[1]))); out[host] = "connected"
    except OSError as exc:
        out[host] = type(exc).__name__
    finally:
        s.close()
print(json.dumps(out))
"""


def test_sealed_environment_cannot_connect_out_but_host_reaches_it(
    docker_client: docker.DockerClient, images: dict[str, str]
) -> None:
    listener = _Listener()
    backend = DockerBackend(docker_client)
    with backend.start(images["trailhead_campground_reservations"]) as env, \
         backend.start(images["trailhead_campground_reservations"]) as neighbour:
        assert env.isolation is Isolation.SEALED
        assert env.client.call_tool("list_parks", {}).is_error is False  # the host reaches MCP
        container = docker_client.containers.get(env.id)
        network = container.attrs["NetworkSettings"]["Networks"]
        assert list(network) == ["awm-internal"]
        gateway = network["awm-internal"]["Gateway"]
        neighbour_ip = neighbour.base_url.split("//")[1].split(":")[0]
        # The host's own addresses, including the one the default bridge gives it, and another
        # environment: all refused, and the host's listener saw nothing.
        targets = [gateway, "172.17.0.1", neighbour_ip]
        code, out = container.exec_run(["python", "-c", PROBE, str(listener.port), *targets], user="10001:10001")
        assert code == 0, out
        assert json.loads(cast(bytes, out)) == dict.fromkeys(targets, "ConnectionRefusedError")
        _, out = container.exec_run(["python", "-c", PROBE, "8000", neighbour_ip], user="10001:10001")
        assert json.loads(cast(bytes, out)) == {neighbour_ip: "ConnectionRefusedError"}
        assert listener.accepted == 0
        # a control check: the same probe from an unsealed environment does reach the host
        with backend.start(images["trailhead_campground_reservations"], isolation=Isolation.INTERNAL) as open_env:
            open_container = docker_client.containers.get(open_env.id)
            _, out = open_container.exec_run(["python", "-c", PROBE, str(listener.port), gateway], user="10001:10001")
            assert json.loads(cast(bytes, out)) == {gateway: "connected"}
    time.sleep(0.2)
    assert listener.accepted == 1


def test_published_environment_on_a_fixed_port(docker_client: docker.DockerClient, images: dict[str, str]) -> None:
    port = free_port()
    backend = DockerBackend(docker_client)
    options = StartOptions(isolation=Isolation.PUBLISHED, host_port=port)
    with backend.start(images["pantrypal_recipe_planner"], options) as env:
        assert env.base_url == f"http://127.0.0.1:{port}"
        assert env.client.health()["status"] == "ok"
