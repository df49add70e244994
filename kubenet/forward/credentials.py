"""Upstream credentials from a kubeconfig, as kubectl would use them.

The kubeconfig is read and merged by the kubernetes client (``KubeConfigMerger``,
``KubeConfigLoader``), with kubectl's command-line overrides (``--server``,
``--token``, ``--as``, ...) applied to the chosen context's cluster and user first.
What the loader produces (server, CA, client certificate, bearer token or basic auth)
becomes a :class:`ClusterCredentials`, which adds what a long-running proxy needs on
top of a one-shot client:

- a token file is re-read whenever it changes (kubelet and projected service-account
  tokens rotate by replacing the file);
- an exec credential plugin runs in a worker thread (never on the event loop), its
  result is cached until its ``expirationTimestamp`` and rerun after a 401;
- an ``auth-provider: oidc`` id-token is refreshed when it nears its expiry (by the
  client's loader, with the refresh token) and written back to the kubeconfig, as
  kubectl does; ``gcp`` and ``azure`` are refused with kubectl's message (removed in
  1.26 in favour of exec plugins);
- impersonation headers (``as``, ``as-groups``, ``as-uid``, ``as-user-extra`` or the
  ``--as*`` flags), which the client's loader does not read.

Secrets never reach ``repr``, error messages or logs from this module.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import copy
import datetime
import json
import logging
import math
import os
import re
import ssl
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import yaml
from kubernetes.client import Configuration
from kubernetes.config import dateutil as _dateutil
from kubernetes.config import exec_provider as _exec_provider
from kubernetes.config import incluster_config
from kubernetes.config import kube_config as _kube_config
from kubernetes.config.config_exception import ConfigException
from kubernetes.config.kube_config import ConfigNode

from .tunnel import ProxyURL, proxy_for

# The client's config package carries no annotations: call into it through Any.
_loader: Any = _kube_config
_exec: Any = _exec_provider
_dates: Any = _dateutil

_PROCESS_RETURNED = re.compile(r"exec: process returned -?\d+")

log = logging.getLogger(__name__)

#: Auth-provider plugins kubectl dropped in 1.26, and what it says instead of using one.
REMOVED_AUTH_PROVIDERS = {
    "gcp": 'the gcp auth plugin has been removed; use the "gke-gcloud-auth-plugin" '
    "kubectl/client-go credential plugin instead",
    "azure": "the azure auth plugin has been removed; use the "
    "https://github.com/Azure/kubelogin kubectl/client-go credential plugin instead",
}

NO_CONFIGURATION = "invalid configuration: no configuration has been provided"


class CredentialsError(Exception):
    """The kubeconfig cannot give credentials (message is safe to show)."""


@dataclass(frozen=True)
class KubeconfigOptions:
    """kubectl's global connection flags; ``None`` means "from the kubeconfig"."""

    kubeconfig: str | None = None
    context: str | None = None
    cluster: str | None = None
    user: str | None = None
    server: str | None = None
    token: str | None = field(default=None, repr=False)
    certificate_authority: str | None = None
    client_certificate: str | None = None
    client_key: str | None = None
    insecure_skip_tls_verify: bool = False
    tls_server_name: str | None = None
    impersonate: str | None = None
    impersonate_groups: tuple[str, ...] = ()
    impersonate_uid: str | None = None


@dataclass(frozen=True)
class Auth:
    """What one upstream request carries: an Authorization value and a TLS context."""

    authorization: str | None = field(default=None, repr=False)
    ssl: ssl.SSLContext | None = None


# --- loading -----------------------------------------------------------------------


def _kubeconfig_paths(options: KubeconfigOptions) -> str:
    if options.kubeconfig:
        if not os.path.exists(options.kubeconfig):
            raise CredentialsError(f"stat {options.kubeconfig}: no such file or directory")
        return options.kubeconfig
    return os.environ.get("KUBECONFIG") or "~/.kube/config"


def load_kubeconfig(options: KubeconfigOptions) -> ConfigNode | None:
    """The merged kubeconfig (``--kubeconfig``, else ``$KUBECONFIG``, else ~/.kube/config)."""
    try:
        merged = _loader.KubeConfigMerger(_kubeconfig_paths(options)).config
    except (ConfigException, yaml.YAMLError, OSError) as exc:
        raise CredentialsError(f"error loading kubeconfig: {exc}") from None
    return merged if isinstance(merged, ConfigNode) else None


