"""What a request is about, read from its method and path.

The same reading as upstream's ``RequestInfoFactory``
(``staging/src/k8s.io/apiserver/pkg/endpoints/request/requestinfo.go``)::

    /api/{version}/[watch/][namespaces/{ns}/]{resource}[/{name}[/{subresource}[/{rest...}]]]
    /apis/{group}/{version}/...

``/api/v1/namespaces/{name}`` is the namespace object itself, and
``/api/v1/namespaces/{name}/status`` (or ``/finalize``) its subresource.  Anything
else (``/version``, ``/api``, ``/apis/{group}``, ``/healthz``...) is a non-resource
request.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

_NAMESPACE_SUBRESOURCES = frozenset({"status", "finalize"})
_TRUE = frozenset({"1", "true", "True"})


@dataclass(frozen=True)
class RequestInfo:
    path: str
    verb: str
    is_resource: bool = False
    group: str = ""
    version: str = ""
    namespace: str = ""
    resource: str = ""
    name: str = ""
    subresource: str = ""
    #: Path segments after the subresource (the proxied path for ``services/proxy``).
    rest: tuple[str, ...] = ()
    #: Index of the subresource segment in ``path.split("/")``.
    sub_index: int = -1


def parse(method: str, path: str, query: Mapping[str, str]) -> RequestInfo:
    method = method.upper()
    segments = path.split("/")
    parts = [p for p in path.strip("/").split("/") if p != ""] if path.strip("/") else []
    non_resource = RequestInfo(path, method.lower() if method != "HEAD" else "get")
    if not parts or parts[0] not in ("api", "apis"):
        return non_resource
    if parts[0] == "api":
        if len(parts) < 3:
            return non_resource
        group, version, rest, offset = "", parts[1], parts[2:], 2
    else:
        if len(parts) < 4:
            return non_resource
        group, version, rest, offset = parts[1], parts[2], parts[3:], 3
    watch = False
    if rest[0] == "watch":
        watch, rest, offset = True, rest[1:], offset + 1
        if not rest:
            return non_resource
    namespace = ""
    if rest[0] == "namespaces" and len(rest) > 1:
        namespace = rest[1]
        if len(rest) > 2 and rest[2] not in _NAMESPACE_SUBRESOURCES:
            rest, offset = rest[2:], offset + 2
    resource = rest[0]
    name = rest[1] if len(rest) > 1 else ""
    subresource = rest[2] if len(rest) > 2 else ""
    extra = tuple(rest[3:])
    if method in ("GET", "HEAD"):
        wants_watch = watch or query.get("watch", "") in _TRUE
        verb = "watch" if wants_watch else ("get" if name else "list")
    else:
        verb = {
            "POST": "create",
            "PUT": "update",
            "PATCH": "patch",
            "DELETE": "delete" if name else "deletecollection",
        }.get(method, method.lower())
    # ``offset`` indexes ``parts``; ``segments`` has a leading "" (the path starts with "/").
    sub_index = offset + 3 if subresource and offset + 3 < len(segments) else -1
    return RequestInfo(
        path, verb, True, group, version, namespace, resource, name, subresource, extra, sub_index
    )
