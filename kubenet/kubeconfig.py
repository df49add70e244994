"""Where node-proxy finds the API server, and how it proves who it is.

kube-proxy's three ways, in its order of precedence:

* ``--kubeconfig FILE`` (optionally with ``--master URL`` overriding the server): the
  kubeconfig is read by the kubernetes client's own loader
  (``kubernetes.config.load_kube_config``), so every way a kubeconfig can carry
  credentials (bearer tokens and token files, client certificates and keys inline or
  as files, exec plugins, basic auth) works as the client makes it work;
* ``--master URL`` alone: that server, with no credentials;
* neither: the in-cluster service account, from ``KUBERNETES_SERVICE_HOST`` /
  ``KUBERNETES_SERVICE_PORT`` and the token and CA under
  ``/var/run/secrets/kubernetes.io/serviceaccount`` (read by the client's in-cluster
  loader). The kubelet rotates projected service-account tokens by replacing the
  file, so the file is checked on every request and read again when it changed, or
  a minute after it was last read.

What comes out is a :class:`ClusterAccess`: the server URL, an ``ssl.SSLContext`` and
:meth:`ClusterAccess.headers`, which asks the loader for the current token on every
request so that refreshed credentials are used at once. Tokens never appear in
``repr`` or error messages.
"""

from __future__ import annotations

import os
import ssl
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

#: Where the kubelet mounts a Pod's service-account credentials.
SERVICE_ACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")


class KubeconfigError(Exception):
    """No usable connection settings (the message is safe to show)."""


class TokenFile:
    """A bearer token kept in a file that is replaced when the token rotates."""

    #: Read the file again at least this often, even if it looks unchanged.
    MAX_AGE = 60.0

    def __init__(self, path: Path) -> None:
        self.path = path
        self._stamp: tuple[int, int] | None = None
        self._read_at = 0.0
        self._token = ""

    def __repr__(self) -> str:
        return f"TokenFile({str(self.path)!r})"

    def token(self) -> str:
        """The current token (the last one read, if the file cannot be read now)."""
        try:
            st = self.path.stat()
            stamp = (st.st_mtime_ns, st.st_size)
            now = time.monotonic()
            if stamp != self._stamp or now - self._read_at > self.MAX_AGE:
                self._token = self.path.read_text().strip()
                self._stamp, self._read_at = stamp, now
        except OSError:
            pass
        return self._token


@dataclass(frozen=True)
class ClusterAccess:
    """How to reach the API server: its URL, TLS settings and credentials."""

    server: str
    ssl_context: ssl.SSLContext | None = None
    #: The name to verify the server's certificate against, when not the URL's host.
    server_hostname: str | None = None
    #: A service-account token file (in-cluster), read as it changes.
    token_file: TokenFile | None = None
    # The kubernetes client's Configuration: the source of kubeconfig credentials.
    _configuration: Any = field(default=None, repr=False, compare=False)

    def headers(self) -> dict[str, str]:
        """Request headers carrying the current credentials (none without them)."""
        if self.token_file is not None:
            token = self.token_file.token()
            return {"Authorization": f"Bearer {token}"} if token else {}
        cfg = self._configuration
        if cfg is None:
            return {}
        token = cfg.get_api_key_with_prefix("BearerToken", alias="authorization")
        if token:
            return {"Authorization": str(token)}
        if cfg.username or cfg.password:
            return {"Authorization": str(cfg.get_basic_auth_token())}
        return {}


def load(
    kubeconfig: str | None = None,
    master: str | None = None,
    *,
    context: str | None = None,
    environ: Mapping[str, str] = os.environ,
    service_account: Path = SERVICE_ACCOUNT_DIR,
) -> ClusterAccess:
    """Connection settings from the flags, as kube-proxy picks them (see the module notes)."""
    if kubeconfig:
        return _from_kubeconfig(kubeconfig, master, context)
    if master:
        _check_url(master, "--master")
        tls = _context(None, None, None, True) if master.startswith("https://") else None
        return ClusterAccess(master.rstrip("/"), tls)
    return in_cluster(environ, service_account)


def in_cluster(
    environ: Mapping[str, str] = os.environ, service_account: Path = SERVICE_ACCOUNT_DIR
) -> ClusterAccess:
    """The Pod's service account, as a Pod of the cluster finds the API server."""
    from kubernetes.client import Configuration
    from kubernetes.config import incluster_config
    from kubernetes.config.config_exception import ConfigException

    # The client's config package carries no annotations: call into it through Any.
    loaders: Any = incluster_config
    cfg = Configuration()
    token = service_account / "token"
    loader = loaders.InClusterConfigLoader(
        token_filename=str(token),
        cert_filename=str(service_account / "ca.crt"),
        try_refresh_token=False,
        environ=environ,
    )
    try:
        loader.load_and_set(cfg)
    except ConfigException as exc:
        raise KubeconfigError(
            "no --kubeconfig or --master given and not running in a cluster: "
            f"{exc} (KUBERNETES_SERVICE_HOST, KUBERNETES_SERVICE_PORT and "
            f"{service_account}/token and ca.crt are needed)"
        ) from None
    access = _access(cfg)
    return ClusterAccess(access.server, access.ssl_context, token_file=TokenFile(token))


def _from_kubeconfig(path: str, master: str | None, context: str | None) -> ClusterAccess:
    from kubernetes import config
    from kubernetes.client import Configuration
    from kubernetes.config.config_exception import ConfigException

    loaders: Any = config

    if not Path(path).is_file():
        raise KubeconfigError(f"--kubeconfig: {path}: no such file")
    cfg = Configuration()
    try:
        loaders.load_kube_config(config_file=path, context=context, client_configuration=cfg)
    except (ConfigException, OSError, ValueError, KeyError, TypeError) as exc:
        raise KubeconfigError(f"--kubeconfig {path}: {exc}") from None
    if master:
        _check_url(master, "--master")
        cfg.host = master
    return _access(cfg)


def _access(cfg: Any) -> ClusterAccess:
    server = str(cfg.host).rstrip("/")
    _check_url(server, "server")
    ssl_context = None
    if server.startswith("https://"):
        ssl_context = _context(cfg.ssl_ca_cert, cfg.cert_file, cfg.key_file, cfg.verify_ssl)
    hostname = getattr(cfg, "tls_server_name", None) or None
    return ClusterAccess(server, ssl_context, hostname, _configuration=cfg)


def _context(ca: str | None, cert: str | None, key: str | None, verify: bool) -> ssl.SSLContext:
    try:
        ctx = ssl.create_default_context(cafile=ca or None)
        if cert:
            ctx.load_cert_chain(cert, key or None)
    except (OSError, ssl.SSLError) as exc:
        raise KubeconfigError(f"cannot load TLS files: {exc}") from None
    if not verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


def _check_url(url: str, what: str) -> None:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise KubeconfigError(f"{what}: {url!r} is not an http(s) URL")
