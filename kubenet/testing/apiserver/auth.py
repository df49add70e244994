"""Who is asking, and may they: authentication and a small authorizer.

Authentication follows kube-apiserver's order and answers:

* a client certificate verified against the server's CA: user from CN, groups from O;
* ``Authorization: Bearer <token>`` looked up in a token file (upstream's
  ``--token-auth-file`` CSV format: ``token,user,uid,"group1,group2"``); an unknown
  token is 401 even when anonymous requests are allowed, as upstream;
* no credentials: ``system:anonymous`` in ``system:unauthenticated`` when anonymous
  access is on (off by default), else 401.

Authenticated users also get the group ``system:authenticated``.

Impersonation (``Impersonate-User``, ``Impersonate-Group``, ``Impersonate-Uid``) follows
upstream's filter: the caller must be allowed to impersonate (here: ``system:masters``),
else 403; the request then runs as the impersonated user, who also gets
``system:authenticated``.

Authorization is a fixed policy in the spirit of the default RBAC roles, not RBAC
itself: ``system:masters`` may do anything; ``kubenet:viewers`` may read (get, list,
watch) everything; every authenticated user may read discovery, ``/version`` and the
health endpoints; anonymous users may read only ``/version`` and the health endpoints
(upstream's ``system:public-info-viewer``).  Refusals are 403 with upstream's wording.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kubenet.testing.apiserver import errors
from kubenet.testing.apiserver.errors import ApiError

MASTERS = "system:masters"
VIEWERS = "kubenet:viewers"
AUTHENTICATED = "system:authenticated"
UNAUTHENTICATED = "system:unauthenticated"
ANONYMOUS = "system:anonymous"

_READ_VERBS = frozenset({"get", "list", "watch"})
_PUBLIC_PATHS = frozenset({"/version", "/version/", "/healthz", "/livez", "/readyz"})


@dataclass(frozen=True)
class User:
    name: str
    groups: tuple[str, ...] = ()
    uid: str = ""

    @property
    def anonymous(self) -> bool:
        return self.name == ANONYMOUS


def parse_token_file(text: str) -> dict[str, User]:
    """Read an upstream token file: ``token,user,uid[,"group1,group2"]`` per line."""
    users: dict[str, User] = {}
    for row in csv.reader(io.StringIO(text)):
        if not row or row[0].startswith("#"):
            continue
        if len(row) < 3:
            raise ValueError(f"token file line needs token,user,uid: {row!r}")
        groups = tuple(g for g in (row[3].split(",") if len(row) > 3 else []) if g)
        users[row[0]] = User(row[1], groups, row[2])
    return users


def format_token_file(users: Mapping[str, User]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    for token, user in users.items():
        writer.writerow([token, user.name, user.uid, ",".join(user.groups)])
    return out.getvalue()


def load_token_file(path: Path) -> dict[str, User]:
    return parse_token_file(path.read_text())


@dataclass
class Authenticator:
    tokens: dict[str, User] = field(default_factory=dict)
    anonymous: bool = False

    def authenticate(self, authorization: str, peercert: Mapping[str, Any] | None) -> User:
        """Identify a request, or raise 401."""
        if authorization:
            scheme, _, credentials = authorization.partition(" ")
            if scheme.lower() == "bearer":
                user = self.tokens.get(credentials.strip())
                if user is None:
                    raise errors.unauthorized()
                return _with_authenticated(user)
        if peercert:
            user = _user_from_cert(peercert)
            if user is not None:
                return _with_authenticated(user)
        if self.anonymous:
            return User(ANONYMOUS, (UNAUTHENTICATED,))
        raise errors.unauthorized()


def impersonate(user: User, headers: Mapping[str, str], groups: list[str]) -> User:
    """The user a request acts as, given its ``Impersonate-*`` headers (403 if not allowed)."""
    name = headers.get("Impersonate-User", "")
    uid = headers.get("Impersonate-Uid", "")
    if not name:
        if groups or uid:
            raise errors.bad_request(
                "requested impersonation of groups or uid without impersonating a user"
            )
        return user
    if MASTERS not in user.groups:
        # Upstream checks users first, then groups and uid; the user check decides here.
        raise errors.forbidden(
            f'users "{name}" is forbidden: User "{user.name}" cannot impersonate resource '
            f'"users" in API group "" at the cluster scope',
            "",
            "users",
            name,
        )
    if name == ANONYMOUS:
        return User(name, tuple(groups), uid)
    return _with_authenticated(User(name, tuple(groups), uid))


def _with_authenticated(user: User) -> User:
    if AUTHENTICATED in user.groups:
        return user
    return User(user.name, (*user.groups, AUTHENTICATED), user.uid)


def _user_from_cert(peercert: Mapping[str, Any]) -> User | None:
    """CN and O from the dict ``ssl.SSLSocket.getpeercert()`` returns."""
    name = ""
    groups: list[str] = []
    for rdn in peercert.get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                name = value
            elif key == "organizationName":
                groups.append(value)
    return User(name, tuple(groups)) if name else None


@dataclass(frozen=True)
class Attributes:
    """What a request does, in authorizer terms."""

    verb: str
    path: str
    resource: str = ""
    subresource: str = ""
    group: str = ""
    namespace: str = ""
    name: str = ""

    @property
    def is_resource(self) -> bool:
        return bool(self.resource)


def authorize(user: User, attrs: Attributes) -> None:
    """Raise 403 unless the fixed policy allows ``user`` to do ``attrs``."""
    if MASTERS in user.groups:
        return
    if not attrs.is_resource:
        if attrs.path in _PUBLIC_PATHS:
            return
        if not user.anonymous and attrs.verb == "get":
            return  # discovery and OpenAPI for every authenticated user (system:discovery)
        raise errors.ApiError(
            403,
            "Forbidden",
            f'forbidden: User "{user.name}" cannot {attrs.verb} path "{attrs.path}"',
            {},
        )
    if VIEWERS in user.groups and attrs.verb in _READ_VERBS and not attrs.subresource:
        return
    raise _forbidden(user, attrs)


def _forbidden(user: User, attrs: Attributes) -> ApiError:
    resource = attrs.resource + (f"/{attrs.subresource}" if attrs.subresource else "")
    what = f'{resource} "{attrs.name}"' if attrs.name else resource
    if attrs.group:
        what = what.replace(resource, f"{resource}.{attrs.group}", 1)
    where = f' in the namespace "{attrs.namespace}"' if attrs.namespace else " at the cluster scope"
    message = (
        f'{what} is forbidden: User "{user.name}" cannot {attrs.verb} resource "{resource}" in '
        f'API group "{attrs.group}"{where}'
    )
    return errors.forbidden(message, attrs.group, attrs.resource, attrs.name)