def context_names(config: ConfigNode | None) -> list[str]:
    if config is None:
        return []
    return [str(c["name"]) for c in config.value.get("contexts") or []]


def current_context(config: ConfigNode | None) -> str | None:
    if config is None:
        return None
    name = config.value.get("current-context")
    return str(name) if name else None


def _find(config: ConfigNode | None, kind: str, name: str) -> ConfigNode | None:
    if config is None or not config.value.get(kind):
        return None
    try:
        found = config[kind].get_with_name(name, safe=True)
    except ConfigException as exc:
        raise CredentialsError(str(exc)) from None
    return found if isinstance(found, ConfigNode) else None


def _entry(node: ConfigNode | None, key: str) -> tuple[dict[str, Any], str | None]:
    """A deep copy of a cluster's or user's body and the file it came from."""
    if node is None:
        return {}, None
    body = node.value.get(key) or {}
    return copy.deepcopy(dict(body)), node.path


def _abs(path: str) -> str:
    return os.path.abspath(os.path.expanduser(path))


def _apply_overrides(
    options: KubeconfigOptions, cluster: dict[str, Any], user: dict[str, Any]
) -> None:
    """kubectl's ConfigOverrides: flags win over the kubeconfig, file flags clear data."""
    if options.server:
        cluster["server"] = options.server
    if options.certificate_authority:
        cluster["certificate-authority"] = _abs(options.certificate_authority)
        cluster.pop("certificate-authority-data", None)
    if options.insecure_skip_tls_verify:
        cluster["insecure-skip-tls-verify"] = True
        cluster.pop("certificate-authority", None)
        cluster.pop("certificate-authority-data", None)
    if options.tls_server_name:
        cluster["tls-server-name"] = options.tls_server_name
    if options.token:
        user["token"] = options.token
        for key in ("tokenFile", "exec", "auth-provider", "username", "password"):
            user.pop(key, None)
    if options.client_certificate:
        user["client-certificate"] = _abs(options.client_certificate)
        user.pop("client-certificate-data", None)
    if options.client_key:
        user["client-key"] = _abs(options.client_key)
        user.pop("client-key-data", None)
    if options.impersonate:
        user["as"] = options.impersonate
    if options.impersonate_groups:
        user["as-groups"] = list(options.impersonate_groups)
    if options.impersonate_uid:
        user["as-uid"] = options.impersonate_uid


def _auth_provider(context: str, user: Mapping[str, Any]) -> dict[str, Any] | None:
    """An ``oidc`` auth-provider's config (the dict the loader refreshes in place).

    As kubectl: ``gcp`` and ``azure`` are refused with its message, any other name
    is unknown; a user with a token or ``--token`` uses that instead (the loader
    tries the provider first, kubectl the token: kubectl wins here).
    """
    provider = user.get("auth-provider")
    if not isinstance(provider, dict) or user.get("token") or user.get("tokenFile"):
        return None
    kind = str(provider.get("name", ""))
    if kind in REMOVED_AUTH_PROVIDERS:
        raise CredentialsError(f"context {context!r}: {REMOVED_AUTH_PROVIDERS[kind]}")
    if kind != "oidc":
        raise CredentialsError(f'context {context!r}: no Auth Provider found for name "{kind}"')
    config = provider.setdefault("config", {})
    if not isinstance(config, dict):
        raise CredentialsError(f"context {context!r}: the oidc auth-provider has no config")
    return config


def _provider_persister(path: str, user_name: str, config: Mapping[str, Any]) -> Callable[[], None]:
    """Write a refreshed id-token and refresh token back to the user's kubeconfig file.

    kubectl does the same: an identity provider that rotates refresh tokens accepts
    each one once, so a kubeconfig left holding the old one would be logged out.
    """

    def persist() -> None:
        try:
            text = Path(path).read_text()
            document = yaml.safe_load(text)
            users = document.get("users") if isinstance(document, dict) else None
            entry = next(
                (u for u in users or [] if isinstance(u, dict) and u.get("name") == user_name),
                None,
            )
            if entry is None:
                return
            stored = entry["user"]["auth-provider"].setdefault("config", {})
            stored.update({k: config[k] for k in ("id-token", "refresh-token") if config.get(k)})
            _replace_file(Path(path), yaml.safe_dump(document, sort_keys=False))
        except (OSError, yaml.YAMLError, KeyError, TypeError, AttributeError) as exc:
            log.warning(
                "could not write the refreshed oidc token back to %s: %s", path, type(exc).__name__
            )

    return persist


