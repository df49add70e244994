"""Doing things inside the lab's namespaces from a process that lives outside them.

A network namespace belongs to a thread, not a process (``setns`` moves the calling
thread only), and a socket belongs to the namespace it was made in. So
:func:`call_in` runs a function on a fresh thread that has entered the namespace;
every socket the function opens (``http.client``, ``urllib``) lives there.
"""

from __future__ import annotations

import http.client
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")


def call_in(netns: str, fn: Callable[[], T]) -> T:
    """``fn()`` run on a thread inside ``netns``; its result, or its exception re-raised."""
    result: list[T] = []
    errors: list[BaseException] = []

    # Imported here so that merely loading the lab's CLI stays cheap.
    from pyroute2 import netns as pyroute2_netns

    def enter_and_call() -> None:
        try:
            pyroute2_netns.setns(netns, flags=0)
            result.append(fn())
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=enter_and_call, name=f"in-{netns}", daemon=True)
    thread.start()
    thread.join()
    if errors:
        raise errors[0]
    return result[0]


@dataclass(frozen=True)
class Response:
    status: int
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")


def http_request(
    host: str,
    port: int,
    path: str,
    *,
    method: str = "GET",
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    tls: ssl.SSLContext | None = None,
    timeout: float = 5.0,
) -> Response:
    """One HTTP request from the calling thread's namespace (HTTPS when ``tls`` is given)."""
    conn: http.client.HTTPConnection
    if tls is not None:
        conn = http.client.HTTPSConnection(host, port, timeout=timeout, context=tls)
    else:
        conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        answer = conn.getresponse()
        return Response(answer.status, answer.read())
    finally:
        conn.close()
