"""api-proxy: kubectl proxy's job, from the kubenet core.

    api-proxy serve                          # as `kubectl proxy`
    api-proxy serve --port 0 --read-only     # any free port, GET/HEAD/OPTIONS only
    api-proxy serve --contexts kind-a,kind-b # /clusters/kind-a/..., /clusters/kind-b/...

Flag names and defaults follow kubectl proxy's (and kubectl's global connection
flags). This module only parses flags and composes :mod:`kubenet.forward`.
"""

from __future__ import annotations

import os
import re
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated

import typer

from kubenet.forward import (
    DEFAULT_ACCEPT_HOSTS,
    DEFAULT_ACCEPT_PATHS,
    DEFAULT_REJECT_METHODS,
    DEFAULT_REJECT_PATHS,
    AccessLog,
    ApiProxy,
    ClientTokens,
    CredentialsError,
    FilterError,
    FilterRules,
    KubeconfigOptions,
    Listener,
    PoolSettings,
    ProxyConfig,
    TokenFileError,
    bind,
    run_loop,
    serve,
    upstreams_for,
)

from ._errors import fail, run

app = typer.Typer(
    name="api-proxy",
    help="kubectl proxy's job: a local HTTP door to the Kubernetes API, with credentials.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

DEFAULT_PORT = 8001
USER_AGENT = "api-proxy/0.1.0"
FILTER_WARNING = (
    "Request filter disabled, your proxy is vulnerable to XSRF attacks, please be cautious"
)

_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}

#: kubectl's boolean flags, which Go also accepts as --flag=true / --flag=false.
_BOOL_FLAGS = (
    "--disable-filter",
    "--append-server-path",
    "--insecure-skip-tls-verify",
    "--read-only",
)


def parse_duration(text: str, flag: str, bare_seconds: bool = False) -> float:
    """Go's ``time.ParseDuration`` ("1m30s", "250ms", "0"); kubectl's --request-timeout
    also takes a bare number of seconds."""
    value = text.strip()
    if value in ("0", ""):
        return 0.0
    if bare_seconds and re.fullmatch(r"\d+", value):
        return float(value)
    if _DURATION_PART.sub("", value) != "" or not _DURATION_PART.search(value):
        fail(f"{flag}: invalid duration {text!r}")
    return sum(float(n) * _UNITS[u] for n, u in _DURATION_PART.findall(value))


def _go_bools(argv: Sequence[str]) -> list[str]:
    """Rewrite ``--flag=true|false`` for boolean flags into what Click understands."""
    out = []
    for arg in argv:
        name, sep, value = arg.partition("=")
        if sep and name in _BOOL_FLAGS and value.lower() in ("true", "false", "1", "0"):
            if value.lower() in ("true", "1"):
                out.append(name)
            continue
        out.append(arg)
    return out


def _klog_warning(message: str) -> None:
    """A warning in klog's layout, as kubectl prints it."""
    now = time.time()
    stamp = time.strftime("%m%d %H:%M:%S", time.localtime(now))
    micros = int((now % 1) * 1_000_000)
    print(f"W{stamp}.{micros:06d} {os.getpid():>7} api_proxy.py] {message}", file=sys.stderr)


@app.callback()
def main_callback() -> None:
    """kubectl proxy's job: a local HTTP door to the Kubernetes API, with credentials."""


