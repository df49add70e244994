"""kubenet.forward: kubectl proxy's job as a library.

The pieces, each usable on its own:

- :mod:`~kubenet.forward.filter`: kubectl proxy's accept/reject rules (pure);
- :mod:`~kubenet.forward.paths`: path normalisation and prefix routing (pure);
- :mod:`~kubenet.forward.headers`: header rewriting between client and API server (pure);
- :mod:`~kubenet.forward.http1`: HTTP/1.1 framing in both directions (pure);
- :mod:`~kubenet.forward.credentials`: kubeconfig -> upstream credentials;
- :mod:`~kubenet.forward.upstream`: pooled connections to one API server;
- :mod:`~kubenet.forward.tunnel`: through an HTTP or SOCKS5 proxy (``proxy-url``);
- :mod:`~kubenet.forward.front`: the HTTP/1.1 server side (connections, exchanges);
- :mod:`~kubenet.forward.server`: the proxy core (:class:`ApiProxy`);
- :mod:`~kubenet.forward.static`, :mod:`~kubenet.forward.observe`: files, access log,
  metrics;
- :mod:`~kubenet.forward.serve`: listening, metrics listener, graceful shutdown.

Embedding, in a few lines::

    from kubenet.forward import ApiProxy, KubeconfigOptions, Listener, ProxyConfig
    from kubenet.forward import run_loop, serve, upstreams_for

    upstreams = upstreams_for(KubeconfigOptions(context="kind-kind"))
    proxy = ApiProxy(ProxyConfig(), upstreams)
    run_loop(serve(proxy, Listener(port=8001), ready=print))
"""

from .clientauth import ClientTokens, TokenFileError
from .credentials import (
    Auth,
    ClusterCredentials,
    CredentialsError,
    KubeconfigOptions,
    load_credentials,
    load_kubeconfig,
)
from .filter import (
    DEFAULT_ACCEPT_HOSTS,
    DEFAULT_ACCEPT_PATHS,
    DEFAULT_REJECT_METHODS,
    DEFAULT_REJECT_PATHS,
    FilterError,
    FilterRules,
    host_of,
    is_upgrade_request,
)
from .front import Exchange, FrontServer
from .observe import AccessLog, ProxyMetrics
from .paths import Canonical, PathRefused, Redirect, Router, normalise
from .serve import Listener, bind, format_address, new_event_loop, run_loop, serve
from .server import ApiProxy, ProxyConfig
from .upstream import PoolSettings, Upstream, UpstreamError, upstreams_for

__all__ = [
    "DEFAULT_ACCEPT_HOSTS",
    "DEFAULT_ACCEPT_PATHS",
    "DEFAULT_REJECT_METHODS",
    "DEFAULT_REJECT_PATHS",
    "AccessLog",
    "ApiProxy",
    "Auth",
    "Canonical",
    "ClientTokens",
    "ClusterCredentials",
    "CredentialsError",
    "Exchange",
    "FilterError",
    "FilterRules",
    "FrontServer",
    "KubeconfigOptions",
    "Listener",
    "PathRefused",
    "PoolSettings",
    "ProxyConfig",
    "ProxyMetrics",
    "Redirect",
    "Router",
    "TokenFileError",
    "Upstream",
    "UpstreamError",
    "bind",
    "format_address",
    "host_of",
    "is_upgrade_request",
    "load_credentials",
    "load_kubeconfig",
    "new_event_loop",
    "normalise",
    "run_loop",
    "serve",
    "upstreams_for",
]
