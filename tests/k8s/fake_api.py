"""An in-test fake of the Kubernetes API: a stateful handler on httpx2's MockTransport.

lightkube (the client the backends use) speaks HTTP through httpx2; this handler answers those
requests from an in-memory store, with what the backends rely on:

- create (409 AlreadyExists), get, list with label and field selectors, delete, merge and
  server-side-apply patches (fieldManager required), pods/log;
- watch from a resourceVersion, streaming events as they happen; a version older than the
  last `compact()` gets the 410 Expired error event, as from a real API server;
- the garbage collector: deleting an object deletes, recursively, every object whose
  ownerReferences name its uid;
- injected faults (409/429/500, or a timeout after the request took effect);
- hooks: a kubelet called when a pod is created or deleted, and a claim controller called
  when a SandboxClaim is created; both run on threads, as the real ones run elsewhere.
"""

from __future__ import annotations

import copy
import itertools
import json
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx2
import lightkube
from lightkube.config.kubeconfig import KubeConfig

__all__ = ["FakeKube", "Fault", "Hook"]

Obj = dict[str, Any]
Key = tuple[str, str, str, str]  # group/version, plural, namespace ("" when cluster-scoped), name
Hook = Callable[["FakeKube", str, Obj], None]  # (fake, "create" | "delete", object)

KINDS = {
    "pods": "Pod", "events": "Event", "leases": "Lease", "podtemplates": "PodTemplate",
    "sandboxclaims": "SandboxClaim", "sandboxwarmpools": "SandboxWarmPool",
    "sandboxtemplates": "SandboxTemplate", "sandboxes": "Sandbox",
}


@dataclass
class Fault:
    method: str
    path_contains: str
    status: int  # an HTTP status, or 0: let the request happen, then time out on the client
    times: int = 1
    retry_after: str | None = None


def _status(code: int, reason: str, message: str) -> httpx2.Response:
    body = {"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": code, "reason": reason,
            "message": message}
    return httpx2.Response(code, json=body)


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _merge(into: Obj, patch: Obj) -> Obj:
    for key, value in patch.items():
        if value is None:
            into.pop(key, None)
        elif isinstance(value, dict) and isinstance(into.get(key), dict):
            _merge(into[key], value)
        else:
            into[key] = copy.deepcopy(value)
    return into


def _lookup(obj: Obj, dotted: str) -> Any:
    value: Any = obj
    for part in dotted.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


def matches(obj: Obj, label_selector: str | None, field_selector: str | None = None) -> bool:
    """Equality and existence terms of label selectors (k=v, k==v, k!=v, k, !k); field equality."""
    labels = (obj.get("metadata") or {}).get("labels") or {}
    for term in filter(None, (label_selector or "").split(",")):
        if "!=" in term:
            k, v = term.split("!=", 1)
            if labels.get(k) == v:
                return False
        elif "=" in term:
            k, v = term.replace("==", "=").split("=", 1)
            if labels.get(k) != v:
                return False
        elif term.startswith("!"):
            if term[1:] in labels:
                return False
        elif term not in labels:
            return False
    for term in filter(None, (field_selector or "").split(",")):
        k, v = term.split("=", 1)
        if str(_lookup(obj, k)) != v:
            return False
    return True


