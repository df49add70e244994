"""A small Kubernetes-compatible API server for tests and demos.

**Test and demo infrastructure, never a production control plane.**  It keeps
everything in memory, runs no controllers (no scheduler, no kubelet, no
EndpointSlice controller: what you store is what clients see), and its
authorization is a fixed policy, not RBAC.  It exists because node-proxy and
api-proxy need a real API to watch and to forward to, and no kube-apiserver can be
installed where kubenet is developed.

It speaks the API faithfully enough for the ``kubernetes`` Python client and
``kubectl`` (get, watch, apply, patch, delete, exec, ``get --raw`` through the
service proxy): discovery, Status errors, resource versions and 410 Gone,
bookmarks, pagination, selectors, JSON / merge / strategic merge patches, the
service proxy, exec and port-forward (WebSocket, and kubectl's SPDY tunnel), token and
client-certificate
authentication over TLS.  See ``docs/apiserver.md`` for what is and is not
supported.

In-process::

    from kubenet.testing.apiserver import running_apiserver

    with running_apiserver() as srv:        # a free loopback port, TLS, tokens
        print(srv.url, srv.kubeconfig)       # kubeconfig: contexts kubenet-token, -cert, ...

From a shell::

    python -m kubenet.testing.apiserver --port 0 --kubeconfig-out kubeconfig --load examples/
"""

from kubenet.testing.apiserver.api import Api, ListOptions, ServerSettings
from kubenet.testing.apiserver.errors import ApiError
from kubenet.testing.apiserver.resources import RESOURCES, Kinds, ResourceType
from kubenet.testing.apiserver.server import (
    ApiServer,
    ServerConfig,
    ThreadedApiServer,
    running_apiserver,
)
from kubenet.testing.apiserver.store import Store

__all__ = [
    "RESOURCES",
    "Api",
    "ApiError",
    "ApiServer",
    "Kinds",
    "ListOptions",
    "ResourceType",
    "ServerConfig",
    "ServerSettings",
    "Store",
    "ThreadedApiServer",
    "running_apiserver",
]
