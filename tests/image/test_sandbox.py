"""Verifiers and request bodies attacking a running environment from the inside and the outside.

A crafted scenario whose verifiers attack: read PID 1's environment, write the working
database, signal PID 1, connect to the control plane and to the host, fill /tmp, print 100 MB,
send UDP, connect to a unix socket, set up io_uring, ptrace PID 1. The container runs as
`docker run -e AWM_CONTROL_TOKEN=...` would (hardened, 512 MiB); each attack is denied by
Landlock or the seccomp filter or contained, the server stays healthy and the database unchanged.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import docker
import httpx
import pytest
from docker.models.containers import Container

from awm.builder.build.batch import BuildResult, build_images
from awm.builder.catalog.loader import load_catalog
from awm.core.labels import new_run_id, owner_labels
from awm.runtime.client import EnvClient
from awm.runtime.docker_backend import sandbox_options
from tests.helpers import derive_dataset, remove_scenario_images
from tests.image.conftest import TEST_LABEL
from tests.server.syscalls import SYSCALLS

pytestmark = pytest.mark.docker

ATTACKS = '''
import errno, json, os, signal, socket, sqlite3
def verify_task_completion(initial_db_path, final_db_path, final_answer=None):
    target = json.loads(final_answer)
    seen = {}
    def attempt(name, fn):
        try:
            seen[name] = "done: " + repr(fn())[:200]
        except OSError as exc:
            seen[name] = errno.errorcode.get(exc.errno, str(exc.errno))
        except sqlite3.Error as exc:
            seen[name] = "sqlite: " + str(exc)
    attempt("read_environ", lambda: open("/proc/1/environ", "rb").read())
    attempt("open_working_db", lambda: open("/tmp/awm/env.db", "r+b").write(b"garbage"))
    attempt("sql_working_db", lambda: sqlite3.connect("/tmp/awm/env.db").execute("DELETE FROM recipes").rowcount)
    attempt("truncate_working_db", lambda: os.truncate("/tmp/awm/env.db", 0))
    attempt("sigterm_pid1", lambda: os.kill(1, signal.SIGTERM))
    attempt("sigkill_pid1", lambda: os.kill(1, signal.SIGKILL))
    attempt("control_plane", lambda: socket.create_connection(("127.0.0.1", 8000), timeout=3).close())
    attempt("gateway", lambda: socket.create_connection((target["gateway"], target["port"]), timeout=3).close())
    attempt("fill_tmp", lambda: open("/tmp/planted-by-verifier", "wb").write(b"x" * 1024))
    for i in range(4):  # its own scratch folder: allowed, and removed after the verify
        attempt(f"fill_scratch_{i}", lambda: open(f"fill-{i}.bin", "wb").write(b"x" * 16 * 1024 * 1024))
    seen["scratch"] = os.getcwd()
    return {"result": "others", "seen": seen}
'''
FLOODS = '''
import sys
def verify_task_completion(initial_db_path, final_db_path, final_answer=None):
    block = "x" * (1024 * 1024)
    for _ in range(100):  # 100 MB
        print(block)
    return {"result": "complete"}
'''
BEYOND_LANDLOCK = SYSCALLS + '''
import errno, json, socket
def verify_task_completion(initial_db_path, final_db_path, final_answer=None):
    target = json.loads(final_answer)
    seen = {}
    def attempt(name, fn):
        try:
            seen[name] = "done: " + repr(fn())[:200]
        except OSError as exc:
            seen[name] = errno.errorcode.get(exc.errno, str(exc.errno))
    attempt("udp_send", lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b"leak", tuple(target["udp"])))
    attempt("unix_connect", lambda: socket.socket(socket.AF_UNIX).connect(target["unix"]))
    attempt("netlink", lambda: socket.socket(socket.AF_NETLINK, socket.SOCK_RAW))
    attempt("io_uring_setup", io_uring)
    attempt("ptrace_pid1", lambda: syscall("ptrace", 16, 1, 0, 0))  # PTRACE_ATTACH
    attempt("process_vm_readv_pid1", lambda: syscall("process_vm_readv", 1, None, 0, None, 0, 0))
    attempt("unshare_user", lambda: syscall("unshare", 0x10000000))  # CLONE_NEWUSER
    attempt("keyctl", lambda: syscall("keyctl", 0, -3, 0))  # the session keyring's id
    return {"result": "others", "seen": seen}
'''
# Listens inside the container, for the verifier: UDP on 127.0.0.1:9999 and a pathname unix
# socket; writes the first datagram it receives to a file.
LISTENER = """
import socket
udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
udp.bind(("127.0.0.1", 9999))
unix = socket.socket(socket.AF_UNIX)
unix.bind("/tmp/listener/unix.sock")
unix.listen()
open("/tmp/listener/ready", "w").close()
data = udp.recv(64)
with open("/tmp/listener/first-datagram", "wb") as f:
    f.write(data)
