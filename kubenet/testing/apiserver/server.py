"""Starting and stopping the server: in an event loop, in a thread, or from the CLI.

:class:`ApiServer` owns everything one running server needs: the store and verbs,
generated certificates and tokens, the aiohttp site, and the kubeconfig it writes.
Use ``await server.start()`` inside an event loop, or :class:`ThreadedApiServer`
(and :func:`running_apiserver`) from synchronous code such as tests that drive
the ``kubernetes`` client or ``kubectl``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import secrets
import shutil
import socket
import ssl
import tempfile
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from aiohttp import web

from kubenet.testing.apiserver import kubeconfig, manifests
from kubenet.testing.apiserver.api import Api, ServerSettings
from kubenet.testing.apiserver.app import Context, make_app
from kubenet.testing.apiserver.auth import (
    MASTERS,
    VIEWERS,
    Authenticator,
    User,
    format_token_file,
    load_token_file,
)
from kubenet.testing.apiserver.certs import CertificateAuthority, KeyPair
from kubenet.testing.apiserver.portforward import ForwardPolicy
from kubenet.testing.apiserver.resources import (
    ENDPOINTSLICES,
    NAMESPACES,
    RESOURCES,
    SERVICES,
    Kinds,
    ResourceType,
)
from kubenet.testing.apiserver.store import DEFAULT_HISTORY, Store
from kubenet.testing.apiserver.watch import WatchSettings

T = TypeVar("T")

ADMIN = "kubenet-admin"
VIEWER = "kubenet-viewer"
#: Namespaces every cluster has.
SYSTEM_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")


@dataclass(frozen=True)
class ServerConfig:
    """How to run a server.  Defaults suit a test: loopback, TLS, no anonymous access."""

    host: str = "127.0.0.1"
    port: int = 0
    tls: bool = True
    anonymous: bool = False
    #: Extra users, in kube-apiserver's ``--token-auth-file`` format.
    token_file: Path | None = None
    #: Watch events kept per resource type; older resource versions get 410 Gone.
    history: int = DEFAULT_HISTORY
    bookmark_interval: float = 60.0
    watch_timeout: float = 1800.0
    max_body_bytes: int = 3 * 1024 * 1024
    service_cidrs: tuple[str, ...] = ("10.96.0.0/16", "fd00:96::/112")
    node_port_range: tuple[int, int] = (30000, 32767)
    #: Create the system namespaces and the ``default/kubernetes`` Service.
    bootstrap: bool = True
    #: What ``/version`` reports (kubectl's version-skew checks read it).
    version: str = "v1.32.0"
    #: Port-forward targets: ``"namespace/pod:port" -> (host, port)``.
    port_forward: Mapping[str, tuple[str, int]] = field(default_factory=dict)
    #: Manifest files or folders to load at start (status kept, see Api.load).
    manifests: tuple[Path, ...] = ()
    #: The kinds served; add a ResourceType to serve another kind.
    resources: tuple[ResourceType, ...] = RESOURCES
    #: Where certificates, tokens and the kubeconfig go (a temporary folder if None).
    state_dir: Path | None = None
    kubeconfig_path: Path | None = None


class ApiServer:
    """One running server; start and stop it inside an asyncio event loop."""

    def __init__(self, config: ServerConfig | None = None) -> None:
        self.config = config or ServerConfig()
        self.kinds = Kinds(self.config.resources)
        self.store = Store(self.kinds.resources, self.config.history)
        self.api = Api(
            self.store,
            self.kinds,
            ServerSettings(self.config.service_cidrs, self.config.node_port_range),
        )
        self.admin_token = secrets.token_urlsafe(24)
        self.viewer_token = secrets.token_urlsafe(24)
        users = {
            self.admin_token: User(ADMIN, (MASTERS,), "admin"),
            self.viewer_token: User(VIEWER, (VIEWERS,), "viewer"),
        }
        if self.config.token_file is not None:
            users.update(load_token_file(self.config.token_file))
        self.authenticator = Authenticator(users, anonymous=self.config.anonymous)
        self.ca = CertificateAuthority()
        self.admin_cert: KeyPair = self.ca.client(ADMIN, [MASTERS])
        self.context = Context(
            api=self.api,
            kinds=self.kinds,
            authenticator=self.authenticator,
            watch=WatchSettings(self.config.bookmark_interval, self.config.watch_timeout),
            forward=ForwardPolicy(dict(self.config.port_forward)),
            version=self.config.version,
            max_body=self.config.max_body_bytes,
        )
        self._runner: web.AppRunner | None = None
        self._tmp: str | None = None
        self.port = 0
        self.state_dir = Path()
        self.kubeconfig_path = Path()
        self.ca_path = Path()

    @property
    def url(self) -> str:
        host = f"[{self.config.host}]" if ":" in self.config.host else self.config.host
        return f"{'https' if self.config.tls else 'http'}://{host}:{self.port}"

    def _ssl_context(self) -> ssl.SSLContext:
        serving = self.ca.serving([self.config.host])
        cert, key = serving.write(self.state_dir, "apiserver")
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(cert, key)
        ctx.load_verify_locations(cadata=self.ca.cert_pem.decode())
        # Ask for a client certificate without requiring one: tokens work too.
        ctx.verify_mode = ssl.CERT_OPTIONAL
        return ctx

    async def start(self) -> None:
        if self.config.state_dir is None:
            self._tmp = tempfile.mkdtemp(prefix="kubenet-apiserver-")
            self.state_dir = Path(self._tmp)
        else:
            self.state_dir = self.config.state_dir
            self.state_dir.mkdir(parents=True, exist_ok=True)
        self.ca_path = self.state_dir / "ca.crt"
        self.ca_path.write_bytes(self.ca.cert_pem)
        tokens = self.state_dir / "tokens.csv"
        tokens.touch(mode=0o600)
        tokens.write_text(format_token_file(self.authenticator.tokens))
        ssl_context = self._ssl_context() if self.config.tls else None
        sock = socket.socket(socket.AF_INET6 if ":" in self.config.host else socket.AF_INET)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.config.host, self.config.port))
        self.port = sock.getsockname()[1]
        self.context.server_address = f"{self.config.host}:{self.port}"
        if self.config.bootstrap:
            self._bootstrap()
        if self.config.manifests:
            self.api.load(manifests.load(self.config.manifests))
        # handler_cancellation: a watch whose client went away ends at once, as a Go
        # server's request context would.
        self._runner = web.AppRunner(
            make_app(self.context), access_log=None, shutdown_timeout=1.0, handler_cancellation=True
        )
        await self._runner.setup()
        site = web.SockSite(self._runner, sock, ssl_context=ssl_context)
        await site.start()
        self.kubeconfig_path = self.config.kubeconfig_path or self.state_dir / "kubeconfig"
        self.write_kubeconfig(self.kubeconfig_path)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None

    def credentials(self) -> list[kubeconfig.Credentials]:
        users = [
            kubeconfig.Credentials("token", token=self.admin_token),
            kubeconfig.Credentials(
                "cert", cert_pem=self.admin_cert.cert_pem, key_pem=self.admin_cert.key_pem
            ),
            kubeconfig.Credentials("viewer", token=self.viewer_token),
        ]
        if self.config.anonymous:
            users.append(kubeconfig.Credentials("anonymous"))
        return users

    def write_kubeconfig(self, path: Path) -> None:
        """Write a kubeconfig with contexts kubenet-token (current), -cert, -viewer, -anonymous."""
        ca = self.ca.cert_pem if self.config.tls else None
        kubeconfig.write(path, kubeconfig.build(self.url, ca, self.credentials(), "token"))

    def _bootstrap(self) -> None:
        for name in SYSTEM_NAMESPACES:
            if self.store.get(NAMESPACES, "", name) is None:
                self.api.create(NAMESPACES, "", {"metadata": {"name": name}})
        first_ip = self.api.allocations.ranges[0].first()
        self.api.create(
            SERVICES,
            "default",
            {
                "metadata": {
                    "name": "kubernetes",
                    "labels": {"component": "apiserver", "provider": "kubernetes"},
                },
                "spec": {
                    "clusterIP": first_ip,
                    "clusterIPs": [first_ip],
                    "ports": [
                        {"name": "https", "port": 443, "protocol": "TCP", "targetPort": self.port}
                    ],
                },
            },
        )
        family = "IPv6" if ":" in self.config.host else "IPv4"
        address = self.config.host if self.config.host not in ("0.0.0.0", "::") else "127.0.0.1"
        self.api.create(
            ENDPOINTSLICES,
            "default",
            {
                "metadata": {
                    "name": "kubernetes",
                    "labels": {"kubernetes.io/service-name": "kubernetes"},
                },
                "addressType": family,
                "endpoints": [{"addresses": [address], "conditions": {"ready": True}}],
                "ports": [{"name": "https", "port": self.port, "protocol": "TCP"}],
            },
        )


class ThreadedApiServer:
    """An :class:`ApiServer` on its own event loop in a background thread.

    Synchronous code (tests, scripts) talks to it over HTTP like any client, and may
    reach into the store with :meth:`call`, which runs a function on the server's
    loop so it never races a request.
    """

    def __init__(self, config: ServerConfig | None = None) -> None:
        self.server = ApiServer(config)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name="kubenet-apiserver", daemon=True)
        self._started = threading.Event()
        self._error: BaseException | None = None

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(self.server.start())
        except BaseException as err:  # reported to the starting thread
            self._error = err
            self._started.set()
            return
        self._started.set()
        self._loop.run_forever()
        self._loop.run_until_complete(self.server.stop())
        pending = asyncio.all_tasks(self._loop)
        for task in pending:
            task.cancel()
        self._loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        self._loop.close()

    def start(self) -> ThreadedApiServer:
        self._thread.start()
        self._started.wait()
        if self._error is not None:
            raise self._error
        return self

    def stop(self) -> None:
        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)

    def __enter__(self) -> ThreadedApiServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def call(self, fn: Callable[[], T], timeout: float = 30.0) -> T:
        """Run ``fn()`` on the server's loop and return its result."""
        future: concurrent.futures.Future[T] = concurrent.futures.Future()

        def run() -> None:
            try:
                future.set_result(fn())
            except BaseException as err:
                future.set_exception(err)

        self._loop.call_soon_threadsafe(run)
        return future.result(timeout)

    # Conveniences for tests.
    @property
    def url(self) -> str:
        return self.server.url

    @property
    def kubeconfig(self) -> Path:
        return self.server.kubeconfig_path

    @property
    def ca_path(self) -> Path:
        return self.server.ca_path

    @property
    def admin_token(self) -> str:
        return self.server.admin_token

    def recent_requests(self) -> list[tuple[str, str, str]]:
        """The last requests served, oldest first: (method, path with query, user)."""
        return self.call(lambda: list(self.server.context.recent))

    def load(self, objects: list[dict[str, Any]]) -> None:
        """Store objects as fixtures (see :meth:`Api.load`)."""
        self.call(lambda: self.server.api.load(objects))


@contextlib.contextmanager
def running_apiserver(
    config: ServerConfig | None = None, **overrides: Any
) -> Iterator[ThreadedApiServer]:
    """Run a server on a free loopback port for the duration of a ``with`` block."""
    if overrides:
        base = config or ServerConfig()
        config = ServerConfig(**{**base.__dict__, **overrides})
    server = ThreadedApiServer(config)
    server.start()
    try:
        yield server
    finally:
        server.stop()
