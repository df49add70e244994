"""``--auth-token-file``: bearer tokens the proxy's own clients must present.

kubectl proxy trusts anyone who can reach its port (hence its Host filter against
DNS rebinding). With a token file, every request must carry
``Authorization: Bearer <token>`` with one of the file's tokens; the header is then
removed, so the proxy's token never reaches the API server, which gets the proxy's
kubeconfig credentials instead.

The file holds one token per line; blank lines and ``#`` comments are skipped, and
only the first comma-separated field counts, so a kube-apiserver static token file
(``token,user,uid,"groups"``) works as is. The file is re-read when it changes.
Tokens are compared in constant time.
"""

from __future__ import annotations

import hmac
import os
from pathlib import Path


class TokenFileError(Exception):
    """The token file cannot be read or holds no token."""


def parse_tokens(text: str) -> frozenset[bytes]:
    tokens = set()
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        token = line.split(",", 1)[0].strip()
        if token:
            tokens.add(token.encode())
    return frozenset(tokens)


class ClientTokens:
    """The accepted tokens, kept in step with their file."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._stamp: tuple[int, int, int] | None = None
        self._tokens: frozenset[bytes] = frozenset()
        self._reload()
        if not self._tokens:
            raise TokenFileError(f"{path}: no token in file")

    def __repr__(self) -> str:
        return f"ClientTokens({self.path!r})"

    def _reload(self) -> None:
        try:
            st = os.stat(self.path)
            stamp = (st.st_ino, st.st_size, st.st_mtime_ns)
            if stamp == self._stamp:
                return
            tokens = parse_tokens(Path(self.path).read_text())
        except OSError as exc:
            if self._stamp is None:
                raise TokenFileError(f"{self.path}: {exc.strerror or exc}") from None
            return  # mid-rotation: keep the last good set
        self._stamp = stamp
        self._tokens = tokens

    def allows(self, authorization: str | None) -> bool:
        """Whether an ``Authorization`` header value carries an accepted token."""
        if not authorization:
            return False
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return False
        self._reload()
        presented = token.strip().encode()
        # Compare against every token so timing says nothing about which one matched.
        found = False
        for known in self._tokens:
            found |= hmac.compare_digest(presented, known)
        return found
