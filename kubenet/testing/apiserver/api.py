"""The verbs: get, list, create, update, patch, delete, and what they check.

:class:`Api` is the server's behaviour without HTTP: it takes decoded bodies and
query options, enforces the rules kube-apiserver enforces (names and namespaces
agree with the URL, resourceVersion preconditions, namespace existence, no writes
to status through the main resource, validation, allocation), and reads and writes
the :class:`~kubenet.testing.apiserver.store.Store`.  Failures raise
:class:`~kubenet.testing.apiserver.errors.ApiError`; a failed request never leaves
a partial write behind, because every check runs before the single store write.
"""

from __future__ import annotations

import base64
import binascii
import bisect
import json
import secrets
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from kubenet.testing.apiserver import errors, schema
from kubenet.testing.apiserver.allocators import PortRange, ServiceAllocations
from kubenet.testing.apiserver.errors import Cause
from kubenet.testing.apiserver.patch import (
    PatchError,
    json_patch,
    merge_patch,
    strategic_merge_patch,
)
from kubenet.testing.apiserver.resources import (
    CONFIGMAPS,
    ENDPOINTSLICES,
    NAMESPACES,
    NODES,
    PODS,
    SERVICES,
    Kinds,
    ResourceType,
)
from kubenet.testing.apiserver.selectors import (
    FieldSelector,
    LabelSelector,
    SelectorError,
    parse_field_selector,
    parse_label_selector,
)
from kubenet.testing.apiserver.store import Page, Store, Stored, TooOld
from kubenet.testing.apiserver.strategies import (
    ConfigMapStrategy,
    EndpointSliceStrategy,
    NamespaceStrategy,
    NodeStrategy,
    PodStrategy,
    ServiceStrategy,
    Strategy,
)

JsonObject = dict[str, Any]

#: Namespaces kube-apiserver refuses to delete.
IMMORTAL_NAMESPACES = frozenset({"default", "kube-system", "kube-public"})

JSON_PATCH = "application/json-patch+json"
MERGE_PATCH = "application/merge-patch+json"
STRATEGIC_PATCH = "application/strategic-merge-patch+json"
APPLY_PATCH = "application/apply-patch+yaml"
PATCH_TYPES = (JSON_PATCH, MERGE_PATCH, STRATEGIC_PATCH)

_NAME_SUFFIX = "bcdfghjklmnpqrstvwxz2456789"  # upstream's generateName alphabet


def now() -> str:
    """The current time as the API writes timestamps (RFC 3339, whole seconds, UTC)."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class ListOptions:
    """Decoded list/watch query parameters."""

    namespace: str | None = None
    labels: LabelSelector = field(default_factory=LabelSelector)
    fields: FieldSelector = field(default_factory=FieldSelector)
    limit: int = 0
    continue_token: str = ""
    resource_version: str = ""
    resource_version_match: str = ""

    @classmethod
    def parse(
        cls, rtype: ResourceType, namespace: str | None, query: dict[str, str], *, watch: bool
    ) -> ListOptions:
        """Parse and check query parameters; errors are 400 or 422 like upstream's."""
        try:
            labels = parse_label_selector(query.get("labelSelector", ""))
            fields = parse_field_selector(query.get("fieldSelector", ""))
        except SelectorError as err:
            raise errors.bad_request(str(err)) from None
        for key in sorted(fields.field_names()):
            if rtype.field_value({"metadata": {}}, key) is None:
                raise errors.bad_request(f"field label not supported: {key}")
        try:
            limit = int(query.get("limit") or 0)
        except ValueError:
            raise errors.bad_request(f"limit: Invalid value: {query['limit']!r}") from None
        rv = query.get("resourceVersion", "")
        match = query.get("resourceVersionMatch", "")
        token = query.get("continue", "")
        if rv and rv != "0":
            try:
                int(rv)
            except ValueError:
                raise errors.bad_request(f'invalid resource version: "{rv}"') from None
        causes: list[Cause] = []
        initial = query.get("sendInitialEvents", "")
        where = "resourceVersionMatch"
        if initial:
            if match != "NotOlderThan":
                causes.append(
                    _forbidden(
                        where,
                        "sendInitialEvents requires setting resourceVersionMatch to NotOlderThan",
                    )
                )
            if not watch:
                causes.append(
                    _forbidden("sendInitialEvents", "sendInitialEvents is forbidden for list")
                )
        elif match:
            if match not in ("Exact", "NotOlderThan"):
                causes.append(
                    Cause(
                        "FieldValueNotSupported",
                        f'Unsupported value: "{match}": supported values: "Exact", "NotOlderThan"',
                        where,
                    )
                )
            elif watch:
                causes.append(_forbidden(where, "resourceVersionMatch is forbidden for watch"))
            elif not rv:
                causes.append(
                    _forbidden(
                        where,
                        "resourceVersionMatch is forbidden unless resourceVersion is provided",
                    )
                )
            elif token:
                causes.append(
                    _forbidden(where, "resourceVersionMatch is forbidden when continue is provided")
                )
            elif match == "Exact" and rv == "0":
                causes.append(
                    _forbidden(
                        where, 'resourceVersionMatch "exact" is forbidden for resourceVersion "0"'
                    )
                )
        if causes:
            raise errors.invalid("meta.k8s.io", "ListOptions", "", causes)
        if token and rv and not watch:
            raise errors.bad_request(
                "specifying resource version is not allowed when using continue"
            )
        return cls(namespace, labels, fields, max(limit, 0), token, rv, match)

    def matches(self, rtype: ResourceType, stored: Stored) -> bool:
        if self.namespace and rtype.namespaced and stored.namespace != self.namespace:
            return False
        if not self.labels.empty and not self.labels.matches(stored.labels):
            return False
        if self.fields.terms:
            values = {
                key: rtype.field_value(stored.obj, key) or "" for key in self.fields.field_names()
            }
            if not self.fields.matches(values):
                return False
        return True


