"""kubectl proxy's accept/reject rules, case by case (upstream's TestAccept and more)."""

from __future__ import annotations

import pytest

from kubenet.forward.filter import (
    DEFAULT_ACCEPT_HOSTS,
    DEFAULT_ACCEPT_PATHS,
    DEFAULT_REJECT_METHODS,
    DEFAULT_REJECT_PATHS,
    FilterError,
    FilterRules,
    host_of,
    is_upgrade_request,
    matches_any,
    parse_patterns,
)

DEFAULTS = FilterRules.from_flags()

# (path, host, method, reject-methods flag, reject-paths flag, accepted): upstream's
# kubectl pkg/proxy TestAccept table, in the same order.
NS = "/api/v1/namespaces/default/pods"
RP = DEFAULT_REJECT_PATHS
RM = DEFAULT_REJECT_METHODS
UPSTREAM_CASES = [
    ("", "127.0.0.1", "GET", RM, RP, True),
    ("/api/v1/pods", "127.0.0.1", "GET", RM, RP, True),
    ("/api/v1/pods", "localhost", "GET", RM, RP, True),
    (f"{NS}/foo", "localhost", "GET", RM, RP, True),
    (f"{NS}/attachfoo", "localhost", "GET", RM, RP, True),
    (f"{NS}/execfoo", "localhost", "GET", RM, RP, True),
    (f"{NS}/foo/exec", "127.0.0.1", "GET", RM, RP, False),
    (f"{NS}/foo/attach", "127.0.0.1", "GET", RM, RP, False),
    ("/api/v1/pods", "evil.com", "GET", RM, RP, False),
    ("/api/v1/pods", "localhost.evil.com", "GET", RM, RP, False),
    ("/api/v1/pods", "127a0b0c1", "GET", RM, RP, False),
    ("/ui", "localhost", "GET", RM, RP, True),
    ("/api/v1/pods", "localhost", "POST", RM, RP, True),
    (f"{NS}/somepod", "localhost", "PUT", RM, RP, True),
    (f"{NS}/somepod", "localhost", "PATCH", RM, RP, True),
    ("/api/v1/pods", "127.0.0.1", "GET", "GET", RP, False),
    ("/api/v1/pods", "localhost", "POST", "POST", RP, False),
    (f"{NS}/somepod", "localhost", "PUT", "PUT", RP, False),
    (f"{NS}/somepod", "localhost", "PATCH", "PATCH", RP, False),
    (f"{NS}/somepod", "localhost", "PATCH", "POST,PUT,PATCH", RP, False),
    (f"{NS}/somepod", "localhost", "PUT", "POST,PUT,PATCH", RP, False),
    (f"{NS}/somepod/exec", "localhost", "POST", RM, RP, False),
    (f"{NS}/somepod/exec", "localhost", "POST", RM, "", True),
]  # fmt: skip


@pytest.mark.parametrize(
    ("path", "host", "method", "reject_methods", "reject_paths", "accepted"), UPSTREAM_CASES
)
def test_upstream_accept_table(
    path: str, host: str, method: str, reject_methods: str, reject_paths: str, accepted: bool
) -> None:
    rules = FilterRules.from_flags(
        DEFAULT_ACCEPT_PATHS, reject_paths, DEFAULT_ACCEPT_HOSTS, reject_methods
    )
    assert rules.accepts(method, path, host) is accepted


@pytest.mark.parametrize(
    ("subject", "patterns", "matched"),
    [("foo", "bar,.*", True), ("foo", "bar,fo.*", True), ("bar", "bar,fo.*", True),
     ("baz", "bar,fo.*", False)],
)  # fmt: skip
def test_lists_are_searched_not_fully_matched(subject: str, patterns: str, matched: bool) -> None:
    assert matches_any(subject, parse_patterns(patterns)) is matched
    # Searched: a pattern found in the middle counts, as Go's MatchString.
    assert matches_any("xx" + subject + "yy", parse_patterns(patterns)) is matched


