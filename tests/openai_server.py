"""The HTTP side of the tests' scripted OpenAI-compatible servers: real HTTP on 127.0.0.1.

`ScriptedServer` serves `POST` requests with JSON bodies and answers them with its subclass's
`answer(path, body, headers)`: the agent tests' ScriptedModel (tests/agent/scripted.py) and the
synthesis tests' ScriptedLLM (tests/builder/synth/scripted.py). It counts the requests in flight
(how much concurrency a client really used). `chat_completion` is the response body both send.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self

__all__ = ["Answer", "ScriptedServer", "chat_completion"]

Answer = tuple[int, dict[str, Any], dict[str, str]]  # status, JSON body, extra headers


class ScriptedServer:
    """The server; `url` is its base URL (`http://127.0.0.1:<port>/v1`). Start it, or use `with`."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.arrived = threading.Condition(self.lock)  # notified whenever a request arrives
        self.in_flight = 0
        self.max_in_flight = 0  # the most requests held at once
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:  # keep test output clean
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("content-length") or 0)) or b"{}")
                with server.lock:
                    server.in_flight += 1
                    server.max_in_flight = max(server.max_in_flight, server.in_flight)
                    server.arrived.notify_all()
                try:
                    status, payload, headers = server.answer(self.path, body, dict(self.headers.items()))
                finally:
                    with server.lock:
                        server.in_flight -= 1
                data = json.dumps(payload).encode()
                try:
                    self.send_response(status)
                    self.send_header("content-type", "application/json")
                    self.send_header("content-length", str(len(data)))
                    for key, value in headers.items():
                        self.send_header(key, value)
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout)
                    pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def start(self) -> Self:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def answer(self, path: str, body: dict[str, Any], headers: dict[str, str]) -> Answer:
        raise NotImplementedError


def chat_completion(body: dict[str, Any], message: dict[str, Any], number: int | str) -> dict[str, Any]:
    """An OpenAI chat completion carrying `message`, with token counts estimated at 4 characters each."""
    prompt = sum(len(str(m.get("content") or "")) for m in body.get("messages", [])) // 4
    completion = len(str(message.get("content") or "")) // 4 + 1
    return {
        "id": f"chatcmpl-{number}", "object": "chat.completion", "created": 0, "model": body.get("model", ""),
        "choices": [{"index": 0, "message": message,
                     "finish_reason": "tool_calls" if message.get("tool_calls") else "stop"}],
        "usage": {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion},
    }
