"""The HTTP face of the server: routing, content negotiation, bodies, Status errors.

One catch-all aiohttp handler reads the request the way kube-apiserver does
(:mod:`~kubenet.testing.apiserver.requestinfo`), authenticates and authorizes it,
and dispatches to discovery, the verbs in :class:`~kubenet.testing.apiserver.api.Api`,
watch streams, the service proxy or the exec / port-forward upgrades.  Every
failure becomes a ``Status`` with the real server's code; an unexpected exception
is a 500 ``InternalError`` and the server keeps serving.
"""

from __future__ import annotations

import json
import logging
import ssl
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import yaml
from aiohttp import web

from kubenet.testing.apiserver import (
    discovery,
    errors,
    openapi,
    portforward,
    proxy,
    tables,
    upgrade,
)
from kubenet.testing.apiserver.api import APPLY_PATCH, PATCH_TYPES, Api, ListOptions
from kubenet.testing.apiserver.auth import (
    Attributes,
    Authenticator,
    User,
    authorize,
    impersonate,
)
from kubenet.testing.apiserver.errors import ApiError
from kubenet.testing.apiserver.requestinfo import RequestInfo, parse
from kubenet.testing.apiserver.resources import NAMESPACES, PODS, SERVICES, Kinds, ResourceType
from kubenet.testing.apiserver.store import Page, Stored, dumps
from kubenet.testing.apiserver.watch import WatchSettings, WatchStream

log = logging.getLogger(__name__)

JsonObject = dict[str, Any]
JSON = "application/json"
YAML = "application/yaml"
_BODY_TYPES = (JSON, YAML)


@dataclass
class Context:
    """Everything the handlers share."""

    api: Api
    kinds: Kinds
    authenticator: Authenticator
    watch: WatchSettings
    forward: portforward.ForwardPolicy
    version: str
    max_body: int
    server_address: str = ""
    session: aiohttp.ClientSession | None = None
    #: The most recent requests as (method, path with query, user name): lets a test
    #: check what a client or proxy really sent, and as whom.
    recent: deque[tuple[str, str, str]] = field(default_factory=lambda: deque(maxlen=1000))


@dataclass(frozen=True)
class Negotiated:
    """What the client accepts: the encoding and any conversion (Table, metadata)."""

    encoding: str = JSON
    convert: str = ""
    convert_version: str = "meta.k8s.io/v1"


def negotiate(accept: str) -> Negotiated:
    """Pick the first acceptable media type in ``accept`` (406 if none)."""
    if not accept.strip():
        return Negotiated()
    for clause in accept.split(","):
        media, *params_text = [p.strip() for p in clause.split(";")]
        params = dict(p.partition("=")[::2] for p in params_text if "=" in p)
        media = media.lower()
        if media in (JSON, "*/*", "application/*"):
            as_kind = params.get("as", "")
            if not as_kind:
                return Negotiated(JSON)
            if params.get("g") != "meta.k8s.io" or params.get("v") not in ("v1", "v1beta1"):
                continue
            if as_kind in ("Table", "PartialObjectMetadata", "PartialObjectMetadataList"):
                return Negotiated(JSON, as_kind, f"meta.k8s.io/{params['v']}")
            continue
        if media in (YAML, "application/yaml"):
            return Negotiated(YAML)
    raise errors.not_acceptable(
        "only the following media types are accepted: application/json, application/yaml"
    )


def status_response(err: ApiError) -> web.Response:
    headers = dict(err.extra_headers)
    if err.retry_after is not None:
        headers["Retry-After"] = str(err.retry_after)
    return web.Response(status=err.code, body=err.body(), content_type=JSON, headers=headers)


def _summary(data: bytes) -> str:
    if not data:
        return "<empty>"
    if data[:1] == b"{":
        return data[:30].decode(errors="replace") + (" ..." if len(data) > 30 else "")
    return data[:30].hex() + (" ..." if len(data) > 30 else "")


