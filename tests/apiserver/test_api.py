"""The verbs' rules, without HTTP: what kube-apiserver accepts, refuses and changes."""

from __future__ import annotations

import json
from typing import Any

import pytest

from kubenet.testing.apiserver.api import (
    JSON_PATCH,
    MERGE_PATCH,
    STRATEGIC_PATCH,
    Api,
    ListOptions,
)
from kubenet.testing.apiserver.errors import ApiError
from kubenet.testing.apiserver.resources import (
    CONFIGMAPS,
    ENDPOINTSLICES,
    NAMESPACES,
    PODS,
    SERVICES,
    Kinds,
)
from kubenet.testing.apiserver.store import Store


@pytest.fixture
def api() -> Api:
    kinds = Kinds()
    api = Api(Store(kinds.resources, history=50), kinds)
    api.create(NAMESPACES, "", {"metadata": {"name": "demo"}})
    return api


def service(name: str, **spec: Any) -> dict[str, Any]:
    spec.setdefault("ports", [{"port": 80}])
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name}, "spec": spec}


def raises(code: int, reason: str) -> Any:
    class Check:
        def __enter__(self) -> Check:
            return self

        def __exit__(self, kind: Any, err: Any, tb: Any) -> bool:
            assert isinstance(err, ApiError), f"expected ApiError {code}, got {err!r}"
            assert (err.code, err.reason) == (code, reason), err.status()
            self.error = err
            return True

    return Check()


def opts(**query: str) -> ListOptions:
    return ListOptions.parse(CONFIGMAPS, "demo", query, watch=False)


# --- create -------------------------------------------------------------------------


def test_create_fills_system_fields_and_kind_defaults(api: Api) -> None:
    ns = api.get(NAMESPACES, "", "demo").obj
    assert ns["spec"] == {"finalizers": ["kubernetes"]} and ns["status"] == {"phase": "Active"}
    assert ns["metadata"]["labels"] == {"kubernetes.io/metadata.name": "demo"}
    pod = api.create(
        PODS,
        "demo",
        {
            "metadata": {"name": "p"},
            "spec": {"containers": [{"name": "c", "image": "img:1"}]},
            "status": {"phase": "Running", "podIP": "10.0.0.1"},
        },
    ).obj
    assert pod["status"] == {"phase": "Pending", "qosClass": "BestEffort"}, "status is reset"
    assert pod["spec"]["restartPolicy"] == "Always"
    assert pod["spec"]["containers"][0]["imagePullPolicy"] == "IfNotPresent"
    meta = pod["metadata"]
    assert meta["uid"] and meta["creationTimestamp"].endswith("Z") and int(meta["resourceVersion"])


def test_service_defaults_and_allocation_from_the_dynamic_band(api: Api) -> None:
    svc = api.create(SERVICES, "demo", service("web", type="NodePort")).obj["spec"]
    assert svc["clusterIP"] == "10.96.1.1" and svc["clusterIPs"] == ["10.96.1.1"]
    assert svc["ipFamilies"] == ["IPv4"] and svc["ipFamilyPolicy"] == "SingleStack"
    assert svc["ports"] == [{"port": 80, "protocol": "TCP", "targetPort": 80, "nodePort": 30086}]
    assert svc["sessionAffinity"] == "None" and svc["externalTrafficPolicy"] == "Cluster"
    dual = api.create(SERVICES, "demo", service("dual", ipFamilyPolicy="PreferDualStack")).obj
    assert dual["spec"]["ipFamilies"] == ["IPv4", "IPv6"]
    assert dual["spec"]["clusterIPs"][1].startswith("fd00:96::")
    lb = api.create(
        SERVICES, "demo", service("lb", type="LoadBalancer", externalTrafficPolicy="Local")
    ).obj["spec"]
    assert lb["healthCheckNodePort"] and lb["ports"][0]["nodePort"] != svc["ports"][0]["nodePort"]


