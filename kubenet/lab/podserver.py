"""A lab pod's servers: HTTP over TCP and a one-line echo over UDP, saying who answered.

Run inside a pod's network namespace::

    python -m kubenet.lab.podserver pod-a --address 10.244.1.2 --port 8080 --port 9090

Every HTTP request (any method, any path) and every UDP datagram gets one line::

    <pod> <peer-ip> <local-ip> <local-port>

the format of :mod:`kubenet.testing.podserver` (parse it with its ``parse_reply``):
which pod answered, the source address it saw (the client's own, or the node's
when the rules masqueraded), and the address and port the packet was DNATed to.
The line is an HTTP response body here, so ``curl`` works on it as it would on a
real pod. The server prints ``ready`` once every socket is bound and exits when
its standard input closes, so it cannot outlive the lab process that started it.
"""

from __future__ import annotations

import argparse
import socket
import socketserver
import sys
import threading
from collections.abc import Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from kubenet.testing.podserver import READY, format_reply


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    pod = ""

    def __init__(self, pod: str, address: str, port: int) -> None:
        self.address_family = socket.AF_INET6 if ":" in address else socket.AF_INET
        self.pod = pod
        super().__init__((address, port), _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind looks the address up in DNS (getfqdn); inside a lab
        # namespace that query goes nowhere and takes seconds to time out.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name, self.server_port = str(host), int(port)


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"
    server_version = "kubenet-lab-pod"

    def _answer(self) -> None:
        local = self.connection.getsockname()
        body = format_reply(self.server.pod, self.client_address[0], local[0], local[1])
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Pod", self.server.pod)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = _answer

    def log_message(self, format: str, *args: object) -> None:
        # One line per request on stderr (the lab keeps it in the pod's log file).
        sys.stderr.write(f"{self.server.pod} {self.client_address[0]} {self.requestline}\n")


def _udp(pod: str, address: str, port: int) -> threading.Thread:
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    sock.bind((address, port))

    def echo() -> None:
        while True:
            try:
                _, peer = sock.recvfrom(2048)
                sock.sendto(format_reply(pod, peer[0], address, port), peer)
            except ConnectionRefusedError:
                # An ICMP error for an earlier reply; nothing to answer.
                continue

    return threading.Thread(target=echo, name=f"udp-{address}-{port}", daemon=True)


def serve(pod: str, addresses: Sequence[str], ports: Sequence[int]) -> None:
    """Bind everything, announce READY, answer until standard input closes."""
    threads = []
    for address in addresses:
        for port in ports:
            http = _Server(pod, address, port)
            threads.append(threading.Thread(target=http.serve_forever, daemon=True))
            threads.append(_udp(pod, address, port))
    for thread in threads:
        thread.start()
    print(READY, flush=True)
    while sys.stdin.readline():
        pass


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m kubenet.lab.podserver")
    parser.add_argument("pod")
    parser.add_argument("--address", action="append", default=[], required=True)
    parser.add_argument("--port", action="append", type=int, default=[], required=True)
    args = parser.parse_args(argv)
    serve(args.pod, args.address, args.port)


if __name__ == "__main__":
    main()