def _forbidden(path: str, detail: str) -> Cause:
    return Cause("FieldValueForbidden", f"Forbidden: {detail}", path)


def encode_continue(rv: int, start: str) -> str:
    raw = json.dumps({"v": "meta.k8s.io/v1", "rv": rv, "start": start}, separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_continue(token: str) -> tuple[int, str]:
    try:
        padded = token + "=" * (-len(token) % 4)
        data = json.loads(base64.urlsafe_b64decode(padded.encode()))
        if data.get("v") != "meta.k8s.io/v1":
            raise ValueError("unexpected version")
        return int(data["rv"]), str(data["start"])
    except (ValueError, KeyError, TypeError, binascii.Error) as err:
        raise errors.bad_request(f"continue key is not valid: {err}") from None


@dataclass(frozen=True)
class ServerSettings:
    """What the Api needs to know about the cluster it pretends to be."""

    service_cidrs: tuple[str, ...] = ("10.96.0.0/16", "fd00:96::/112")
    node_port_range: tuple[int, int] = (30000, 32767)


class Api:
    """The REST semantics over a :class:`Store`."""

    def __init__(self, store: Store, kinds: Kinds, settings: ServerSettings | None = None) -> None:
        self.store = store
        self.kinds = kinds
        settings = settings or ServerSettings()
        self.allocations = ServiceAllocations(
            settings.service_cidrs, PortRange(*settings.node_port_range)
        )
        store.bucket(SERVICES).listeners.append(self.allocations.on_event)
        specific: dict[ResourceType, Strategy] = {
            NAMESPACES: NamespaceStrategy(NAMESPACES),
            NODES: NodeStrategy(NODES),
            PODS: PodStrategy(PODS),
            SERVICES: ServiceStrategy(SERVICES, self.allocations),
            ENDPOINTSLICES: EndpointSliceStrategy(ENDPOINTSLICES),
            CONFIGMAPS: ConfigMapStrategy(CONFIGMAPS),
        }
        self.strategies = {r: specific.get(r) or Strategy(r) for r in kinds.resources}

    # -- reads -------------------------------------------------------------------------

    def get(self, rtype: ResourceType, namespace: str, name: str) -> Stored:
        stored = self.store.get(rtype, namespace, name)
        if stored is None:
            raise errors.not_found(rtype.group, rtype.plural, name)
        return stored

    def list_page(self, rtype: ResourceType, opts: ListOptions) -> Page:
        bucket = self.store.bucket(rtype)
        current = self.store.rv
        rv = opts.resource_version
        if rv and rv != "0" and int(rv) > current:
            raise errors.too_large_resource_version(int(rv), current)
        exact = opts.resource_version_match == "Exact"
        if rv == "0" and not opts.continue_token:
            # Served from the watch cache upstream: the full list, limit ignored.
            everything = [
                s
                for s in (bucket.objects[k] for k in bucket.keys_in(opts.namespace))
                if opts.matches(rtype, s)
            ]
            return Page(everything, current)
        at = int(rv) if exact else current
        start = ""
        if opts.continue_token:
            at, start = decode_continue(opts.continue_token)
            if at < 0:
                at = current
        if at == current:
            state = bucket.objects
            keys = bucket.keys_in(opts.namespace)
            if start:
                keys = keys[bisect.bisect_left(keys, start) :]
        else:
            try:
                state = bucket.snapshot(at, start.rstrip("\x00"))
            except TooOld:
                if opts.continue_token:
                    raise errors.expired(
                        "The provided continue parameter is too old to display a consistent list "
                        "result. You can start a new list without the continue parameter, or use "
                        "the continue token in this response to retrieve the remainder of the "
                        "results. Continuing with the provided token results in an inconsistent "
                        "list - objects that were created, modified, or deleted between the time "
                        "the first chunk was returned and now may show up in the list.",
                        continue_token=encode_continue(-1, start),
                    ) from None
                raise errors.expired(
                    "The resourceVersion for the provided list is too old."
                ) from None
            keys = sorted(
                k
                for k in state
                if not opts.namespace or not rtype.namespaced or k.startswith(opts.namespace + "/")
            )
        items: list[Stored] = []
        last_key = ""
        for i, key in enumerate(keys):
            stored = state[key]
            if not opts.matches(rtype, stored):
                continue
            if opts.limit and len(items) == opts.limit:
                # Upstream counts what is left only when no selector filters it.
                remaining = None
                if opts.labels.empty and not opts.fields.terms:
                    remaining = len(keys) - i
                return Page(items, at, encode_continue(at, last_key + "\x00"), remaining)
            items.append(stored)
            last_key = key
        return Page(items, at)

    # -- writes ------------------------------------------------------------------------

    def _check_body(self, rtype: ResourceType, body: Any) -> JsonObject:
        """The decode step: the body must be an object of this kind and version."""
        if not isinstance(body, dict):
            raise errors.bad_request(
                f"the object provided is unrecognized (must be of type {rtype.kind}): "
                "couldn't get version/kind; json parse error: expected an object"
            )
        kind = body.get("kind") or rtype.kind
        api_version = body.get("apiVersion") or rtype.api_version
        version = api_version.rpartition("/")[2]
        if not isinstance(kind, str) or not isinstance(api_version, str):
            raise errors.bad_request(
                f"the object provided is unrecognized (must be of type {rtype.kind})"
            )
        if kind != rtype.kind:
            other = self.kinds.by_kind(api_version, kind)
            internal = {"": "core"}.get(rtype.group, rtype.group.split(".")[0])
            why = (
                f"converting ({version}.{kind}) to ({internal}.{rtype.kind}): unknown conversion"
                if other is not None
                else f'no kind "{kind}" is registered for version "{api_version}" in scheme '
                '"pkg/api/legacyscheme/scheme.go:30"'
            )
            raise errors.bad_request(
                f'{kind} in version "{version}" cannot be handled as a {rtype.kind}: {why}'
            )
        if api_version != rtype.api_version:
            raise errors.bad_request(
                f"the API version in the data ({api_version}) does not match the expected API "
                f"version ({rtype.api_version})"
            )
        struct = schema.KINDS.get(rtype.kind)
        if struct is not None:
            try:
                schema.check(body, struct)
            except schema.DecodeError as err:
                raise errors.bad_request(
                    f'{kind} in version "{version}" cannot be handled as a {rtype.kind}: {err}'
                ) from None
        meta = body.get("metadata") or {}
        obj: JsonObject = dict(body)
        obj["metadata"] = dict(meta)
        obj["kind"], obj["apiVersion"] = rtype.kind, rtype.api_version
        return obj

    def _place(self, rtype: ResourceType, namespace: str, body: JsonObject) -> None:
        meta = body["metadata"]
        if rtype.namespaced:
            given = meta.get("namespace") or ""
            if given and given != namespace:
                raise errors.bad_request(
                    "the namespace of the provided object does not match the namespace sent on "
                    "the request"
                )
            meta["namespace"] = namespace
        else:
            meta.pop("namespace", None)

    def _require_namespace(self, rtype: ResourceType, namespace: str) -> None:
        if rtype.namespaced and self.store.get(NAMESPACES, "", namespace) is None:
            raise errors.not_found("", "namespaces", namespace)

    def _validate(self, rtype: ResourceType, obj: JsonObject, old: JsonObject | None) -> None:
        strategy = self.strategies[rtype]
        causes = strategy.validate(obj, old)
        if not causes:
            causes = strategy.allocate(obj, old)
        if causes:
            raise errors.invalid(rtype.group, rtype.kind, obj["metadata"].get("name", ""), causes)

    def create(
        self, rtype: ResourceType, namespace: str, body: Any, *, dry_run: bool = False
    ) -> Stored:
        obj = self._check_body(rtype, body)
        self._place(rtype, namespace, obj)
        meta = obj["metadata"]
        if (
            not meta.get("name")
            and isinstance(meta.get("generateName"), str)
            and meta["generateName"]
        ):
            suffix = "".join(secrets.choice(_NAME_SUFFIX) for _ in range(5))
            meta["name"] = meta["generateName"][:58] + suffix
        strategy = self.strategies[rtype]
        for key in (
            "resourceVersion",
            "uid",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "selfLink",
            "managedFields",
            "creationTimestamp",
            "generation",
        ):
            meta.pop(key, None)
        strategy.prepare_create(obj)
        strategy.default(obj)
        self._validate(rtype, obj, None)
        if meta.get("name") and self.store.get(rtype, namespace, meta["name"]) is not None:
            raise errors.already_exists(rtype.group, rtype.plural, meta["name"])
        self._require_namespace(rtype, namespace)
        meta["uid"] = str(uuid.uuid4())
        meta["creationTimestamp"] = now()
        if dry_run:
            return self.store.bucket(rtype).serialise(obj, 0)
        return self.store.put(rtype, obj)

    def update(
        self,
        rtype: ResourceType,
        namespace: str,
        name: str,
        body: Any,
        *,
        subresource: str = "",
        dry_run: bool = False,
    ) -> Stored:
        obj = self._check_body(rtype, body)
        self._place(rtype, namespace, obj)
        if obj["metadata"].get("name", name) != name:
            given = obj["metadata"].get("name")
            raise errors.bad_request(
                f"the name of the object ({given}) does not match the name on the URL ({name})"
            )
        obj["metadata"]["name"] = name
        current = self.store.get(rtype, namespace, name)
        if current is None:
            raise errors.not_found(rtype.group, rtype.plural, name)
        want_rv = obj["metadata"].get("resourceVersion")
        if want_rv and str(want_rv) != str(current.rv):
            raise errors.conflict(rtype.group, rtype.plural, name, errors.MODIFIED)
        return self._write(rtype, obj, current, subresource, dry_run)

    def _write(
        self, rtype: ResourceType, obj: JsonObject, current: Stored, subresource: str, dry_run: bool
    ) -> Stored:
        strategy = self.strategies[rtype]
        old = current.obj
        if subresource == "status":
            strategy.prepare_status_update(obj, old)
        else:
            strategy.prepare_update(obj, old)
        meta, old_meta = obj["metadata"], old["metadata"]
        # System fields survive any write, whatever the client sent.
        for key in (
            "uid",
            "creationTimestamp",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "generateName",
        ):
            if key in old_meta:
                meta[key] = old_meta[key]
            else:
                meta.pop(key, None)
        meta.pop("managedFields", None)
        meta.pop("selfLink", None)
        strategy.default(obj)
        self._validate(rtype, obj, old)
        meta["resourceVersion"] = str(current.rv)
        if obj == old:
            # Unchanged: no new revision and no watch event, as etcd's GuaranteedUpdate.
            return current
        if dry_run:
            return self.store.bucket(rtype).serialise(obj, current.rv)
        return self.store.put(rtype, obj)

    def patch(
        self,
        rtype: ResourceType,
        namespace: str,
        name: str,
        content_type: str,
        patch_body: bytes,
        *,
        subresource: str = "",
        dry_run: bool = False,
    ) -> Stored:
        if content_type not in PATCH_TYPES:
            if content_type == APPLY_PATCH:
                raise errors.unsupported_media_type(
                    "server-side apply is not supported by this test server; use client-side "
                    "apply (kubectl apply without --server-side)"
                )
            raise errors.unsupported_media_type(
                "the body of the request was in an unknown format - accepted media types "
                "include: " + ", ".join(PATCH_TYPES)
            )
        try:
            patch_doc = json.loads(patch_body)
        except (ValueError, UnicodeDecodeError) as err:
            raise errors.bad_request(f"error decoding patch: {err}") from None
        current = self.store.get(rtype, namespace, name)
        if current is None:
            raise errors.not_found(rtype.group, rtype.plural, name)
        try:
            if content_type == JSON_PATCH:
                patched = json_patch(current.copy(), patch_doc)
            elif content_type == MERGE_PATCH:
                if not isinstance(patch_doc, dict):
                    raise PatchError("a merge patch must be a JSON object")
                patched = merge_patch(current.copy(), patch_doc)
            else:
                patched = strategic_merge_patch(current.copy(), patch_doc, rtype.merge_key)
        except PatchError as err:
            if content_type == JSON_PATCH:
                raise errors.ApiError(422, "Invalid", str(err)) from None
            raise errors.bad_request(str(err)) from None
        obj = self._check_body(rtype, patched)
        meta = obj["metadata"]
        if meta.get("name") != name:
            raise errors.bad_request(
                f"the name of the object ({meta.get('name')}) does not match the name on the URL "
                f"({name})"
            )
        if rtype.namespaced and meta.get("namespace") != namespace:
            raise errors.bad_request(
                "the namespace of the provided object does not match the namespace sent on the "
                "request"
            )
        want_rv = meta.get("resourceVersion")
        if want_rv and str(want_rv) != str(current.rv):
            raise errors.conflict(rtype.group, rtype.plural, name, errors.MODIFIED)
        return self._write(rtype, obj, current, subresource, dry_run)

    def delete(
        self,
        rtype: ResourceType,
        namespace: str,
        name: str,
        options: JsonObject | None = None,
        *,
        dry_run: bool = False,
    ) -> Stored:
        current = self.store.get(rtype, namespace, name)
        if current is None:
            raise errors.not_found(rtype.group, rtype.plural, name)
        pre = (options or {}).get("preconditions") or {}
        meta = current.obj["metadata"]
        if pre.get("uid") and pre["uid"] != meta.get("uid"):
            raise errors.conflict(
                rtype.group,
                rtype.plural,
                name,
                f"Precondition failed: UID in precondition: {pre['uid']}, UID in "
                f"object meta: {meta.get('uid')}",
            )
        if pre.get("resourceVersion") and str(pre["resourceVersion"]) != str(current.rv):
            raise errors.conflict(
                rtype.group,
                rtype.plural,
                name,
                f"Precondition failed: ResourceVersion in precondition: "
                f"{pre['resourceVersion']}, ResourceVersion in object meta: {current.rv}",
            )
        if rtype is NAMESPACES:
            if name in IMMORTAL_NAMESPACES:
                raise errors.forbidden(
                    f'namespaces "{name}" is forbidden: this namespace may not be deleted',
                    "",
                    "namespaces",
                    name,
                )
            if dry_run:
                return current
            return self._delete_namespace(current)
        if dry_run:
            return current
        tomb = self.store.delete(rtype, namespace, name)
        assert tomb is not None
        return tomb

    def _delete_namespace(self, ns: Stored) -> Stored:
        """Terminate, empty and remove a namespace (the namespace controller's job, done inline)."""
        terminating = ns.copy()
        terminating["metadata"]["deletionTimestamp"] = now()
        terminating["status"] = {"phase": "Terminating"}
        marked = self.store.put(NAMESPACES, terminating)
        name = ns.name
        for bucket in self.store.buckets():
            if not bucket.rtype.namespaced:
                continue
            for key in list(bucket.keys_in(name)):
                self.store.delete(bucket.rtype, name, key.partition("/")[2])
        self.store.delete(NAMESPACES, "", name)
        return marked

    # -- preload -----------------------------------------------------------------------

    def load(self, objects: Iterable[JsonObject]) -> list[Stored]:
        """Store objects from manifests, creating or replacing, keeping their status.

        This is fixture loading, not an API write: status is kept (so a preloaded Pod
        can be Running with an IP) and a missing namespace is created.
        """
        out: list[Stored] = []
        for body in objects:
            api_version, kind = body.get("apiVersion", ""), body.get("kind", "")
            rtype = self.kinds.by_kind(api_version, kind)
            if rtype is None:
                raise errors.bad_request(
                    f'no kind "{kind}" is registered for version "{api_version}"'
                )
            namespace = ""
            if rtype.namespaced:
                namespace = (body.get("metadata") or {}).get("namespace") or "default"
                if self.store.get(NAMESPACES, "", namespace) is None:
                    self.create(NAMESPACES, "", {"metadata": {"name": namespace}})
            status = body.get("status")
            name = (body.get("metadata") or {}).get("name", "")
            current = self.store.get(rtype, namespace, name) if name else None
            if current is None:
                stored = self.create(rtype, namespace, body)
            else:
                replacement = dict(body)
                replacement["metadata"] = {**(body.get("metadata") or {}), "resourceVersion": ""}
                stored = self.update(rtype, namespace, name, replacement)
            if status is not None and rtype.has_status:
                with_status = stored.copy()
                with_status["status"] = status
                stored = self.update(
                    rtype, namespace, stored.name, with_status, subresource="status"
                )
            out.append(stored)
        return out
