"""The pod server answers each TCP connection and UDP datagram with who and whom; no root needed."""

from __future__ import annotations

import io
import os
import socket
import threading

import pytest

from kubenet.testing.podserver import READY, Reply, format_reply, parse_reply, serve


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def test_reply_round_trips_and_spells_endpoints_like_the_model() -> None:
    assert parse_reply(format_reply("pod-a", "10.0.0.9", "10.244.1.2", 8080)) == Reply(
        "pod-a", "10.0.0.9", "10.244.1.2", 8080
    )
    assert Reply("p", "x", "10.244.1.2", 80).endpoint == "10.244.1.2:80"
    assert Reply("p", "x", "fd00::2", 80).endpoint == "[fd00::2]:80"
    with pytest.raises(ValueError, match="not a pod server reply"):
        parse_reply(b"HTTP/1.1 200 OK\r\n")


def test_serves_tcp_and_udp_until_its_input_closes() -> None:
    port = _free_port()
    read_fd, write_fd = os.pipe()
    announce = io.StringIO()
    with os.fdopen(read_fd) as control:
        server = threading.Thread(
            target=serve,
            args=("pod-x", ["127.0.0.1"], [port]),
            kwargs={"control": control, "announce": announce},
        )
        server.start()
        try:
            for _ in range(100):
                if announce.getvalue():
                    break
                threading.Event().wait(0.01)
            assert announce.getvalue().strip() == READY

            with socket.create_connection(("127.0.0.1", port), timeout=2) as tcp:
                tcp_reply = parse_reply(tcp.recv(100))
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                udp.settimeout(2)
                udp.sendto(b"hi", ("127.0.0.1", port))
                udp_reply = parse_reply(udp.recv(100))
        finally:
            os.close(write_fd)
            server.join(timeout=5)
    assert not server.is_alive()
    for reply in (tcp_reply, udp_reply):
        assert (reply.pod, reply.peer, reply.endpoint) == (
            "pod-x",
            "127.0.0.1",
            f"127.0.0.1:{port}",
        )
