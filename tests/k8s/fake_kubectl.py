"""`kubectl port-forward` for the fake API: a TCP relay from 127.0.0.1 to the pod's IP.

kubectl's own tunnel runs through a real API server and kubelet; this stands in for it so the
command line's use of it (start it, read its first line, keep it or end it) meets a process
that behaves the same: it prints "Forwarding from 127.0.0.1:PORT -> 8000", relays connections
until killed, and writes its arguments and pid to $FAKE_KUBECTL_LOG (one JSON line per run).
The pod's IP comes from the fake API at $FAKE_K8S_URL.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
import threading
import urllib.request


def _pipe(src: socket.socket, dst: socket.socket) -> None:
    try:
        while data := src.recv(65536):
            dst.sendall(data)
    except OSError:
        pass
    finally:
        for s in (src, dst):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)


def main(args: list[str]) -> int:
    with open(os.environ["FAKE_KUBECTL_LOG"], "a") as log:
        log.write(json.dumps({"args": args, "pid": os.getpid()}) + "\n")
    if args[:1] != ["port-forward"]:
        print(f"fake kubectl: only port-forward, not {args}", file=sys.stderr)
        return 1
    namespace, pod = args[args.index("-n") + 1], args[3].removeprefix("pod/")
    local, remote = args[4].split(":")
    url = f"{os.environ['FAKE_K8S_URL']}/api/v1/namespaces/{namespace}/pods/{pod}"
    try:
        with urllib.request.urlopen(url) as answer:
            ip = json.load(answer)["status"]["podIP"]
    except Exception as exc:
        print(f'error: unable to forward port because pod is not running: {pod} ({exc})', flush=True)
        return 1
    server = socket.create_server(("127.0.0.1", int(local or 0)))
    print(f"Forwarding from 127.0.0.1:{server.getsockname()[1]} -> {remote}", flush=True)
    while True:
        conn, _ = server.accept()
        print(f"Handling connection for {server.getsockname()[1]}", flush=True)
        try:
            upstream = socket.create_connection((ip, int(remote)))
        except OSError as exc:  # as kubectl: the one connection fails, the forward stays
            print(f"E1128 portforward.go: an error occurred forwarding {local} -> {remote}: {exc}", flush=True)
            conn.close()
            continue
        for a, b in ((conn, upstream), (upstream, conn)):
            threading.Thread(target=_pipe, args=(a, b), daemon=True).start()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