@app.command("serve")
def serve_command(
    port: Annotated[
        int,
        typer.Option(
            "-p",
            "--port",
            help="The port on which to run the proxy. Set to 0 to pick a random port.",
        ),
    ] = DEFAULT_PORT,
    address: Annotated[
        str, typer.Option("--address", help="The IP address on which to serve on.")
    ] = "127.0.0.1",
    accept_hosts: Annotated[
        str,
        typer.Option(
            "--accept-hosts", help="Regular expression for hosts that the proxy should accept."
        ),
    ] = DEFAULT_ACCEPT_HOSTS,
    accept_paths: Annotated[
        str,
        typer.Option(
            "--accept-paths", help="Regular expression for paths that the proxy should accept."
        ),
    ] = DEFAULT_ACCEPT_PATHS,
    reject_paths: Annotated[
        str,
        typer.Option(
            "--reject-paths",
            help="Regular expression for paths that the proxy should reject. Paths specified "
            "here will be rejected even accepted by --accept-paths.",
        ),
    ] = DEFAULT_REJECT_PATHS,
    reject_methods: Annotated[
        str,
        typer.Option(
            "--reject-methods",
            help="Regular expression for HTTP methods that the proxy should reject "
            "(example --reject-methods='POST,PUT,PATCH').",
        ),
    ] = DEFAULT_REJECT_METHODS,
    api_prefix: Annotated[
        str, typer.Option("--api-prefix", help="Prefix to serve the proxied API under.")
    ] = "/",
    www: Annotated[
        str,
        typer.Option(
            "-w",
            "--www",
            help="Also serve static files from the given directory under the specified prefix.",
        ),
    ] = "",
    www_prefix: Annotated[
        str,
        typer.Option(
            "-P",
            "--www-prefix",
            help="Prefix to serve static files under, if static file directory is specified.",
        ),
    ] = "/static/",
    unix_socket: Annotated[
        str, typer.Option("-u", "--unix-socket", help="Unix socket on which to run the proxy.")
    ] = "",
    disable_filter: Annotated[
        bool,
        typer.Option(
            "--disable-filter",
            help="If true, disable request filtering in the proxy. This is dangerous, and can "
            "leave you vulnerable to XSRF attacks, when used with an accessible port.",
        ),
    ] = False,
    keepalive: Annotated[
        str,
        typer.Option(
            "--keepalive",
            help="keepalive specifies the keep-alive period for an active network connection. "
            "Set to 0 to disable keepalive.",
        ),
    ] = "0s",
    append_server_path: Annotated[
        bool,
        typer.Option(
            "--append-server-path",
            help="If true, enables automatic path appending of the kube context server path "
            "to each request.",
        ),
    ] = False,
    # kubectl's global connection flags.
    kubeconfig: Annotated[
        str | None,
        typer.Option("--kubeconfig", help="Path to the kubeconfig file to use for CLI requests."),
    ] = None,
    context: Annotated[
        str | None, typer.Option("--context", help="The name of the kubeconfig context to use")
    ] = None,
    cluster: Annotated[
        str | None, typer.Option("--cluster", help="The name of the kubeconfig cluster to use")
    ] = None,
    user: Annotated[
        str | None, typer.Option("--user", help="The name of the kubeconfig user to use")
    ] = None,
    server: Annotated[
        str | None,
        typer.Option("-s", "--server", help="The address and port of the Kubernetes API server"),
    ] = None,
    token: Annotated[
        str | None,
        typer.Option("--token", help="Bearer token for authentication to the API server"),
    ] = None,
    certificate_authority: Annotated[
        str | None,
        typer.Option(
            "--certificate-authority", help="Path to a cert file for the certificate authority"
        ),
    ] = None,
    client_certificate: Annotated[
        str | None,
        typer.Option("--client-certificate", help="Path to a client certificate file for TLS"),
    ] = None,
    client_key: Annotated[
        str | None, typer.Option("--client-key", help="Path to a client key file for TLS")
    ] = None,
    insecure_skip_tls_verify: Annotated[
        bool,
        typer.Option(
            "--insecure-skip-tls-verify",
            help="If true, the server's certificate will not be checked for validity.",
        ),
    ] = False,
    tls_server_name: Annotated[
        str | None,
        typer.Option(
            "--tls-server-name", help="Server name to use for server certificate validation."
        ),
    ] = None,
    impersonate: Annotated[
        str | None, typer.Option("--as", help="Username to impersonate for the operation.")
    ] = None,
    impersonate_groups: Annotated[
        list[str] | None,
        typer.Option("--as-group", help="Group to impersonate for the operation (repeatable)."),
    ] = None,
    impersonate_uid: Annotated[
        str | None, typer.Option("--as-uid", help="UID to impersonate for the operation.")
    ] = None,
    request_timeout: Annotated[
        str,
        typer.Option(
            "--request-timeout",
            help="How long to wait for the API server's response headers (0: no limit). "
            "Watches and upgraded streams are never cut off by it.",
        ),
    ] = "0",
    # Beyond kubectl proxy.
    tls_cert_file: Annotated[
        str | None, typer.Option("--tls-cert-file", help="Serve HTTPS with this certificate (PEM).")
    ] = None,
    tls_private_key_file: Annotated[
        str | None,
        typer.Option("--tls-private-key-file", help="The private key for --tls-cert-file (PEM)."),
    ] = None,
    auth_token_file: Annotated[
        str | None,
        typer.Option(
            "--auth-token-file",
            help="Require 'Authorization: Bearer <token>' from clients, with a token from this "
            "file (one per line; re-read when it changes). It is not forwarded upstream.",
        ),
    ] = None,
    contexts: Annotated[
        str,
        typer.Option(
            "--contexts",
            help="Comma-separated kubeconfig contexts, each served under /clusters/<context>/.",
        ),
    ] = "",
    access_log: Annotated[
        str | None,
        typer.Option("--access-log", help="Write one line per request to this file ('-': stdout)."),
    ] = None,
    metrics_address: Annotated[
        str | None,
        typer.Option("--metrics-address", help="Serve Prometheus /metrics on this host:port."),
    ] = None,
    read_only: Annotated[
        bool,
        typer.Option(
            "--read-only", help="Reject every method but GET, HEAD and OPTIONS, and every upgrade."
        ),
    ] = False,
    shutdown_grace_period: Annotated[
        str,
        typer.Option(
            "--shutdown-grace-period",
            help="On SIGTERM/SIGINT, how long in-flight requests may take to finish.",
        ),
    ] = "10s",
) -> None:
    """Run a proxy to the Kubernetes API server (kubectl proxy's flags and answers)."""
    if port != DEFAULT_PORT and unix_socket:
        fail("cannot set --unix-socket and --port at the same time")
    if bool(tls_cert_file) != bool(tls_private_key_file):
        fail("--tls-cert-file and --tls-private-key-file go together")
    context_list = [c.strip() for c in contexts.split(",") if c.strip()]
    if context_list and (context or cluster or user or server):
        fail("--contexts cannot be combined with --context, --cluster, --user or --server")
    if www:
        if not os.path.exists(www):
            _klog_warning(f"Failed to stat static file directory {www}: no such file or directory")
        elif not Path(www).is_dir():
            _klog_warning(f"Static file directory {www} is not a directory")

    pool = PoolSettings(
        tcp_keepalive=parse_duration(keepalive, "--keepalive"),
        request_timeout=parse_duration(request_timeout, "--request-timeout", bare_seconds=True),
    )
    grace = parse_duration(shutdown_grace_period, "--shutdown-grace-period")
    options = KubeconfigOptions(
        kubeconfig=kubeconfig,
        context=context,
        cluster=cluster,
        user=user,
        server=server,
        token=token,
        certificate_authority=certificate_authority,
        client_certificate=client_certificate,
        client_key=client_key,
        insecure_skip_tls_verify=insecure_skip_tls_verify,
        tls_server_name=tls_server_name,
        impersonate=impersonate,
        impersonate_groups=tuple(impersonate_groups or ()),
        impersonate_uid=impersonate_uid,
    )
    try:
        if disable_filter:
            rules = FilterRules.from_flags("^", "", "^", "", read_only=True) if read_only else None
        else:
            rules = FilterRules.from_flags(
                accept_paths, reject_paths, accept_hosts, reject_methods, read_only=read_only
            )
        tokens = ClientTokens(auth_token_file) if auth_token_file else None
        upstreams = upstreams_for(options, context_list, pool, append_server_path, USER_AGENT)
    except (FilterError, TokenFileError, CredentialsError) as exc:
        fail(str(exc))
    config = ProxyConfig(
        api_prefix=api_prefix,
        www=www or None,
        www_prefix=www_prefix,
        rules=rules,
        multi_cluster=bool(context_list),
        client_tokens=tokens,
        user_agent=USER_AGENT,
    )
    listener = Listener(
        address=address,
        port=port,
        unix_socket=unix_socket or None,
        tls_cert_file=tls_cert_file,
        tls_key_file=tls_private_key_file,
    )
    try:
        sock = bind(listener)
    except OSError as exc:
        where = f"unix {unix_socket}" if unix_socket else f"tcp {address}:{port}"
        fail(f"listen {where}: {exc.strerror or exc}")
    try:
        log = AccessLog.open(access_log) if access_log else None
    except OSError as exc:
        sock.close()
        fail(f"--access-log: {exc.strerror or exc}")
    if disable_filter and not unix_socket:
        _klog_warning(FILTER_WARNING)
    proxy = ApiProxy(config, upstreams, access_log=log)

    def ready(bound: str) -> None:
        print(f"Starting to serve on {bound}", flush=True)

    try:
        run_loop(
            serve(
                proxy,
                listener,
                grace=grace,
                metrics_address=metrics_address,
                ready=ready,
                sock=sock,
            )
        )
    except OSError as exc:
        fail(str(exc))


def main() -> None:
    """Console-script entry point."""
    sys.exit(run(app, "api-proxy", _go_bools(sys.argv[1:])))


if __name__ == "__main__":
    main()