"""
PEEK_ROUTE = """

@app.get("/peek_environ", operation_id="peek_environ", summary="What the module can see", tags=["test"])
def peek_environ():
    import os as _os
    with open("/proc/self/environ", "rb") as _f:
        proc = _f.read().decode("utf-8", "replace")
    return {"environ": dict(_os.environ), "proc": proc}
"""


def _with_peek_route(code: str) -> str:
    head, main = code.split('if __name__ == "__main__":')
    return head + PEEK_ROUTE + '\n\nif __name__ == "__main__":' + main


@pytest.fixture(scope="module")
def attack_image(docker_client: docker.DockerClient, tmp_path_factory: pytest.TempPathFactory) -> Iterator[BuildResult]:
    root = derive_dataset(
        tmp_path_factory.mktemp("attack"),
        "pantrypal_recipe_planner",
        "Attacked Pantry (Test)",
        env_code=_with_peek_route,
        verifiers={0: ATTACKS, 1: FLOODS, 3: BEYOND_LANDLOCK},  # task 2's stays honest
    )
    (result,) = build_images(load_catalog(root).bundles.values(), client=docker_client)
    assert result.status in ("built", "cached"), result.error
    yield result
    remove_scenario_images(docker_client, result.scenario)  # every tag (:latest too) and its smoke record


@dataclass
class Running:
    container: Container
    url: str
    token: str

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def http(self, timeout: float = 60.0) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers=self.auth, timeout=timeout)

    def _exec(self, cmd: list[str]) -> tuple[int | None, str]:
        code, out = self.container.exec_run(cmd, user="10001:10001")
        assert isinstance(out, bytes)  # not streamed
        return code, out.decode()

    def exec(self, *cmd: str) -> str:
        code, out = self._exec(list(cmd))
        assert code == 0, out
        return out

    def wait_for_file(self, path: str) -> str:
        deadline = time.monotonic() + 30
        while True:
            code, out = self._exec(["cat", path])
            if code == 0:
                return out
            assert time.monotonic() < deadline, f"{path} never appeared"
            time.sleep(0.1)

    def alive(self) -> bool:
        self.container.reload()
        state = self.container.attrs["State"]
        return state["Status"] == "running" and not state["OOMKilled"]


@pytest.fixture
def run_by_hand(docker_client: docker.DockerClient) -> Iterator[Callable[[str | None], Running]]:
    """`docker run -e AWM_CONTROL_TOKEN=...` with the project's hardening (512 MiB, read-only)."""
    started: list[Container] = []

    def run(image: str | None) -> Running:
        assert image is not None, "the build gave no tag"
        token = secrets.token_urlsafe(24)
        container: Container = docker_client.containers.run(  # type: ignore[call-overload]  # stubs want port ints
            image,
            detach=True,
            environment={"AWM_CONTROL_TOKEN": token},
            ports={"8000/tcp": ("127.0.0.1", None)},
            labels={**TEST_LABEL, **owner_labels(new_run_id())},
            **sandbox_options(),
        )
        started.append(container)
        deadline = time.monotonic() + 60
        while True:
            container.reload()
            ports = container.attrs["NetworkSettings"]["Ports"].get("8000/tcp")
            if ports:
                url = f"http://127.0.0.1:{ports[0]['HostPort']}"
                try:
                    if httpx.get(f"{url}/_awm/health", timeout=2).status_code == 200:
                        return Running(container, url, token)
                except httpx.TransportError:
                    pass
            assert container.status != "exited", container.logs().decode()
            assert time.monotonic() < deadline, container.logs().decode()
            time.sleep(0.1)

    yield run
    for container in started:
        container.remove(force=True)


def _snapshot(env: Running) -> bytes:
    with env.http() as http:
        reply = http.get("/_awm/snapshot")
        assert reply.status_code == 200
        return reply.content


