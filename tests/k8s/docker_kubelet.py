"""A kubelet for the fake API that runs each pod's real image under Docker.

Each pod becomes a container of the image the project built, with the pod's own security
context, limits and memory-backed /tmp translated to Docker's options (uid, read-only root,
dropped capabilities, no-new-privileges, tmpfs), on an internal network; its address is
written back as the pod IP, its exit as the pod's status.
"""

from __future__ import annotations

import threading
from typing import Any

import docker
import docker.errors
import requests
from docker.models.containers import Container

from tests.k8s.conftest import container_status
from tests.k8s.fake_api import FakeKube, Obj

__all__ = ["LABEL", "DockerKubelet", "remove"]

LABEL = "awm.test.fake-kubelet"


def remove(client: docker.DockerClient, container: str) -> None:
    """Remove a container; one already gone, or going, is fine."""
    try:
        client.api.remove_container(container, force=True)
    except docker.errors.NotFound:
        pass
    except docker.errors.APIError as exc:
        if exc.status_code != 409:  # 409: its removal is already in progress
            raise


def docker_options(pod_spec: Obj) -> dict[str, Any]:  # keyword arguments of containers.run
    """What a container runtime makes of the pod's security context, limits and volumes."""
    [container] = pod_spec["containers"]
    sc = {**pod_spec.get("securityContext", {}), **container["securityContext"]}
    volumes = {v["name"]: v for v in pod_spec["volumes"]}
    tmpfs = {}
    for mount in container["volumeMounts"]:
        empty = volumes[mount["name"]]["emptyDir"]
        assert empty["medium"] == "Memory"
        tmpfs[mount["mountPath"]] = f"rw,size={empty['sizeLimit'].replace('Mi', 'm')},mode=1777"
    limits = container["resources"]["limits"]
    return {
        "user": f"{sc['runAsUser']}:{sc['runAsGroup']}",
        "read_only": sc["readOnlyRootFilesystem"],
        "cap_drop": sc["capabilities"]["drop"],
        "security_opt": ["no-new-privileges"] if sc["allowPrivilegeEscalation"] is False else [],
        "tmpfs": tmpfs,
        "mem_limit": limits["memory"].replace("Mi", "m"),
        "nano_cpus": int(float(limits["cpu"]) * 1e9),
    }


class DockerKubelet:
    """Runs pods as containers; reports their IPs and exits into the fake API."""

    def __init__(self, client: docker.DockerClient, network: str, run: str) -> None:
        self.client, self.network, self.run = client, network, run
        self.lock = threading.Lock()
        self.deleted: set[str] = set()

    def container(self, pod: str) -> str:
        return f"k8s-{self.run}-{pod}"

    def __call__(self, fake: FakeKube, event: str, pod: Obj) -> None:
        name = pod["metadata"]["name"]
        with self.lock:  # one pod's create and delete in order, as one kubelet would
            if event == "delete":
                self.deleted.add(name)
                remove(self.client, self.container(name))
                return
            if name in self.deleted:
                return
            spec = pod["spec"]["containers"][0]
            container = self.client.containers.run(
                spec["image"], name=self.container(name), detach=True, network=self.network,
                environment={e["name"]: e["value"] for e in spec.get("env", [])}, labels={LABEL: self.run},
                **docker_options(pod["spec"]),
            )
            container.reload()
        ip = container.attrs["NetworkSettings"]["Networks"][self.network]["IPAddress"]
        fake.update("pods", name, {"status": {
            "phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}],
            "containerStatuses": container_status(spec["image"], {"running": {}}, ready=True),
        }})
        threading.Thread(target=self._watch_exit, args=(fake, name, container, spec["image"]), daemon=True).start()

    def _watch_exit(self, fake: FakeKube, name: str, container: Container, image: str) -> None:
        try:
            code = container.wait()["StatusCode"]
        except (docker.errors.DockerException, requests.RequestException):
            return  # removed with its pod: nothing to report
        terminated = {"terminated": {"exitCode": code, "reason": "Error"}}
        fake.update("pods", name, {"status": {"phase": "Failed",
                                              "containerStatuses": container_status(image, terminated)}})