def _replace_file(path: Path, text: str) -> None:
    """Replace ``path``'s content at once (a reader never sees half a kubeconfig)."""
    mode = path.stat().st_mode & 0o7777
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def _jwt_expiry(token: str) -> float | None:
    """A JWT's ``exp`` claim, in seconds since the epoch (None without one); not verified."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    try:
        claims = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except (binascii.Error, ValueError):
        return None
    exp = claims.get("exp") if isinstance(claims, dict) else None
    return float(exp) if isinstance(exp, int | float) else None


def impersonation_headers(user: Mapping[str, Any]) -> tuple[tuple[str, str], ...]:
    """``Impersonate-*`` headers for a kubeconfig user (after flag overrides)."""
    name = user.get("as") or ""
    uid = user.get("as-uid") or ""
    groups = list(user.get("as-groups") or [])
    extra: Mapping[str, Any] = user.get("as-user-extra") or {}
    if not name:
        if uid or groups or extra:
            raise CredentialsError(
                "requesting uid, groups or user-extra without impersonating a user"
            )
        return ()
    headers = [("Impersonate-User", str(name))]
    if uid:
        headers.append(("Impersonate-Uid", str(uid)))
    headers += [("Impersonate-Group", str(g)) for g in groups]
    for key, values in extra.items():
        # Header names are tokens; anything else in the key is percent-encoded, as
        # client-go's headerKeyEscape does.
        escaped = quote(str(key), safe="!#$&'*+-.^_`|~")
        headers += [(f"Impersonate-Extra-{escaped}", str(v)) for v in values]
    return tuple(headers)


def load_credentials(
    options: KubeconfigOptions,
    context: str | None = None,
    config: ConfigNode | None = None,
) -> ClusterCredentials:
    """Credentials for one context (``context``, else ``--context``, else current)."""
    if config is None:
        config = load_kubeconfig(options)
    name = context or options.context or current_context(config)
    ctx_body: Mapping[str, Any] = {}
    if name:
        found = _find(config, "contexts", name)
        if found is None:
            if context or options.context:
                raise CredentialsError(f'context "{name}" does not exist')
        else:
            ctx_body = found.value.get("context") or {}
    cluster_name = options.cluster or ctx_body.get("cluster")
    user_name = options.user or ctx_body.get("user")
    cluster_node = _find(config, "clusters", cluster_name) if cluster_name else None
    if options.cluster and cluster_node is None:
        raise CredentialsError(f'cluster "{options.cluster}" does not exist')
    user_node = _find(config, "users", user_name) if user_name else None
    if options.user and user_node is None:
        raise CredentialsError(f'user "{options.user}" does not exist')
    cluster, cluster_path = _entry(cluster_node, "cluster")
    user, user_path = _entry(user_node, "user")
    _apply_overrides(options, cluster, user)
    if not cluster.get("server"):
        if config is None and not options.server:
            in_cluster = _in_cluster(name or "in-cluster", user)
            if in_cluster is not None:
                return in_cluster
        raise CredentialsError(NO_CONFIGURATION)
    return _from_entries(
        name or "default", cluster, cluster_path, user, user_path, user_name=user_name
    )


def _from_entries(
    name: str,
    cluster: dict[str, Any],
    cluster_path: str | None,
    user: dict[str, Any],
    user_path: str | None,
    *,
    user_name: str | None = None,
) -> ClusterCredentials:
    exec_config = user.get("exec")
    uses_token = bool(user.get("token") or user.get("tokenFile"))
    loader_user = {k: v for k, v in user.items() if k != "exec"}
    provider = _auth_provider(name, user)
    document = _loader.ConfigNode(
        "kube-config",
        {
            "current-context": "proxy",
            "contexts": [{"name": "proxy", "context": {"cluster": "c", "user": "u"}}],
            "clusters": [
                _loader.ConfigNode("cluster", {"name": "c", "cluster": cluster}, cluster_path)
            ],
            "users": [_loader.ConfigNode("user", {"name": "u", "user": loader_user}, user_path)],
        },
    )
    configuration = Configuration()
    persist = None
    if provider is not None and user_path and user_name:
        persist = _provider_persister(user_path, user_name, provider)
    try:
        loader = _loader.KubeConfigLoader(document, config_base_path=None, config_persister=persist)
        loader.load_and_set(configuration)
    except (ConfigException, OSError, ValueError, KeyError) as exc:
        raise CredentialsError(f"context {name!r}: {exc}") from None
    except Exception as exc:  # the oidc refresh's HTTP and OAuth errors
        raise CredentialsError(
            f"context {name!r}: refreshing the oidc id-token: {type(exc).__name__}"
        ) from None

    server = str(configuration.host)
    scheme = urlsplit(server).scheme
    if scheme not in ("http", "https"):
        raise CredentialsError(f"context {name!r}: server {server!r} is not an http(s) URL")
    tls: TLSFiles | None = None
    if scheme == "https":
        tls = TLSFiles(
            ca_file=configuration.ssl_ca_cert or None,
            cert_file=configuration.cert_file or None,
            key_file=configuration.key_file or None,
            verify=bool(configuration.verify_ssl),
        )
    authorization = configuration.api_key.get("BearerToken")
    base = str(Path(user_path).parent) if user_path else ""
    source: AuthSource
    if uses_token and not user.get("token") and user.get("tokenFile"):
        source = TokenFileSource(os.path.join(base, str(user["tokenFile"])))
    elif not authorization and exec_config:
        cluster_node = _loader.ConfigNode("cluster", {"server": server, **cluster}, cluster_path)
        source = ExecSource(_loader.ConfigNode("exec", exec_config, user_path), base, cluster_node)
    elif provider is not None and authorization and not uses_token:
        source = OidcSource(loader, provider, authorization)
    else:
        source = StaticSource(authorization or None)
    try:
        proxy = proxy_for(server, cluster.get("proxy-url"), os.environ)
    except ValueError as exc:
        raise CredentialsError(f"context {name!r}: {exc}") from None
    return ClusterCredentials(
        name=name,
        server=server,
        server_path=urlsplit(cluster["server"]).path,
        tls=tls,
        server_hostname=configuration.tls_server_name or None,
        impersonation=impersonation_headers(user),
        source=source,
        proxy=proxy,
    )


def _in_cluster(name: str, user: dict[str, Any]) -> ClusterCredentials | None:
    """kubectl's fallback inside a pod: the service account's token and CA."""
    host = os.environ.get(incluster_config.SERVICE_HOST_ENV_NAME)
    port = os.environ.get(incluster_config.SERVICE_PORT_ENV_NAME)
    if not host or not port or not os.path.exists(incluster_config.SERVICE_TOKEN_FILENAME):
        return None
    hostport = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    try:
        proxy = proxy_for(f"https://{hostport}", None, os.environ)
    except ValueError as exc:
        raise CredentialsError(f"in-cluster configuration: {exc}") from None
    return ClusterCredentials(
        name=name,
        server=f"https://{hostport}",
        server_path="",
        tls=TLSFiles(ca_file=incluster_config.SERVICE_CERT_FILENAME, verify=True),
        server_hostname=None,
        impersonation=impersonation_headers(user),
        source=TokenFileSource(incluster_config.SERVICE_TOKEN_FILENAME),
        proxy=proxy,
    )


# --- TLS ---------------------------------------------------------------------------


@dataclass(frozen=True)
class TLSFiles:
    """The TLS material of one cluster, as files."""

    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    verify: bool = True

    def context(self) -> ssl.SSLContext:
        return client_ssl_context(self.ca_file, self.cert_file, self.key_file, self.verify)


def client_ssl_context(
    ca_file: str | None,
    cert_file: str | None,
    key_file: str | None,
    verify: bool,
) -> ssl.SSLContext:
    """One TLS client context, built once and shared by every upstream connection."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if verify:
        if ca_file:
            ctx.load_verify_locations(cafile=ca_file)
        else:
            ctx.load_default_certs()
    else:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    if cert_file:
        ctx.load_cert_chain(cert_file, key_file or None)
    # Upgrades (exec, port-forward) need HTTP/1.1, and so does our client.
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


