"""Request paths: one canonical spelling before any rule looks at them, and routing.

Normalisation (the decision, documented in docs/api-proxy.md):

- The path is percent-decoded exactly once, as the API server will decode it. Rules
  see the decoded path, and the proxy forwards that same path re-encoded, so what the
  filter checked is byte for byte what the API server acts on: ``/pods/x/%65xec`` is
  checked, and forwarded, as ``/pods/x/exec``.
- A path whose *shape* is not canonical (``.`` or ``..`` segments, also encoded as
  ``%2e``; repeated slashes) is redirected with 301 to its clean form, which is what
  kubectl proxy does (Go's ``ServeMux`` cleans paths that way). The clean path is then
  filtered like any other when the client follows the redirect; nothing is forwarded
  from the unclean request.
- A path that cannot be spelled canonically is refused with 400: an encoded slash
  (``%2F``: one segment to us, two to a server that decodes before splitting), an
  invalid escape, a control character (NUL, CR, LF, ...) or a path that does not
  start with ``/``.

Routing follows kubectl proxy: Go ``ServeMux`` subtree patterns (longest prefix wins;
``/static`` redirects to ``/static/``), and the API prefix is stripped, leaving a
leading slash, unless the prefix itself starts with ``/api`` (then the path is
forwarded whole; upstream's quirk, kept).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from enum import Enum
from typing import NamedTuple
from urllib.parse import quote_from_bytes, unquote_to_bytes

# RFC 3986 pchar minus "%": what may stay literal in a path segment when re-encoding.
_SEGMENT_SAFE = "!$&'()*+,;=:@~"
_BAD_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
# Segments of characters that never need escaping, none of them empty, "." or "..".
_PLAIN = re.compile(r"(?:/(?!\.\.?(?:/|$))[A-Za-z0-9\-._~!$&'()*+,;=:@]+)*/?")


class PathRefused(ValueError):
    """A path that has no canonical spelling; answered with 400."""


@dataclass(frozen=True)
class Canonical:
    """A path in canonical form (decoded; no dot segments, no repeated slashes).

    ``plain``: the request spelled it with characters that need no escaping, so it is
    forwarded exactly as received (the common case, and a shortcut).
    """

    path: str
    plain: bool = field(default=False, compare=False)


@dataclass(frozen=True)
class Redirect:
    """Ask the client to come back at the canonical spelling."""

    location: str


def _decode_segment(segment: str) -> str:
    if _BAD_ESCAPE.search(segment):
        raise PathRefused("invalid URL escape in path")
    if "%" in segment:
        raw = unquote_to_bytes(segment)
    else:
        raw = segment.encode("utf-8", "surrogateescape")
    if b"/" in raw:
        raise PathRefused("encoded slash (%2F) in path")
    text = raw.decode("utf-8", "surrogateescape")
    if _CONTROL.search(text):
        raise PathRefused("control character in path")
    return text


def encode_path(path: str) -> str:
    """Percent-encode a decoded path segment by segment ("/" stays a separator)."""
    return "/".join(
        quote_from_bytes(seg.encode("utf-8", "surrogateescape"), safe=_SEGMENT_SAFE)
        for seg in path.split("/")
    )


def clean(segments: list[str], trailing_slash: bool) -> str:
    """Go's ``path.Clean`` on an absolute path, keeping a trailing slash as ServeMux does."""
    out: list[str] = []
    for seg in segments:
        if seg in ("", "."):
            continue
        if seg == "..":
            if out:
                out.pop()
            continue
        out.append(seg)
    path = "/" + "/".join(out)
    if trailing_slash and path != "/":
        path += "/"
    return path


def normalise(raw_path: str, raw_query: str = "") -> Canonical | Redirect:
    """The canonical form of a raw request path, or a redirect to it.

    Raises :class:`PathRefused` for a path that cannot be spelled canonically.
    """
    if not raw_path.startswith("/"):
        raise PathRefused("path must start with /")
    if _PLAIN.fullmatch(raw_path):
        return Canonical(raw_path, plain=True)
    segments = [_decode_segment(seg) for seg in raw_path[1:].split("/")]
    decoded = "/" + "/".join(segments)
    # A final "." or ".." names a directory but Go's cleaning drops the slash; only a
    # literal trailing "/" is kept.
    canonical = clean(segments, trailing_slash=decoded.endswith("/"))
    if canonical != decoded:
        query = f"?{raw_query}" if raw_query else ""
        return Redirect(encode_path(canonical) + query)
    return Canonical(canonical)