def test_allocated_values_conflict_and_are_released_on_delete(api: Api) -> None:
    api.create(
        SERVICES,
        "demo",
        service(
            "a", clusterIP="10.96.0.10", type="NodePort", ports=[{"port": 80, "nodePort": 30080}]
        ),
    )
    with raises(422, "Invalid") as check:
        api.create(SERVICES, "demo", service("b", clusterIP="10.96.0.10"))
    assert check.error.message == (
        'Service "b" is invalid: spec.clusterIPs[0]: Invalid value: "10.96.0.10": failed to '
        "allocate IP 10.96.0.10: provided IP is already allocated"
    )
    with raises(422, "Invalid"):
        api.create(
            SERVICES, "demo", service("b", type="NodePort", ports=[{"port": 80, "nodePort": 30080}])
        )
    with raises(422, "Invalid") as check:
        api.create(SERVICES, "demo", service("b", clusterIP="192.0.2.1"))
    assert "is not in the valid range" in check.error.message
    api.delete(SERVICES, "demo", "a")
    again = api.create(
        SERVICES,
        "demo",
        service(
            "b", clusterIP="10.96.0.10", type="NodePort", ports=[{"port": 80, "nodePort": 30080}]
        ),
    )
    assert again.obj["spec"]["clusterIP"] == "10.96.0.10"


def test_create_refusals(api: Api) -> None:
    api.create(CONFIGMAPS, "demo", {"metadata": {"name": "cm"}})
    with raises(409, "AlreadyExists") as check:
        api.create(CONFIGMAPS, "demo", {"metadata": {"name": "cm"}})
    assert check.error.message == 'configmaps "cm" already exists'
    assert check.error.details == {"name": "cm", "kind": "configmaps"}
    with raises(404, "NotFound") as check:
        api.create(CONFIGMAPS, "nope", {"metadata": {"name": "cm"}})
    assert check.error.message == 'namespaces "nope" not found'
    with raises(422, "Invalid") as check:
        api.create(CONFIGMAPS, "demo", {"metadata": {}})
    assert check.error.message == (
        'ConfigMap "" is invalid: metadata.name: Required value: name or generateName is required'
    )
    assert check.error.details == {
        "kind": "ConfigMap",
        "causes": [
            {
                "reason": "FieldValueRequired",
                "message": "Required value: name or generateName is required",
                "field": "metadata.name",
            }
        ],
    }
    with raises(422, "Invalid") as check:
        api.create(SERVICES, "demo", service("Bad_Name", ports=[]))
    assert check.error.message.startswith('Service "Bad_Name" is invalid: [metadata.name: ')
    assert "spec.ports: Required value" in check.error.message
    with raises(422, "Invalid") as check:
        api.create(
            ENDPOINTSLICES,
            "demo",
            {
                "metadata": {"name": "s"},
                "addressType": "IPv4",
                "endpoints": [{"addresses": ["fd00::1"]}],
            },
        )
    assert check.error.message.startswith('EndpointSlice.discovery.k8s.io "s" is invalid')


def test_wrong_kind_or_version_for_the_path(api: Api) -> None:
    with raises(400, "BadRequest") as check:
        api.create(
            SERVICES, "demo", {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}}
        )
    assert check.error.message == (
        'ConfigMap in version "v1" cannot be handled as a Service: converting (v1.ConfigMap) '
        "to (core.Service): unknown conversion"
    )
    with raises(400, "BadRequest") as check:
        api.create(
            SERVICES,
            "demo",
            {"apiVersion": "apps/v1", "kind": "Service", "metadata": {"name": "x"}},
        )
    assert "does not match the expected API version (v1)" in check.error.message
    with raises(400, "BadRequest"):
        api.create(CONFIGMAPS, "demo", {"metadata": {"name": "x", "namespace": "other"}})
    assert api.list_page(CONFIGMAPS, opts()).items == []


def test_generate_name(api: Api) -> None:
    made = api.create(CONFIGMAPS, "demo", {"metadata": {"generateName": "cm-"}})
    assert made.name.startswith("cm-") and len(made.name) == 8


# --- update, patch ------------------------------------------------------------------


