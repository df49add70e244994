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

import bisect
import sys
import time
from collections.abc import Iterator
from typing import IO

from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

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


#: Upper bounds of the request duration histogram, in seconds.
DURATION_BUCKETS = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
    30.0, 60.0,
)  # fmt: skip


class _PerRequest:
    """Collects the per-request series for Prometheus at scrape time.

    prometheus_client's own Counter and Histogram take a lock and run several checks
    on every update; the proxy updates four series per request on a single event loop,
    so it keeps plain numbers and lets this collector turn them into metric families
    when scraped.
    """

    def __init__(self, metrics: ProxyMetrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterator[Metric]:
        m = self._metrics
        requests = CounterMetricFamily(
            "apiproxy_requests",
            "Requests answered, by cluster, method and HTTP status.",
            labels=["cluster", "method", "code"],
        )
        for (cluster, method, code), count in sorted(m._requests.items()):
            requests.add_metric([cluster, method, str(code)], count)
        yield requests
        duration = HistogramMetricFamily(
            "apiproxy_request_duration_seconds",
            "Time from request to the end of the response, by cluster and method "
            "(watches and upgrades included: they last as long as they are open).",
            labels=["cluster", "method"],
        )
        for (cluster, method), (counts, total) in sorted(m._durations.items()):
            buckets, running = [], 0
            for bound, count in zip((*DURATION_BUCKETS, float("inf")), counts, strict=True):
                running += count
                buckets.append((str(bound) if bound != float("inf") else "+Inf", running))
            duration.add_metric([cluster, method], buckets, total)
        yield duration
        sent = CounterMetricFamily(
            "apiproxy_response_bytes",
            "Response body bytes sent to clients, by cluster.",
            labels=["cluster"],
        )
        for cluster, count in sorted(m._bytes.items()):
            sent.add_metric([cluster], count)
        yield sent
        yield GaugeMetricFamily(
            "apiproxy_inflight_requests", "Requests being handled now.", value=m.inflight
        )


class ProxyMetrics:
    """The proxy's Prometheus metrics, in a registry of their own."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.inflight = 0
        self._requests: dict[tuple[str, str, int], int] = {}
        self._durations: dict[tuple[str, str], tuple[list[int], float]] = {}
        self._bytes: dict[str, int] = {}
        r = self.registry
        r.register(_PerRequest(self))
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

    def begin(self) -> None:
        """A request arrived."""
        self.inflight += 1

    def observe(
        self, cluster: str | None, method: str, status: int, nbytes: int, duration: float
    ) -> None:
        """A request ended (pairs with :meth:`begin`)."""
        self.inflight -= 1
        label, verb = cluster or "-", _method_label(method)
        key = (label, verb, status)
        self._requests[key] = self._requests.get(key, 0) + 1
        series = self._durations.get((label, verb))
        if series is None:
            series = self._durations[(label, verb)] = ([0] * (len(DURATION_BUCKETS) + 1), 0.0)
        counts, total = series
        counts[bisect.bisect_left(DURATION_BUCKETS, duration)] += 1
        self._durations[(label, verb)] = (counts, total + duration)
        if nbytes:
            self._bytes[label] = self._bytes.get(label, 0) + nbytes