class RouteKind(Enum):
    API = "api"
    STATIC = "static"
    REDIRECT = "redirect"
    NOT_FOUND = "not-found"


class Route(NamedTuple):
    """Where a canonical path goes.

    ``path``: for API, the path to forward (may be empty: the upstream root); for
    STATIC, the path inside the served folder; for REDIRECT, the location.
    ``cluster``: the context name when several clusters are served.
    """

    kind: RouteKind
    path: str = ""
    cluster: str | None = None


CLUSTERS_SEGMENT = "clusters"


@dataclass(frozen=True)
class Router:
    """kubectl proxy's mux: an API prefix, an optional static prefix, optional clusters.

    Prefixes always end with "/" (kubectl appends one). With ``clusters``, API paths
    are ``<api-prefix>clusters/<context>/<path>``; without, the one cluster is served
    directly under the API prefix.
    """

    api_prefix: str = "/"
    www_prefix: str | None = None
    clusters: tuple[str, ...] = ()

    @staticmethod
    def with_slash(prefix: str) -> str:
        return prefix if prefix.endswith("/") else prefix + "/"

    def route(self, path: str, raw_query: str = "") -> Route:
        patterns = [(self.api_prefix, RouteKind.API)]
        if self.www_prefix is not None:
            patterns.append((self.www_prefix, RouteKind.STATIC))
        best: tuple[str, RouteKind] | None = None
        for prefix, kind in patterns:
            if path.startswith(prefix) and (best is None or len(prefix) > len(best[0])):
                best = (prefix, kind)
        # ServeMux: a subtree root named without its slash is redirected to it, unless
        # the path itself is a registered pattern.
        for prefix, _ in patterns:
            if path + "/" == prefix:
                query = f"?{raw_query}" if raw_query else ""
                return Route(RouteKind.REDIRECT, encode_path(prefix) + query)
        if best is None:
            return Route(RouteKind.NOT_FOUND)
        prefix, kind = best
        if kind is RouteKind.STATIC:
            return Route(RouteKind.STATIC, path[len(prefix) :])
        rest = path if prefix.startswith("/api") else _strip_leave_slash(path, prefix)
        if not self.clusters:
            return Route(RouteKind.API, rest)
        return self._cluster_route(rest)

    def _cluster_route(self, rest: str) -> Route:
        head = f"/{CLUSTERS_SEGMENT}/"
        if not rest.startswith(head):
            return Route(RouteKind.NOT_FOUND)
        tail = rest[len(head) :]
        # Longest name first: a context name may itself contain "/" (EKS ARNs do).
        for name in sorted(self.clusters, key=len, reverse=True):
            if tail == name:
                return Route(RouteKind.API, "", name)
            if tail.startswith(name + "/"):
                return Route(RouteKind.API, tail[len(name) :], name)
        return Route(RouteKind.NOT_FOUND)


def _strip_leave_slash(path: str, prefix: str) -> str:
    """kubectl's ``stripLeaveSlash``: remove the prefix, keep a leading "/" if any rest."""
    rest = path[len(prefix) :]
    if rest and not rest.startswith("/"):
        rest = "/" + rest
    return rest


def join_server_path(server_path: str, path: str) -> str:
    """Join the kubeconfig server's path and a request path with exactly one slash.

    Without ``--append-server-path`` ``server_path`` is empty and an empty request path
    becomes "/", as Go's reverse proxy joins them.
    """
    if server_path.endswith("/") and path.startswith("/"):
        return server_path + path[1:]
    if not server_path.endswith("/") and not path.startswith("/"):
        return server_path + "/" + path
    return server_path + path


def is_watch(path: str, raw_query: str) -> bool:
    """Whether a request opens a stream that only ends when someone closes it.

    ``?watch=true`` (or ``1``), the legacy ``/watch/`` paths and ``?follow=true`` log
    streams. On shutdown these are ended cleanly right away instead of being waited for.
    """
    if "/watch/" in path:
        return True
    for pair in raw_query.split("&"):
        name, _, value = pair.partition("=")
        if name in ("watch", "follow") and value.lower() in ("1", "true"):
            return True
    return False
