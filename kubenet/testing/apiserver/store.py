"""The object store: what etcd and the watch cache are to kube-apiserver.

* One global, monotonically increasing resource version (etcd's revision); every
  write takes the next one, and ``metadata.resourceVersion`` is its decimal string.
* One :class:`Bucket` per resource type: objects keyed by ``namespace/name`` (or
  ``name``), kept in key order for lists and pagination, plus a bounded history of
  watch events.
* Each stored object is serialised once per version (:class:`Stored`), so a list of
  ten thousand objects or an event fanned out to many watchers costs a join, not a
  re-encode.
* A watch may resume from any resource version the history still covers; older
  ones are "too old" exactly as upstream's watch cache decides
  (``staging/src/k8s.io/apiserver/pkg/storage/cacher``): the oldest resumable version
  is one less than the oldest retained event, or the version the bucket started at
  while nothing has been dropped.
* Paginated lists are consistent: page *n* shows the state at the first page's
  resource version, rebuilt by undoing the retained events after it, and expire
  (410) once the history no longer reaches back that far, as with etcd compaction.

Nothing here does I/O or knows about HTTP; everything runs on one thread (the
server's event loop), so there is no locking.
"""

from __future__ import annotations

import bisect
import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from kubenet.testing.apiserver.resources import ResourceType

JsonObject = dict[str, Any]

ADDED = "ADDED"
MODIFIED = "MODIFIED"
DELETED = "DELETED"

DEFAULT_HISTORY = 10_000


def dumps(obj: Any) -> bytes:
    """Compact JSON, as the API server writes it."""
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


def object_key(rtype: ResourceType, namespace: str, name: str) -> str:
    return f"{namespace}/{name}" if rtype.namespaced else name


@dataclass(frozen=True, slots=True)
class Stored:
    """One version of one object, serialised once.

    ``obj`` must never be mutated: it is shared by every reader of this version.
    Take a private copy with :meth:`copy`.
    """

    obj: JsonObject
    raw: bytes
    rv: int
    #: Length of the ``{"kind":...,"apiVersion":...,`` prefix, so list items (which
    #: upstream writes without kind and apiVersion) are a slice of ``raw``.
    type_prefix: int

    @property
    def namespace(self) -> str:
        return str(self.obj["metadata"].get("namespace", ""))

    @property
    def name(self) -> str:
        return str(self.obj["metadata"]["name"])

    @property
    def labels(self) -> dict[str, str]:
        labels = self.obj["metadata"].get("labels")
        return labels if isinstance(labels, dict) else {}

    def item_raw(self) -> bytes:
        return b"{" + self.raw[self.type_prefix :]

    def copy(self) -> JsonObject:
        """A private, mutable deep copy (decoding is faster than copy.deepcopy)."""
        out: JsonObject = json.loads(self.raw)
        return out


@dataclass(slots=True)
class Event:
    """One change, as a watcher sees it."""

    rv: int
    type: str
    key: str
    #: The object after the change; for DELETED, the last state stamped with the
    #: deletion's resource version (as etcd's watch reports it).
    new: Stored
    #: The object before the change (None for ADDED).
    old: Stored | None
    _line: bytes | None = field(default=None, repr=False)

    def line(self) -> bytes:
        """The event as one line of a watch stream."""
        if self._line is None:
            self._line = b'{"type":"' + self.type.encode() + b'","object":' + self.new.raw + b"}\n"
        return self._line


class TooOld(Exception):
    """A resource version older than the history covers."""

    def __init__(self, requested: int, oldest: int) -> None:
        super().__init__(f"too old resource version: {requested} ({oldest})")
        self.requested = requested
        self.oldest = oldest


Listener = Callable[[Event], None]


