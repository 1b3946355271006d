"""Start environment images as hardened containers on the local Docker engine.

Ports are assigned by the engine (published on 127.0.0.1, read back), never probed. A start
that fails removes its container and raises an error carrying the container's last log lines.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import docker
import docker.errors
import httpx
from docker.models.containers import Container

from runtime.env import Env
from runtime.errors import BackendUnavailable, EnvStartTimeout, ImageNotFound

__all__ = ["DockerBackend", "Resources"]

SERVER_PORT = 8000


@dataclass(frozen=True)
class Resources:
    memory: str = "512m"
    cpus: float = 1.0
    pids: int = 256
    tmpfs_size: str = "256m"


@dataclass
class DockerBackend:
    client: docker.DockerClient | None = None
    resources: Resources = field(default_factory=Resources)

    def __post_init__(self) -> None:
        if self.client is None:
            try:
                self.client = docker.from_env()
                self.client.ping()
            except docker.errors.DockerException as exc:
                raise BackendUnavailable(f"no Docker engine answers: {exc}") from exc

    def start(
        self,
        image: str,
        *,
        env: dict[str, str] | None = None,
        control_token: str | None = None,
        labels: dict[str, str] | None = None,
        hardened: bool = True,
        ready_timeout_s: float = 30.0,
    ) -> Env:
        """Start `image` and wait until its server answers.

        Raises:
            ImageNotFound: the image is not in the engine.
            EnvStartTimeout: the server did not answer in time or the container exited; the
                container is removed and its last log lines are in the message.
        """
        assert self.client is not None
        environment = dict(env or {})
        if control_token:
            environment["AWM_CONTROL_TOKEN"] = control_token
        r = self.resources
        options: dict[str, object] = {}
        if hardened:
            options = dict(
                read_only=True,
                tmpfs={"/tmp": f"rw,size={r.tmpfs_size},mode=1777"},
                cap_drop=["ALL"],
                security_opt=["no-new-privileges"],
                user="10001:10001",
                mem_limit=r.memory,
                pids_limit=r.pids,
                nano_cpus=int(r.cpus * 1e9),
            )
        try:
            container: Container = self.client.containers.run(
                image,
                detach=True,
                environment=environment,
                labels=labels or {},
                ports={f"{SERVER_PORT}/tcp": ("127.0.0.1", None)},
                **options,  # type: ignore[arg-type]
            )
        except docker.errors.ImageNotFound as exc:
            scenario = image.split("/", 1)[-1].split(":", 1)[0]
            raise ImageNotFound(
                f"image {image} not found; run `awm build DIR --only {scenario}`", image=image
            ) from exc
        try:
            base_url = self._wait_ready(container, image, ready_timeout_s)
        except BaseException:
            container.remove(force=True)
            raise
        return Env(container=container, base_url=base_url, image=image, token=control_token)

    def _wait_ready(self, container: Container, image: str, timeout_s: float) -> str:
        deadline = time.monotonic() + timeout_s
        base_url = None
        with httpx.Client(timeout=2.0) as http:
            while time.monotonic() < deadline:
                container.reload()
                if container.status in ("exited", "dead"):
                    break
                if base_url is None:
                    bindings = container.attrs["NetworkSettings"]["Ports"].get(f"{SERVER_PORT}/tcp")
                    if bindings:
                        base_url = f"http://127.0.0.1:{bindings[0]['HostPort']}"
                if base_url is not None:
                    try:
                        if http.get(f"{base_url}/_awm/health").status_code == 200:
                            return base_url
                    except httpx.TransportError:
                        pass
                time.sleep(0.05)
        logs = container.logs(tail=30).decode(errors="replace").rstrip()
        state = container.attrs.get("State", {})
        why = (
            f"exited with code {state.get('ExitCode')}"
            if container.status in ("exited", "dead")
            else f"did not answer within {timeout_s:g}s"
        )
        error = EnvStartTimeout(
            f"environment {image} (container {container.short_id}) {why}; last log lines:\n{logs}",
            image=image,
            container_id=container.id,
        )
        error.add_note(f"logs of {container.short_id}:\n{logs}")
        raise error
