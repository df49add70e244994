"""Watch streams: resume from a resource version, bookmarks, timeouts, 410 Gone.

A watch is a chunked HTTP response of newline-separated JSON events, one chunk per
event, as kube-apiserver writes them.  Where it starts:

* ``resourceVersion`` unset or ``"0"``: a synthetic ``ADDED`` for every current
  object, then changes (upstream's "get state and start at most recent");
* ``resourceVersion=N``: every retained change after N.  If the history no longer
  reaches back to N, the stream starts (200) and its only event is an ``ERROR``
  carrying a 410 ``Expired`` Status, "too old resource version: N (M)", exactly as
  the watch cache answers, so clients exercise their relist path;
* ``sendInitialEvents=true`` (streaming lists): the current state as ``ADDED``, then a
  ``BOOKMARK`` annotated ``k8s.io/initial-events-end: "true"``.

With ``allowWatchBookmarks=true`` the server sends a ``BOOKMARK`` (an object with only
kind, apiVersion and ``metadata.resourceVersion``) every bookmark interval.  The
stream ends cleanly at ``timeoutSeconds`` (or the server's default), and a watcher
that falls further behind than the history is closed, as upstream closes a blocked
watcher; both make clients re-watch from their last resource version.

With label or field selectors, an object that stops matching is reported as
``DELETED`` and one that starts matching as ``ADDED`` (upstream's cacheWatcher).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from kubenet.testing.apiserver import errors
from kubenet.testing.apiserver.api import ListOptions
from kubenet.testing.apiserver.errors import ApiError
from kubenet.testing.apiserver.resources import ResourceType
from kubenet.testing.apiserver.store import (
    ADDED,
    DELETED,
    MODIFIED,
    Event,
    Store,
    Stored,
    TooOld,
    dumps,
)

JsonObject = dict[str, Any]
#: Turns an object into what the client asked to receive (a Table, metadata only...).
Transform = Callable[[Stored], Any]


@dataclass(frozen=True)
class WatchSettings:
    bookmark_interval: float = 60.0
    default_timeout: float = 1800.0


def _error_line(err: ApiError) -> bytes:
    return dumps({"type": "ERROR", "object": err.status()}) + b"\n"


class WatchStream:
    """One watch request."""

    def __init__(
        self,
        store: Store,
        rtype: ResourceType,
        opts: ListOptions,
        *,
        allow_bookmarks: bool,
        send_initial_events: bool,
        timeout: float,
        bookmark_interval: float,
        transform: Transform | None = None,
    ) -> None:
        self.store = store
        self.rtype = rtype
        self.bucket = store.bucket(rtype)
        self.opts = opts
        self.allow_bookmarks = allow_bookmarks
        self.send_initial_events = send_initial_events
        self.deadline = time.monotonic() + timeout
        self.bookmark_interval = bookmark_interval
        self.transform = transform
        self._wake = asyncio.Event()

    def _listener(self, event: Event) -> None:
        self._wake.set()

    def _line(self, kind: str, stored: Stored, event: Event | None = None) -> bytes:
        if self.transform is None:
            if event is not None and event.type == kind and event.new is stored:
                return event.line()
            return b'{"type":"' + kind.encode() + b'","object":' + stored.raw + b"}\n"
        return dumps({"type": kind, "object": self.transform(stored)}) + b"\n"

    def _bookmark(self, rv: int, initial_end: bool = False) -> bytes:
        meta: JsonObject = {"resourceVersion": str(rv)}
        if initial_end:
            meta["annotations"] = {"k8s.io/initial-events-end": "true"}
        obj = {"kind": self.rtype.kind, "apiVersion": self.rtype.api_version, "metadata": meta}
        return dumps({"type": "BOOKMARK", "object": obj}) + b"\n"

    def _convert(self, event: Event) -> bytes | None:
        """The line a watcher with this predicate sees for ``event``, if any."""
        opts, rtype = self.opts, self.rtype
        if event.type == ADDED:
            return self._line(ADDED, event.new, event) if opts.matches(rtype, event.new) else None
        if event.type == DELETED:
            prior = event.old or event.new
            return self._line(DELETED, event.new, event) if opts.matches(rtype, prior) else None
        now_ok = opts.matches(rtype, event.new)
        was_ok = event.old is not None and opts.matches(rtype, event.old)
        if now_ok and was_ok:
            return self._line(MODIFIED, event.new, event)
        if now_ok:
            return self._line(ADDED, event.new)
        if was_ok and event.old is not None:
            # The object left the selection: report its prior state at the new version.
            gone = self.bucket.serialise(event.old.obj, event.rv)
            return self._line(DELETED, gone)
        return None

    def start(self) -> tuple[list[bytes], int] | ApiError:
        """Initial lines and the event cursor, or the error to send as an ERROR event."""
        rv_text = self.opts.resource_version
        lines: list[bytes] = []
        if rv_text in ("", "0") or self.send_initial_events:
            rv = self.store.rv
            for key in self.bucket.keys_in(self.opts.namespace):
                stored = self.bucket.objects[key]
                if self.opts.matches(self.rtype, stored):
                    lines.append(self._line(ADDED, stored))
            if self.send_initial_events:
                lines.append(self._bookmark(rv, initial_end=True))
            return lines, self.bucket.next_seq
        rv = int(rv_text)
        if rv > self.store.rv:
            return errors.too_large_resource_version(rv, self.store.rv)
        try:
            return lines, self.bucket.seq_after(rv)
        except TooOld as old:
            return errors.expired(str(old))

    async def serve(self, request: web.Request, content_type: str) -> web.StreamResponse:
        response = web.StreamResponse(status=200)
        response.content_type = content_type
        response.enable_chunked_encoding()
        began = self.start()
        self.bucket.listeners.append(self._listener)
        try:
            await response.prepare(request)
            if isinstance(began, ApiError):
                await response.write(_error_line(began))
                return response
            lines, cursor = began
            for line in lines:
                await response.write(line)
            await self._follow(response, cursor)
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            with contextlib.suppress(ValueError):
                self.bucket.listeners.remove(self._listener)
        with contextlib.suppress(ConnectionResetError):
            await response.write_eof()
        return response

    async def _follow(self, response: web.StreamResponse, cursor: int) -> None:
        next_bookmark = time.monotonic() + self.bookmark_interval
        while True:
            self._wake.clear()
            try:
                events = self.bucket.events_from(cursor)
            except TooOld:
                return  # fell behind the history: end, the client re-watches
            cursor += len(events)
            for event in events:
                line = self._convert(event)
                if line is not None:
                    await response.write(line)
            now = time.monotonic()
            if now >= self.deadline:
                return
            if self.allow_bookmarks and now >= next_bookmark:
                # Every change up to the current revision has been sent, so resuming from
                # it loses nothing.
                await response.write(self._bookmark(self.store.rv))
                next_bookmark = now + self.bookmark_interval
            wait = self.deadline - now
            if self.allow_bookmarks:
                wait = min(wait, next_bookmark - now)
            if self.bucket.next_seq > cursor:
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=max(wait, 0.0))