def test_update_checks_resource_version_and_skips_no_op_writes(api: Api) -> None:
    first = api.create(CONFIGMAPS, "demo", {"metadata": {"name": "cm"}, "data": {"a": "1"}})
    stale = first.copy()
    second = api.update(CONFIGMAPS, "demo", "cm", {**first.copy(), "data": {"a": "2"}})
    assert second.rv > first.rv
    stale["data"] = {"a": "3"}
    with raises(409, "Conflict") as check:
        api.update(CONFIGMAPS, "demo", "cm", stale)
    assert check.error.message == (
        'Operation cannot be fulfilled on configmaps "cm": the object has been modified; please '
        "apply your changes to the latest version and try again"
    )
    before = api.store.rv
    same = api.update(CONFIGMAPS, "demo", "cm", second.copy())
    assert same is second and api.store.rv == before, "no new revision for an unchanged object"
    unconditional = second.copy()
    del unconditional["metadata"]["resourceVersion"]
    unconditional["metadata"]["uid"] = "forged"
    unconditional["data"] = {"a": "4"}
    done = api.update(CONFIGMAPS, "demo", "cm", unconditional)
    assert done.obj["metadata"]["uid"] == first.obj["metadata"]["uid"], "uid is kept"
    with raises(404, "NotFound"):
        api.update(CONFIGMAPS, "demo", "missing", {"metadata": {"name": "missing"}})


def test_status_is_written_only_through_the_status_subresource(api: Api) -> None:
    svc = api.create(SERVICES, "demo", service("lb", type="LoadBalancer"))
    body = svc.copy()
    body["status"] = {"loadBalancer": {"ingress": [{"ip": "203.0.113.1"}]}}
    body["spec"]["sessionAffinity"] = "ClientIP"
    main = api.update(SERVICES, "demo", "lb", body)
    assert main.obj["status"] == {"loadBalancer": {}}
    assert main.obj["spec"]["sessionAffinity"] == "ClientIP"
    body = main.copy()
    body["status"] = {"loadBalancer": {"ingress": [{"ip": "203.0.113.1"}]}}
    body["spec"]["sessionAffinity"] = "None"
    status = api.update(SERVICES, "demo", "lb", body, subresource="status")
    assert status.obj["status"]["loadBalancer"]["ingress"] == [{"ip": "203.0.113.1"}]
    assert status.obj["spec"]["sessionAffinity"] == "ClientIP"


def test_resubmitting_a_manifest_keeps_allocated_values(api: Api) -> None:
    first = api.create(SERVICES, "demo", service("np", type="NodePort")).obj["spec"]
    again = api.update(SERVICES, "demo", "np", service("np", type="NodePort")).obj["spec"]
    assert again["clusterIP"] == first["clusterIP"]
    assert again["ports"][0]["nodePort"] == first["ports"][0]["nodePort"]
    cluster = api.update(SERVICES, "demo", "np", service("np", type="ClusterIP")).obj["spec"]
    assert "nodePort" not in cluster["ports"][0]
    with raises(422, "Invalid") as check:
        api.update(SERVICES, "demo", "np", service("np", clusterIP="10.96.5.5"))
    assert "field is immutable" in check.error.message


