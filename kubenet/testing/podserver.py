"""A tiny TCP and UDP server for a test "pod": it answers with who it is and whom it saw.

Run inside a pod's network namespace as ``python -m kubenet.testing.podserver NAME
--address IP... --port N...``. On every address and port it listens on TCP and UDP;
each TCP connection and each UDP datagram gets one line back::

    <name> <peer-ip> <local-ip> <local-port>

so a test learns which pod answered, on which address and port the connection
arrived (the DNAT target), and which source address the pod saw (the client's own
address, or a node address when masqueraded). It binds each address explicitly
rather than the wildcard so the local address of a UDP datagram is known without
IP_PKTINFO. It prints ``ready`` once every socket is bound, and exits when its
standard input closes, so it cannot outlive the test process that started it.
"""

from __future__ import annotations

import argparse
import contextlib
import selectors
import socket
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TextIO

READY = "ready"


@dataclass(frozen=True)
class Reply:
    """One answer of a pod server, parsed."""

    pod: str
    #: The source address the pod saw.
    peer: str
    #: The address and port the pod received on.
    local_ip: str
    local_port: int

    @property
    def endpoint(self) -> str:
        """``ip:port`` the traffic reached, spelled as :attr:`kubenet.model.Endpoint.address`."""
        if ":" in self.local_ip:
            return f"[{self.local_ip}]:{self.local_port}"
        return f"{self.local_ip}:{self.local_port}"


def format_reply(pod: str, peer: str, local_ip: str, local_port: int) -> bytes:
    return f"{pod} {peer} {local_ip} {local_port}\n".encode()


def parse_reply(data: bytes) -> Reply:
    """Parse one answer; raises ValueError on anything else."""
    fields = data.decode("ascii", "replace").split()
    if len(fields) != 4 or not fields[3].isdigit():
        raise ValueError(f"not a pod server reply: {data!r}")
    return Reply(fields[0], fields[1], fields[2], int(fields[3]))


def _bind(address: str, port: int, kind: socket.SocketKind) -> socket.socket:
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    sock = socket.socket(family, kind)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((address, port))
    if kind == socket.SOCK_STREAM:
        sock.listen(128)
    sock.setblocking(False)
    return sock


def _answer_tcp(name: str, listener: socket.socket) -> None:
    try:
        conn, peer = listener.accept()
    except BlockingIOError:
        return
    with conn:
        local = conn.getsockname()
        # The client may have given up already; then there is nobody to tell.
        with contextlib.suppress(OSError):
            conn.sendall(format_reply(name, peer[0], local[0], local[1]))


def _answer_udp(name: str, sock: socket.socket) -> None:
    try:
        _, peer = sock.recvfrom(2048)
    except (BlockingIOError, ConnectionRefusedError):
        return
    local = sock.getsockname()
    with contextlib.suppress(OSError):
        sock.sendto(format_reply(name, peer[0], local[0], local[1]), peer)


def serve(
    name: str,
    addresses: Sequence[str],
    ports: Sequence[int],
    *,
    control: TextIO,
    announce: TextIO,
) -> None:
    """Answer until ``control`` reaches end of file; write READY to ``announce`` once bound."""
    selector = selectors.DefaultSelector()
    sockets: list[socket.socket] = []
    try:
        for address in addresses:
            for port in ports:
                for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
                    sock = _bind(address, port, kind)
                    sockets.append(sock)
                    selector.register(sock, selectors.EVENT_READ, kind)
        selector.register(control, selectors.EVENT_READ, None)
        print(READY, file=announce, flush=True)
        while True:
            for key, _ in selector.select():
                if key.data is None:
                    if not control.readline():
                        return
                    continue
                ready = key.fileobj
                assert isinstance(ready, socket.socket)
                if key.data == socket.SOCK_STREAM:
                    _answer_tcp(name, ready)
                else:
                    _answer_udp(name, ready)
    finally:
        selector.close()
        for sock in sockets:
            sock.close()


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("name")
    parser.add_argument("--address", action="append", required=True)
    parser.add_argument("--port", action="append", type=int, required=True)
    args = parser.parse_args(argv)
    serve(args.name, args.address, args.port, control=sys.stdin, announce=sys.stdout)


if __name__ == "__main__":
    main()
