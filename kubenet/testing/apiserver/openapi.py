"""A minimal OpenAPI v3 description: the paths and operations, no schemas.

kubectl reads ``/openapi/v3`` before it creates or patches anything: its
``--validate=strict`` default asks whether the server supports the
``fieldValidation`` query parameter by looking for it on the resource's PATCH
operation (matched through ``x-kubernetes-group-version-kind``).  Without that
document kubectl refuses with "failed to download openapi".  With it, kubectl
leaves validation to the server and sends ``fieldValidation=Strict``.

Schemas are left out on purpose: kubectl's client-side apply then computes
strategic merge patches from its compiled-in types, which is what it does for
these built-in kinds anyway.  (Consequently ``kubectl explain`` has nothing to show.)
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from kubenet.testing.apiserver.resources import Kinds, ResourceType

JsonObject = dict[str, Any]

_PATCH_TYPES = (
    "application/json-patch+json",
    "application/merge-patch+json",
    "application/strategic-merge-patch+json",
)


def _param(name: str, where: str = "query", required: bool = False) -> JsonObject:
    return {"name": name, "in": where, "required": required, "schema": {"type": "string"}}


def _op(rtype: ResourceType, action: str, op_id: str, params: list[JsonObject]) -> JsonObject:
    op: JsonObject = {
        "operationId": op_id,
        "parameters": params,
        "responses": {"200": {"description": "OK"}, "401": {"description": "Unauthorized"}},
        "x-kubernetes-action": action,
        "x-kubernetes-group-version-kind": {
            "group": rtype.group,
            "version": rtype.version,
            "kind": rtype.kind,
        },
    }
    if action == "patch":
        op["requestBody"] = {
            "content": {t: {"schema": {"type": "object"}} for t in _PATCH_TYPES},
            "required": True,
        }
    return op


def _paths(rtype: ResourceType) -> dict[str, JsonObject]:
    base = f"/apis/{rtype.group}/{rtype.version}" if rtype.group else f"/api/{rtype.version}"
    scope = (
        f"{base}/namespaces/{{namespace}}/{rtype.plural}"
        if rtype.namespaced
        else f"{base}/{rtype.plural}"
    )
    ident = rtype.kind
    common = [_param("pretty")]
    write = [_param("dryRun"), _param("fieldManager"), _param("fieldValidation")]
    path_params = [_param("name", "path", True)]
    if rtype.namespaced:
        path_params.append(_param("namespace", "path", True))
    collection = {
        "parameters": path_params[1:] + common,
        "get": _op(
            rtype,
            "list",
            f"list{ident}",
            [
                _param("labelSelector"),
                _param("fieldSelector"),
                _param("limit"),
                _param("continue"),
                _param("resourceVersion"),
                _param("watch"),
            ],
        ),
        "post": _op(rtype, "post", f"create{ident}", write),
    }
    item = {
        "parameters": path_params + common,
        "get": _op(rtype, "get", f"read{ident}", []),
        "put": _op(rtype, "put", f"replace{ident}", write),
        "patch": _op(rtype, "patch", f"patch{ident}", [*write, _param("force")]),
        "delete": _op(
            rtype,
            "delete",
            f"delete{ident}",
            [_param("dryRun"), _param("gracePeriodSeconds"), _param("propagationPolicy")],
        ),
    }
    out = {scope: collection, f"{scope}/{{name}}": item}
    if "status" in rtype.subresources:
        out[f"{scope}/{{name}}/status"] = {
            "parameters": path_params + common,
            "get": _op(rtype, "get", f"read{ident}Status", []),
            "put": _op(rtype, "put", f"replace{ident}Status", write),
            "patch": _op(rtype, "patch", f"patch{ident}Status", [*write, _param("force")]),
        }
    return out


def _gv_path(group: str, version: str) -> str:
    return f"apis/{group}/{version}" if group else f"api/{version}"


def group_version_document(
    kinds: Kinds, group: str, version: str, server_version: str
) -> JsonObject | None:
    members = kinds.in_group_version(group, version)
    if not members:
        return None
    paths: dict[str, JsonObject] = {}
    for rtype in members:
        paths.update(_paths(rtype))
    return {
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": server_version},
        "paths": paths,
        "components": {"schemas": {}},
    }


def _digest(doc: JsonObject) -> str:
    return hashlib.sha512(json.dumps(doc, sort_keys=True).encode()).hexdigest().upper()


def root(kinds: Kinds, server_version: str) -> JsonObject:
    """``/openapi/v3``: where each group version's document lives (with a cache hash)."""
    paths: dict[str, JsonObject] = {}
    gvs = [("", "v1")] + [(g, v) for g, vs in kinds.group_versions().items() for v in vs]
    for group, version in gvs:
        doc = group_version_document(kinds, group, version, server_version)
        if doc is None:
            continue
        rel = _gv_path(group, version)
        paths[rel] = {"serverRelativeURL": f"/openapi/v3/{rel}?hash={_digest(doc)}"}
    return {"paths": paths}
