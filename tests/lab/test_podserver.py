"""kubenet.lab.podserver: a real HTTP and UDP server on loopback says who answered."""

from __future__ import annotations

import http.client
import socket
import subprocess
import sys
from collections.abc import Iterator

import pytest

from kubenet.testing.podserver import READY, parse_reply


def _free_port() -> int:
    with socket.socket() as tcp, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        tcp.bind(("127.0.0.1", 0))
        port = int(tcp.getsockname()[1])
        udp.bind(("127.0.0.1", port))
        return port


@pytest.fixture
def server() -> Iterator[tuple[subprocess.Popen[str], int]]:
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "kubenet.lab.podserver", "pod-x", "--address", "127.0.0.1",
         "--port", str(port)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == READY
    try:
        yield proc, port
    finally:
        if proc.stdin is not None:
            proc.stdin.close()
        proc.wait(timeout=10)
        proc.stdout.close()


def test_http_answer_names_the_pod_and_both_ends(server: tuple[subprocess.Popen[str], int]) -> None:
    _, port = server
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    conn.request("GET", "/anything")
    answer = conn.getresponse()
    body = answer.read()
    conn.close()
    assert answer.status == 200
    assert answer.getheader("X-Pod") == "pod-x"
    reply = parse_reply(body)
    assert (reply.pod, reply.peer, reply.endpoint) == ("pod-x", "127.0.0.1", f"127.0.0.1:{port}")


def test_udp_answer_has_the_same_line(server: tuple[subprocess.Popen[str], int]) -> None:
    _, port = server
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(5)
        sock.connect(("127.0.0.1", port))
        sock.send(b"hello\n")
        reply = parse_reply(sock.recv(2048))
    assert (reply.pod, reply.endpoint) == ("pod-x", f"127.0.0.1:{port}")


def test_server_exits_when_its_input_closes(server: tuple[subprocess.Popen[str], int]) -> None:
    proc, _ = server
    assert proc.stdin is not None
    proc.stdin.close()
    assert proc.wait(timeout=10) == 0
