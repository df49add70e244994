"""The cluster cache: events in, only changed Services translated, port changes out."""

from __future__ import annotations

import logging
import pickle

import pytest

from kubenet.model import Protocol, ServicePortName
from kubenet.node.changes import ClusterCache
from kubenet.watch import ADDED, DELETED, MODIFIED, Delta
from tests.node.support import endpoint_slice, node, service


def _delta(kind: str, obj: dict[str, object]) -> Delta:
    meta = obj["metadata"]
    assert isinstance(meta, dict)
    key = f"{meta.get('namespace')}/{meta['name']}" if meta.get("namespace") else meta["name"]
    return Delta(kind, key, obj)


def _web(port: str = "") -> ServicePortName:
    return ServicePortName("default", "web", port, Protocol.TCP)


@pytest.fixture
def cache() -> ClusterCache:
    c = ClusterCache("node-a")
    c.on_node([_delta(ADDED, node("node-a", "10.180.0.1"))], True)
    c.on_services([_delta(ADDED, service("web", "10.96.0.10"))], True)
    c.on_slices([_delta(ADDED, endpoint_slice("web", ["10.244.1.2"]))], True)
    return c


def test_a_first_drain_translates_everything(cache: ClusterCache) -> None:
    assert cache.initialized and cache.node_synced
    changes = cache.drain()
    assert changes.node_changed and changes.services == 1
    (change,) = changes.ports.values()
    assert change.old is None and change.new is not None
    assert [e.ip for e in change.new.endpoints] == ["10.244.1.2"]
    assert change.new.endpoints[0].is_local
    assert cache.drain().empty


def test_a_slice_event_translates_its_service_only(cache: ClusterCache) -> None:
    cache.on_services([_delta(ADDED, service("other", "10.96.0.11"))], False)
    cache.drain()
    cache.on_slices([_delta(MODIFIED, endpoint_slice("web", ["10.244.1.2", "10.244.1.3"]))], False)
    changes = cache.drain()
    assert changes.services == 1 and list(changes.ports) == [_web()]
    change = changes.ports[_web()]
    assert change.old is not None and change.new is not None
    assert len(change.old.endpoints) == 1 and len(change.new.endpoints) == 2


def test_a_change_that_changes_no_port_reports_none(cache: ClusterCache) -> None:
    cache.drain()
    labelled = service("web", "10.96.0.10", labels={"team": "a"})
    cache.on_services([_delta(MODIFIED, labelled)], False)
    changes = cache.drain()
    assert changes.services == 1 and changes.ports == {}


def test_deleting_a_service_removes_its_ports(cache: ClusterCache) -> None:
    cache.drain()
    cache.on_services([Delta(DELETED, "default/web", {"metadata": {"name": "web"}})], False)
    change = cache.drain().ports[_web()]
    assert change.old is not None and change.new is None
    assert list(cache.ports()) == []


def test_a_slice_that_moves_to_another_service_changes_both(cache: ClusterCache) -> None:
    cache.on_services([_delta(ADDED, service("new", "10.96.0.12"))], False)
    cache.drain()
    moved = endpoint_slice("new", ["10.244.1.2"], name="web-abc")
    cache.on_slices([_delta(MODIFIED, moved)], False)
    changes = cache.drain()
    assert changes.services == 2
    assert changes.ports[_web()].new is not None and not changes.ports[_web()].new.endpoints
    new = ServicePortName("default", "new", "", Protocol.TCP)
    assert changes.ports[new].new is not None and changes.ports[new].new.endpoints


def test_a_node_change_translates_everything_again(cache: ClusterCache) -> None:
    cache.drain()
    zoned = node("node-a", "10.180.0.9")
    cache.on_node([_delta(MODIFIED, zoned)], False)
    changes = cache.drain()
    assert changes.node_changed and changes.services == 1
    assert cache.node.ips == ("10.180.0.9",)
    # Another node's events are none of ours.
    cache.on_node([_delta(MODIFIED, node("node-b", "10.180.0.8"))], False)
    assert not cache.drain().node_changed


def test_skipped_objects_are_logged_once_per_change(
    cache: ClusterCache, caplog: pytest.LogCaptureFixture
) -> None:
    cache.drain()
    bad = endpoint_slice("web", ["not-an-ip"])
    caplog.set_level(logging.WARNING)
    cache.on_slices([_delta(MODIFIED, bad)], False)
    cache.drain()
    first = [r.getMessage() for r in caplog.records if "not-an-ip" in r.getMessage()]
    assert len(first) == 1
    caplog.clear()
    cache.on_services([_delta(MODIFIED, service("web", "10.96.0.10"))], False)
    cache.drain()
    assert not [r for r in caplog.records if "not-an-ip" in r.getMessage()]


def test_a_slice_without_its_label_is_ignored(
    cache: ClusterCache, caplog: pytest.LogCaptureFixture
) -> None:
    orphan = endpoint_slice("web", ["10.244.1.9"], name="orphan")
    orphan["metadata"]["labels"] = {}  # type: ignore[index]
    caplog.set_level(logging.WARNING)
    cache.on_slices([_delta(ADDED, orphan)], False)
    assert "has no kubernetes.io/service-name label" in caplog.text
    assert all(p.name != "orphan" for p in cache.ports())


def test_trigger_times_and_batches(cache: ClusterCache) -> None:
    cache.drain()
    for i in range(5):
        cache.on_services([_delta(ADDED, service(f"s{i}", f"10.96.1.{i + 1}"))], False)
    annotated = endpoint_slice(
        "s0",
        ["10.244.1.4"],
        annotations={"endpoints.kubernetes.io/last-change-trigger-time": "2026-01-02T03:04:05Z"},
    )
    cache.on_slices([_delta(ADDED, annotated)], False)
    first = cache.drain(limit=2)
    assert first.services == 2 and cache.pending_services == 3
    assert first.trigger_times == [1767323045.0]
    assert cache.drain().services == 3
    # Annotations are not kept once read; a translated Service's objects are kept
    # pickled, and come back as they went in.
    kept = cache._slices[("default", "s0-abc")]
    assert isinstance(kept, bytes)
    assert "annotations" not in pickle.loads(kept)["metadata"]


def test_a_relist_with_the_same_content_changes_nothing(cache: ClusterCache) -> None:
    cache.drain()
    again = service("web", "10.96.0.10")
    again["metadata"]["resourceVersion"] = "999"  # type: ignore[index]
    cache.on_services([_delta(MODIFIED, again)], True)
    cache.on_slices([_delta(MODIFIED, endpoint_slice("web", ["10.244.1.2"]))], True)
    assert cache.pending_services == 0
    # Different content under the same resource version (a store started afresh) is
    # still a change.
    cache.on_slices([_delta(MODIFIED, endpoint_slice("web", ["10.244.1.7"]))], True)
    assert cache.pending_services == 1 and cache.drain().ports
