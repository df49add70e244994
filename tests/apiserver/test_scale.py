"""Scale: 10,000 Services and 10,000 EndpointSlices (100,000 endpoints).

A full list of either completes, and ten concurrent watchers each receive every
event of a burst of 1,000 updates, in order.  Timings are printed (run with ``-s``)
and bounded loosely so that the check stays meaningful on a slow CI machine.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from kubenet.testing.apiserver.resources import ENDPOINTSLICES, NAMESPACES, SERVICES
from kubenet.testing.apiserver.server import ThreadedApiServer, running_apiserver

from .helpers import Http

pytestmark = pytest.mark.benchmark

SERVICES_COUNT = 10_000
ENDPOINTS_PER_SLICE = 10
BURST = 1_000
WATCHERS = 10


def service(i: int) -> dict[str, Any]:
    return {
        "metadata": {"name": f"svc-{i:05d}", "labels": {"app": f"app-{i}"}},
        "spec": {
            "selector": {"app": f"app-{i}"},
            "ports": [{"name": "http", "port": 80, "targetPort": 8080}],
        },
    }


def endpoint_slice(i: int) -> dict[str, Any]:
    return {
        "metadata": {
            "name": f"svc-{i:05d}-abcde",
            "labels": {"kubernetes.io/service-name": f"svc-{i:05d}"},
        },
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
        "endpoints": [
            {
                "addresses": [f"10.{64 + (i >> 8)}.{i & 255}.{j + 1}"],
                "conditions": {"ready": True, "serving": True, "terminating": False},
                "nodeName": f"node-{j}",
                "zone": f"zone-{j % 3}",
            }
            for j in range(ENDPOINTS_PER_SLICE)
        ],
    }


@pytest.fixture(scope="module")
def big() -> Iterator[ThreadedApiServer]:
    with running_apiserver(bootstrap=False) as server:
        api = server.server.api

        def fill() -> None:
            api.create(NAMESPACES, "", {"metadata": {"name": "scale"}})
            for i in range(SERVICES_COUNT):
                api.create(SERVICES, "scale", service(i))
            for i in range(SERVICES_COUNT):
                api.create(ENDPOINTSLICES, "scale", endpoint_slice(i))

        started = time.perf_counter()
        server.call(fill, timeout=300)
        print(
            f"\nload: {SERVICES_COUNT} Services + {SERVICES_COUNT} EndpointSlices "
            f"({SERVICES_COUNT * ENDPOINTS_PER_SLICE} endpoints) in "
            f"{time.perf_counter() - started:.2f}s"
        )
        yield server


@pytest.mark.parametrize(
    ("path", "kind"),
    [
        ("/api/v1/namespaces/scale/services", "ServiceList"),
        ("/apis/discovery.k8s.io/v1/endpointslices", "EndpointSliceList"),
    ],
)
def test_full_list(big: ThreadedApiServer, path: str, kind: str) -> None:
    http = Http(big)
    started = time.perf_counter()
    resp = http.request("GET", path, timeout=60)
    body = resp.data
    fetched = time.perf_counter()
    doc = json.loads(body)
    parsed = time.perf_counter()
    assert resp.status == 200 and doc["kind"] == kind
    assert len(doc["items"]) == SERVICES_COUNT
    if kind == "EndpointSliceList":
        assert (
            sum(len(s["endpoints"]) for s in doc["items"]) == SERVICES_COUNT * ENDPOINTS_PER_SLICE
        )
    print(
        f"\nlist {kind}: {len(body) / 1e6:.1f} MB served in {fetched - started:.2f}s "
        f"(+{parsed - fetched:.2f}s client-side JSON decode)"
    )
    assert fetched - started < 20


def test_paged_list_matches_full_list(big: ThreadedApiServer) -> None:
    http = Http(big)
    names: list[str] = []
    token = ""
    started = time.perf_counter()
    while True:
        query = "limit=500" + (f"&continue={token}" if token else "")
        _, page = http.json("GET", f"/api/v1/namespaces/scale/services?{query}")
        names += [item["metadata"]["name"] for item in page["items"]]
        token = page["metadata"].get("continue", "")
        if not token:
            break
    print(
        f"\npaged list (limit=500) of {len(names)} Services in {time.perf_counter() - started:.2f}s"
    )
    assert names == [f"svc-{i:05d}" for i in range(SERVICES_COUNT)]


def test_ten_watchers_each_receive_a_burst_of_1000_updates_in_order(big: ThreadedApiServer) -> None:
    http = Http(big)
    _, listed = http.json("GET", "/api/v1/namespaces/scale/services?limit=1")
    rv = listed["metadata"]["resourceVersion"]
    received: list[list[tuple[str, str, int]]] = [[] for _ in range(WATCHERS)]
    ready = threading.Barrier(WATCHERS + 1)

    def watch(slot: int) -> None:
        resp = Http(big).request(
            "GET",
            f"/api/v1/namespaces/scale/services?watch=1&resourceVersion={rv}&timeoutSeconds=60",
            stream=True,
            timeout=60,
        )
        ready.wait()
        buffer = b""
        for chunk in resp.stream(65536, decode_content=False):
            buffer += chunk
            *lines, buffer = buffer.split(b"\n")
            for line in lines:
                event = json.loads(line)
                meta = event["object"]["metadata"]
                received[slot].append((event["type"], meta["name"], int(meta["resourceVersion"])))
            if len(received[slot]) >= BURST:
                break
        resp.close()

    threads = [threading.Thread(target=watch, args=(i,)) for i in range(WATCHERS)]
    for t in threads:
        t.start()
    ready.wait()
    time.sleep(0.2)  # every watcher is registered and waiting
    api = big.server.api

    def burst() -> list[str]:
        names = []
        for i in range(BURST):
            name = f"svc-{(i * 7) % SERVICES_COUNT:05d}"
            current = api.get(SERVICES, "scale", name).copy()
            current["metadata"]["labels"]["round"] = str(i)
            api.update(SERVICES, "scale", name, current)
            names.append(name)
        return names

    started = time.perf_counter()
    names = big.call(burst)
    written = time.perf_counter()
    for t in threads:
        t.join(60)
    delivered = time.perf_counter()
    print(
        f"\nburst: {BURST} updates stored in {written - started:.2f}s; all {WATCHERS} watchers "
        f"had every event {delivered - started:.2f}s after the burst began"
    )
    for events in received:
        assert [e[0] for e in events] == ["MODIFIED"] * BURST
        assert [e[1] for e in events] == names
        rvs = [e[2] for e in events]
        assert rvs == sorted(rvs) and len(set(rvs)) == BURST
    assert delivered - started < 30
