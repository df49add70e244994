"""What the proxy tells its operator: an access log and Prometheus metrics.

Access log: one line per request, space-separated, in this order:

    time method path status bytes duration cluster

``time`` is the UTC start in RFC 3339 with milliseconds, ``path`` the path as the
client sent it (the query is left out: it is not needed to follow traffic and keeps
the log short), ``bytes`` the response body bytes sent to the client, ``duration`` the
seconds until the response (or the upgraded stream) ended, and ``cluster`` the
context the request went to, or ``-`` when it went to none (static files, refusals).

Metrics live in their own registry per proxy, so several proxies in one process (and
tests) never share counters.
"""

from __future__ import annotations

import sys
import time
from typing import IO, Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_METHODS = frozenset(
    {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "CONNECT", "TRACE"}
)


def _method_label(method: str) -> str:
    # Label values must stay a small set whatever clients send.
    return method if method in _METHODS else "OTHER"


def format_line(
    start: float,
    method: str,
    path: str,
    status: int,
    nbytes: int,
    duration: float,
    cluster: str | None,
) -> str:
    """One access-log line (with its newline)."""
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(start))
    millis = int((start % 1) * 1000)
    return (
        f"{stamp}.{millis:03d}Z {method} {path} {status} {nbytes} {duration:.6f} {cluster or '-'}\n"
    )


class AccessLog:
    """Writes access-log lines to a file or to stdout (``-``)."""

    def __init__(self, stream: IO[str], owned: bool) -> None:
        self._stream = stream
        self._owned = owned
        self._dirty = False

    @classmethod
    def open(cls, target: str) -> AccessLog:
        if target == "-":
            return cls(sys.stdout, owned=False)
        # Line-buffered files would cost a write(2) per request; flush() runs on a timer.
        return cls(open(target, "a", encoding="utf-8"), owned=True)

    def record(
        self,
        start: float,
        method: str,
        path: str,
        status: int,
        nbytes: int,
        duration: float,
        cluster: str | None,
    ) -> None:
        self._stream.write(format_line(start, method, path, status, nbytes, duration, cluster))
        self._dirty = True

    def flush(self) -> None:
        if self._dirty:
            self._dirty = False
            self._stream.flush()

    def close(self) -> None:
        self.flush()
        if self._owned:
            self._stream.close()


class ProxyMetrics:
    """The proxy's Prometheus metrics, in a registry of their own."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self._children: dict[tuple[str | None, str, int], tuple[Any, Any, Any]] = {}
        r = self.registry
        self.requests = Counter(
            "apiproxy_requests",
            "Requests answered, by cluster, method and HTTP status.",
            ["cluster", "method", "code"],
            registry=r,
        )
        self.duration = Histogram(
            "apiproxy_request_duration_seconds",
            "Time from request to the end of the response, by cluster and method "
            "(watches and upgrades included: they last as long as they are open).",
            ["cluster", "method"],
            buckets=(
                0.0005,
                0.001,
                0.0025,
                0.005,
                0.01,
                0.025,
                0.05,
                0.1,
                0.25,
                0.5,
                1,
                2.5,
                5,
                10,
                30,
                60,
            ),
            registry=r,
        )
        self.response_bytes = Counter(
            "apiproxy_response_bytes",
            "Response body bytes sent to clients, by cluster.",
            ["cluster"],
            registry=r,
        )
        self.inflight = Gauge(
            "apiproxy_inflight_requests", "Requests being handled now.", registry=r
        )
        self.open_streams = Gauge(
            "apiproxy_open_streams",
            "Watches and upgraded connections open now, by kind.",
            ["kind"],
            registry=r,
        )
        self.upstream_errors = Counter(
            "apiproxy_upstream_errors",
            "Requests that failed to reach the API server, by cluster.",
            ["cluster"],
            registry=r,
        )
        self.rejected = Counter(
            "apiproxy_rejected_requests",
            "Requests refused by the proxy itself, by reason.",
            ["reason"],
            registry=r,
        )

    def observe(
        self, cluster: str | None, method: str, status: int, nbytes: int, duration: float
    ) -> None:
        key = (cluster, method, status)
        children = self._children.get(key)
        if children is None:
            # Resolving labelled children costs more than updating them: keep them.
            label, verb = cluster or "-", _method_label(method)
            children = (
                self.requests.labels(label, verb, str(status)),
                self.duration.labels(label, verb),
                self.response_bytes.labels(label),
            )
            if len(self._children) < 4096:
                self._children[key] = children
        requests, durations, sent = children
        requests.inc()
        durations.observe(duration)
        if nbytes:
            sent.inc(nbytes)