def test_patch_types(api: Api) -> None:
    api.create(SERVICES, "demo", service("web", ports=[{"name": "http", "port": 80}]))
    merged = api.patch(
        SERVICES,
        "demo",
        "web",
        MERGE_PATCH,
        json.dumps({"metadata": {"labels": {"a": "b"}}}).encode(),
    )
    assert merged.obj["metadata"]["labels"] == {"a": "b"}
    smp = {"spec": {"ports": [{"name": "https", "port": 443}]}}
    strategic = api.patch(SERVICES, "demo", "web", STRATEGIC_PATCH, json.dumps(smp).encode())
    assert [p["port"] for p in strategic.obj["spec"]["ports"]] == [80, 443]
    assert strategic.obj["spec"]["ports"][1]["targetPort"] == 443, "defaults apply to patches"
    ops = [{"op": "replace", "path": "/spec/ports/0/port", "value": 8080}]
    jp = api.patch(SERVICES, "demo", "web", JSON_PATCH, json.dumps(ops).encode())
    assert jp.obj["spec"]["ports"][0]["port"] == 8080
    with raises(422, "Invalid"):
        api.patch(
            SERVICES,
            "demo",
            "web",
            JSON_PATCH,
            b'[{"op": "test", "path": "/spec/type", "value": "NodePort"}]',
        )
    with raises(409, "Conflict"):
        api.patch(SERVICES, "demo", "web", MERGE_PATCH, b'{"metadata":{"resourceVersion":"1"}}')
    with raises(400, "BadRequest"):
        api.patch(SERVICES, "demo", "web", MERGE_PATCH, b"{not json")
    with raises(400, "BadRequest"):
        api.patch(SERVICES, "demo", "web", MERGE_PATCH, b'{"metadata":{"name":"other"}}')
    with raises(415, "UnsupportedMediaType"):
        api.patch(SERVICES, "demo", "web", "application/apply-patch+yaml", b"{}")
    with raises(422, "Invalid"):
        api.patch(SERVICES, "demo", "web", MERGE_PATCH, b'{"spec":{"type":"Bogus"}}')
    assert api.get(SERVICES, "demo", "web").obj["spec"]["type"] == "ClusterIP"


# --- delete -------------------------------------------------------------------------


def test_delete_preconditions(api: Api) -> None:
    made = api.create(CONFIGMAPS, "demo", {"metadata": {"name": "cm"}})
    with raises(409, "Conflict") as check:
        api.delete(CONFIGMAPS, "demo", "cm", {"preconditions": {"uid": "other"}})
    assert "Precondition failed: UID in precondition: other" in check.error.message
    gone = api.delete(
        CONFIGMAPS, "demo", "cm", {"preconditions": {"uid": made.obj["metadata"]["uid"]}}
    )
    assert gone.rv > made.rv
    with raises(404, "NotFound"):
        api.delete(CONFIGMAPS, "demo", "cm")


def test_namespace_delete_cascades_and_system_namespaces_stay(api: Api) -> None:
    api.create(CONFIGMAPS, "demo", {"metadata": {"name": "cm"}})
    api.create(SERVICES, "demo", service("web"))
    marked = api.delete(NAMESPACES, "", "demo")
    assert marked.obj["status"] == {"phase": "Terminating"}
    assert api.store.get(NAMESPACES, "", "demo") is None
    assert api.store.bucket(CONFIGMAPS).objects == {} and api.store.bucket(SERVICES).objects == {}
    api.create(NAMESPACES, "", {"metadata": {"name": "default"}})
    with raises(403, "Forbidden") as check:
        api.delete(NAMESPACES, "", "default")
    assert (
        check.error.message
        == 'namespaces "default" is forbidden: this namespace may not be deleted'
    )


# --- list ---------------------------------------------------------------------------


def fill(api: Api, count: int) -> None:
    for i in range(count):
        api.create(
            CONFIGMAPS, "demo", {"metadata": {"name": f"cm-{i:02d}", "labels": {"n": str(i % 2)}}}
        )


def test_pagination_is_consistent_while_objects_change(api: Api) -> None:
    fill(api, 10)
    page = api.list_page(CONFIGMAPS, opts(limit="4"))
    assert [s.name for s in page.items] == ["cm-00", "cm-01", "cm-02", "cm-03"]
    assert page.remaining == 6 and page.continue_token
    api.delete(CONFIGMAPS, "demo", "cm-05")
    api.create(CONFIGMAPS, "demo", {"metadata": {"name": "cm-04a"}})
    names: list[str] = [s.name for s in page.items]
    token = page.continue_token
    while token:
        page2 = api.list_page(CONFIGMAPS, opts(limit="4", **{"continue": token}))
        assert page2.rv == page.rv
        names += [s.name for s in page2.items]
        token = page2.continue_token
    assert names == [f"cm-{i:02d}" for i in range(10)], "the list shows the first page's state"


