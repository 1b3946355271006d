"""The fake Kubernetes API served over real HTTP, with a kubeconfig file that points at it.

The backend tests give lightkube the fake's handler as a transport; the command line builds
its own client from KUBECONFIG, so its tests need an address to talk to: this server passes
each request to the same handler and streams the answer back (watches included).
"""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import NamedTuple

import httpx2

from tests.k8s.fake_api import FakeKube

__all__ = ["Served", "serve"]


class Served(NamedTuple):
    url: str  # http://127.0.0.1:PORT
    kubeconfig: Path


def _handler(fake: FakeKube) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _relay(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            request = httpx2.Request(self.command, f"http://fake-k8s{self.path}",
                                     headers=dict(self.headers.items()), content=self.rfile.read(length))
            try:
                response = fake.handle(request)
            except httpx2.TimeoutException:  # an injected timeout: the request happened, no answer comes
                self.close_connection = True
                return
            self.send_response(response.status_code)
            for key, value in response.headers.items():
                if key.lower() not in ("content-length", "transfer-encoding", "connection"):
                    self.send_header(key, value)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # a watch the client left
                for chunk in response.iter_bytes():
                    if chunk:
                        self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                        self.wfile.flush()
                self.wfile.write(b"0\r\n\r\n")

        do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = _relay

        def log_message(self, format: str, *args: object) -> None:
            pass

    return Handler


@contextlib.contextmanager
def serve(fake: FakeKube, folder: Path, namespace: str = "awm") -> Iterator[Served]:
    """Serve `fake` on 127.0.0.1 while the block runs; yield its URL and a kubeconfig naming it."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(fake))
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, name="fake-k8s-http", daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    config = folder / "kubeconfig"
    config.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "fake",
        "clusters": [{"name": "fake", "cluster": {"server": url}}],
        "users": [{"name": "test", "user": {"token": "test"}}],
        "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "test", "namespace": namespace}}],
    }))
    try:
        yield Served(url, config)
    finally:
        fake.drop_watches()
        server.shutdown()
        server.server_close()
