"""Header rewriting: what reaches the API server and what comes back to the client."""

from __future__ import annotations

from kubenet.forward.headers import client_response_headers, upstream_request_headers

IMPERSONATE = (("Impersonate-User", "bob"), ("Impersonate-Group", "devs"))


def names(headers: list[tuple[str, str]]) -> list[str]:
    return [n for n, _ in headers]


def test_hop_by_hop_and_connection_listed_headers_stay_behind() -> None:
    out = upstream_request_headers(
        [("Host", "localhost:8001"), ("Connection", "keep-alive, X-Secret"), ("X-Secret", "1"),
         ("Keep-Alive", "300"), ("TE", "trailers"), ("Transfer-Encoding", "chunked"),
         ("Proxy-Authorization", "Basic x"), ("Upgrade", "h2c"), ("Expect", "100-continue"),
         ("Accept", "application/json"), ("Content-Length", "10")],
        client_ip=None, authorization=None,
    )  # fmt: skip
    assert out == [("Accept", "application/json"), ("Content-Length", "10")]


def test_credentials_are_added_only_when_the_client_sent_none() -> None:
    out = upstream_request_headers(
        [("Accept", "*/*")], client_ip="10.0.0.7", authorization="Bearer t",
        impersonation=IMPERSONATE, user_agent="api-proxy",
    )  # fmt: skip
    assert out == [
        ("Accept", "*/*"),
        ("X-Forwarded-For", "10.0.0.7"),
        ("Authorization", "Bearer t"),
        *IMPERSONATE,
        ("User-Agent", "api-proxy"),
    ]
    own = upstream_request_headers(
        [("Authorization", "Bearer mine"), ("Impersonate-User", "carol"), ("User-Agent", "k/1")],
        client_ip=None, authorization="Bearer t", impersonation=IMPERSONATE, user_agent="p",
    )  # fmt: skip
    assert own == [("Authorization", "Bearer mine"), ("Impersonate-User", "carol"),
                   ("User-Agent", "k/1")]  # fmt: skip


def test_forwarded_for_is_appended() -> None:
    out = upstream_request_headers(
        [("X-Forwarded-For", "1.1.1.1"), ("x-forwarded-for", "2.2.2.2")],
        client_ip="127.0.0.1", authorization=None,
    )  # fmt: skip
    assert out == [("X-Forwarded-For", "1.1.1.1, 2.2.2.2, 127.0.0.1")]


def test_the_proxys_own_token_is_dropped() -> None:
    out = upstream_request_headers(
        [("Authorization", "Bearer proxy-token")], client_ip=None, authorization="Bearer cluster",
        drop_authorization=True,
    )  # fmt: skip
    assert out == [("Authorization", "Bearer cluster")]


def test_upgrades_keep_connection_and_upgrade() -> None:
    out = upstream_request_headers(
        [("Host", "x"), ("Connection", "Upgrade"), ("Upgrade", "SPDY/3.1"),
         ("X-Stream-Protocol-Version", "v4.channel.k8s.io")],
        client_ip=None, authorization="Bearer t", upgrade=True,
    )  # fmt: skip
    assert names(out) == ["Connection", "Upgrade", "X-Stream-Protocol-Version", "Authorization"]


def test_response_headers() -> None:
    upstream = [("Content-Type", "application/json"), ("Connection", "keep-alive, X-Hop"),
                ("X-Hop", "1"), ("Transfer-Encoding", "chunked"), ("Content-Length", "5"),
                ("Audit-Id", "abc"), ("Warning", "299 - a"), ("Warning", "299 - b")]  # fmt: skip
    assert names(client_response_headers(upstream)) == [
        "Content-Type",
        "Content-Length",
        "Audit-Id",
        "Warning",
        "Warning",
    ]
    assert "Content-Length" not in names(client_response_headers(upstream, drop_length=True))