class Handler:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    # -- entry -------------------------------------------------------------------------

    async def __call__(self, request: web.Request) -> web.StreamResponse:
        try:
            return await self._handle(request)
        except ApiError as err:
            return status_response(err)
        except web.HTTPRequestEntityTooLarge:
            return status_response(errors.too_large(self.ctx.max_body))
        except (ConnectionResetError, aiohttp.ClientConnectionResetError, web.HTTPRedirection):
            raise
        except Exception as err:  # keep serving whatever one request did
            log.exception("request %s %s failed", request.method, request.path)
            return status_response(errors.internal(str(err) or type(err).__name__))

    def _user(self, request: web.Request) -> User:
        peercert = None
        ssl_object = request.transport.get_extra_info("ssl_object") if request.transport else None
        if isinstance(ssl_object, ssl.SSLObject):
            peercert = ssl_object.getpeercert() or None
        user = self.ctx.authenticator.authenticate(
            request.headers.get("Authorization", ""), peercert
        )
        return impersonate(user, request.headers, request.headers.getall("Impersonate-Group", []))

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        user = self._user(request)
        info = parse(request.method, request.path, request.query)
        self.ctx.recent.append((request.method, request.path_qs, user.name))
        authorize(
            user,
            Attributes(
                verb=info.verb,
                path=info.path,
                resource=info.resource,
                subresource=info.subresource,
                group=info.group,
                namespace=info.namespace,
                name=info.name,
            ),
        )
        if not info.is_resource:
            return await self._non_resource(request, info)
        rtype = self.ctx.kinds.by_path(info.group, info.version, info.resource)
        if rtype is None:
            raise errors.unknown_path()
        namespace = info.namespace
        if rtype is NAMESPACES:
            namespace = ""
        elif not rtype.namespaced and namespace:
            raise errors.unknown_path()
        if info.subresource:
            return await self._subresource(request, info, rtype, namespace)
        return await self._resource(request, info, rtype, namespace)

    # -- non-resource paths ------------------------------------------------------------

    async def _non_resource(self, request: web.Request, info: RequestInfo) -> web.StreamResponse:
        path = info.path.rstrip("/") or "/"
        if request.method not in ("GET", "HEAD"):
            raise errors.method_not_allowed()
        if path in ("/healthz", "/livez", "/readyz"):
            return web.Response(text="ok", content_type="text/plain")
        kinds = self.ctx.kinds
        doc: JsonObject | None = None
        if path == "/version":
            doc = discovery.version_info(self.ctx.version)
        elif path == "/api":
            doc = discovery.api_versions(self.ctx.server_address)
        elif path == "/apis":
            doc = discovery.api_group_list(kinds)
        elif path == "/openapi/v3":
            doc = openapi.root(kinds, self.ctx.version)
        elif path.startswith("/openapi/v3/"):
            parts = path.split("/")[3:]
            if parts[0] == "api" and len(parts) == 2:
                doc = openapi.group_version_document(kinds, "", parts[1], self.ctx.version)
            elif parts[0] == "apis" and len(parts) == 3:
                doc = openapi.group_version_document(kinds, parts[1], parts[2], self.ctx.version)
        else:
            parts = path.strip("/").split("/")
            if parts[0] == "api" and len(parts) == 2:
                doc = discovery.api_resource_list(kinds, "", parts[1])
            elif parts[0] == "apis" and len(parts) == 2:
                doc = discovery.api_group(kinds, parts[1])
            elif parts[0] == "apis" and len(parts) == 3:
                doc = discovery.api_resource_list(kinds, parts[1], parts[2])
        if doc is None:
            raise errors.unknown_path()
        return web.Response(body=dumps(doc), content_type=JSON)

    # -- main resource -----------------------------------------------------------------

    async def _resource(
        self, request: web.Request, info: RequestInfo, rtype: ResourceType, namespace: str
    ) -> web.StreamResponse:
        api = self.ctx.api
        verb = info.verb
        if (
            rtype.namespaced
            and not namespace
            and (info.name or verb in ("create", "deletecollection"))
        ):
            raise errors.unknown_path()
        if (verb == "create" and info.name) or (verb in ("update", "patch") and not info.name):
            raise errors.method_not_allowed()
        dry_run = self._dry_run(request)
        if verb == "get":
            return self._object(request, rtype, api.get(rtype, namespace, info.name))
        if verb in ("list", "watch"):
            query = dict(request.query)
            if info.name:
                # Watching one object is a watch of the collection narrowed to its name.
                selector = query.get("fieldSelector", "")
                query["fieldSelector"] = f"metadata.name={info.name}" + (
                    f",{selector}" if selector else ""
                )
            opts = ListOptions.parse(rtype, namespace or None, query, watch=verb == "watch")
            if verb == "watch":
                return await self._watch(request, rtype, opts)
            return self._list(request, rtype, api.list_page(rtype, opts))
        if verb == "create":
            body = await self._decode(request, rtype)
            stored = api.create(rtype, namespace, body, dry_run=dry_run)
            return self._object(request, rtype, stored, status=201)
        if verb == "update":
            body = await self._decode(request, rtype)
            return self._object(
                request, rtype, api.update(rtype, namespace, info.name, body, dry_run=dry_run)
            )
        if verb == "patch":
            ctype, data = await self._patch_body(request)
            stored = api.patch(rtype, namespace, info.name, ctype, data, dry_run=dry_run)
            return self._object(request, rtype, stored)
        if verb == "delete":
            options = await self._delete_options(request)
            stored = api.delete(rtype, namespace, info.name, options, dry_run=dry_run)
            if rtype.returns_deleted:
                return self._object(request, rtype, stored)
            details: JsonObject = {"name": stored.name}
            if rtype.group:
                details["group"] = rtype.group
            details["kind"] = rtype.plural
            details["uid"] = stored.obj["metadata"].get("uid", "")
            return self._json(request, errors.success_status(details))
        if verb == "deletecollection":
            options = await self._delete_options(request)
            opts = ListOptions.parse(rtype, namespace or None, dict(request.query), watch=False)
            page = api.list_page(rtype, ListOptions(opts.namespace, opts.labels, opts.fields))
            deleted = [
                api.delete(rtype, s.namespace, s.name, options, dry_run=dry_run) for s in page.items
            ]
            return self._list(request, rtype, Page(deleted, api.store.rv))
        raise errors.method_not_supported(rtype.group, rtype.plural, verb)

    async def _subresource(
        self, request: web.Request, info: RequestInfo, rtype: ResourceType, namespace: str
    ) -> web.StreamResponse:
        api, sub = self.ctx.api, info.subresource
        if sub not in rtype.subresources or (rtype.namespaced and not namespace):
            raise errors.unknown_path()
        if sub == "status":
            if info.verb == "get":
                return self._object(request, rtype, api.get(rtype, namespace, info.name))
            dry_run = self._dry_run(request)
            if info.verb == "update":
                body = await self._decode(request, rtype)
                stored = api.update(
                    rtype, namespace, info.name, body, subresource="status", dry_run=dry_run
                )
                return self._object(request, rtype, stored)
            if info.verb == "patch":
                ctype, data = await self._patch_body(request)
                stored = api.patch(
                    rtype, namespace, info.name, ctype, data, subresource="status", dry_run=dry_run
                )
                return self._object(request, rtype, stored)
            raise errors.method_not_supported(rtype.group, f"{rtype.plural}/status", info.verb)
        if rtype is SERVICES and sub == "proxy":
            return await self._service_proxy(request, info, namespace)
        if rtype is PODS and sub in ("exec", "portforward"):
            if request.method not in ("GET", "POST"):
                raise errors.method_not_supported(rtype.group, f"pods/{sub}", info.verb)
            pod = api.get(rtype, namespace, info.name).obj
            if sub == "exec":
                phase = (pod.get("status") or {}).get("phase")
                if phase in ("Succeeded", "Failed"):
                    raise errors.bad_request(
                        f"cannot exec into a container in a completed pod; current phase is {phase}"
                    )
                return await upgrade.serve_exec(request, pod)
            return await portforward.serve(request, pod, self.ctx.forward)
        if rtype is NAMESPACES and sub == "finalize" and info.verb == "update":
            body = await self._decode(request, rtype)
            return self._object(request, rtype, api.update(rtype, "", info.name, body))
        raise errors.unknown_path()

    async def _service_proxy(
        self, request: web.Request, info: RequestInfo, namespace: str
    ) -> web.StreamResponse:
        location = proxy.resolve(self.ctx.api.store, namespace, info.name)
        raw = request.rel_url.raw_path.split("/")
        rest = "/" + "/".join(raw[info.sub_index + 1 :]) if info.sub_index + 1 < len(raw) else ""
        if not rest:
            if request.method in ("GET", "HEAD"):
                query = f"?{request.query_string}" if request.query_string else ""
                raise web.HTTPMovedPermanently(request.rel_url.raw_path + "/" + query)
            rest = "/"
        if self.ctx.session is None:
            raise errors.service_unavailable("the proxy is not running")
        return await proxy.forward(request, location, rest, self.ctx.session)

    # -- watch -------------------------------------------------------------------------

    async def _watch(
        self, request: web.Request, rtype: ResourceType, opts: ListOptions
    ) -> web.StreamResponse:
        neg = negotiate(request.headers.get("Accept", ""))
        query = request.query
        timeout = self.ctx.watch.default_timeout
        if query.get("timeoutSeconds"):
            try:
                timeout = float(int(query["timeoutSeconds"]))
            except ValueError:
                raise errors.bad_request(
                    f"invalid timeoutSeconds: {query['timeoutSeconds']!r}"
                ) from None
        transform: Callable[[Stored], Any] | None = None
        if neg.convert == "Table":
            first = [True]
            include = query.get("includeObject", "Metadata")

            def to_table(stored: Stored) -> Any:
                headers, first[0] = first[0], False
                return tables.table(
                    rtype,
                    [stored],
                    list_meta={"resourceVersion": str(stored.rv)},
                    include_object=include,
                    headers=headers,
                    api_version=neg.convert_version,
                )

            transform = to_table
        elif neg.convert == "PartialObjectMetadata":

            def to_meta(stored: Stored) -> Any:
                return tables.partial_metadata(stored, neg.convert_version)

            transform = to_meta
        send_initial = query.get("sendInitialEvents", "") in ("1", "true")
        stream = WatchStream(
            self.ctx.api.store,
            rtype,
            opts,
            allow_bookmarks=query.get("allowWatchBookmarks", "") in ("1", "true"),
            send_initial_events=send_initial,
            timeout=max(timeout, 0.0),
            bookmark_interval=self.ctx.watch.bookmark_interval,
            transform=transform,
        )
        return await stream.serve(request, JSON)

    # -- encoding ----------------------------------------------------------------------

    def _json(self, request: web.Request, doc: JsonObject, status: int = 200) -> web.Response:
        neg = negotiate(request.headers.get("Accept", ""))
        if neg.encoding == YAML:
            return web.Response(
                status=status, text=yaml.safe_dump(doc, sort_keys=False), content_type=YAML
            )
        return web.Response(status=status, body=dumps(doc), content_type=JSON)

    def _object(
        self, request: web.Request, rtype: ResourceType, stored: Stored, status: int = 200
    ) -> web.Response:
        neg = negotiate(request.headers.get("Accept", ""))
        if neg.convert == "Table":
            doc = tables.table(
                rtype,
                [stored],
                list_meta={"resourceVersion": str(stored.rv)},
                include_object=request.query.get("includeObject", "Metadata"),
                api_version=neg.convert_version,
            )
            return web.Response(status=status, body=dumps(doc), content_type=JSON)
        if neg.convert == "PartialObjectMetadata":
            return web.Response(
                status=status,
                body=dumps(tables.partial_metadata(stored, neg.convert_version)),
                content_type=JSON,
            )
        if neg.convert:
            raise errors.not_acceptable(f"{neg.convert} is not available for a single object")
        if neg.encoding == YAML:
            return web.Response(
                status=status, text=yaml.safe_dump(stored.obj, sort_keys=False), content_type=YAML
            )
        return web.Response(status=status, body=stored.raw, content_type=JSON)

    def _list(self, request: web.Request, rtype: ResourceType, page: Page) -> web.Response:
        neg = negotiate(request.headers.get("Accept", ""))
        meta: JsonObject = {"resourceVersion": str(page.rv)}
        if page.continue_token:
            meta["continue"] = page.continue_token
        if page.remaining is not None:
            meta["remainingItemCount"] = page.remaining
        if neg.convert == "Table":
            doc = tables.table(
                rtype,
                page.items,
                list_meta=meta,
                include_object=request.query.get("includeObject", "Metadata"),
                api_version=neg.convert_version,
            )
            return web.Response(body=dumps(doc), content_type=JSON)
        if neg.convert == "PartialObjectMetadataList":
            doc = {
                "kind": "PartialObjectMetadataList",
                "apiVersion": neg.convert_version,
                "metadata": meta,
                "items": [tables.partial_metadata(s, neg.convert_version) for s in page.items],
            }
            return web.Response(body=dumps(doc), content_type=JSON)
        if neg.convert:
            raise errors.not_acceptable(f"{neg.convert} is not available for a list")
        if neg.encoding == YAML:
            doc = {
                "kind": rtype.list_kind,
                "apiVersion": rtype.api_version,
                "metadata": meta,
                "items": [
                    {k: v for k, v in s.obj.items() if k not in ("kind", "apiVersion")}
                    for s in page.items
                ],
            }
            return web.Response(text=yaml.safe_dump(doc, sort_keys=False), content_type=YAML)
        head = dumps({"kind": rtype.list_kind, "apiVersion": rtype.api_version, "metadata": meta})
        # Items are pre-serialised; a list is a join (upstream writes items without kind).
        body = head[:-1] + b',"items":[' + b",".join(s.item_raw() for s in page.items) + b"]}"
        return web.Response(body=body, content_type=JSON)

    # -- bodies ------------------------------------------------------------------------

    async def _read(self, request: web.Request) -> bytes:
        length = request.content_length
        if length is not None and length > self.ctx.max_body:
            raise errors.too_large(self.ctx.max_body)
        data = await request.read()
        if len(data) > self.ctx.max_body:
            raise errors.too_large(self.ctx.max_body)
        return data

    async def _decode(self, request: web.Request, rtype: ResourceType) -> Any:
        data = await self._read(request)
        ctype = request.content_type or JSON
        if ctype == "application/octet-stream" and not request.headers.get("Content-Type"):
            ctype = JSON
        if ctype not in _BODY_TYPES:
            raise errors.unsupported_media_type(
                f"the body of the request was in an unknown format - accepted media types include: "
                f"{', '.join(_BODY_TYPES)}"
            )
        try:
            if ctype == YAML:
                return yaml.safe_load(data.decode())
            return json.loads(data)
        except (ValueError, yaml.YAMLError, UnicodeDecodeError) as err:
            kind = "yaml" if ctype == YAML else "json"
            raise errors.bad_request(
                f"the object provided is unrecognized (must be of type {rtype.kind}): couldn't get "
                f"version/kind; {kind} parse error: {err} ({_summary(data)})"
            ) from None

    async def _patch_body(self, request: web.Request) -> tuple[str, bytes]:
        data = await self._read(request)
        ctype = request.content_type
        if ctype not in PATCH_TYPES and ctype != APPLY_PATCH:
            raise errors.unsupported_media_type(
                "the body of the request was in an unknown format - accepted media types include: "
                + ", ".join(PATCH_TYPES)
            )
        return ctype, data

    async def _delete_options(self, request: web.Request) -> JsonObject:
        data = await self._read(request) if request.can_read_body else b""
        if not data.strip():
            return {}
        try:
            options = json.loads(data)
        except ValueError as err:
            raise errors.bad_request(f"error decoding DeleteOptions: {err}") from None
        if not isinstance(options, dict):
            raise errors.bad_request("DeleteOptions must be an object")
        return options

    @staticmethod
    def _dry_run(request: web.Request) -> bool:
        values = request.query.getall("dryRun", [])
        for value in values:
            if value != "All":
                raise errors.bad_request(f'Invalid dryRun value "{value}": only "All" is supported')
        return bool(values)


def make_app(ctx: Context) -> web.Application:
    """The aiohttp application for ``ctx``."""
    app = web.Application(client_max_size=ctx.max_body + 1)
    handler = Handler(ctx)

    async def session_ctx(app: web.Application) -> Any:
        ctx.session = aiohttp.ClientSession(
            auto_decompress=False, timeout=aiohttp.ClientTimeout(total=60)
        )
        yield
        await ctx.session.close()
        ctx.session = None

    app.cleanup_ctx.append(session_ctx)

    async def route(request: web.Request) -> web.StreamResponse:
        return await handler(request)

    app.router.add_route("*", "/{tail:.*}", route)
    return app
