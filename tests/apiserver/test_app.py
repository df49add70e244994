"""The HTTP surface: discovery, authentication, Status errors for bad input, tables, watches."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from typing import Any

import pytest
import urllib3

from kubenet.testing.apiserver.resources import CONFIGMAPS, RESOURCES, ResourceType
from kubenet.testing.apiserver.server import ThreadedApiServer, running_apiserver

from .helpers import Http

NS = "/api/v1/namespaces/default"


@pytest.fixture
def http(apiserver: ThreadedApiServer) -> Http:
    return Http(apiserver)


def configmap(name: str, **labels: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "labels": labels}}


def count(server: ThreadedApiServer) -> tuple[int, int]:
    """(store revision, stored configmaps): both unchanged after a refused request."""
    return server.call(
        lambda: (server.server.store.rv, len(server.server.store.bucket(CONFIGMAPS).objects))
    )


# --- discovery ----------------------------------------------------------------------


def test_version_and_discovery(http: Http) -> None:
    code, version = http.json("GET", "/version")
    assert code == 200 and version["major"] == "1" and version["gitVersion"].startswith("v1.")
    code, api = http.json("GET", "/api")
    assert api["kind"] == "APIVersions" and api["versions"] == ["v1"]
    code, groups = http.json("GET", "/apis")
    assert [g["name"] for g in groups["groups"]] == ["discovery.k8s.io"]
    code, core = http.json("GET", "/api/v1")
    names = {r["name"] for r in core["resources"]}
    assert {
        "namespaces",
        "nodes",
        "pods",
        "services",
        "configmaps",
        "services/status",
        "services/proxy",
        "pods/exec",
        "pods/portforward",
    } <= names
    svc = next(r for r in core["resources"] if r["name"] == "services")
    assert svc["shortNames"] == ["svc"] and svc["namespaced"] and "watch" in svc["verbs"]
    code, disc = http.json("GET", "/apis/discovery.k8s.io/v1")
    assert [r["kind"] for r in disc["resources"]] == ["EndpointSlice"]


def test_aggregated_discovery_request_gets_legacy_json(http: Http) -> None:
    accept = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json"
    resp = http.request("GET", "/api", headers={"Accept": accept})
    assert resp.status == 200 and resp.headers["Content-Type"].startswith("application/json")
    assert json.loads(resp.data)["kind"] == "APIVersions"


def test_openapi_v3_advertises_field_validation_on_patch(http: Http) -> None:
    _, root = http.json("GET", "/openapi/v3")
    url = root["paths"]["api/v1"]["serverRelativeURL"]
    _, doc = http.json("GET", url)
    patch = doc["paths"]["/api/v1/namespaces/{namespace}/services/{name}"]["patch"]
    assert patch["x-kubernetes-group-version-kind"] == {
        "group": "",
        "version": "v1",
        "kind": "Service",
    }
    assert "fieldValidation" in [p["name"] for p in patch["parameters"]]


def test_methods_no_route_serves_are_405(http: Http) -> None:
    for method, path in (
        ("POST", f"{NS}/configmaps/x"),
        ("PUT", f"{NS}/configmaps"),
        ("PATCH", f"{NS}/configmaps"),
        ("POST", "/version"),
    ):
        code, status = http.json(method, path, {"metadata": {"name": "x"}})
        assert (code, status["reason"]) == (405, "MethodNotAllowed"), (method, path)


def test_unknown_paths_are_404_status(http: Http) -> None:
    for path in ("/nope", "/api/v1/widgets", "/apis/apps/v1", "/api/v1/namespaces/default/nodes"):
        code, status = http.json("GET", path)
        assert (code, status["reason"], status["message"]) == (
            404,
            "NotFound",
            "the server could not find the requested resource",
        ), path


# --- authentication -----------------------------------------------------------------

UNAUTHORIZED = {
    "kind": "Status",
    "apiVersion": "v1",
    "metadata": {},
    "status": "Failure",
    "message": "Unauthorized",
    "reason": "Unauthorized",
    "code": 401,
}


def test_missing_or_bad_credentials_are_401(apiserver: ThreadedApiServer) -> None:
    for token in ("", "wrong"):
        code, body = Http(apiserver, token=token).json("GET", "/api/v1/namespaces")
        assert (code, body) == (401, UNAUTHORIZED)
    code, _ = Http(apiserver, token="").json("GET", "/version")
    assert code == 401, "anonymous is off by default, even for /version"


def test_recent_requests_record_method_path_and_user(apiserver: ThreadedApiServer) -> None:
    Http(apiserver).json("GET", "/api/v1/namespaces?limit=1")
    Http(apiserver, token=apiserver.server.viewer_token).json("GET", "/version")
    assert apiserver.recent_requests()[-2:] == [
        ("GET", "/api/v1/namespaces?limit=1", "kubenet-admin"),
        ("GET", "/version", "kubenet-viewer"),
    ]


def test_impersonation(apiserver: ThreadedApiServer, http: Http) -> None:
    as_jane = {"Impersonate-User": "jane"}
    code, status = http.json("POST", f"{NS}/configmaps", configmap("x"), headers=as_jane)
    assert code == 403 and status["message"].startswith(
        'configmaps is forbidden: User "jane" cannot create resource "configmaps"'
    )
    as_viewer_group = {"Impersonate-User": "jane", "Impersonate-Group": "kubenet:viewers"}
    assert http.json("GET", f"{NS}/configmaps", headers=as_viewer_group)[0] == 200
    assert apiserver.recent_requests()[-1][2] == "jane"
    viewer = Http(apiserver, token=apiserver.server.viewer_token)
    code, status = viewer.json("GET", f"{NS}/configmaps", headers=as_jane)
    assert code == 403 and status["message"] == (
        'users "jane" is forbidden: User "kubenet-viewer" cannot impersonate resource "users" '
        'in API group "" at the cluster scope'
    )
    code, _ = http.json("GET", f"{NS}/configmaps", headers={"Impersonate-Group": "x"})
    assert code == 400


def test_viewer_reads_but_may_not_write(apiserver: ThreadedApiServer) -> None:
    viewer = Http(apiserver, token=apiserver.server.viewer_token)
    assert viewer.json("GET", f"{NS}/services")[0] == 200
    code, status = viewer.json("POST", f"{NS}/configmaps", configmap("x"))
    assert code == 403 and status["reason"] == "Forbidden"
    assert status["message"] == (
        'configmaps is forbidden: User "kubenet-viewer" cannot create resource "configmaps" in '
        'API group "" in the namespace "default"'
    )
    assert status["details"] == {"kind": "configmaps"}


def test_client_certificate_authenticates(apiserver: ThreadedApiServer, tmp_path: Any) -> None:
    cert, key = apiserver.server.admin_cert.write(tmp_path, "admin")
    pool = urllib3.PoolManager(
        ca_certs=str(apiserver.ca_path), cert_file=str(cert), key_file=str(key)
    )
    resp = pool.request("GET", apiserver.url + "/api/v1/namespaces")
    assert resp.status == 200 and json.loads(resp.data)["kind"] == "NamespaceList"


def test_anonymous_when_enabled_reads_only_public_paths() -> None:
    with running_apiserver(anonymous=True) as server:
        anon = Http(server, token="")
        assert anon.json("GET", "/version")[0] == 200
        assert anon.request("GET", "/healthz").data == b"ok"
        code, status = anon.json("GET", "/api")
        assert code == 403 and status["message"] == (
            'forbidden: User "system:anonymous" cannot get path "/api"'
        )
        code, status = anon.json("GET", "/api/v1/nodes")
        assert code == 403 and "at the cluster scope" in status["message"]
        assert Http(server, token="wrong").json("GET", "/version")[0] == 401


# --- bad input ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "content_type", "code", "reason", "message"),
    [
        (
            b'{"kind": "ConfigMap", "metadata": {',
            "application/json",
            400,
            "BadRequest",
            "the object provided is unrecognized (must be of type ConfigMap): couldn't get "
            "version/kind; json parse error: ",
        ),
        (
            b"kind: ConfigMap\nmetadata: {name: [",
            "application/yaml",
            400,
            "BadRequest",
            "the object provided is unrecognized (must be of type ConfigMap): couldn't get "
            "version/kind; yaml parse error: ",
        ),
        (b"", "application/json", 400, "BadRequest", "the object provided is unrecognized"),
        (b"[1, 2]", "application/json", 400, "BadRequest", "the object provided is unrecognized"),
        (
            json.dumps({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "x"}}).encode(),
            "application/json",
            400,
            "BadRequest",
            'Service in version "v1" cannot be handled as a ConfigMap: converting (v1.Service) '
            "to (core.ConfigMap): unknown conversion",
        ),
        (
            json.dumps({"apiVersion": "v1", "kind": "Widget", "metadata": {"name": "x"}}).encode(),
            "application/json",
            400,
            "BadRequest",
            'Widget in version "v1" cannot be handled as a ConfigMap: no kind "Widget" is '
            "registered",
        ),
        (
            json.dumps({"metadata": {"name": "x"}, "data": {"port": 80}}).encode(),
            "application/json",
            400,
            "BadRequest",
            'ConfigMap in version "v1" cannot be handled as a ConfigMap: json: cannot unmarshal '
            "number into Go struct field ConfigMap.data of type string",
        ),
        (
            json.dumps({"metadata": {"labels": {"a": "b"}}}).encode(),
            "application/json",
            422,
            "Invalid",
            'ConfigMap "" is invalid: metadata.name: Required value',
        ),
        (
            json.dumps({"metadata": {"name": "UPPER"}}).encode(),
            "application/json",
            422,
            "Invalid",
            'ConfigMap "UPPER" is invalid: metadata.name: Invalid value: "UPPER": ',
        ),
        (
            json.dumps({"metadata": {"name": "x"}}).encode(),
            "application/vnd.kubernetes.protobuf",
            415,
            "UnsupportedMediaType",
            "the body of the request was in an unknown format",
        ),
        (
            b"x" * (3 * 1024 * 1024 + 10),
            "application/json",
            413,
            "RequestEntityTooLarge",
            "Request entity too large: limit is 3145728",
        ),
    ],
)
def test_bad_bodies_get_upstream_codes_and_change_nothing(
    apiserver: ThreadedApiServer,
    http: Http,
    body: bytes,
    content_type: str,
    code: int,
    reason: str,
    message: str,
) -> None:
    before = count(apiserver)
    got, status = http.json("POST", f"{NS}/configmaps", body, content_type=content_type)
    assert (got, status["kind"], status["status"], status["reason"], status["code"]) == (
        code,
        "Status",
        "Failure",
        reason,
        code,
    )
    assert status["message"].startswith(message), status["message"]
    assert count(apiserver) == before
    assert http.json("POST", f"{NS}/configmaps", configmap("after"))[0] == 201, "still serving"


def test_bad_selectors_and_queries(http: Http) -> None:
    code, status = http.json("GET", f"{NS}/services?labelSelector=a%20b")
    assert (code, status["reason"]) == (400, "BadRequest")
    assert status["message"] == (
        "unable to parse requirement: found 'b', expected: in, notin, =, ==, !=, gt, lt"
    )
    code, status = http.json("GET", f"{NS}/services?fieldSelector=spec.bogus%3D1")
    assert (code, status["message"]) == (400, "field label not supported: spec.bogus")
    code, status = http.json("GET", f"{NS}/services?resourceVersion=abc")
    assert code == 400
    code, status = http.json("GET", f"{NS}/services?continue=garbage&limit=1")
    assert code == 400 and status["message"].startswith("continue key is not valid")


def test_update_conflict_and_patch_content_types(apiserver: ThreadedApiServer, http: Http) -> None:
    code, made = http.json("POST", f"{NS}/configmaps", configmap("cm"))
    assert code == 201
    stale = dict(made, data={"a": "1"})
    assert http.json("PUT", f"{NS}/configmaps/cm", stale)[0] == 200
    before = count(apiserver)
    code, status = http.json("PUT", f"{NS}/configmaps/cm", dict(made, data={"a": "2"}))
    assert (code, status["reason"]) == (409, "Conflict")
    assert status["details"] == {"name": "cm", "kind": "configmaps"}
    code, status = http.json("PATCH", f"{NS}/configmaps/cm", b"{}", content_type="text/plain")
    assert code == 415
    code, status = http.json(
        "PATCH", f"{NS}/configmaps/cm", b"{oops", content_type="application/merge-patch+json"
    )
    assert code == 400
    assert count(apiserver) == before
    code, patched = http.json(
        "PATCH",
        f"{NS}/configmaps/cm",
        {"data": {"b": "2"}},
        content_type="application/merge-patch+json",
    )
    assert code == 200 and patched["data"] == {"a": "1", "b": "2"}


def test_delete_returns_status_or_object_like_upstream(http: Http) -> None:
    http.json("POST", f"{NS}/configmaps", configmap("cm"))
    code, status = http.json("DELETE", f"{NS}/configmaps/cm")
    assert code == 200 and status["kind"] == "Status" and status["status"] == "Success"
    assert status["details"]["name"] == "cm" and status["details"]["kind"] == "configmaps"
    svc = {"metadata": {"name": "s"}, "spec": {"ports": [{"port": 80}]}}
    http.json("POST", f"{NS}/services", svc)
    code, obj = http.json("DELETE", f"{NS}/services/s")
    assert code == 200 and obj["kind"] == "Service"
    code, status = http.json("DELETE", f"{NS}/services/s")
    assert (code, status["message"]) == (404, 'services "s" not found')


def test_dry_run_stores_nothing(apiserver: ThreadedApiServer, http: Http) -> None:
    before = count(apiserver)
    code, obj = http.json("POST", f"{NS}/configmaps?dryRun=All", configmap("dry"))
    assert code == 201 and obj["metadata"]["name"] == "dry"
    assert count(apiserver) == before


def test_table_output_for_kubectl_get(http: Http) -> None:
    svc = {"metadata": {"name": "web"}, "spec": {"type": "NodePort", "ports": [{"port": 80}]}}
    http.json("POST", f"{NS}/services", svc)
    accept = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json"
    _, table = http.json("GET", f"{NS}/services", headers={"Accept": accept})
    assert table["kind"] == "Table" and table["apiVersion"] == "meta.k8s.io/v1"
    columns = [c["name"] for c in table["columnDefinitions"]]
    assert columns[:5] == ["Name", "Type", "Cluster-IP", "External-IP", "Port(s)"]
    row = next(r for r in table["rows"] if r["cells"][0] == "web")
    assert row["cells"][1:5] == ["NodePort", "10.96.1.1", "<none>", "80:30086/TCP"]
    assert row["object"]["kind"] == "PartialObjectMetadata"
    assert row["object"]["metadata"]["namespace"] == "default"


def test_paginated_list_over_http(http: Http) -> None:
    for i in range(5):
        http.json("POST", f"{NS}/configmaps", configmap(f"cm{i}"))
    _, page = http.json("GET", f"{NS}/configmaps?limit=2")
    assert len(page["items"]) == 2 and page["metadata"]["remainingItemCount"] == 3
    assert "kind" not in page["items"][0], "list items carry no kind, as upstream writes them"
    names = [i["metadata"]["name"] for i in page["items"]]
    while page["metadata"].get("continue"):
        _, page = http.json(
            "GET", f"{NS}/configmaps?limit=2&continue={page['metadata']['continue']}"
        )
        names += [i["metadata"]["name"] for i in page["items"]]
    assert names == [f"cm{i}" for i in range(5)]


# --- watch --------------------------------------------------------------------------


def read_events(resp: urllib3.BaseHTTPResponse) -> Iterator[dict[str, Any]]:
    buffer = b""
    for chunk in resp.stream(1024, decode_content=False):
        buffer += chunk
        while b"\n" in buffer:
            line, buffer = buffer.split(b"\n", 1)
            yield json.loads(line)


def test_watch_from_a_too_old_version_starts_then_sends_410_expired() -> None:
    with running_apiserver(history=5) as server:
        http = Http(server)
        for i in range(10):
            http.json("POST", f"{NS}/configmaps", configmap(f"c{i}"))
        oldest = server.call(lambda: server.server.store.bucket(CONFIGMAPS).oldest_resumable())
        resp = http.request("GET", f"{NS}/configmaps?watch=1&resourceVersion=2", stream=True)
        assert resp.status == 200
        events = list(read_events(resp))
        assert events == [
            {
                "type": "ERROR",
                "object": {
                    "kind": "Status",
                    "apiVersion": "v1",
                    "metadata": {},
                    "status": "Failure",
                    "message": f"too old resource version: 2 ({oldest})",
                    "reason": "Expired",
                    "code": 410,
                },
            }
        ]


def test_watch_streams_each_event_as_it_happens(apiserver: ThreadedApiServer, http: Http) -> None:
    _, lst = http.json("GET", f"{NS}/configmaps")
    rv = lst["metadata"]["resourceVersion"]
    resp = http.request(
        "GET", f"{NS}/configmaps?watch=1&resourceVersion={rv}&timeoutSeconds=5", stream=True
    )
    assert resp.headers.get("Transfer-Encoding") == "chunked"
    events = read_events(resp)
    http.json("POST", f"{NS}/configmaps", configmap("one"))
    started = time.monotonic()
    first = next(events)  # arrives long before the 5 s timeout: flushed per event
    assert time.monotonic() - started < 2
    assert first["type"] == "ADDED" and first["object"]["kind"] == "ConfigMap"
    http.json(
        "PATCH",
        f"{NS}/configmaps/one",
        {"data": {"a": "b"}},
        content_type="application/merge-patch+json",
    )
    http.json("DELETE", f"{NS}/configmaps/one")
    rest = [next(events), next(events)]
    assert [e["type"] for e in rest] == ["MODIFIED", "DELETED"]
    rvs = [int(e["object"]["metadata"]["resourceVersion"]) for e in [first, *rest]]
    assert rvs == sorted(rvs) and rvs[0] > int(rv)
    resp.close()


def test_watch_without_version_replays_current_state_then_times_out(http: Http) -> None:
    http.json("POST", f"{NS}/configmaps", configmap("a"))
    started = time.monotonic()
    resp = http.request("GET", f"{NS}/configmaps?watch=true&timeoutSeconds=1", stream=True)
    events = list(read_events(resp))
    assert 0.9 < time.monotonic() - started < 3
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [("ADDED", "a")]


def test_watch_bookmarks_and_initial_events_end(http: Http) -> None:
    http.json("POST", f"{NS}/configmaps", configmap("a"))
    resp = http.request(
        "GET",
        f"{NS}/configmaps?watch=1&allowWatchBookmarks=true&sendInitialEvents=true"
        "&resourceVersionMatch=NotOlderThan&resourceVersion=&timeoutSeconds=2",
        stream=True,
    )
    events = list(read_events(resp))
    assert events[0]["type"] == "ADDED"
    end = events[1]
    assert end["type"] == "BOOKMARK"
    assert end["object"]["metadata"]["annotations"] == {"k8s.io/initial-events-end": "true"}
    periodic = [e for e in events[2:] if e["type"] == "BOOKMARK"]
    assert periodic, "the fixture's 1 s bookmark interval produced a bookmark"
    assert set(periodic[0]["object"]) == {"kind", "apiVersion", "metadata"}
    assert set(periodic[0]["object"]["metadata"]) == {"resourceVersion"}


def test_watch_with_selector_reports_objects_entering_and_leaving(http: Http) -> None:
    http.json("POST", f"{NS}/configmaps", configmap("a", app="web"))
    _, lst = http.json("GET", f"{NS}/configmaps")
    rv = lst["metadata"]["resourceVersion"]
    resp = http.request(
        "GET",
        f"{NS}/configmaps?watch=1&labelSelector=app%3Dweb&resourceVersion={rv}&timeoutSeconds=2",
        stream=True,
    )
    events = read_events(resp)
    http.json(
        "PATCH",
        f"{NS}/configmaps/a",
        {"metadata": {"labels": {"app": "api"}}},
        content_type="application/merge-patch+json",
    )
    http.json("POST", f"{NS}/configmaps", configmap("b", app="api"))
    http.json(
        "PATCH",
        f"{NS}/configmaps/b",
        {"metadata": {"labels": {"app": "web"}}},
        content_type="application/merge-patch+json",
    )
    got = [next(events), next(events)]
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in got] == [
        ("DELETED", "a"),
        ("ADDED", "b"),
    ]
    resp.close()


def test_watch_table_sends_headers_once(http: Http) -> None:
    for name in ("a", "b"):
        http.json("POST", f"{NS}/configmaps", configmap(name))
    accept = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json"
    resp = http.request(
        "GET", f"{NS}/configmaps?watch=1&timeoutSeconds=1", headers={"Accept": accept}, stream=True
    )
    events = list(read_events(resp))
    assert [e["object"]["kind"] for e in events] == ["Table", "Table"]
    assert (
        events[0]["object"]["columnDefinitions"]
        and events[1]["object"]["columnDefinitions"] is None
    )
    assert events[1]["object"]["rows"][0]["cells"][0] == "b"


def test_a_watch_ends_when_its_client_disconnects(apiserver: ThreadedApiServer, http: Http) -> None:
    def watchers() -> int:
        return apiserver.call(lambda: len(apiserver.server.store.bucket(CONFIGMAPS).listeners))

    resp = http.request("GET", f"{NS}/configmaps?watch=1", stream=True)
    assert watchers() == 1
    resp.close()
    deadline = time.monotonic() + 5
    while watchers() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert watchers() == 0
    assert http.json("POST", f"{NS}/configmaps", configmap("x"))[0] == 201


def test_users_from_a_token_file(tmp_path: Any) -> None:
    tokens = tmp_path / "tokens.csv"
    tokens.write_text(
        'admin-tok,alice,1,"system:masters"\nread-tok,bob,2,kubenet:viewers\nplain-tok,carol,3\n'
    )
    with running_apiserver(token_file=tokens) as server:
        assert (
            Http(server, token="admin-tok").json("POST", f"{NS}/configmaps", configmap("x"))[0]
            == 201
        )
        assert Http(server, token="read-tok").json("GET", f"{NS}/configmaps")[0] == 200
        code, status = Http(server, token="plain-tok").json("GET", f"{NS}/configmaps")
        assert code == 403 and 'User "carol" cannot list resource "configmaps"' in status["message"]
        assert Http(server, token="plain-tok").json("GET", "/api/v1")[0] == 200, "discovery"


def test_a_client_certificate_from_another_ca_is_refused(
    apiserver: ThreadedApiServer, tmp_path: Any
) -> None:
    from kubenet.testing.apiserver.certs import CertificateAuthority

    cert, key = (
        CertificateAuthority("elsewhere")
        .client("mallory", ["system:masters"])
        .write(tmp_path, "mallory")
    )
    pool = urllib3.PoolManager(
        ca_certs=str(apiserver.ca_path), cert_file=str(cert), key_file=str(key), retries=False
    )
    # Python's TLS stack verifies a presented certificate during the handshake, so the
    # refusal is a handshake failure rather than upstream's 401 (see docs/apiserver.md).
    with pytest.raises(urllib3.exceptions.HTTPError):
        pool.request("GET", apiserver.url + "/api/v1/namespaces")
    assert Http(apiserver).json("GET", "/version")[0] == 200


def test_service_proxy_errors_and_redirect(http: Http) -> None:
    svc = {"metadata": {"name": "lonely"}, "spec": {"ports": [{"name": "http", "port": 80}]}}
    http.json("POST", f"{NS}/services", svc)
    code, status = http.json("GET", f"{NS}/services/lonely:http/proxy/")
    assert (code, status["reason"], status["message"]) == (
        503,
        "ServiceUnavailable",
        'no endpoints available for service "lonely:http"',
    )
    code, status = http.json("GET", f"{NS}/services/ghost/proxy/")
    assert (code, status["message"]) == (404, 'services "ghost" not found')
    code, status = http.json("GET", f"{NS}/services/a:b:c:d/proxy/")
    assert (code, status["message"]) == (400, 'invalid service request "a:b:c:d"')
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))  # bound, never listening: connections are refused
    port = closed.getsockname()[1]
    eps = {
        "metadata": {"name": "lonely-1", "labels": {"kubernetes.io/service-name": "lonely"}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": port}],
        "endpoints": [{"addresses": ["127.0.0.1"]}],
    }
    assert (
        http.json("POST", "/apis/discovery.k8s.io/v1/namespaces/default/endpointslices", eps)[0]
        == 201
    )
    resp = http.request("GET", f"{NS}/services/lonely:http/proxy")
    assert resp.status == 301
    assert resp.headers["Location"].endswith(f"{NS}/services/lonely:http/proxy/")
    code, status = http.json("GET", f"{NS}/services/lonely:http/proxy/")
    assert (code, status["reason"]) == (503, "ServiceUnavailable")
    assert status["message"].startswith(f"error trying to reach service: dial tcp 127.0.0.1:{port}")
    closed.close()


def test_adding_a_kind_is_one_resource_type() -> None:
    secrets = ResourceType("", "v1", "Secret", "secrets", namespaced=True)
    with running_apiserver(resources=(*RESOURCES, secrets)) as server:
        http = Http(server)
        body = {"metadata": {"name": "s"}, "type": "Opaque", "data": {"k": "dg=="}}
        assert http.json("POST", f"{NS}/secrets", body)[0] == 201
        _, listed = http.json("GET", f"{NS}/secrets?fieldSelector=metadata.name%3Ds")
        assert listed["kind"] == "SecretList" and listed["items"][0]["data"] == {"k": "dg=="}
        _, core = http.json("GET", "/api/v1")
        assert "secrets" in {r["name"] for r in core["resources"]}
