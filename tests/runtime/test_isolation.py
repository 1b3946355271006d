"""Neighbours stay apart without root, and the control token never reaches the container.

Attacks are made from where an attacker sits: from inside one environment's container, as its
user, towards every address another environment answers on (its container address and, when
published, the host-side port); and from the host without the token. Traffic goes only to
addresses on this machine.
"""

from __future__ import annotations

import json
import logging
import stat
from collections.abc import Iterator
from pathlib import Path

import docker
import httpx
import pytest
from typer.testing import CliRunner

from awm.cli import app
from awm.runtime import tokens
from awm.runtime.base import Isolation, Protection, StartOptions
from awm.runtime.docker_backend import INTERNAL_NETWORK, PUBLISHED_NETWORK, DockerBackend
from awm.runtime.env import Env
from awm.runtime.testing import AWMContainer

pytestmark = pytest.mark.docker

IMAGE = "trailhead_campground_reservations"

# Connects to every host:port given, all at once; prints what each attempt gave.
PROBE = """
import json, socket, sys, concurrent.futures as cf
def attempt(target):
    host, port = target.rsplit(":", 1)
    s = socket.socket(); s.settimeout(3)
    try:
        s.connect((host, int(port))); return "connected"
    except OSError as exc:
        return type(exc).__name__
    finally:
        s.close()
with cf.ThreadPoolExecutor(32) as pool:
    print(json.dumps(dict(zip(sys.argv[1:], pool.map(attempt, sys.argv[1:])))))
"""


def _probe(client: docker.DockerClient, env: Env, targets: list[str]) -> dict[str, str]:
    """Connect from inside `env`'s container, as its own user, with the image's python."""
    code, out = client.containers.get(env.id).exec_run(["python", "-c", PROBE, *targets], user="10001:10001")
    assert code == 0, out
    assert isinstance(out, bytes)
    result: dict[str, str] = json.loads(out)
    return result


def _networks(client: docker.DockerClient, env: Env) -> dict[str, dict[str, str]]:
    networks: dict[str, dict[str, str]] = client.containers.get(env.id).attrs["NetworkSettings"]["Networks"]
    return networks


class _NoRoot(DockerBackend):
    """This backend where the egress guard cannot be installed (what an unprivileged user gets)."""

    def can_seal(self) -> bool:
        return False


@pytest.fixture
def started(docker_client: docker.DockerClient) -> Iterator[list[Env]]:
    envs: list[Env] = []
    yield envs
    for env in envs:
        env.stop()


def test_neighbours_cannot_reach_each_other_without_the_egress_guard(
    docker_client: docker.DockerClient, images: dict[str, str], started: list[Env]
) -> None:
    backend = DockerBackend(docker_client)
    image = images[IMAGE]
    # Two environments in each mode that does not depend on root, without the egress guard,
    # so that the networks alone keep them apart.
    for isolation in (Isolation.INTERNAL, Isolation.INTERNAL, Isolation.PUBLISHED, Isolation.PUBLISHED):
        started.append(backend.start(image, StartOptions(isolation=isolation, egress_guard=False)))
    internal, published = started[:2], started[2:]
    for env in internal:
        assert env.isolation is Isolation.INTERNAL
        assert env.protections == {Protection.INTERNAL_NETWORK, Protection.NO_NEIGHBOURS, Protection.TOKEN}
        assert list(_networks(docker_client, env)) == [INTERNAL_NETWORK]
    for env in published:
        assert env.isolation is Isolation.PUBLISHED
        assert env.protections == {Protection.NO_NEIGHBOURS, Protection.TOKEN}
        assert list(_networks(docker_client, env)) == [PUBLISHED_NETWORK]
        assert env.base_url.startswith("http://127.0.0.1:")

    ips = {env.id: next(iter(_networks(docker_client, env).values()))["IPAddress"] for env in started}
    gateways = {n["Gateway"] for env in started for n in _networks(docker_client, env).values()}
    host_ports = [env.base_url.rsplit(":", 1)[1] for env in published]
    # The host reaches every one of them at its container address: the servers listen there.
    for env in started:
        assert httpx.get(f"http://{ips[env.id]}:8000/_awm/health").status_code == 200

    for env in started:
        own = f"{ips[env.id]}:8000"
        neighbours = [f"{ips[other.id]}:8000" for other in started if other is not env]
        # where the published ports are bound on the host: 127.0.0.1 (the container's own
        # loopback, from inside), the gateways of both networks and of the default bridge
        host_side = [f"{host}:{port}" for port in host_ports for host in ["127.0.0.1", "172.17.0.1", *gateways]]
        result = _probe(docker_client, env, [own, *neighbours, *host_side])
        assert result.pop(own) == "connected"  # the probe itself works from in there
        assert "connected" not in result.values(), (env.isolation, result)
        assert set(result) == {*neighbours, *host_side}


