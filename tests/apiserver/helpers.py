"""Small HTTP helpers for talking to the test API server without a Kubernetes client."""

from __future__ import annotations

import json
from typing import Any

import urllib3

from kubenet.testing.apiserver.server import ThreadedApiServer


class Http:
    """Raw HTTPS requests to a running server, with the admin token unless told otherwise."""

    def __init__(self, server: ThreadedApiServer, token: str | None = None) -> None:
        self.server = server
        self.token = server.admin_token if token is None else token
        self.pool = urllib3.PoolManager(ca_certs=str(server.ca_path), cert_reqs="CERT_REQUIRED")

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        headers: dict[str, str] | None = None,
        content_type: str = "application/json",
        stream: bool = False,
        timeout: float = 10.0,
    ) -> urllib3.BaseHTTPResponse:
        hdrs = {"Accept": "application/json"}
        if self.token:
            hdrs["Authorization"] = f"Bearer {self.token}"
        data: bytes | None = None
        if body is not None:
            data = body if isinstance(body, bytes) else json.dumps(body).encode()
            hdrs["Content-Type"] = content_type
        hdrs.update(headers or {})
        return self.pool.request(
            method,
            self.server.url + path,
            body=data,
            headers=hdrs,
            preload_content=not stream,
            timeout=timeout,
            redirect=False,
        )

    def json(self, method: str, path: str, body: Any = None, **kw: Any) -> tuple[int, Any]:
        resp = self.request(method, path, body, **kw)
        return resp.status, json.loads(resp.data) if resp.data else None
