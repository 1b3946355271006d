"""`awm env ... --backend k8s` end to end: the fake API over HTTP, a kubelet running the real image.

The command line reads KUBECONFIG as it would for a real cluster; the pods are containers of
the images the project built (tests/k8s/docker_kubelet.py). Inside a cluster commands reach
pods at their IP (`--connect pod-ip`); outside, through kubectl's port-forward, played here
by a TCP relay (tests/k8s/fake_kubectl.py) since kubectl's tunnel needs a real API server.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any, cast

import docker
import pytest
from typer.testing import CliRunner

from awm.builder.catalog.solutions import load_solutions
from awm.cli import app
from awm.core.labels import current_user
from awm.runtime import tokens
from awm.runtime.client import list_mcp_tools
from awm.runtime.docker_backend import DockerBackend
from tests.helpers import EXAMPLES
from tests.k8s.conftest import fake_kubectl
from tests.k8s.docker_kubelet import DockerKubelet
from tests.k8s.fake_api import FakeKube, Obj
from tests.k8s.http_api import Served, serve

pytestmark = pytest.mark.docker
SCENARIO = "pantrypal_recipe_planner"
runner = CliRunner()


@pytest.fixture
def cluster(kubelet: DockerKubelet, tmp_path: Path) -> Iterator[tuple[FakeKube, Served, dict[str, str]]]:
    """The fake API with the Docker kubelet, served over HTTP; the environment of `awm` commands."""
    fake = FakeKube()
    fake.kubelet = kubelet
    (tmp_path / "bin").mkdir()
    relay = Path(__file__).parent / "fake_kubectl.py"
    kubectl = fake_kubectl(tmp_path / "bin", f'exec {sys.executable} {relay} "$@"\n')
    with serve(fake, tmp_path) as served:
        env = {
            "KUBECONFIG": str(served.kubeconfig),
            "AWM_STATE_DIR": str(tmp_path / "state"),
            "PATH": f"{kubectl.parent}:{os.environ['PATH']}",
            "FAKE_K8S_URL": served.url,
            "FAKE_KUBECTL_LOG": str(tmp_path / "kubectl.log"),
        }
        yield fake, served, env
        for pod in fake.list_objects("pods"):  # a failed test's pods: deleted through the API, the kubelet follows
            runner.invoke(app, ["env", "stop", pod["metadata"]["name"], "--backend", "k8s"], env=env)
    fake.close()


def awm(env: dict[str, str], *args: str, code: int = 0) -> str:
    result = runner.invoke(app, list(args), env=env)
    assert result.exit_code == code, result.output
    return result.output


def kubectl_runs(env: dict[str, str]) -> list[dict[str, Any]]:
    log = Path(env["FAKE_KUBECTL_LOG"])
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    # a zombie of ours counts as gone: killed and waited for by the process that started it
    return Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"


def test_env_commands_on_kubernetes_from_inside_the_cluster(
    cluster: tuple[FakeKube, Served, dict[str, str]], images: dict[str, str], docker_client: docker.DockerClient
) -> None:
    fake, _, env = cluster
    env = {**env, "AWM_K8S_CONNECT": "pod-ip"}
    solution = load_solutions(EXAMPLES)[SCENARIO]
    idx = sorted(solution)[0]

    started = json.loads(awm(env, "env", "start", images[SCENARIO], "--backend", "k8s", "--json"))
    name = started["name"]
    assert (started["backend"], started["namespace"], started["scenario"]) == ("k8s", "awm", SCENARIO)
    pod = fake.get_object("pods", name)
    assert pod is not None
    # Detached: no Lease owns it (it outlives this command), and who started it is recorded.
    assert "ownerReferences" not in pod["metadata"]
    assert pod["metadata"]["annotations"] == {"awm.io/owner": "detached", "awm.io/user": current_user()}
    assert fake.list_objects("leases") == []
    # Its token is kept for later commands, readable by this user only; the pod has its hash.
    token_file = Path(env["AWM_STATE_DIR"]) / "tokens" / f"k8s_awm_{name}"
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    [hashed] = [e["value"] for e in pod["spec"]["containers"][0]["env"] if e["name"] == tokens.TOKEN_HASH_VAR]
    assert hashed == tokens.token_hash(token_file.read_text())

    [record] = json.loads(awm(env, "env", "ls", "--backend", "k8s", "--json"))
    assert (record["name"], record["status"], record["owner"], record["user"]) == (
        name, "Running", "detached", current_user())
    assert record["base_url"] == started["base_url"]
    assert record["base_url"].endswith(":8000")
    assert "awm.io" not in awm(env, "env", "ls")  # the Docker listing does not show pods

    tools = asyncio.run(list_mcp_tools(f"{record['base_url']}/mcp"))
    assert len(tools) > 3
    assert json.loads(awm(env, "env", "verify", name, "--task-idx", str(idx), "--backend", "k8s",
                          "--json"))["result"] == "others"
    assert json.loads(awm(env, "env", "reset", name, "--backend", "k8s", "--json"))["ok"] is True
    # AWM_BACKEND picks the backend as --backend does.
    assert awm({**env, "AWM_BACKEND": "k8s"}, "env", "reset", name).startswith(f"reset {name} in ")
    awm(env, "env", "logs", name, "--backend", "k8s")

    # A wrong token is refused by the pod, as on Docker.
    refused = runner.invoke(app, ["env", "reset", name, "--backend", "k8s", "--token", "wrong"], env=env)
    assert refused.exit_code != 0
    assert "401" in refused.output or "token" in refused.output

    # gc on Docker leaves the pod's token alone; gc on k8s drops the tokens of pods that are gone.
    tokens_dir = token_file.parent
    (tokens_dir / "k8s_awm_awm-gone-1234").write_text("stale")
    old_state = os.environ.get("AWM_STATE_DIR")
    os.environ["AWM_STATE_DIR"] = env["AWM_STATE_DIR"]
    try:
        DockerBackend(docker_client).gc()
    finally:
        if old_state is None:
            del os.environ["AWM_STATE_DIR"]
        else:
            os.environ["AWM_STATE_DIR"] = old_state
    assert token_file.exists()
    assert (tokens_dir / "k8s_awm_awm-gone-1234").exists()
    assert awm(env, "env", "gc", "--backend", "k8s").strip() == "removed 0 orphaned environment(s)"
    assert not (tokens_dir / "k8s_awm_awm-gone-1234").exists()
    assert token_file.exists()

    # Mistakes get one clear line and a distinct exit code.
    missing = awm(env, "env", "reset", "no-such-env", "--backend", "k8s", code=6)
    assert "error: no environment pod in namespace awm named 'no-such-env'" in missing
    assert "--port publishes a Docker container" in awm(
        env, "env", "start", images[SCENARIO], "--backend", "k8s", "--port", "9999", code=2)

    # --all removes only this user's pods (another user's stays), then --all-owners removes it too.
    theirs = fake.create_object("v1", "pods", {**pod, "metadata": {
        **pod["metadata"], "name": "awm-theirs", "annotations": {"awm.io/owner": "detached", "awm.io/user": "x"}}})
    assert awm(env, "env", "stop", "--all", "--backend", "k8s").strip() == f"removed {name}"
    assert not token_file.exists()
    assert [p["metadata"]["name"] for p in fake.list_objects("pods")] == [theirs["metadata"]["name"]]
    assert awm(env, "env", "stop", "--all", "--all-owners", "--backend", "k8s").strip() == "removed awm-theirs"
    assert fake.list_objects("pods") == []
    assert kubectl_runs(env) == []  # in the cluster, nothing was forwarded


def test_env_commands_on_kubernetes_from_a_laptop_go_through_port_forwards(
    cluster: tuple[FakeKube, Served, dict[str, str]], images: dict[str, str]
) -> None:
    fake, _, env = cluster
    env = {**env, "AWM_K8S_CONNECT": "port-forward"}
    out = awm(env, "env", "start", images[SCENARIO], "--backend", "k8s")
    name = out.splitlines()[0]
    # The printed URL is the pod's own (a forward would end with the command), with the way in.
    pod_ip = cast(Obj, fake.get_object("pods", name))["status"]["podIP"]
    assert f"MCP:      http://{pod_ip}:8000/mcp (in the cluster)" in out
    assert f"from here: awm env forward {name} --backend k8s" in out
    [during_start] = kubectl_runs(env)
    assert during_start["args"] == ["port-forward", "-n", "awm", f"pod/{name}", ":8000", "--address", "127.0.0.1"]
    assert gone(int(during_start["pid"]))  # readiness went through it, and it ended with the command

    assert json.loads(awm(env, "env", "reset", name, "--backend", "k8s", "--json"))["ok"] is True
    after_reset = kubectl_runs(env)[-1]
    assert after_reset["pid"] != during_start["pid"]
    assert gone(int(after_reset["pid"]))

    # `awm env forward` keeps a tunnel open until Ctrl-C: MCP works through it meanwhile.
    forward = subprocess.Popen(
        [sys.executable, "-m", "awm", "env", "forward", name, "--backend", "k8s", "--json"],
        env={**os.environ, **env}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        assert forward.stdout is not None
        announced = json.loads(forward.stdout.readline())  # one line, while the forward runs
        assert announced["name"] == name
        url = announced["mcp_url"]
        assert url.startswith("http://127.0.0.1:")
        assert url == announced["base_url"] + "/mcp"
        assert len(asyncio.run(list_mcp_tools(url))) > 3
        forward.send_signal(signal.SIGINT)
        assert forward.wait(30) == 0, forward.stdout.read()
    finally:
        forward.kill()
        forward.wait()
        cast(IO[str], forward.stdout).close()  # stdout=PIPE
    tunnel = kubectl_runs(env)[-1]
    deadline = time.monotonic() + 10
    while not gone(int(tunnel["pid"])):
        assert time.monotonic() < deadline, "Ctrl-C left kubectl port-forward running"
        time.sleep(0.05)

    awm(env, "env", "stop", name, "--backend", "k8s")
    assert fake.list_objects("pods") == []