def _ssl_with_pem(tls: TLSFiles, cert_pem: str, key_pem: str) -> ssl.SSLContext:
    """A context whose client certificate comes from memory (exec plugin output).

    ``load_cert_chain`` only reads files: write both to a private directory for the
    duration of the call.
    """
    with tempfile.TemporaryDirectory(prefix="api-proxy-") as folder:
        cert = Path(folder, "cert.pem")
        key = Path(folder, "key.pem")
        for path, text in ((cert, cert_pem), (key, key_pem)):
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as handle:
                handle.write(text)
        return client_ssl_context(tls.ca_file, str(cert), str(key), tls.verify)


# --- authorization sources ---------------------------------------------------------


class AuthSource:
    """Where a cluster's Authorization header comes from."""

    async def get(self, tls: TLSFiles | None, base: ssl.SSLContext | None) -> Auth:
        raise NotImplementedError

    def unauthorized(self, used: Auth) -> None:
        """The upstream answered 401 to a request that carried ``used``."""


class StaticSource(AuthSource):
    """A bearer token or basic auth fixed at load time (or nothing)."""

    def __init__(self, authorization: str | None) -> None:
        self._authorization = authorization
        self._auth: Auth | None = None

    def __repr__(self) -> str:
        return "StaticSource(<redacted>)" if self._authorization else "StaticSource(None)"

    async def get(self, tls: TLSFiles | None, base: ssl.SSLContext | None) -> Auth:
        if self._auth is None or self._auth.ssl is not base:
            self._auth = Auth(self._authorization, base)
        return self._auth