def test_verifier_attacks_are_denied_with_landlock(
    attack_image: BuildResult, run_by_hand: Callable[[str | None], Running]
) -> None:
    env = run_by_hand(attack_image.tag)
    with env.http() as http:
        sandbox = http.get("/_awm/info").json()["sandbox"]
    assert sandbox["landlock_abi"] >= 6, sandbox  # this machine's kernel reports 7
    assert sandbox["seccomp"] is True
    assert sandbox["missing"] == []
    gateway = env.container.attrs["NetworkSettings"]["Networks"]["bridge"]["Gateway"]
    before = _snapshot(env)

    with env.http() as http:
        target = json.dumps({"gateway": gateway, "port": 22})
        reply = http.post("/_awm/verify", json={"task_idx": 0, "final_answer": target})
    result = reply.json()
    assert reply.status_code == 200, result
    assert result["error"] is None, result
    assert result["sandbox"]["landlock_abi"] == sandbox["landlock_abi"]
    assert result["sandbox"]["seccomp"] is True
    seen = result["value"]["seen"]
    assert seen["read_environ"] == "EACCES"
    assert seen["open_working_db"] == "EACCES"
    assert seen["sql_working_db"] == "sqlite: unable to open database file"
    assert seen["truncate_working_db"] == "EACCES"
    assert seen["sigterm_pid1"] == seen["sigkill_pid1"] == "EPERM"
    assert seen["control_plane"] == seen["gateway"] == "EACCES"  # the sandbox's answer, not the network's
    assert seen["fill_tmp"] == "EACCES"
    assert all(seen[f"fill_scratch_{i}"].startswith("done") for i in range(4)), seen

    # the server is up, its database unchanged, and the scratch folder gone with the verify
    assert env.alive()
    assert httpx.get(f"{env.url}/_awm/health").json()["status"] == "ok"
    assert _snapshot(env) == before
    assert env.exec("find", "/tmp", "-mindepth", "1").split() == ["/tmp/awm", "/tmp/awm/env.db"]
    # unconfined, the same connection works: the denial above was the sandbox
    env.exec("python", "-c", "import socket; socket.create_connection(('127.0.0.1', 8000), timeout=3).close()")


def test_verifier_cannot_send_udp_reach_unix_sockets_use_io_uring_or_ptrace(
    attack_image: BuildResult, run_by_hand: Callable[[str | None], Running]
) -> None:
    env = run_by_hand(attack_image.tag)
    env.exec("mkdir", "/tmp/listener")
    env.container.exec_run(["python", "-c", LISTENER], user="10001:10001", detach=True)
    env.wait_for_file("/tmp/listener/ready")
    target = json.dumps({"udp": ["127.0.0.1", 9999], "unix": "/tmp/listener/unix.sock"})
    with env.http() as http:
        reply = http.post("/_awm/verify", json={"task_idx": 3, "final_answer": target})
    result = reply.json()
    assert reply.status_code == 200, result
    assert result["error"] is None, result
    assert result["sandbox"]["seccomp"] is True
    seen = result["value"]["seen"]
    assert seen == dict.fromkeys(seen, "EACCES"), seen  # the filter's errno for every one of them
    assert len(seen) == 8

    # Unconfined, in the same container, the socket accepts and io_uring works: the denials
    # above were the sandbox, not the container.
    env.exec("python", "-c", "import socket; socket.socket(socket.AF_UNIX).connect('/tmp/listener/unix.sock')")
    assert env.exec("python", "-c", SYSCALLS + "print(io_uring() > 2)").strip() == "True"
    # The listener got nothing from the verifier: a marker sent now is the first datagram it
    # reads (loopback UDP is queued in the order it was sent).
    send = "import socket; socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b'marker', ('127.0.0.1', 9999))"
    env.exec("python", "-c", send)
    assert env.wait_for_file("/tmp/listener/first-datagram") == "marker"

    # The server is healthy and an honest verifier still grades: "others" on the seed,
    # "complete" once the task is done through MCP.
    assert env.alive()
    assert httpx.get(f"{env.url}/_awm/health").json()["status"] == "ok"
    with env.http() as http:
        assert http.post("/_awm/verify", json={"task_idx": 2}).json()["result"] == "others"
        client = EnvClient(env.url, token=env.token)
        assert client.call_tool("delete_meal_plan_entry", {"entry_id": 10}).is_error is False
        graded = http.post("/_awm/verify", json={"task_idx": 2}).json()
    assert graded["result"] == "complete", graded
    assert graded["sandbox"]["seccomp"] is True


