"""The few API calls the lab makes, to the API server inside the node namespace.

The lab talks to the embedded API server as any client would (HTTPS, the server's
CA, a bearer token), only from a thread inside the node namespace, where the server
listens. Objects are plain dicts, as the API sends them.
"""

from __future__ import annotations

import json
import ssl
from typing import Any
from urllib.parse import quote, urlsplit

from kubenet.lab.inside import Response, call_in, http_request
from kubenet.lab.state import LabState

JsonObject = dict[str, Any]

SERVICE_NAME_LABEL = "kubernetes.io/service-name"


class LabApiError(RuntimeError):
    """The API server refused a request (the message is its own)."""


def _path(kind: str, namespace: str | None = None, name: str | None = None) -> str:
    group = "/api/v1" if kind in ("services", "nodes") else "/apis/discovery.k8s.io/v1"
    path = group + (f"/namespaces/{quote(namespace)}" if namespace else "") + f"/{kind}"
    return path + (f"/{quote(name)}" if name else "")


class LabApi:
    """Requests to the lab's API server, made from inside the node namespace."""

    def __init__(self, state: LabState) -> None:
        self._netns = state.netns("node")
        url = urlsplit(state.api_url)
        self._host = url.hostname or ""
        self._port = url.port or 443
        self._token = state.token
        self._tls = ssl.create_default_context(cafile=state.ca_path)

    def _call(self, method: str, path: str, body: JsonObject | None = None) -> JsonObject:
        headers = {"Authorization": f"Bearer {self._token}", "Accept": "application/json"}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"

        def request() -> Response:
            return http_request(
                self._host,
                self._port,
                path,
                method=method,
                body=data,
                headers=headers,
                tls=self._tls,
            )

        answer = call_in(self._netns, request)
        try:
            decoded: JsonObject = json.loads(answer.body)
        except ValueError:
            decoded = {"message": answer.text}
        if answer.status >= 300:
            raise LabApiError(f"{method} {path}: {answer.status} {decoded.get('message', '')}")
        return decoded

    def get_service(self, namespace: str, name: str) -> JsonObject:
        return self._call("GET", _path("services", namespace, name))

    def service_slices(self, namespace: str, name: str) -> list[JsonObject]:
        selector = quote(f"{SERVICE_NAME_LABEL}={name}")
        found = self._call("GET", _path("endpointslices", namespace) + f"?labelSelector={selector}")
        items: list[JsonObject] = found.get("items", [])
        return sorted(items, key=lambda s: str(s["metadata"]["name"]))

    def put_slice(self, obj: JsonObject) -> JsonObject:
        meta = obj["metadata"]
        return self._call("PUT", _path("endpointslices", meta["namespace"], meta["name"]), obj)

    def create_slice(self, obj: JsonObject) -> JsonObject:
        return self._call("POST", _path("endpointslices", obj["metadata"]["namespace"]), obj)

    def delete_slice(self, namespace: str, name: str) -> None:
        self._call("DELETE", _path("endpointslices", namespace, name))

    def list_all(self, kind: str) -> list[JsonObject]:
        """Every object of ``services``, ``endpointslices`` or ``nodes``, with kind set."""
        found = self._call("GET", _path(kind))
        item_kind = {"services": "Service", "endpointslices": "EndpointSlice", "nodes": "Node"}
        api_version = "v1" if kind in ("services", "nodes") else "discovery.k8s.io/v1"
        items: list[JsonObject] = found.get("items", [])
        return [{"apiVersion": api_version, "kind": item_kind[kind], **item} for item in items]