class Bucket:
    """All objects of one resource type, with their recent history."""

    def __init__(self, rtype: ResourceType, start_rv: int, capacity: int) -> None:
        self.rtype = rtype
        self.objects: dict[str, Stored] = {}
        self.capacity = max(1, capacity)
        self._events: list[Event] = []
        #: Sequence number of ``_events[0]``; events are numbered from 0 per bucket.
        self._base = 0
        self._next = 0
        self._start_rv = start_rv
        self._dropped = False
        self._sorted: list[str] | None = None
        self.listeners: list[Listener] = []
        self.prefix = dumps({"kind": rtype.kind, "apiVersion": rtype.api_version})[:-1] + b","

    # -- history -----------------------------------------------------------------------

    @property
    def first_seq(self) -> int:
        """Sequence number of the oldest event still retained."""
        return max(self._base, self._next - self.capacity)

    @property
    def next_seq(self) -> int:
        return self._next

    def oldest_resumable(self) -> int:
        """The smallest resource version a watch may resume from.

        While no event has been dropped, that is the version the bucket started at;
        afterwards it is one less than the oldest retained event (upstream's rule).
        """
        if not self._dropped:
            return self._start_rv
        return self._event(self.first_seq).rv - 1

    def _event(self, seq: int) -> Event:
        return self._events[seq - self._base]

    def seq_after(self, rv: int) -> int:
        """The sequence number of the first retained event newer than ``rv``.

        Raises :class:`TooOld` if events after ``rv`` may have been dropped.
        """
        oldest = self.oldest_resumable()
        if rv < oldest:
            raise TooOld(rv, oldest)
        lo = self.first_seq - self._base
        idx = bisect.bisect_right(self._events, rv, lo=lo, key=lambda e: e.rv)
        return self._base + idx

    def events_from(self, seq: int) -> list[Event]:
        """Retained events from sequence number ``seq`` on.

        Raises :class:`TooOld` when ``seq`` has already been dropped (a watcher that
        fell that far behind is closed, as upstream closes a blocked watcher).
        """
        if seq < self.first_seq:
            raise TooOld(seq, self.first_seq)
        return self._events[seq - self._base :]

    def _append(self, event: Event) -> None:
        self._events.append(event)
        self._next += 1
        if self._next - self._base > self.capacity:
            self._dropped = True
        # Drop physically in large batches so appends stay amortised O(1).
        if len(self._events) >= 2 * self.capacity:
            cut = len(self._events) - self.capacity
            del self._events[:cut]
            self._base += cut
        for listener in list(self.listeners):
            listener(event)

    # -- objects -----------------------------------------------------------------------

    def sorted_keys(self) -> list[str]:
        if self._sorted is None:
            self._sorted = sorted(self.objects)
        return self._sorted

    def keys_in(self, namespace: str | None) -> list[str]:
        keys = self.sorted_keys()
        if namespace is None or not self.rtype.namespaced:
            return keys
        lo = bisect.bisect_left(keys, namespace + "/")
        hi = bisect.bisect_left(keys, namespace + "0")  # "0" sorts right after "/"
        return keys[lo:hi]

    def snapshot(self, rv: int, after_key: str) -> dict[str, Stored]:
        """The objects with key > ``after_key`` as they were at resource version ``rv``."""
        seq = self.seq_after(rv)
        state = {k: v for k, v in self.objects.items() if k > after_key}
        if seq >= self._next:
            return state
        for event in reversed(self._events[seq - self._base :]):
            if event.key <= after_key:
                continue
            if event.type == ADDED:
                state.pop(event.key, None)
            elif event.old is not None:
                state[event.key] = event.old
        return state

    def serialise(self, obj: JsonObject, rv: int) -> Stored:
        """Stamp ``obj`` with ``rv`` and serialise it with kind and apiVersion first."""
        meta = dict(obj.get("metadata") or {})
        meta["resourceVersion"] = str(rv)
        rest = {k: v for k, v in obj.items() if k not in ("kind", "apiVersion", "metadata")}
        # Field order as upstream writes it: kind, apiVersion, metadata, then the rest.
        ordered = {"kind": self.rtype.kind, "apiVersion": self.rtype.api_version, "metadata": meta}
        ordered.update(rest)
        raw = dumps(ordered)
        if not raw.startswith(self.prefix):  # pragma: no cover - dumps keeps insertion order
            raise AssertionError("serialised object lost its type prefix")
        return Stored(ordered, raw, rv, len(self.prefix))


@dataclass(frozen=True)
class Page:
    """One list answer."""

    items: list[Stored]
    rv: int
    continue_token: str = ""
    remaining: int | None = None


class Store:
    """Buckets for every resource type, one resource version counter."""

    def __init__(self, resources: Iterable[ResourceType], history: int = DEFAULT_HISTORY) -> None:
        self.rv = 1
        self.history = history
        self._buckets = {r: Bucket(r, self.rv, history) for r in resources}

    def bucket(self, rtype: ResourceType) -> Bucket:
        return self._buckets[rtype]

    def buckets(self) -> Iterator[Bucket]:
        return iter(self._buckets.values())

    def get(self, rtype: ResourceType, namespace: str, name: str) -> Stored | None:
        return self._buckets[rtype].objects.get(object_key(rtype, namespace, name))

    def _next_rv(self) -> int:
        self.rv += 1
        return self.rv

    def put(self, rtype: ResourceType, obj: JsonObject) -> Stored:
        """Create or replace ``obj`` (the caller has done every check)."""
        bucket = self._buckets[rtype]
        meta = obj["metadata"]
        key = object_key(rtype, meta.get("namespace", ""), meta["name"])
        old = bucket.objects.get(key)
        stored = bucket.serialise(obj, self._next_rv())
        bucket.objects[key] = stored
        if old is None:
            bucket._sorted = None
        bucket._append(Event(stored.rv, MODIFIED if old else ADDED, key, stored, old))
        return stored

    def delete(self, rtype: ResourceType, namespace: str, name: str) -> Stored | None:
        """Remove an object; returns its last state stamped with the deletion's version."""
        bucket = self._buckets[rtype]
        key = object_key(rtype, namespace, name)
        old = bucket.objects.pop(key, None)
        if old is None:
            return None
        bucket._sorted = None
        tomb = bucket.serialise(old.obj, self._next_rv())
        bucket._append(Event(tomb.rv, DELETED, key, tomb, old))
        return tomb