def test_empty_list_matches_nothing_and_empty_element_matches_everything() -> None:
    assert parse_patterns("") == ()
    assert not matches_any("anything", parse_patterns(""))
    # "a,,b" has an empty expression in the middle, which matches any string upstream.
    assert matches_any("zzz", parse_patterns("a,,b"))
    no_hosts = FilterRules.from_flags(accept_hosts="")
    assert not no_hosts.accepts("GET", "/api", "localhost")


def test_reject_order_paths_then_methods_then_accept() -> None:
    # A rejected path wins over an accepting path list; a rejected method over both.
    rules = FilterRules.from_flags(
        accept_paths="^/api", reject_paths="secret", reject_methods="DELETE"
    )
    assert not rules.accepts("GET", "/api/secret", "localhost")
    assert not rules.accepts("DELETE", "/api/v1/pods", "localhost")
    assert rules.accepts("GET", "/api/v1/pods", "localhost")
    assert not rules.accepts("GET", "/apis/x", "nothere")
    assert not rules.accepts("GET", "/other", "localhost")


def test_invalid_expression_names_its_flag() -> None:
    with pytest.raises(FilterError, match=r"--reject-paths: invalid regular expression '\('"):
        FilterRules.from_flags(reject_paths="ok,(")


@pytest.mark.parametrize(
    ("header", "host"),
    [
        ("localhost:8085", "localhost"),  # upstream's TestExtractHost
        ("marmalade", "marmalade"),
        ("127.0.0.1:8001", "127.0.0.1"),
        ("[::1]:8001", "[::1]"),  # kubernetes#77496: upstream returned "::1"
        ("[::1]", "[::1]"),
        ("[fe80::1%25eth0]:80", "[fe80::1%25eth0]"),
        ("::1", "::1"),  # not host:port: unchanged, as upstream
        ("[::1]x", "[::1]x"),
        ("", ""),
    ],
)
def test_host_of(header: str, host: str) -> None:
    assert host_of(header) == host


def test_default_hosts_accept_ipv6_loopback_with_port() -> None:
    assert DEFAULTS.accepts("GET", "/api", host_of("[::1]:8001"))
    assert DEFAULTS.accepts("GET", "/api", host_of("localhost:8001"))
    for evil in ("evil.com:8001", "localhost.evil.com", "127a0b0c1:80", "[::2]:8001", "[::1].evil"):
        assert not DEFAULTS.accepts("GET", "/api", host_of(evil)), evil


def test_read_only_preset() -> None:
    rules = FilterRules.from_flags(read_only=True)
    for method in ("GET", "HEAD", "OPTIONS"):
        assert rules.accepts(method, "/api/v1/pods", "localhost")
    for method in ("POST", "PUT", "PATCH", "DELETE", "CONNECT", "PROPFIND"):
        assert not rules.accepts(method, "/api/v1/pods", "localhost"), method
    # Port-forward is a GET upgrade: still refused.
    assert not rules.accepts(
        "GET", "/api/v1/namespaces/d/pods/p/portforward", "localhost", upgrade=True
    )
    # The lists still apply on top of the preset.
    assert not rules.accepts("GET", "/api/v1/pods", "evil.com")


@pytest.mark.parametrize(
    ("headers", "upgrade"),
    [
        ([("Connection", "Upgrade"), ("Upgrade", "SPDY/3.1")], True),
        ([("connection", "keep-alive, upgrade")], True),
        ([("Connection", "keep-alive"), ("Connection", "Upgrade")], True),
        ([("Connection", "keep-alive"), ("Upgrade", "websocket")], False),
        ([("Upgrade", "websocket")], False),
        ([], False),
    ],
)
def test_upgrade_detection(headers: list[tuple[str, str]], upgrade: bool) -> None:
    assert is_upgrade_request(headers) is upgrade


def test_upgrade_detection_takes_a_mapping() -> None:
    assert is_upgrade_request({"Connection": "Upgrade", "Upgrade": "websocket"})
    assert not is_upgrade_request({"Upgrade": "websocket"})
