"""The ``kubernetes`` Python client: CRUD, watch, relist after 410, exec, port-forward."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client, watch
from kubernetes.client.rest import ApiException
from kubernetes.stream import portforward, stream

from kubenet.testing.apiserver import manifests
from kubenet.testing.apiserver.pytest_fixtures import api_client, examples_dir
from kubenet.testing.apiserver.server import ServerConfig, ThreadedApiServer, running_apiserver


def svc(name: str, port: int = 80) -> client.V1Service:
    return client.V1Service(
        metadata=client.V1ObjectMeta(name=name, labels={"app": name}),
        spec=client.V1ServiceSpec(ports=[client.V1ServicePort(name="http", port=port)]),
    )


def test_create_list_patch_delete(kube_api: Any) -> None:
    core = client.CoreV1Api(kube_api)
    made = core.create_namespaced_service("default", svc("web"))
    assert made.spec.cluster_ip == "10.96.1.1" and made.spec.ports[0].target_port == 80
    listed = core.list_namespaced_service("default", label_selector="app=web")
    assert [s.metadata.name for s in listed.items] == ["web"]
    assert int(listed.metadata.resource_version) >= int(made.metadata.resource_version)
    patched = core.patch_namespaced_service("web", "default", {"metadata": {"labels": {"x": "y"}}})
    assert patched.metadata.labels == {"app": "web", "x": "y"}
    status = core.patch_namespaced_service_status(
        "web", "default", {"status": {"loadBalancer": {"ingress": [{"ip": "203.0.113.7"}]}}}
    )
    assert status.status.load_balancer.ingress[0].ip == "203.0.113.7"
    core.delete_namespaced_service("web", "default")
    with pytest.raises(ApiException) as err:
        core.read_namespaced_service("web", "default")
    assert err.value.status == 404


def test_endpointslices_and_nodes(kube_api: Any) -> None:
    disc = client.DiscoveryV1Api(kube_api)
    body = client.V1EndpointSlice(
        metadata=client.V1ObjectMeta(name="web-1", labels={"kubernetes.io/service-name": "web"}),
        address_type="IPv4",
        endpoints=[
            client.V1Endpoint(
                addresses=["10.244.1.2"], conditions=client.V1EndpointConditions(ready=True)
            )
        ],
        ports=[client.DiscoveryV1EndpointPort(name="http", port=8080)],
    )
    disc.create_namespaced_endpoint_slice("default", body)
    got = disc.list_endpoint_slice_for_all_namespaces(
        label_selector="kubernetes.io/service-name=web"
    )
    assert [s.endpoints[0].addresses for s in got.items] == [["10.244.1.2"]]
    assert got.items[0].ports[0].protocol == "TCP"
    core = client.CoreV1Api(kube_api)
    core.create_node(client.V1Node(metadata=client.V1ObjectMeta(name="node-a")))
    assert [n.metadata.name for n in core.list_node().items] == ["node-a"]


def test_watch_sees_changes_made_by_another_client(apiserver: ThreadedApiServer) -> None:
    watcher_api, writer_api = api_client(apiserver), api_client(apiserver, "kubenet-cert")
    core = client.CoreV1Api(watcher_api)
    rv = core.list_namespaced_service("default").metadata.resource_version
    seen: list[tuple[str, str]] = []

    def watch_it() -> None:
        for event in watch.Watch().stream(
            core.list_namespaced_service, "default", resource_version=rv, timeout_seconds=3
        ):
            seen.append((event["type"], event["object"].metadata.name))
            if len(seen) == 3:
                return

    t = threading.Thread(target=watch_it)
    t.start()
    writer = client.CoreV1Api(writer_api)
    writer.create_namespaced_service("default", svc("a"))
    writer.patch_namespaced_service("a", "default", {"spec": {"sessionAffinity": "ClientIP"}})
    writer.delete_namespaced_service("a", "default")
    t.join(10)
    assert seen == [("ADDED", "a"), ("MODIFIED", "a"), ("DELETED", "a")]
    watcher_api.close()
    writer_api.close()


def test_relist_after_410_gone() -> None:
    with running_apiserver(ServerConfig(history=20)) as server:
        api = api_client(server)
        core = client.CoreV1Api(api)
        old_rv = core.list_namespaced_config_map("default").metadata.resource_version
        for i in range(30):
            core.create_namespaced_config_map(
                "default", client.V1ConfigMap(metadata=client.V1ObjectMeta(name=f"c{i}"))
            )
        with pytest.raises(ApiException) as err:
            for _ in watch.Watch().stream(
                core.list_namespaced_config_map,
                "default",
                resource_version=old_rv,
                timeout_seconds=2,
            ):
                pass
        assert err.value.status == 410 and "too old resource version" in str(err.value.reason)
        # The relist path: list again, then watch from the fresh version.
        fresh = core.list_namespaced_config_map("default")
        assert len(fresh.items) == 30
        got: list[str] = []

        def watch_fresh() -> None:
            for event in watch.Watch().stream(
                core.list_namespaced_config_map,
                "default",
                resource_version=fresh.metadata.resource_version,
                timeout_seconds=3,
            ):
                got.append(event["object"].metadata.name)
                return

        t = threading.Thread(target=watch_fresh)
        t.start()
        core.create_namespaced_config_map(
            "default", client.V1ConfigMap(metadata=client.V1ObjectMeta(name="after"))
        )
        t.join(10)
        assert got == ["after"]
        api.close()


def pod(name: str, **annotations: str) -> client.V1Pod:
    env = [client.V1EnvVar(name="GREETING", value="hello")]
    return client.V1Pod(
        metadata=client.V1ObjectMeta(name=name, annotations=annotations or None),
        spec=client.V1PodSpec(containers=[client.V1Container(name="app", image="app:1", env=env)]),
    )


def test_exec_over_the_v4_channel_protocol(kube_api: Any) -> None:
    core = client.CoreV1Api(kube_api)
    core.create_namespaced_pod("default", pod("p"))
    out = stream(
        core.connect_get_namespaced_pod_exec,
        "p",
        "default",
        command=["echo", "hi", "there"],
        stderr=True,
        stdin=False,
        stdout=True,
        tty=False,
    )
    assert out == "hi there\n"
    env = stream(
        core.connect_get_namespaced_pod_exec,
        "p",
        "default",
        command=["env"],
        stderr=True,
        stdin=False,
        stdout=True,
        tty=False,
    )
    assert "GREETING=hello" in env.splitlines() and "HOSTNAME=p" in env.splitlines()
    resp = stream(
        core.connect_get_namespaced_pod_exec,
        "p",
        "default",
        command=["cat"],
        stderr=True,
        stdin=True,
        stdout=True,
        tty=False,
        _preload_content=False,
    )
    resp.write_stdin("ping\n")
    collected = ""
    for _ in range(20):
        collected += resp.read_stdout(timeout=0.5)
        if "ping" in collected or not resp.is_open():
            break
    resp.close()
    assert collected == "ping\n"
    resp = stream(
        core.connect_get_namespaced_pod_exec,
        "p",
        "default",
        command=["false"],
        stderr=True,
        stdin=False,
        stdout=True,
        tty=False,
        _preload_content=False,
    )
    resp.run_forever(timeout=5)
    assert resp.returncode == 1


def test_exec_refuses_unknown_commands(kube_api: Any) -> None:
    core = client.CoreV1Api(kube_api)
    core.create_namespaced_pod("default", pod("p"))
    resp = stream(
        core.connect_get_namespaced_pod_exec,
        "p",
        "default",
        command=["sh", "-c", "id"],
        stderr=True,
        stdin=False,
        stdout=True,
        tty=False,
        _preload_content=False,
    )
    resp.run_forever(timeout=5)
    error = resp.read_channel(3)
    assert (
        '"reason":"InternalError"' in error and 'exec: \\"sh\\": executable file not found' in error
    )


@pytest.fixture
def echo_server() -> Iterator[int]:
    """A TCP server on loopback that answers each line with its upper-case copy."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()

    def serve() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            with conn:
                while data := conn.recv(1024):
                    conn.sendall(data.upper())

    threading.Thread(target=serve, daemon=True).start()
    yield listener.getsockname()[1]
    listener.close()


