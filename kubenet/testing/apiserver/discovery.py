"""Discovery documents: ``/version``, ``/api``, ``/apis`` and the resource lists.

These are the legacy (unaggregated) discovery documents.  kubectl 1.26+ first asks
for aggregated discovery (``Accept: ...;as=APIGroupDiscoveryList``); answering with
plain ``application/json`` makes it fall back to these, as it does against any
server without aggregated discovery.
"""

from __future__ import annotations

import base64
import hashlib
import platform
from typing import Any

from kubenet.testing.apiserver.resources import NAMESPACES, PODS, SERVICES, Kinds, ResourceType

JsonObject = dict[str, Any]

_VERBS = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]
_STATUS_VERBS = ["get", "patch", "update"]


def version_info(git_version: str) -> JsonObject:
    core = git_version.lstrip("v").split("-")[0].split(".")
    machine = platform.machine().lower()
    arch = {"x86_64": "amd64", "aarch64": "arm64"}.get(machine, machine)
    return {
        "major": core[0],
        "minor": core[1] if len(core) > 1 else "0",
        "gitVersion": git_version,
        "gitCommit": "0000000000000000000000000000000000000000",
        "gitTreeState": "clean",
        "buildDate": "2024-01-01T00:00:00Z",
        "goVersion": "go1.23.0",
        "compiler": "gc",
        "platform": f"linux/{arch}",
    }


def api_versions(server_address: str) -> JsonObject:
    return {
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [
            {"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}
        ],
    }


def _group(name: str, versions: list[str]) -> JsonObject:
    entries = [{"groupVersion": f"{name}/{v}", "version": v} for v in versions]
    return {"name": name, "versions": entries, "preferredVersion": entries[0]}


def api_group_list(kinds: Kinds) -> JsonObject:
    groups = [_group(name, versions) for name, versions in kinds.group_versions().items()]
    return {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}


def api_group(kinds: Kinds, name: str) -> JsonObject | None:
    versions = kinds.group_versions().get(name)
    if not versions:
        return None
    return {"kind": "APIGroup", "apiVersion": "v1", **_group(name, versions)}


def _hash(rtype: ResourceType) -> str:
    digest = hashlib.sha256(f"{rtype.api_version}/{rtype.kind}".encode()).digest()
    return base64.b64encode(digest[:8]).decode()


def _subresource(rtype: ResourceType, sub: str) -> JsonObject:
    kind, verbs = rtype.kind, _STATUS_VERBS
    if rtype is PODS and sub == "exec":
        kind, verbs = "PodExecOptions", ["create", "get"]
    elif rtype is PODS and sub == "portforward":
        kind, verbs = "PodPortForwardOptions", ["create", "get"]
    elif rtype is SERVICES and sub == "proxy":
        kind, verbs = "ServiceProxyOptions", ["create", "delete", "get", "patch", "update"]
    elif rtype is NAMESPACES and sub == "finalize":
        verbs = ["update"]
    return {
        "name": f"{rtype.plural}/{sub}",
        "singularName": "",
        "namespaced": rtype.namespaced,
        "kind": kind,
        "verbs": verbs,
    }


def api_resource_list(kinds: Kinds, group: str, version: str) -> JsonObject | None:
    members = kinds.in_group_version(group, version)
    if not members:
        return None
    resources: list[JsonObject] = []
    for r in members:
        entry: JsonObject = {
            "name": r.plural,
            "singularName": r.singular,
            "namespaced": r.namespaced,
            "kind": r.kind,
            "verbs": [v for v in _VERBS if not (r is NAMESPACES and v == "deletecollection")],
        }
        if r.short_names:
            entry["shortNames"] = list(r.short_names)
        if r.categories:
            entry["categories"] = list(r.categories)
        entry["storageVersionHash"] = _hash(r)
        resources.append(entry)
        resources.extend(_subresource(r, sub) for sub in r.subresources)
    return {
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": f"{group}/{version}" if group else version,
        "resources": resources,
    }