def test_without_root_a_warning_says_the_egress_guard_is_missing(
    docker_client: docker.DockerClient, images: dict[str, str], started: list[Env],
    caplog: pytest.LogCaptureFixture,
) -> None:
    backend = _NoRoot(docker_client)
    with caplog.at_level(logging.WARNING, logger="awm"):
        started.append(backend.start(images[IMAGE]))  # SEALED asked for
        started.append(backend.start(images[IMAGE], isolation=Isolation.PUBLISHED))
    sealed, published = started
    assert sealed.isolation is Isolation.INTERNAL
    assert sealed.protections == {Protection.INTERNAL_NETWORK, Protection.NO_NEIGHBOURS, Protection.TOKEN}
    assert published.isolation is Isolation.PUBLISHED
    assert published.protections == {Protection.NO_NEIGHBOURS, Protection.TOKEN}
    warnings = [r.getMessage() for r in caplog.records if "no egress guard" in r.getMessage()]
    assert len(warnings) == 2
    assert "it runs as INTERNAL: the host's own addresses stay reachable" in warnings[0]
    assert "it is published with a route out" in warnings[1]
    # as root, the default gets every protection
    started.append(DockerBackend(docker_client).start(images[IMAGE]))
    assert started[-1].isolation is Isolation.SEALED
    assert started[-1].protections == set(Protection)


def test_the_token_guards_the_control_plane_and_the_container_holds_only_its_hash(
    docker_client: docker.DockerClient, images: dict[str, str], started: list[Env]
) -> None:
    backend = DockerBackend(docker_client)
    started.extend(backend.start(images[IMAGE], isolation=iso) for iso in (Isolation.SEALED, Isolation.PUBLISHED))
    for env in started:
        assert env.token is not None
        assert len(env.token) >= 40
        for headers in ({}, {"Authorization": "Bearer wrong"}):
            assert httpx.post(f"{env.base_url}/_awm/reset", headers=headers).status_code == 401
            assert httpx.post(f"{env.base_url}/_awm/verify", json={"task_idx": 0}, headers=headers).status_code == 401
        assert env.reset()["ok"] is True  # the handle carries the token
        assert env.verify(0)["result"] == "others"
        config_env = docker_client.containers.get(env.id).attrs["Config"]["Env"]
        assert f"{tokens.TOKEN_HASH_VAR}={tokens.token_hash(env.token)}" in config_env
        assert not any(env.token in var or var.startswith("AWM_CONTROL_TOKEN=") for var in config_env)
        code, environ = docker_client.containers.get(env.id).exec_run(
            ["python", "-c", "import sys; sys.stdout.buffer.write(open('/proc/1/environ', 'rb').read())"],
            user="10001:10001",
        )
        assert code == 0
        assert isinstance(environ, bytes)
        assert env.token.encode() not in environ
    first, second = started
    assert first.token != second.token  # one environment's token opens no other
    wrong = httpx.post(f"{second.base_url}/_awm/reset", headers={"Authorization": f"Bearer {first.token}"})
    assert wrong.status_code == 401
    with pytest.raises(ValueError, match="not in env: the container gets only its hash"):
        backend.start(images[IMAGE], env={"AWM_CONTROL_TOKEN": "x"})


def test_detached_environment_token_is_kept_for_later_commands(
    docker_client: docker.DockerClient, images: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWM_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.delenv("AWM_CONTROL_TOKEN", raising=False)
    runner = CliRunner()

    def invoke(*args: str) -> str:
        result = runner.invoke(app, ["env", *args])
        assert result.exit_code == 0, result.output
        return result.output

    output = invoke("start", images[IMAGE])
    name = output.splitlines()[0]
    try:
        assert "network:  sealed" in output
        assert "protections: egress_guard, internal_network, no_neighbours, token" in output
        record = {r["name"]: r for r in json.loads(invoke("ls", "--json"))}[name]
        assert record["isolation"] == "sealed"
        assert record["protections"] == ["egress_guard", "internal_network", "no_neighbours", "token"]
        token_file = tmp_path / "state" / "tokens" / record["id"]
        assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
        assert stat.S_IMODE(token_file.parent.stat().st_mode) == 0o700
        assert httpx.post(f"{record['base_url']}/_awm/reset").status_code == 401
        assert json.loads(invoke("reset", name, "--json"))["ok"] is True  # no --token: the kept one
        assert json.loads(invoke("verify", name, "--task-idx", "0", "--json"))["result"] == "others"
        table = invoke("ls")
        assert "sealed" in table
        assert "egress_guard" in table
    finally:
        invoke("stop", name)
    assert not token_file.exists()


def test_awm_container_is_tokened_on_loopback_and_apart(
    docker_client: docker.DockerClient, images: dict[str, str]
) -> None:
    with AWMContainer(images[IMAGE]) as first, AWMContainer(images[IMAGE]) as second:
        for env in (first, second):
            attrs = docker_client.containers.get(str(env.get_wrapped_container().id)).attrs
            assert attrs["HostConfig"]["PortBindings"]["8000/tcp"][0]["HostIp"] == "127.0.0.1"
            assert list(attrs["NetworkSettings"]["Networks"]) == [PUBLISHED_NETWORK]
            assert f"{tokens.TOKEN_HASH_VAR}={tokens.token_hash(env.control_token)}" in attrs["Config"]["Env"]
            assert httpx.post(f"{env.get_base_url()}/_awm/reset").status_code == 401
            assert env.reset()["ok"] is True
        second_ip = docker_client.containers.get(str(second.get_wrapped_container().id)).attrs[
            "NetworkSettings"]["Networks"][PUBLISHED_NETWORK]["IPAddress"]
        code, out = first.get_wrapped_container().exec_run(
            ["python", "-c", PROBE, f"{second_ip}:8000"], user="10001:10001")
        assert code == 0
        assert isinstance(out, bytes)
        assert json.loads(out)[f"{second_ip}:8000"] != "connected"