def test_control_token_is_nowhere_in_the_container(
    attack_image: BuildResult, run_by_hand: Callable[[str | None], Running]
) -> None:
    env = run_by_hand(attack_image.tag)
    # PID 1 was re-executed without it: its environment block holds only the hash
    environ = env.exec("cat", "/proc/1/environ")
    assert env.token not in environ
    assert "AWM_CONTROL_TOKEN=" not in environ
    assert "AWM_CONTROL_TOKEN_SHA256=" in environ
    # the environment module sees no control variable at all
    client = EnvClient(env.url, token=env.token)
    seen = json.loads(client.call_tool("peek_environ", {}).text)
    assert env.token not in json.dumps(seen)
    assert not [name for name in seen["environ"] if name.startswith("AWM_")]
    assert "DATABASE_PATH" in seen["environ"]
    # and the token still guards the control plane
    with httpx.Client(base_url=env.url) as http:
        assert http.post("/_awm/reset").status_code == 401
        wrong = {"Authorization": "Bearer " + env.token[:-1]}
        assert http.post("/_awm/reset", headers=wrong).status_code == 401
        assert http.post("/_awm/reset", headers=env.auth).status_code == 200


def test_reset_clears_the_scratch_area(attack_image: BuildResult, run_by_hand: Callable[[str | None], Running]) -> None:
    env = run_by_hand(attack_image.tag)
    env.exec("sh", "-c", "echo x > /tmp/left-by-app && mkdir -p /tmp/dir/sub && echo y > /tmp/dir/sub/f "
                         "&& echo z > /tmp/awm/stray")
    with env.http() as http:
        assert http.post("/_awm/reset").json()["ok"] is True
    assert env.exec("find", "/tmp", "-mindepth", "1").split() == ["/tmp/awm", "/tmp/awm/env.db"]
    assert EnvClient(env.url, token=env.token).call_tool("list_recipes", {"limit": 1}).is_error is False


def test_oversized_and_deep_bodies_are_refused_and_the_server_stays_up(
    attack_image: BuildResult, run_by_hand: Callable[[str | None], Running]
) -> None:
    env = run_by_hand(attack_image.tag)
    hundred_mb = b"x" * (100 * 1024 * 1024)

    def streamed() -> Iterator[bytes]:  # no Content-Length: cut while it streams in
        for i in range(0, len(hundred_mb), 1024 * 1024):
            yield hundred_mb[i : i + 1024 * 1024]

    with env.http() as http:
        bodies: list[tuple[str, bytes | Iterator[bytes]]] = [
            ("/_awm/verify", hundred_mb), ("/mcp", hundred_mb), ("/_awm/verify", streamed())]
        for path, body in bodies:
            reply = http.post(path, content=body, headers={"content-type": "application/json"})
            assert reply.status_code == 413, (path, reply.text)
            assert reply.json()["error"].startswith("request body larger than")
        deep = http.post("/_awm/verify", content=b'{"task_idx": 0, "x": ' + b"[" * 50_000 + b"]" * 50_000 + b"}")
        assert deep.status_code == 400
        assert "nested deeper than 32 levels" in deep.json()["error"]
        message = b'{"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {"x": '
        deep_mcp = http.post("/mcp", content=message + b"[" * 50_000 + b"]" * 50_000 + b"}}",
                             headers={"accept": "application/json, text/event-stream"})
        assert deep_mcp.status_code == 400
        assert deep_mcp.json()["error"] == {"code": -32700, "message": "Parse error: JSON nested deeper than 64 levels"}

    async def eight_at_once() -> list[int]:
        async with httpx.AsyncClient(base_url=env.url, headers=env.auth, timeout=60) as http:
            replies = await asyncio.gather(
                *(http.post("/_awm/verify", content=b"x" * (10 * 1024 * 1024)) for _ in range(8))
            )
        return [r.status_code for r in replies]

    assert asyncio.run(eight_at_once()) == [413] * 8
    assert env.alive()
    with env.http() as http:
        assert http.get("/_awm/health").json()["status"] == "ok"
        assert http.post("/_awm/verify", json={"task_idx": 2}).status_code == 200


def test_verifiers_printing_100_mb_each_are_stopped(
    attack_image: BuildResult, run_by_hand: Callable[[str | None], Running]
) -> None:
    env = run_by_hand(attack_image.tag)

    async def three_at_once() -> list[dict[str, object]]:
        async with httpx.AsyncClient(base_url=env.url, headers=env.auth, timeout=120) as http:
            replies = await asyncio.gather(*(http.post("/_awm/verify", json={"task_idx": 1}) for _ in range(3)))
        return [r.json() for r in replies]

    for result in asyncio.run(three_at_once()):
        assert result["result"] == "error"
        assert result["error"] == "verifier printed more than 1048576 bytes (the output limit) and was stopped"
    assert env.alive()
    assert EnvClient(env.url, token=env.token).call_tool("list_recipes", {"limit": 1}).is_error is False
