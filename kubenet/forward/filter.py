"""kubectl proxy's request filter: which requests may reach the API server.

The rules are kubectl proxy's (kubectl ``pkg/proxy/proxy_server.go``): four
comma-separated lists of regular expressions, each *searched* in (not fully matched
against) its subject. A request is refused when its path matches a reject-path rule,
then when its method matches a reject-method rule; it is accepted only when its path
matches an accept-path rule *and* its host matches an accept-host rule. An empty flag
value is an empty list, which matches nothing. The filter guards the API prefix only;
static files under ``--www-prefix`` are served without it, as upstream.

Two things differ from upstream on purpose:

- ``Host: [::1]:8001`` is checked as ``[::1]`` (upstream strips the brackets together
  with the port, so its own default ``^\\[::1\\]$`` never matched: kubernetes#77496).
- ``read_only`` adds a preset on top of the lists: every method but GET, HEAD and
  OPTIONS is refused, and so is every upgrade (exec, attach, port-forward).

The filter sees the path *after* normalisation (:mod:`kubenet.forward.paths`), so a
rule holds for every spelling of the same path.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

#: kubectl proxy's defaults, byte for byte.
DEFAULT_ACCEPT_HOSTS = r"^localhost$,^127\.0\.0\.1$,^\[::1\]$"
DEFAULT_ACCEPT_PATHS = r"^.*"
DEFAULT_REJECT_PATHS = r"^/api/.*/pods/.*/exec,^/api/.*/pods/.*/attach"
DEFAULT_REJECT_METHODS = r"^$"

#: What ``--read-only`` still lets through.
READ_ONLY_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})

Patterns = tuple[re.Pattern[str], ...]


class FilterError(ValueError):
    """A rule list that does not compile."""


def parse_patterns(text: str, flag: str = "pattern") -> Patterns:
    """Split a comma-separated list of regular expressions, as kubectl does.

    An empty string is an empty list (matches nothing). Upstream splits on every comma,
    so an element may be empty, and an empty expression matches everything: kept as is.
    """
    if text == "":
        return ()
    patterns = []
    for part in text.split(","):
        try:
            patterns.append(re.compile(part))
        except re.error as exc:
            raise FilterError(f"{flag}: invalid regular expression {part!r}: {exc}") from None
    return tuple(patterns)


def matches_any(subject: str, patterns: Iterable[re.Pattern[str]]) -> bool:
    """True when any pattern is found anywhere in ``subject`` (Go's ``MatchString``)."""
    return any(p.search(subject) for p in patterns)


def host_of(header: str) -> str:
    """The host part of a ``Host`` header value, without the port.

    ``localhost:8001`` -> ``localhost``; ``[::1]:8001`` and ``[::1]`` -> ``[::1]`` (the
    brackets stay, so the default ``^\\[::1\\]$`` rule matches); anything that is not a
    well-formed ``host:port`` is returned unchanged, as upstream does.
    """
    if header.startswith("["):
        end = header.find("]")
        if end == -1:
            return header
        rest = header[end + 1 :]
        if rest == "" or (rest.startswith(":") and ":" not in rest[1:]):
            return header[: end + 1]
        return header
    if header.count(":") == 1:
        return header.split(":", 1)[0]
    return header


def is_upgrade_request(headers: Mapping[str, str] | Iterable[tuple[str, str]]) -> bool:
    """Whether a request asks to switch protocols (WebSocket, SPDY).

    Upstream (apimachinery ``httpstream.IsUpgradeRequest``) looks for ``upgrade``
    anywhere in any ``Connection`` header value, case-insensitively.
    """
    items = headers.items() if isinstance(headers, Mapping) else headers
    return any(name.lower() == "connection" and "upgrade" in value.lower() for name, value in items)


@dataclass(frozen=True)
class FilterRules:
    """The four rule lists and the read-only preset."""

    accept_paths: Patterns
    reject_paths: Patterns
    accept_hosts: Patterns
    reject_methods: Patterns
    read_only: bool = False

    @classmethod
    def from_flags(
        cls,
        accept_paths: str = DEFAULT_ACCEPT_PATHS,
        reject_paths: str = DEFAULT_REJECT_PATHS,
        accept_hosts: str = DEFAULT_ACCEPT_HOSTS,
        reject_methods: str = DEFAULT_REJECT_METHODS,
        read_only: bool = False,
    ) -> FilterRules:
        """Compile the flag values; raises :class:`FilterError` for a bad expression."""
        return cls(
            accept_paths=parse_patterns(accept_paths, "--accept-paths"),
            reject_paths=parse_patterns(reject_paths, "--reject-paths"),
            accept_hosts=parse_patterns(accept_hosts, "--accept-hosts"),
            reject_methods=parse_patterns(reject_methods, "--reject-methods"),
            read_only=read_only,
        )

    def accepts(self, method: str, path: str, host: str, upgrade: bool = False) -> bool:
        """Whether to forward a request; ``host`` is already without its port."""
        if matches_any(path, self.reject_paths):
            return False
        if matches_any(method, self.reject_methods):
            return False
        if self.read_only and (upgrade or method not in READ_ONLY_METHODS):
            return False
        return matches_any(path, self.accept_paths) and matches_any(host, self.accept_hosts)
