"""The access log's line format and the metrics the proxy exports."""

from __future__ import annotations

import io

from prometheus_client import generate_latest

from kubenet.forward.observe import AccessLog, ProxyMetrics, format_line


def test_access_log_line() -> None:
    line = format_line(1700000000.25, "GET", "/api/v1/pods", 200, 1234, 0.0123456, "kind-a")
    assert line == "2023-11-14T22:13:20.250Z GET /api/v1/pods 200 1234 0.012346 kind-a\n"
    assert format_line(0, "GET", "/static/x", 404, 19, 0.0, None).endswith(" -\n")


def test_access_log_buffers_until_flushed() -> None:
    stream = io.StringIO()
    log = AccessLog(stream, owned=False)
    log.record(1.0, "GET", "/a", 200, 1, 0.1, "c")
    log.flush()
    assert stream.getvalue().count("\n") == 1


def test_metrics_series() -> None:
    metrics = ProxyMetrics()
    for duration in (0.0004, 0.002, 0.7):
        metrics.begin()
        metrics.observe("kind-a", "GET", 200, 100, duration)
    metrics.begin()
    metrics.observe(None, "BREW", 418, 0, 0.001)
    metrics.begin()  # still in flight
    r = metrics.registry
    assert (
        r.get_sample_value(
            "apiproxy_requests_total", {"cluster": "kind-a", "method": "GET", "code": "200"}
        )
        == 3
    )
    # Unknown methods are folded into one label value; no cluster is "-".
    assert (
        r.get_sample_value(
            "apiproxy_requests_total", {"cluster": "-", "method": "OTHER", "code": "418"}
        )
        == 1
    )
    bucket = {"cluster": "kind-a", "method": "GET"}
    assert (
        r.get_sample_value("apiproxy_request_duration_seconds_bucket", {**bucket, "le": "0.0005"})
        == 1
    )
    assert (
        r.get_sample_value("apiproxy_request_duration_seconds_bucket", {**bucket, "le": "0.0025"})
        == 2
    )
    assert (
        r.get_sample_value("apiproxy_request_duration_seconds_bucket", {**bucket, "le": "+Inf"})
        == 3
    )
    assert r.get_sample_value("apiproxy_request_duration_seconds_count", bucket) == 3
    assert r.get_sample_value("apiproxy_response_bytes_total", {"cluster": "kind-a"}) == 300
    assert r.get_sample_value("apiproxy_inflight_requests") == 1
    text = generate_latest(r).decode()
    assert "# TYPE apiproxy_request_duration_seconds histogram" in text
    # Each proxy has its own registry: nothing leaks between them.
    assert ProxyMetrics().registry.get_sample_value("apiproxy_inflight_requests") == 0
