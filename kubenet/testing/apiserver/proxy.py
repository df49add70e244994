"""The service proxy subresource: ``/api/v1/namespaces/{ns}/services/{id}/proxy/{path}``.

``{id}`` is ``name``, ``name:port`` or ``scheme:name:port``, where port is a Service
port name or number, as upstream's ``ResourceLocation`` reads it.  The server picks
one ready endpoint for that port from the Service's EndpointSlices (label
``kubernetes.io/service-name``) and forwards the HTTP request there.

Differences from kube-apiserver, on purpose: endpoints come from EndpointSlices
rather than the legacy Endpoints object; the endpoint's ``targetRef`` pod is not
required to exist (tests often have endpoints without pods); loopback endpoints
are allowed (upstream refuses them) because test backends listen on loopback;
HTML bodies are passed through without link rewriting; upgrades are not proxied.
The caller's ``Authorization`` header is never forwarded (upstream drops it after
authenticating).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiohttp import web

from kubenet.testing.apiserver import errors
from kubenet.testing.apiserver.resources import ENDPOINTSLICES, SERVICES
from kubenet.testing.apiserver.store import Store

JsonObject = dict[str, Any]

#: Hop-by-hop headers (RFC 9110 section 7.6.1) and the credentials this server consumed.
_DROP_REQUEST = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "authorization",
        "host",
        "content-length",
    }
)
_DROP_RESPONSE = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "content-length",
    }
)


@dataclass(frozen=True)
class Location:
    scheme: str
    host: str
    port: int

    def url(self, path: str, query: str) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}{path}" + (f"?{query}" if query else "")


def split_scheme_name_port(ident: str) -> tuple[str, str, str]:
    """``[scheme:]name[:port]`` (upstream's SplitSchemeNamePort)."""
    parts = ident.split(":")
    if len(parts) == 1:
        scheme, name, port = "", parts[0], ""
    elif len(parts) == 2:
        scheme, name, port = "", parts[0], parts[1]
    elif len(parts) == 3:
        scheme, name, port = parts
        if scheme not in ("http", "https"):
            raise errors.bad_request(f'invalid service request "{ident}"')
    else:
        raise errors.bad_request(f'invalid service request "{ident}"')
    if not name:
        raise errors.bad_request(f'invalid service request "{ident}"')
    return scheme, name, port


def resolve(store: Store, namespace: str, ident: str, rng: random.Random | None = None) -> Location:
    """Pick a ready endpoint of the Service port ``ident`` names."""
    scheme, name, port = split_scheme_name_port(ident)
    svc = store.get(SERVICES, namespace, name)
    if svc is None:
        raise errors.not_found("", "services", name)
    if port.isdigit():
        number = int(port)
        match = [p for p in svc.obj["spec"].get("ports") or [] if p.get("port") == number]
        if not match:
            raise errors.service_unavailable(f'no service port {number} found for service "{name}"')
        port = match[0].get("name", "")
    candidates: list[tuple[str, int]] = []
    bucket = store.bucket(ENDPOINTSLICES)
    for key in bucket.keys_in(namespace):
        eps = bucket.objects[key].obj
        if (eps["metadata"].get("labels") or {}).get("kubernetes.io/service-name") != name:
            continue
        slice_ports = [p for p in eps.get("ports") or [] if (p.get("name") or "") == port]
        if not slice_ports or slice_ports[0].get("port") is None:
            continue
        for ep in eps.get("endpoints") or []:
            # A nil "ready" condition means ready (EndpointConditions doc).
            if (ep.get("conditions") or {}).get("ready") is False:
                continue
            for address in (ep.get("addresses") or [])[:1]:
                candidates.append((address, int(slice_ports[0]["port"])))
    if not candidates:
        raise errors.service_unavailable(f'no endpoints available for service "{ident}"')
    host, target = (rng or random).choice(candidates)
    return Location(scheme or "http", host, target)


async def forward(
    request: web.Request, location: Location, path: str, session: aiohttp.ClientSession
) -> web.StreamResponse:
    """Send ``request`` to ``location`` and stream the answer back."""
    headers = {k: v for k, v in request.headers.items() if k.lower() not in _DROP_REQUEST}
    peer = request.remote or ""
    prior = request.headers.get("X-Forwarded-For")
    headers["X-Forwarded-For"] = f"{prior}, {peer}" if prior else peer
    body = await request.read() if request.can_read_body else None
    url = location.url(path, request.query_string)
    try:
        async with session.request(
            request.method,
            url,
            headers=headers,
            data=body,
            allow_redirects=False,
            ssl=False,
        ) as upstream:
            response = web.StreamResponse(status=upstream.status, reason=upstream.reason)
            for key, value in upstream.headers.items():
                if key.lower() not in _DROP_RESPONSE:
                    response.headers.add(key, value)
            await response.prepare(request)
            async for chunk in upstream.content.iter_any():
                await response.write(chunk)
            await response.write_eof()
            return response
    except (aiohttp.ClientError, OSError) as err:
        raise errors.service_unavailable(
            f"error trying to reach service: dial tcp {location.host}:{location.port}: {err}"
        ) from None
