"""Header rewriting between the client, the proxy and the API server (pure).

What kubectl proxy does, through Go's reverse proxy and client-go's round trippers:

- hop-by-hop headers (RFC 9110 section 7.6.1, and any header the ``Connection``
  header names) are not forwarded, except on an upgrade, where ``Connection`` and
  ``Upgrade`` are the request;
- the client's address is appended to ``X-Forwarded-For``;
- the proxy's Authorization is added only when the client sent none (a client's own
  Authorization passes through), and impersonation headers only when the client sent
  no ``Impersonate-User``;
- ``User-Agent`` is set only when the client sent none.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from .http1 import HOP_BY_HOP

Headers = list[tuple[str, str]]


def connection_tokens(headers: Iterable[tuple[str, str]]) -> frozenset[str]:
    """The header names listed in ``Connection`` (lower-cased)."""
    tokens: set[str] = set()
    for name, value in headers:
        if len(name) == 10 and name.lower() == "connection":
            tokens.update(t.strip().lower() for t in value.split(",") if t.strip())
    return frozenset(tokens)


def upstream_request_headers(
    incoming: Sequence[tuple[str, str]],
    *,
    client_ip: str | None,
    authorization: str | None,
    impersonation: Sequence[tuple[str, str]] = (),
    user_agent: str = "",
    upgrade: bool = False,
    drop_authorization: bool = False,
) -> Headers:
    """The headers to send upstream for a client request (``Host`` is left out).

    ``drop_authorization`` removes the client's Authorization first (it was the proxy's
    own token, checked by ``--auth-token-file``, and is not the API server's business).
    """
    # One pass over the client's headers: this runs for every request.
    listed = frozenset() if upgrade else connection_tokens(incoming)
    out: Headers = []
    forwarded: list[str] = []
    has_authorization = has_impersonation = has_user_agent = False
    for name, value in incoming:
        lowered = name.lower()
        if lowered == "host":
            continue
        if not upgrade and (lowered in HOP_BY_HOP or lowered in listed or lowered == "expect"):
            # The server side answers "Expect: 100-continue" itself.
            continue
        if lowered == "authorization":
            if drop_authorization:
                continue
            has_authorization = has_authorization or value != ""
        elif lowered == "x-forwarded-for":
            forwarded.append(value)
            continue
        elif lowered == "impersonate-user":
            has_impersonation = has_impersonation or value != ""
        elif lowered == "user-agent":
            has_user_agent = has_user_agent or value != ""
        out.append((name, value))
    if client_ip:
        out.append(("X-Forwarded-For", ", ".join([*forwarded, client_ip])))
    elif forwarded:
        out += [("X-Forwarded-For", v) for v in forwarded]
    if authorization and not has_authorization:
        out.append(("Authorization", authorization))
    if impersonation and not has_impersonation:
        out.extend(impersonation)
    if user_agent and not has_user_agent:
        out.append(("User-Agent", user_agent))
    return out


def client_response_headers(
    upstream: Sequence[tuple[str, str]], drop_length: bool = False
) -> Headers:
    """The API server's response headers as the client gets them.

    ``drop_length``: leave Content-Length out too (the proxy frames the body itself).
    """
    out: Headers = []
    listed: set[str] = set()
    for name, value in upstream:
        lowered = name.lower()
        if lowered in HOP_BY_HOP:
            if lowered == "connection":
                listed.update(t.strip().lower() for t in value.split(","))
            continue
        if drop_length and lowered == "content-length":
            continue
        out.append((name, value))
    listed -= {"close", "keep-alive", ""}
    if listed:
        out = [(n, v) for n, v in out if n.lower() not in listed]
    return out
