"""The store: one resource version counter, bounded history, resumable watches, snapshots."""

from __future__ import annotations

import pytest

from kubenet.testing.apiserver.resources import CONFIGMAPS, NAMESPACES, RESOURCES
from kubenet.testing.apiserver.store import ADDED, DELETED, MODIFIED, Store, TooOld


def cm(name: str, ns: str = "default", **data: str) -> dict[str, object]:
    return {"metadata": {"name": name, "namespace": ns}, "data": dict(data)}


def test_every_write_takes_the_next_global_resource_version() -> None:
    store = Store(RESOURCES)
    start = store.rv
    a = store.put(CONFIGMAPS, cm("a"))
    ns = store.put(NAMESPACES, {"metadata": {"name": "x"}})
    b = store.put(CONFIGMAPS, cm("a", v="2"))
    assert [a.rv, ns.rv, b.rv] == [start + 1, start + 2, start + 3]
    assert b.obj["metadata"]["resourceVersion"] == str(start + 3)
    tomb = store.delete(CONFIGMAPS, "default", "a")
    assert tomb is not None and tomb.rv == start + 4
    assert store.get(CONFIGMAPS, "default", "a") is None


def test_serialised_object_puts_kind_and_api_version_first_and_list_items_drop_them() -> None:
    store = Store(RESOURCES)
    stored = store.put(CONFIGMAPS, {"data": {"k": "v"}, **cm("a")})
    assert stored.raw.startswith(b'{"kind":"ConfigMap","apiVersion":"v1","metadata":')
    item = stored.item_raw()
    assert item.startswith(b'{"metadata":') and b'"kind"' not in item


def test_events_carry_previous_state_and_deletion_version() -> None:
    store = Store(RESOURCES)
    bucket = store.bucket(CONFIGMAPS)
    store.put(CONFIGMAPS, cm("a", v="1"))
    store.put(CONFIGMAPS, cm("a", v="2"))
    store.delete(CONFIGMAPS, "default", "a")
    events = bucket.events_from(0)
    assert [e.type for e in events] == [ADDED, MODIFIED, DELETED]
    assert events[1].old is not None and events[1].old.obj["data"] == {"v": "1"}
    assert events[2].new.rv == events[2].rv and events[2].new.obj["data"] == {"v": "2"}
    assert events[0].line().startswith(b'{"type":"ADDED","object":{"kind":"ConfigMap"')


def test_resume_point_follows_upstream_rule_once_history_is_trimmed() -> None:
    store = Store(RESOURCES, history=3)
    bucket = store.bucket(CONFIGMAPS)
    start = store.rv
    assert bucket.oldest_resumable() == start
    rvs = [store.put(CONFIGMAPS, cm(f"o{i}")).rv for i in range(5)]
    # Five events, three kept: the oldest kept is rvs[2], so resuming needs rv >= rvs[2] - 1.
    assert bucket.oldest_resumable() == rvs[2] - 1
    assert bucket.seq_after(rvs[2] - 1) == bucket.first_seq
    with pytest.raises(TooOld) as err:
        bucket.seq_after(rvs[0])
    assert str(err.value) == f"too old resource version: {rvs[0]} ({rvs[2] - 1})"


def test_history_untouched_means_any_version_since_start_resumes() -> None:
    store = Store(RESOURCES, history=100)
    bucket = store.bucket(CONFIGMAPS)
    start = store.rv
    store.put(NAMESPACES, {"metadata": {"name": "n"}})
    store.put(CONFIGMAPS, cm("a"))
    assert [e.type for e in bucket.events_from(bucket.seq_after(start))] == [ADDED]
    with pytest.raises(TooOld):
        bucket.seq_after(start - 1)


def test_watch_resume_skips_events_at_or_before_the_given_version() -> None:
    store = Store(RESOURCES)
    bucket = store.bucket(CONFIGMAPS)
    first = store.put(CONFIGMAPS, cm("a")).rv
    store.put(NAMESPACES, {"metadata": {"name": "other"}})  # another kind's revision
    second = store.put(CONFIGMAPS, cm("b")).rv
    events = bucket.events_from(bucket.seq_after(first))
    assert [e.rv for e in events] == [second]


def test_snapshot_rebuilds_an_older_state_by_undoing_events() -> None:
    store = Store(RESOURCES)
    store.put(CONFIGMAPS, cm("a", v="1"))
    store.put(CONFIGMAPS, cm("b", v="1"))
    at = store.rv
    store.put(CONFIGMAPS, cm("a", v="2"))
    store.delete(CONFIGMAPS, "default", "b")
    store.put(CONFIGMAPS, cm("c", v="1"))
    snap = store.bucket(CONFIGMAPS).snapshot(at, "")
    assert sorted(snap) == ["default/a", "default/b"]
    assert snap["default/a"].obj["data"] == {"v": "1"}
    assert store.bucket(CONFIGMAPS).snapshot(at, "default/a").keys() == {"default/b"}


def test_snapshot_older_than_history_is_too_old() -> None:
    store = Store(RESOURCES, history=2)
    store.put(CONFIGMAPS, cm("a"))
    at = store.rv
    for i in range(4):
        store.put(CONFIGMAPS, cm("a", v=str(i)))
    with pytest.raises(TooOld):
        store.bucket(CONFIGMAPS).snapshot(at, "")


def test_keys_in_namespace_uses_key_order() -> None:
    store = Store(RESOURCES)
    for ns, name in [("b", "x"), ("a", "z"), ("a-b", "y"), ("a", "y")]:
        store.put(CONFIGMAPS, cm(name, ns))
    bucket = store.bucket(CONFIGMAPS)
    assert bucket.keys_in(None) == ["a-b/y", "a/y", "a/z", "b/x"]
    assert bucket.keys_in("a") == ["a/y", "a/z"]


def test_listeners_hear_each_event_synchronously() -> None:
    store = Store(RESOURCES)
    heard: list[str] = []
    store.bucket(CONFIGMAPS).listeners.append(lambda e: heard.append(e.type))
    store.put(CONFIGMAPS, cm("a"))
    store.delete(CONFIGMAPS, "default", "a")
    assert heard == [ADDED, DELETED]


def test_physical_trim_keeps_sequence_numbers_stable() -> None:
    store = Store(RESOURCES, history=4)
    bucket = store.bucket(CONFIGMAPS)
    for i in range(20):
        store.put(CONFIGMAPS, cm(f"o{i}"))
    assert bucket.first_seq == 16 and bucket.next_seq == 20
    assert [e.key for e in bucket.events_from(17)] == ["default/o17", "default/o18", "default/o19"]
    with pytest.raises(TooOld):
        bucket.events_from(15)
