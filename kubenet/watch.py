"""List, then watch: a Kubernetes resource followed for as long as the process runs.

A :class:`Reflector` does what client-go's reflector does for kube-proxy's informers,
on one asyncio event loop (aiohttp, no threads):

* **list** the resource, then **watch** from the list's ``resourceVersion`` with
  ``allowWatchBookmarks`` (bookmarks move the resume point without events);
* a watch that ends cleanly (the server's ``timeoutSeconds``) is resumed from the last
  version seen; one that fails is resumed after a **backoff** (0.8 s doubling to 30 s,
  with jitter, as client-go's);
* **410 Gone** ("too old resource version") and "too large resource version" (a
  restarted server with a fresh store) mean the history is lost: the resource is
  **listed again**, and reported as ordinary events: every object listed as added
  or modified, and deletions of whatever the new list no longer holds. As with
  client-go's Replace, a modification is reported whether or not the object changed:
  resource versions cannot tell (a restored or restarted store numbers afresh), so
  the consumer compares contents. Nothing is reported while the server is
  unreachable, so a consumer's state, and the rules built from it, stay exactly as
  they are.

Events go to a handler in batches: one batch per (re)list, flagged ``synced``, then
one per watch event. Watch streams are split into lines here (not with aiohttp's
``readline``, whose line limit a large EndpointSlice can exceed).
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import random
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import aiohttp

from kubenet.kubeconfig import ClusterAccess

log = logging.getLogger(__name__)

JsonObject = dict[str, Any]

ADDED = "ADDED"
MODIFIED = "MODIFIED"
DELETED = "DELETED"


@dataclass(frozen=True)
class Resource:
    """What to follow: an API collection path and optional selectors."""

    path: str
    label_selector: str = ""
    field_selector: str = ""

    def __str__(self) -> str:
        return self.path.rsplit("/", 1)[-1]


#: kube-proxy ignores Services (and their slices) that another proxy implementation
#: owns or that are headless (cmd/kube-proxy: noProxyName, noHeadlessEndpoints).
PROXYABLE = "!service.kubernetes.io/service-proxy-name,!service.kubernetes.io/headless"


def services() -> Resource:
    return Resource("/api/v1/services", label_selector=PROXYABLE)


def endpoint_slices() -> Resource:
    return Resource("/apis/discovery.k8s.io/v1/endpointslices", label_selector=PROXYABLE)


def node(name: str) -> Resource:
    return Resource("/api/v1/nodes", field_selector=f"metadata.name={name}")


class Delta(NamedTuple):
    """One change to one object; ``key`` is ``namespace/name`` (or ``name``)."""

    type: str
    key: str
    object: JsonObject


class ApiError(Exception):
    """The API server answered with a Status error."""

    def __init__(self, code: int, reason: str, message: str) -> None:
        super().__init__(f"{code} {reason}: {message}")
        self.code = code
        self.reason = reason
        self.message = message

    @property
    def history_lost(self) -> bool:
        """410 Gone, or a resource version the server has not reached (a fresh store)."""
        return (
            self.code == 410
            or self.reason in ("Expired", "Gone")
            or "too large resource version" in self.message.lower()
        )

    @classmethod
    def from_status(cls, status: object, code: int = 0) -> ApiError:
        if not isinstance(status, Mapping):
            return cls(code, "Unknown", str(status)[:200])
        return cls(
            int(status.get("code") or code),
            str(status.get("reason") or ""),
            str(status.get("message") or ""),
        )


def object_key(obj: Mapping[str, Any]) -> str:
    meta = obj.get("metadata")
    meta = meta if isinstance(meta, Mapping) else {}
    namespace, name = meta.get("namespace") or "", meta.get("name") or ""
    return f"{namespace}/{name}" if namespace else str(name)


def _decode_list(body: bytes) -> JsonObject:
    """A list response decoded with the cyclic collector paused.

    A large cluster's list is millions of new containers; each batch of them sets off a
    collection that walks the whole growing heap (a list of 10,000 EndpointSlices
    decodes in 0.16 s without, 0.42 s with). Decoded JSON holds no cycles, so
    nothing is left for the collector to find.
    """
    paused = gc.isenabled()
    gc.disable()
    try:
        data = json.loads(body)
    finally:
        if paused:
            gc.enable()
    if not isinstance(data, dict):
        raise ValueError("the list response is not a JSON object")
    return data


def _resource_version(obj: Mapping[str, Any]) -> str:
    meta = obj.get("metadata")
    return str(meta.get("resourceVersion") or "") if isinstance(meta, Mapping) else ""


class Client:
    """The few API calls a reflector makes, over one aiohttp session."""

    def __init__(self, access: ClusterAccess, *, request_timeout: float = 120.0) -> None:
        self.access = access
        self.request_timeout = request_timeout
        self._session: aiohttp.ClientSession | None = None

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=self.access.ssl_context or False)
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _request_args(self, params: dict[str, str]) -> dict[str, Any]:
        args: dict[str, Any] = {
            "params": params,
            "headers": {"Accept": "application/json", **self.access.headers()},
        }
        if self.access.server_hostname:
            args["server_hostname"] = self.access.server_hostname
        return args

    async def list(self, resource: Resource) -> tuple[list[JsonObject], str]:
        """Every object of the collection and the list's resourceVersion."""
        params = _selectors(resource)
        timeout = aiohttp.ClientTimeout(total=self.request_timeout)
        async with self._http().get(
            self.access.server + resource.path, timeout=timeout, **self._request_args(params)
        ) as resp:
            body = await resp.read()
            if resp.status != 200:
                raise _error(resp.status, body)
        data = _decode_list(body)
        items = data.get("items") or []
        return list(items), _resource_version(data)

    async def watch(
        self, resource: Resource, resource_version: str, timeout_seconds: int
    ) -> AsyncIterator[JsonObject]:
        """The events of one watch request, decoded, until the stream ends."""
        params = {
            **_selectors(resource),
            "watch": "1",
            "resourceVersion": resource_version,
            "allowWatchBookmarks": "true",
            "timeoutSeconds": str(timeout_seconds),
        }
        # The server ends the stream at timeoutSeconds; a read that waits much longer
        # than that is a dead connection.
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=30, sock_read=timeout_seconds + 60)
        async with self._http().get(
            self.access.server + resource.path, timeout=timeout, **self._request_args(params)
        ) as resp:
            if resp.status != 200:
                raise _error(resp.status, await resp.read())
            pending = bytearray()
            async for chunk in resp.content.iter_any():
                pending += chunk
                while (end := pending.find(b"\n")) >= 0:
                    line = bytes(pending[:end])
                    del pending[: end + 1]
                    if line.strip():
                        yield json.loads(line)
            if pending.strip():
                yield json.loads(bytes(pending))