def test_expired_continue_token_answers_410_with_a_fresh_token(api: Api) -> None:
    fill(api, 6)
    page = api.list_page(CONFIGMAPS, opts(limit="2"))
    for i in range(60):  # history is 50: push the first page's version out
        api.create(CONFIGMAPS, "demo", {"metadata": {"name": f"zz-{i}"}})
    with raises(410, "Expired") as check:
        api.list_page(CONFIGMAPS, opts(limit="2", **{"continue": page.continue_token}))
    assert check.error.message.startswith("The provided continue parameter is too old")
    rest = api.list_page(CONFIGMAPS, opts(limit="2", **{"continue": check.error.continue_token}))
    assert [s.name for s in rest.items] == ["cm-02", "cm-03"], "the fresh token continues now"


def test_list_resource_version_semantics(api: Api) -> None:
    fill(api, 4)
    everything = api.list_page(CONFIGMAPS, opts(limit="1", resourceVersion="0"))
    assert len(everything.items) == 4 and not everything.continue_token, "rv=0 ignores limit"
    at = api.store.rv
    api.delete(CONFIGMAPS, "demo", "cm-00")
    exact = api.list_page(CONFIGMAPS, opts(resourceVersion=str(at), resourceVersionMatch="Exact"))
    assert len(exact.items) == 4 and exact.rv == at
    assert len(api.list_page(CONFIGMAPS, opts(resourceVersion=str(at))).items) == 3
    with raises(504, "Timeout"):
        api.list_page(CONFIGMAPS, opts(resourceVersion=str(at + 100)))
    for i in range(60):
        api.create(CONFIGMAPS, "demo", {"metadata": {"name": f"zz-{i}"}})
    with raises(410, "Expired") as check:
        api.list_page(CONFIGMAPS, opts(resourceVersion=str(at), resourceVersionMatch="Exact"))
    assert check.error.message == "The resourceVersion for the provided list is too old."


def test_list_selectors_and_option_errors(api: Api) -> None:
    fill(api, 4)
    assert [s.name for s in api.list_page(CONFIGMAPS, opts(labelSelector="n=1")).items] == [
        "cm-01",
        "cm-03",
    ]
    named = api.list_page(CONFIGMAPS, opts(fieldSelector="metadata.name=cm-02"))
    assert [s.name for s in named.items] == ["cm-02"]
    with raises(400, "BadRequest") as check:
        opts(labelSelector="n in 1")
    assert "unable to parse requirement" in check.error.message
    with raises(400, "BadRequest") as check:
        opts(fieldSelector="spec.nodeName=x")
    assert check.error.message == "field label not supported: spec.nodeName"
    with raises(422, "Invalid") as check:
        opts(resourceVersionMatch="Exact")
    assert check.error.message == (
        'ListOptions.meta.k8s.io "" is invalid: resourceVersionMatch: Forbidden: '
        "resourceVersionMatch is forbidden unless resourceVersion is provided"
    )
    pods = ListOptions.parse(PODS, None, {"fieldSelector": "spec.nodeName=node-a"}, watch=False)
    assert pods.fields.exact("spec.nodeName") == "node-a"


# --- preload ------------------------------------------------------------------------


def test_load_keeps_status_and_creates_namespaces(api: Api) -> None:
    api.load(
        [
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": "p", "namespace": "fresh"},
                "spec": {"containers": [{"name": "c", "image": "i"}]},
                "status": {"phase": "Running", "podIP": "10.244.0.5"},
            },
        ]
    )
    assert api.store.get(NAMESPACES, "", "fresh") is not None
    pod = api.get(PODS, "fresh", "p").obj
    assert pod["status"] == {"phase": "Running", "podIP": "10.244.0.5"}
    api.load(
        [
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": "p", "namespace": "fresh"},
                "spec": {"containers": [{"name": "c", "image": "i"}]},
            }
        ]
    )
    assert api.get(PODS, "fresh", "p").obj["status"]["phase"] == "Running", "replace keeps status"