class TokenFileSource(AuthSource):
    """A token file, re-read when its inode, size or mtime change.

    A file that cannot be read (mid-rotation) keeps the last good token, as client-go's
    cached file token source does.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self._stamp: tuple[int, int, int] | None = None
        self._auth = Auth()
        self._reload(None)

    def __repr__(self) -> str:
        return f"TokenFileSource({self.path!r})"

    def _reload(self, base: ssl.SSLContext | None) -> None:
        try:
            st = os.stat(self.path)
            stamp = (st.st_ino, st.st_size, st.st_mtime_ns)
            if stamp == self._stamp and self._auth.ssl is base:
                return
            token = Path(self.path).read_text().strip()
        except OSError:
            if self._stamp is None:
                raise CredentialsError(f"cannot read token file {self.path}") from None
            return
        self._stamp = stamp
        self._auth = Auth(f"Bearer {token}" if token else None, base)

    async def get(self, tls: TLSFiles | None, base: ssl.SSLContext | None) -> Auth:
        self._reload(base)
        return self._auth


class ExecSource(AuthSource):
    """An exec credential plugin (client.authentication.k8s.io), run off the event loop.

    The plugin's answer is cached until its ``expirationTimestamp`` (forever without
    one) and dropped after a 401 for a request that used it; concurrent requests wait
    for one run instead of starting many.
    """

    def __init__(self, exec_config: ConfigNode, cwd: str, cluster: ConfigNode) -> None:
        try:
            self._provider = _exec.ExecProvider(exec_config, cwd, cluster)
        except ConfigException as exc:
            raise CredentialsError(str(exc)) from None
        self.command = str(exec_config.value.get("command", ""))
        self._auth: Auth | None = None
        self._expiry: datetime.datetime | None = None
        self._lock = asyncio.Lock()
        self.runs = 0

    def __repr__(self) -> str:
        return f"ExecSource({self.command!r})"

    def _fresh(self) -> Auth | None:
        auth = self._auth
        if auth is None:
            return None
        if self._expiry is not None and datetime.datetime.now(datetime.UTC) >= self._expiry:
            return None
        return auth

    async def get(self, tls: TLSFiles | None, base: ssl.SSLContext | None) -> Auth:
        auth = self._fresh()
        if auth is not None:
            return auth
        async with self._lock:
            auth = self._fresh()
            if auth is not None:
                return auth
            try:
                status = await asyncio.to_thread(self._provider.run)
            except ConfigException as exc:
                # The client appends the plugin's stderr to its message, and stderr may
                # hold anything: keep only the client's own words.
                text = str(exc) or "failed"
                returned = _PROCESS_RETURNED.match(text)
                first = returned.group(0) if returned else text.splitlines()[0]
                raise CredentialsError(
                    f"getting credentials: exec plugin {self.command}: {first}"
                ) from None
            self.runs += 1
            self._auth, self._expiry = self._parse(status, tls, base)
            return self._auth

    def _parse(
        self, status: Mapping[str, Any], tls: TLSFiles | None, base: ssl.SSLContext | None
    ) -> tuple[Auth, datetime.datetime | None]:
        expiry = None
        if status.get("expirationTimestamp"):
            try:
                expiry = _dates.parse_rfc3339(status["expirationTimestamp"])
            except (ValueError, TypeError):
                raise CredentialsError(
                    f"getting credentials: exec plugin {self.command}: bad expirationTimestamp"
                ) from None
        if status.get("token"):
            return Auth(f"Bearer {status['token']}", base), expiry
        cert, key = status.get("clientCertificateData"), status.get("clientKeyData")
        if cert and key and tls is not None:
            try:
                return Auth(None, _ssl_with_pem(tls, str(cert), str(key))), expiry
            except (ssl.SSLError, OSError):
                raise CredentialsError(
                    f"getting credentials: exec plugin {self.command}: unusable client certificate"
                ) from None
        raise CredentialsError(
            f"getting credentials: exec plugin {self.command}: no token or client certificate"
        )

    def unauthorized(self, used: Auth) -> None:
        if self._auth is used:
            self._auth = None


class OidcSource(AuthSource):
    """An ``auth-provider: oidc`` user's id-token, refreshed as it nears expiry.

    The client's loader does the refresh (discovery, then the refresh-token grant) in
    a worker thread, five minutes before the token's ``exp`` as the loader reckons it,
    and its persister writes the new tokens to the kubeconfig. A refresh that fails
    keeps the old token (the API server then answers 401, which reaches the client)
    and is tried again after :attr:`RETRY_AFTER` seconds, not on every request.
    """

    #: The loader's margin: a token this close to its expiry is refreshed.
    MARGIN = 300.0
    RETRY_AFTER = 10.0

    def __init__(self, loader: Any, config: Mapping[str, Any], authorization: str) -> None:
        self._loader = loader
        self._config = config
        self._auth: Auth | None = None
        self._lock = asyncio.Lock()
        self._use(authorization)

    def __repr__(self) -> str:
        return "OidcSource(<redacted>)"

    def _use(self, authorization: str) -> None:
        self._authorization = authorization
        # Reckoned once per token, not per request: the header is on every request's path.
        expiry = _jwt_expiry(str(self._config.get("id-token") or ""))
        self._refresh_at = math.inf if expiry is None else expiry - self.MARGIN

    async def get(self, tls: TLSFiles | None, base: ssl.SSLContext | None) -> Auth:
        if time.time() >= self._refresh_at:
            async with self._lock:
                if time.time() >= self._refresh_at:
                    await self._refresh()
        auth = self._auth
        if auth is None or auth.ssl is not base or auth.authorization != self._authorization:
            auth = self._auth = Auth(self._authorization, base)
        return auth

    async def _refresh(self) -> None:
        before = self._config.get("id-token")
        try:
            await asyncio.to_thread(self._loader._load_authentication)
        except Exception as exc:  # HTTP, TLS and OAuth errors of the refresh
            log.warning("refreshing the oidc id-token failed: %s", type(exc).__name__)
        token = getattr(self._loader, "token", None)
        if self._config.get("id-token") == before or not isinstance(token, str):
            # Refused or unreachable: keep the old token, do not ask on every request.
            self._refresh_at = time.time() + self.RETRY_AFTER
            return
        self._use(token)


@dataclass
class ClusterCredentials:
    """How to reach and authenticate to one cluster."""

    name: str
    server: str
    server_path: str
    tls: TLSFiles | None
    server_hostname: str | None
    impersonation: tuple[tuple[str, str], ...]
    source: AuthSource
    #: The proxy to dial through (the cluster's ``proxy-url``, or the environment's).
    proxy: ProxyURL | None = None
    _ssl: ssl.SSLContext | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.tls is not None:
            try:
                self._ssl = self.tls.context()
            except (ssl.SSLError, OSError) as exc:
                raise CredentialsError(f"context {self.name!r}: TLS setup: {exc}") from None

    @property
    def ssl(self) -> ssl.SSLContext | None:
        """The cluster's base TLS context (an exec plugin may supply another)."""
        return self._ssl

    async def auth(self) -> Auth:
        """The Authorization value and TLS context for the next request."""
        return await self.source.get(self.tls, self._ssl)

    def unauthorized(self, used: Auth) -> None:
        self.source.unauthorized(used)