class FakeKube:
    """The API server's state and its HTTP handler; `client()` is a lightkube client on it."""

    def __init__(self, *, watch_idle_s: float = 0.5) -> None:
        self.cond = threading.Condition()
        self.objects: dict[Key, Obj] = {}
        self.history: list[tuple[int, str, str, str, Obj]] = []  # rv, gv, plural, type, object
        self.rv = 100
        self.oldest_rv = 0  # watches from an older version get 410
        self.watch_generation = 0  # bumped to end every open watch stream
        self.faults: list[Fault] = []
        self.requests: list[tuple[str, str]] = []
        self.kubelet: Hook | None = None
        self.claim_controller: Hook | None = None
        self.pod_logs: dict[str, str] = {}
        self.watch_idle_s = watch_idle_s
        self._names = itertools.count(1)
        self.clients: list[lightkube.Client] = []

    def client(self, namespace: str = "awm") -> lightkube.Client:
        config = KubeConfig.from_dict({
            "clusters": [{"name": "fake", "cluster": {"server": "http://fake-k8s.invalid"}}],
            "users": [{"name": "test", "user": {"token": "test"}}],
            "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "test", "namespace": namespace}}],
            "current-context": "fake",
        })
        client = lightkube.Client(config=config, transport=httpx2.MockTransport(self.handle), field_manager="awm")
        self.clients.append(client)
        return client

    def close(self) -> None:
        """Close every client made here: their watches end (a backend leaves a given client open)."""
        for client in self.clients:
            client.close()
        self.drop_watches()

    # -- helpers for tests and hooks --------------------------------------------------------

    def inject(self, method: str, path_contains: str, status: int, times: int = 1,
               retry_after: str | None = None) -> None:
        with self.cond:
            self.faults.append(Fault(method, path_contains, status, times, retry_after))

    def compact(self) -> None:
        """Forget the event history: watches from any version seen so far get 410."""
        with self.cond:
            self.oldest_rv = self.rv + 1
            self.history.clear()

    def drop_watches(self) -> None:
        with self.cond:
            self.watch_generation += 1
            self.cond.notify_all()

    def list_objects(self, plural: str, namespace: str = "awm", selector: str | None = None) -> list[Obj]:
        with self.cond:
            return [copy.deepcopy(o) for (_, p, ns, _), o in sorted(self.objects.items())
                    if p == plural and ns == namespace and matches(o, selector)]

    def get_object(self, plural: str, name: str, namespace: str = "awm") -> Obj | None:
        with self.cond:
            found = next((o for (_, p, ns, n), o in self.objects.items()
                          if p == plural and ns == namespace and n == name), None)
            return copy.deepcopy(found) if found else None

    def update(self, plural: str, name: str, patch: Obj, namespace: str = "awm") -> None:
        """Merge `patch` into an object (a kubelet or controller writing status)."""
        with self.cond:
            key = next((k for k in self.objects if k[1] == plural and k[2] == namespace and k[3] == name), None)
            if key is None:
                return
            obj = _merge(self.objects[key], patch)
            self._record(key, "MODIFIED", obj)

    def add_event(self, pod: str, reason: str, message: str, namespace: str = "awm") -> None:
        name = f"{pod}.{next(self._names)}"
        event = {"apiVersion": "v1", "kind": "Event", "metadata": {"name": name, "namespace": namespace},
                 "involvedObject": {"kind": "Pod", "name": pod, "namespace": namespace},
                 "reason": reason, "message": message, "type": "Warning", "lastTimestamp": _now()}
        with self.cond:
            self._store(("v1", "events", namespace, name), event)

    def create_object(self, gv: str, plural: str, obj: Obj, namespace: str = "awm") -> Obj:
        with self.cond:
            return copy.deepcopy(self._store((gv, plural, namespace, obj["metadata"]["name"]), copy.deepcopy(obj)))

    # -- store ------------------------------------------------------------------------------

    def _record(self, key: Key, kind: str, obj: Obj) -> None:
        self.rv += 1
        obj["metadata"]["resourceVersion"] = str(self.rv)
        self.history.append((self.rv, key[0], key[1], kind, copy.deepcopy(obj)))
        self.cond.notify_all()

    def _store(self, key: Key, obj: Obj) -> Obj:
        meta = obj.setdefault("metadata", {})
        meta.setdefault("uid", str(uuid.uuid4()))
        meta.setdefault("creationTimestamp", _now())
        if key[2]:
            meta["namespace"] = key[2]
        if key[1] == "pods":
            obj.setdefault("status", {"phase": "Pending"})
        self.objects[key] = obj
        self._record(key, "ADDED", obj)
        return obj

    def _delete(self, key: Key) -> list[tuple[str, Obj]]:
        """Delete an object and, like the garbage collector, whatever it owns; return the deleted."""
        obj = self.objects.pop(key, None)
        if obj is None:
            return []
        self._record(key, "DELETED", obj)
        deleted = [(key[1], obj)]
        uid = obj["metadata"]["uid"]
        for other_key, other in list(self.objects.items()):
            refs = (other.get("metadata") or {}).get("ownerReferences") or []
            if any(ref.get("uid") == uid for ref in refs):
                deleted += self._delete(other_key)
        return deleted

    # -- HTTP ------------------------------------------------------------------------------

    @staticmethod
    def _parse(path: str) -> tuple[str, str, str, str | None, str | None]:
        parts = [p for p in path.split("/") if p]
        if parts[0] == "api":
            gv, rest = parts[1], parts[2:]
        else:
            gv, rest = f"{parts[1]}/{parts[2]}", parts[3:]
        namespace = ""
        if rest[0] == "namespaces" and len(rest) >= 3:
            namespace, rest = rest[1], rest[2:]
        return gv, rest[0], namespace, rest[1] if len(rest) > 1 else None, rest[2] if len(rest) > 2 else None

    def _fault(self, method: str, path: str) -> Fault | None:
        with self.cond:
            for fault in self.faults:
                if fault.method == method and fault.path_contains in path and fault.times > 0:
                    fault.times -= 1
                    return fault
        return None

    def handle(self, request: httpx2.Request) -> httpx2.Response:
        method, path, params = request.method, request.url.path, request.url.params
        self.requests.append((method, str(request.url)))
        fault = self._fault(method, path)
        if fault is not None and fault.status:
            reason = {409: "Conflict", 429: "TooManyRequests"}.get(fault.status, "InternalError")
            response = _status(fault.status, reason, f"injected {fault.status}")
            if fault.retry_after is not None:
                response.headers["Retry-After"] = fault.retry_after
            return response
        response = self._answer(request, method, path, params)
        if fault is not None:  # status 0: it happened, but the client never hears back
            raise httpx2.ReadTimeout("injected timeout", request=request)
        return response

    def _answer(self, request: httpx2.Request, method: str, path: str, params: Any) -> httpx2.Response:
        gv, plural, ns, name, sub = self._parse(path)
        key: Key = (gv, plural, ns, name or "")
        hooks: list[tuple[Hook, str, Obj]] = []
        try:
            with self.cond:
                if method == "GET" and params.get("watch") == "true":
                    return self._watch(gv, plural, ns, params)
                if method == "GET" and sub == "log":
                    if key not in self.objects:
                        return _status(404, "NotFound", f'pods "{name}" not found')
                    lines = self.pod_logs.get(name or "", "").splitlines(keepends=True)
                    tail = int(params.get("tailLines", len(lines)))
                    return httpx2.Response(200, text="".join(lines[-tail:] if tail else []))
                if method == "GET" and name is None:
                    items = [copy.deepcopy(o) for (g, p, n, _), o in sorted(self.objects.items())
                             if g == gv and p == plural and n == ns
                             and matches(o, params.get("labelSelector"), params.get("fieldSelector"))]
                    kind = KINDS.get(plural, plural.title())
                    return httpx2.Response(200, json={"apiVersion": gv, "kind": f"{kind}List",
                                                      "metadata": {"resourceVersion": str(self.rv)}, "items": items})
                if method == "GET":
                    if key not in self.objects:
                        return _status(404, "NotFound", f'{plural} "{name}" not found')
                    return httpx2.Response(200, json=self.objects[key])
                if method == "POST":
                    obj = json.loads(request.content)
                    key = (gv, plural, ns, obj["metadata"]["name"])
                    if key in self.objects:
                        return _status(409, "AlreadyExists", f'{plural} "{key[3]}" already exists')
                    stored = self._store(key, obj)
                    hooks += self._hooks(plural, "create", stored)
                    return httpx2.Response(201, json=stored)
                if method == "PATCH":
                    content_type = request.headers.get("content-type", "")
                    body = json.loads(request.content)
                    if content_type.startswith("application/apply-patch"):
                        if "fieldManager" not in params:
                            return _status(422, "Invalid", "fieldManager is required for apply patch")
                        if key not in self.objects:
                            stored = self._store(key, body)
                            hooks += self._hooks(plural, "create", stored)
                            return httpx2.Response(201, json=stored)
                    elif key not in self.objects:
                        return _status(404, "NotFound", f'{plural} "{name}" not found')
                    obj = _merge(self.objects[key], body)
                    self._record(key, "MODIFIED", obj)
                    return httpx2.Response(200, json=obj)
                if method == "DELETE":
                    if key not in self.objects:
                        return _status(404, "NotFound", f'{plural} "{name}" not found')
                    for kind, deleted in self._delete(key):
                        hooks += self._hooks(kind, "delete", deleted)
                    return httpx2.Response(200, json={"kind": "Status", "apiVersion": "v1", "status": "Success"})
                return _status(405, "MethodNotAllowed", f"{method} {path}")
        finally:
            for hook, event, obj in hooks:
                threading.Thread(target=hook, args=(self, event, copy.deepcopy(obj)), daemon=True).start()

    def _hooks(self, plural: str, event: str, obj: Obj) -> list[tuple[Hook, str, Obj]]:
        if plural == "pods" and self.kubelet is not None:
            return [(self.kubelet, event, obj)]
        if plural == "sandboxclaims" and self.claim_controller is not None:
            return [(self.claim_controller, event, obj)]
        return []

    def _watch(self, gv: str, plural: str, ns: str, params: Any) -> httpx2.Response:
        since = params.get("resourceVersion")
        selector = params.get("labelSelector")
        if since is not None and int(since) < self.oldest_rv:
            error = {"type": "ERROR", "object": {"kind": "Status", "apiVersion": "v1", "status": "Failure",
                                                  "code": 410, "reason": "Expired",
                                                  "message": f"too old resource version: {since}"}}
            return httpx2.Response(200, content=json.dumps(error).encode() + b"\n")
        initial: list[bytes] = []
        if since is None:  # a watch without a version starts with every object, as ADDED
            initial = [json.dumps({"type": "ADDED", "object": o}).encode() + b"\n"
                       for (g, p, n, _), o in self.objects.items()
                       if g == gv and p == plural and n == ns and matches(o, selector)]
        start = int(since) if since is not None else self.rv
        generation = self.watch_generation

        def stream() -> Iterator[bytes]:
            yield from initial
            last = start
            while True:
                with self.cond:
                    if self.watch_generation != generation:
                        return
                    events = [(rv, kind, o) for rv, g, p, kind, o in self.history
                              if rv > last and g == gv and p == plural
                              and (o.get("metadata") or {}).get("namespace", "") == ns and matches(o, selector)]
                    if not events:
                        last = max(last, self.rv)
                        if not self.cond.wait(self.watch_idle_s):
                            return  # the server ends idle watches; the client reconnects
                        continue
                for rv, kind, obj in events:
                    last = rv
                    yield json.dumps({"type": kind, "object": obj}).encode() + b"\n"

        return httpx2.Response(200, content=stream())