def _selectors(resource: Resource) -> dict[str, str]:
    params = {}
    if resource.label_selector:
        params["labelSelector"] = resource.label_selector
    if resource.field_selector:
        params["fieldSelector"] = resource.field_selector
    return params


def _error(code: int, body: bytes) -> ApiError:
    try:
        return ApiError.from_status(json.loads(body), code)
    except ValueError:
        return ApiError(code, "Unknown", body[:200].decode(errors="replace"))


@dataclass
class Backoff:
    """Exponential backoff with jitter: client-go's reflector settings by default."""

    initial: float = 0.8
    maximum: float = 30.0
    factor: float = 2.0
    #: A delay is ``step * (1 + jitter * random())``.
    jitter: float = 1.0
    _step: float = 0.0

    def next(self) -> float:
        self._step = self.initial if not self._step else min(self._step * self.factor, self.maximum)
        return self._step * (1 + self.jitter * random.random())

    def reset(self) -> None:
        self._step = 0.0


Handler = Callable[[Sequence[Delta], bool], None]


class Reflector:
    """Keeps a handler informed of one resource: list, watch, relist when needed."""

    def __init__(
        self,
        client: Client,
        resource: Resource,
        handler: Handler,
        *,
        backoff: Backoff | None = None,
        watch_timeout: tuple[int, int] = (300, 600),
    ) -> None:
        self.client = client
        self.resource = resource
        self.handler = handler
        self.backoff = backoff or Backoff()
        self.watch_timeout = watch_timeout
        #: The objects known, to turn a relist into events.
        self._known: set[str] = set()
        self.resource_version = ""
        self.synced = asyncio.Event()
        self.lists = 0
        self.errors = 0
        self._last_error = ""

    async def run(self) -> None:
        """List and watch until cancelled; a reflector run again resumes where it was."""
        need_list = not self.resource_version
        while True:
            try:
                if need_list:
                    await self._list()
                    need_list = False
                await self._watch()
                # A clean end (the server's timeout): resume at once.
            except asyncio.CancelledError:
                raise
            except ApiError as err:
                if err.history_lost:
                    log.info("%s: %s; listing again", self.resource, err.message or err.reason)
                    need_list = True
                    continue
                await self._failed(err)
            except (aiohttp.ClientError, OSError, TimeoutError, ValueError) as err:
                await self._failed(err)

    async def _failed(self, err: Exception) -> None:
        self.errors += 1
        text = f"{type(err).__name__}: {err}"
        delay = self.backoff.next()
        # Say it once per kind of failure, not on every retry.
        level = logging.WARNING if text != self._last_error else logging.DEBUG
        log.log(level, "%s: %s; retrying in %.1fs", self.resource, text, delay)
        self._last_error = text
        await asyncio.sleep(delay)

    async def _list(self) -> None:
        started = time.monotonic()
        items, rv = await self.client.list(self.resource)
        deltas: list[Delta] = []
        seen: set[str] = set()
        for obj in items:
            key = object_key(obj)
            seen.add(key)
            deltas.append(Delta(MODIFIED if key in self._known else ADDED, key, obj))
        for key in self._known - seen:
            namespace, _, name = key.rpartition("/")
            stub: JsonObject = {"metadata": {"name": name}}
            if namespace:
                stub["metadata"]["namespace"] = namespace
            deltas.append(Delta(DELETED, key, stub))
        self._known = seen
        self.resource_version = rv
        self.lists += 1
        self.backoff.reset()
        self._last_error = ""
        log.debug(
            "%s: listed %d objects (%d changes) at %s in %.2fs",
            self.resource,
            len(items),
            len(deltas),
            rv,
            time.monotonic() - started,
        )
        self.handler(deltas, True)
        self.synced.set()

    async def _watch(self) -> None:
        timeout = random.randint(*self.watch_timeout)
        async for event in self.client.watch(self.resource, self.resource_version, timeout):
            kind = event.get("type")
            obj = event.get("object")
            if kind == "ERROR":
                raise ApiError.from_status(obj)
            if not isinstance(obj, dict):
                continue
            version = _resource_version(obj)
            if kind == "BOOKMARK":
                self.resource_version = version or self.resource_version
                continue
            if kind not in (ADDED, MODIFIED, DELETED):
                continue
            key = object_key(obj)
            if kind == DELETED:
                self._known.discard(key)
            else:
                self._known.add(key)
            if version:
                self.resource_version = version
            self.backoff.reset()
            self._last_error = ""
            self.handler([Delta(kind, key, obj)], False)
