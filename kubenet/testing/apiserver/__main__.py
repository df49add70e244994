"""``python -m kubenet.testing.apiserver``: run the test API server until interrupted.

Prints the address it listens on and writes a kubeconfig (``--kubeconfig-out``)
with one context per authentication method::

    python -m kubenet.testing.apiserver --port 0 --kubeconfig-out /tmp/kc --load examples/
    KUBECONFIG=/tmp/kc kubectl get svc -A
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from pathlib import Path

from kubenet.testing.apiserver.errors import ApiError
from kubenet.testing.apiserver.server import ApiServer, ServerConfig


def parse_args(argv: list[str] | None = None) -> ServerConfig:
    p = argparse.ArgumentParser(
        prog="python -m kubenet.testing.apiserver",
        description="A Kubernetes-compatible API server for tests and demos "
        "(never a production control plane).",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: loopback)")
    p.add_argument("--port", type=int, default=0, help="port to bind; 0 picks a free one")
    p.add_argument("--kubeconfig-out", type=Path, help="write a kubeconfig for clients here")
    p.add_argument("--state-dir", type=Path, help="where to write certificates and tokens")
    p.add_argument(
        "--load",
        type=Path,
        action="append",
        default=[],
        metavar="MANIFEST",
        help="YAML/JSON file or folder to preload (repeatable)",
    )
    p.add_argument("--insecure-http", action="store_true", help="serve plain HTTP instead of TLS")
    p.add_argument("--anonymous", action="store_true", help="allow unauthenticated requests")
    p.add_argument("--token-auth-file", type=Path, help='extra users: token,user,uid,"groups"')
    p.add_argument(
        "--history",
        type=int,
        default=10_000,
        help="watch events kept per resource (older resourceVersions get 410)",
    )
    p.add_argument(
        "--bookmark-interval", type=float, default=60.0, help="seconds between bookmarks"
    )
    p.add_argument(
        "--service-cidr",
        action="append",
        default=[],
        help="service CIDR (repeat for dual-stack; default 10.96.0.0/16 and fd00:96::/112)",
    )
    p.add_argument(
        "--no-bootstrap",
        action="store_true",
        help="do not create the system namespaces and the kubernetes Service",
    )
    p.add_argument(
        "--port-forward",
        action="append",
        default=[],
        metavar="NS/POD:PORT=HOST:PORT",
        help="where a pod port forwards to (repeatable)",
    )
    args = p.parse_args(argv)
    forward: dict[str, tuple[str, int]] = {}
    for item in args.port_forward:
        key, _, target = item.partition("=")
        host, _, port = target.rpartition(":")
        if not key or not host or not port.isdigit():
            p.error(f"--port-forward wants NS/POD:PORT=HOST:PORT, got {item!r}")
        forward[key] = (host.strip("[]"), int(port))
    return ServerConfig(
        host=args.host,
        port=args.port,
        tls=not args.insecure_http,
        anonymous=args.anonymous,
        token_file=args.token_auth_file,
        history=args.history,
        bookmark_interval=args.bookmark_interval,
        service_cidrs=tuple(args.service_cidr) or ServerConfig.service_cidrs,
        bootstrap=not args.no_bootstrap,
        port_forward=forward,
        manifests=tuple(args.load),
        state_dir=args.state_dir,
        kubeconfig_path=args.kubeconfig_out,
    )


async def serve(config: ServerConfig) -> None:
    server = ApiServer(config)
    await server.start()
    print(f"serving on {server.url}", flush=True)
    print(f"kubeconfig: {server.kubeconfig_path}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await server.stop()


def main(argv: list[str] | None = None) -> int:
    config = parse_args(argv)
    try:
        asyncio.run(serve(config))
    except (OSError, ValueError, ApiError) as err:
        # A port in use, an unreadable manifest or one the server refuses.
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
