"""Patches: RFC 7386 merge patch, RFC 6902 JSON patch, strategic merge patch as kubectl sends it."""

from __future__ import annotations

from typing import Any

import pytest

from kubenet.testing.apiserver.patch import (
    PatchError,
    json_patch,
    merge_patch,
    strategic_merge_patch,
)
from kubenet.testing.apiserver.resources import PODS, SERVICES


def test_merge_patch_rfc7386_examples() -> None:
    target = {"a": "b", "c": {"d": "e", "f": "g"}}
    assert merge_patch(target, {"a": "z", "c": {"f": None}}) == {"a": "z", "c": {"d": "e"}}
    assert merge_patch({"a": [1, 2]}, {"a": [3]}) == {"a": [3]}
    assert merge_patch({"a": "b"}, {"a": {"x": 1}}) == {"a": {"x": 1}}
    assert target == {"a": "b", "c": {"d": "e", "f": "g"}}, "inputs stay untouched"


def test_json_patch_operations() -> None:
    doc = {"metadata": {"labels": {"a": "1"}}, "spec": {"ports": [{"port": 80}]}}
    ops = [
        {"op": "add", "path": "/metadata/labels/b", "value": "2"},
        {"op": "replace", "path": "/spec/ports/0/port", "value": 8080},
        {"op": "add", "path": "/spec/ports/-", "value": {"port": 443}},
        {"op": "remove", "path": "/metadata/labels/a"},
        {"op": "copy", "from": "/spec/ports/1", "path": "/spec/extra"},
        {"op": "move", "from": "/spec/extra", "path": "/spec/moved"},
        {"op": "test", "path": "/spec/moved/port", "value": 443},
    ]
    assert json_patch(doc, ops) == {
        "metadata": {"labels": {"b": "2"}},
        "spec": {"ports": [{"port": 8080}, {"port": 443}], "moved": {"port": 443}},
    }


@pytest.mark.parametrize(
    "ops",
    [
        [{"op": "remove", "path": "/nope"}],
        [{"op": "replace", "path": "/nope", "value": 1}],
        [{"op": "test", "path": "/a", "value": 2}],
        [{"op": "add", "path": "/list/9", "value": 1}],
        [{"op": "frobnicate", "path": "/a"}],
        {"op": "add"},
    ],
)
def test_json_patch_failures_raise(ops: Any) -> None:
    with pytest.raises(PatchError):
        json_patch({"a": 1, "list": []}, ops)


def svc() -> dict[str, Any]:
    return {
        "metadata": {"name": "web", "labels": {"app": "web"}, "finalizers": ["a"]},
        "spec": {
            "ports": [{"name": "http", "port": 80}, {"name": "https", "port": 443}],
            "externalIPs": ["192.0.2.1", "192.0.2.2"],
            "selector": {"app": "web"},
        },
    }


def test_strategic_merge_merges_lists_by_key_and_replaces_atomic_lists() -> None:
    patch = {
        "spec": {
            "ports": [{"port": 443, "targetPort": 8443}, {"name": "metrics", "port": 9090}],
            "externalIPs": ["192.0.2.9"],
        }
    }
    out = strategic_merge_patch(svc(), patch, SERVICES.merge_key)
    assert out["spec"]["ports"] == [
        {"name": "http", "port": 80},
        {"name": "https", "port": 443, "targetPort": 8443},
        {"name": "metrics", "port": 9090},
    ]
    assert out["spec"]["externalIPs"] == ["192.0.2.9"]


def test_strategic_merge_delete_directive_and_null() -> None:
    patch = {
        "metadata": {"labels": {"app": None}},
        "spec": {"ports": [{"$patch": "delete", "port": 80}], "selector": None},
    }
    out = strategic_merge_patch(svc(), patch, SERVICES.merge_key)
    assert out["spec"]["ports"] == [{"name": "https", "port": 443}]
    assert "selector" not in out["spec"] and out["metadata"]["labels"] == {}


def test_strategic_merge_set_element_order_as_kubectl_apply_sends_it() -> None:
    patch = {
        "spec": {
            "$setElementOrder/ports": [{"port": 443}, {"port": 80}],
            "ports": [{"port": 80, "name": "web"}],
        }
    }
    out = strategic_merge_patch(svc(), patch, SERVICES.merge_key)
    assert [p["port"] for p in out["spec"]["ports"]] == [443, 80]
    assert out["spec"]["ports"][1]["name"] == "web"


def test_strategic_merge_replace_directives() -> None:
    out = strategic_merge_patch(
        svc(), {"spec": {"$patch": "replace", "type": "ClusterIP"}}, SERVICES.merge_key
    )
    assert out["spec"] == {"type": "ClusterIP"}
    out = strategic_merge_patch(
        svc(), {"spec": {"ports": [{"$patch": "replace"}, {"port": 1}]}}, SERVICES.merge_key
    )
    assert out["spec"]["ports"] == [{"port": 1}]


def test_strategic_merge_primitive_set_lists() -> None:
    out = strategic_merge_patch(svc(), {"metadata": {"finalizers": ["b", "a"]}}, SERVICES.merge_key)
    assert out["metadata"]["finalizers"] == ["a", "b"]
    out = strategic_merge_patch(
        svc(), {"metadata": {"$deleteFromPrimitiveList/finalizers": ["a"]}}, SERVICES.merge_key
    )
    assert out["metadata"]["finalizers"] == []


def test_strategic_merge_nested_lists_and_retain_keys() -> None:
    pod = {
        "spec": {
            "containers": [
                {"name": "app", "image": "a:1", "env": [{"name": "A", "value": "1"}]},
                {"name": "side", "image": "s:1"},
            ],
            "volumes": [{"name": "v", "emptyDir": {}}],
        }
    }
    patch = {
        "spec": {
            "containers": [{"name": "app", "env": [{"name": "B", "value": "2"}]}],
            "volumes": [
                {"name": "v", "$retainKeys": ["name", "hostPath"], "hostPath": {"path": "/x"}}
            ],
        }
    }
    out = strategic_merge_patch(pod, patch, PODS.merge_key)
    app = out["spec"]["containers"][0]
    assert app["image"] == "a:1" and [e["name"] for e in app["env"]] == ["A", "B"]
    assert out["spec"]["volumes"] == [{"name": "v", "hostPath": {"path": "/x"}}]


def test_strategic_merge_rejects_items_without_the_merge_key() -> None:
    with pytest.raises(PatchError, match="does not contain declared merge key: port"):
        strategic_merge_patch(svc(), {"spec": {"ports": [{"name": "x"}]}}, SERVICES.merge_key)