def test_port_forward_to_the_port_the_test_names(kube_api: Any, echo_server: int) -> None:
    core = client.CoreV1Api(kube_api)
    core.create_namespaced_pod(
        "default", pod("p", **{"kubenet.dev/port-forward": f"8080=127.0.0.1:{echo_server}"})
    )
    pf = portforward(core.connect_get_namespaced_pod_portforward, "p", "default", ports="8080")
    sock = pf.socket(8080)
    sock.settimeout(5)
    sock.sendall(b"hello\n")
    assert sock.recv(1024) == b"HELLO\n"
    sock.close()
    assert pf.error(8080) is None


def test_port_forward_without_a_target_reports_an_error(kube_api: Any) -> None:
    core = client.CoreV1Api(kube_api)
    core.create_namespaced_pod("default", pod("p"))
    pf = portforward(core.connect_get_namespaced_pod_portforward, "p", "default", ports="9999")
    sock = pf.socket(9999)
    sock.settimeout(5)
    assert sock.recv(1024) == b""
    assert "no port-forward target configured for default/p:9999" in (pf.error(9999) or "")


def test_examples_preload_as_fixtures(examples_apiserver: ThreadedApiServer) -> None:
    api = api_client(examples_apiserver)
    core, disc = client.CoreV1Api(api), client.DiscoveryV1Api(api)
    services = core.list_service_for_all_namespaces().items
    slices = disc.list_endpoint_slice_for_all_namespaces().items
    names = {s.metadata.name for s in services}
    assert "kubernetes" in names and len(names) > 1
    with_selector = [s for s in services if s.spec.selector]
    assert with_selector, "the examples have Services with selectors"
    owners = {s.metadata.labels.get("kubernetes.io/service-name") for s in slices}
    assert owners <= names, "every EndpointSlice belongs to a Service"
    folder = examples_dir()
    assert folder is not None
    declared = {
        (o["metadata"].get("namespace", "default"), o["metadata"]["name"]): o["status"]["phase"]
        for o in manifests.load([folder])
        if o["kind"] == "Pod" and (o.get("status") or {}).get("phase")
    }
    served = {
        (p.metadata.namespace, p.metadata.name): p.status.phase
        for p in core.list_pod_for_all_namespaces().items
    }
    assert {k: served.get(k) for k in declared} == declared, "preloaded pods keep their status"
    api.close()
