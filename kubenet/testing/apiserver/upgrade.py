"""``pods/exec`` over the WebSocket channel protocol, and the framing port-forward shares.

The protocol (``k8s.io/apimachinery/pkg/util/httpstream/wsstream``): every binary
message starts with one byte naming a channel; for exec, 0 is stdin, 1 stdout,
2 stderr, 3 the error channel and 4 terminal resize.  Versions:

* ``channel.k8s.io`` / ``v2`` / ``v3``: the error channel carries plain text;
* ``v4.channel.k8s.io``: the error channel carries a ``metav1.Status`` (exit codes as
  ``NonZeroExitCode`` with an ``ExitCode`` cause) — what the Python client speaks;
* ``v5.channel.k8s.io``: v4 plus a close signal, ``[255, channel]``, with which the
  client half-closes stdin — what kubectl 1.30+ speaks first.

``base64.channel.k8s.io`` variants send text frames: the channel as an ASCII digit,
then base64 data.  As the kubelet does, the server first sends an empty message on
the lowest output channel, then streams, then writes the error channel and closes
the socket normally.

Port-forward lives in :mod:`~kubenet.testing.apiserver.portforward`.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import WSMsgType, web

from kubenet.testing.apiserver import commands, errors

JsonObject = dict[str, Any]

STDIN, STDOUT, STDERR, ERROR, RESIZE = 0, 1, 2, 3, 4
CLOSE = 255

EXEC_PROTOCOLS = (
    "v5.channel.k8s.io",
    "v4.channel.k8s.io",
    "v3.channel.k8s.io",
    "v2.channel.k8s.io",
    "channel.k8s.io",
    "v4.base64.channel.k8s.io",
    "base64.channel.k8s.io",
)


def requested_protocols(request: web.Request) -> list[str]:
    header = request.headers.get("Sec-WebSocket-Protocol", "")
    return [p.strip() for p in header.split(",") if p.strip()]


def check_upgrade(request: web.Request, supported: tuple[str, ...]) -> None:
    """Refuse what cannot be served before upgrading, so clients can fall back or report."""
    upgrade = request.headers.get("Upgrade", "").lower()
    asked = requested_protocols(request)
    if upgrade != "websocket":
        what = (
            "SPDY"
            if upgrade.startswith("spdy")
            else request.headers.get("Upgrade") or ("a plain HTTP request")
        )
        raise errors.bad_request(
            f"{what} is not supported by this test server for {request.path.rsplit('/', 1)[-1]}; "
            f"it speaks the WebSocket protocols {list(supported)}"
        )
    if asked and not any(p in supported for p in asked):
        raise errors.bad_request(
            f"requested WebSocket subprotocols {asked} are not supported; "
            f"supported: {list(supported)}"
        )


class Channels:
    """Framing for one negotiated channel protocol."""

    def __init__(self, ws: web.WebSocketResponse, protocol: str) -> None:
        self.ws = ws
        self.protocol = protocol
        self.base64 = "base64" in protocol
        self.version = 5 if protocol.startswith("v5.") else 4 if protocol.startswith("v4.") else 1
        self._lock = asyncio.Lock()

    async def send(self, channel: int, data: bytes) -> None:
        async with self._lock:
            if self.ws.closed:
                return
            if self.base64:
                await self.ws.send_str(chr(ord("0") + channel) + base64.b64encode(data).decode())
            else:
                await self.ws.send_bytes(bytes([channel]) + data)

    async def frames(self) -> AsyncIterator[tuple[int, bytes]]:
        """Incoming (channel, data) pairs until the socket closes."""
        async for msg in self.ws:
            if self.base64 and msg.type == WSMsgType.TEXT:
                text: str = msg.data
                if text:
                    try:
                        data = base64.b64decode(text[1:])
                    except ValueError:
                        continue
                    yield ord(text[0]) - ord("0"), data
            elif msg.type in (WSMsgType.BINARY, WSMsgType.TEXT):
                # Upstream reads text and binary frames alike on the raw protocols (the
                # Python client writes str stdin as text frames).
                payload = msg.data if isinstance(msg.data, bytes) else msg.data.encode()
                if payload:
                    yield payload[0], payload[1:]
            elif msg.type in (WSMsgType.ERROR, WSMsgType.CLOSE):
                return


def _status(message: str, reason: str, code: int, causes: list[JsonObject]) -> bytes:
    status: JsonObject = {"metadata": {}, "status": "Failure", "message": message, "reason": reason}
    if causes:
        status["details"] = {"causes": causes}
    if code:
        status["code"] = code
    return json.dumps(status, separators=(",", ":")).encode()


SUCCESS = json.dumps({"metadata": {}, "status": "Success"}, separators=(",", ":")).encode()


def pick_container(pod: JsonObject, requested: str) -> JsonObject:
    containers = [c for c in (pod.get("spec") or {}).get("containers") or [] if isinstance(c, dict)]
    name = pod["metadata"]["name"]
    if requested:
        for c in containers:
            if c.get("name") == requested:
                return c
        raise errors.bad_request(f"container {requested} is not valid for pod {name}")
    if len(containers) == 1:
        return containers[0]
    names = " ".join(str(c.get("name")) for c in containers)
    raise errors.bad_request(
        f"a container name must be specified for pod {name}, choose one of: [{names}]"
    )


async def serve_exec(request: web.Request, pod: JsonObject) -> web.WebSocketResponse:
    """Run an allow-listed command in ``pod`` over a negotiated channel protocol."""
    query = request.query
    argv = query.getall("command", [])
    if not argv:
        raise errors.bad_request("you must specify at least 1 command")
    want = {
        k: query.get(k, "").lower() in ("1", "true") for k in ("stdin", "stdout", "stderr", "tty")
    }
    if not (want["stdin"] or want["stdout"] or want["stderr"]):
        raise errors.bad_request("you must specify at least 1 of stdin, stdout, stderr")
    check_upgrade(request, EXEC_PROTOCOLS)
    container = pick_container(pod, query.get("container", ""))
    ws = web.WebSocketResponse(protocols=EXEC_PROTOCOLS, autoping=True, heartbeat=None)
    await ws.prepare(request)
    channels = Channels(ws, ws.ws_protocol or "channel.k8s.io")
    first = STDOUT if want["stdout"] else STDERR if want["stderr"] and not want["tty"] else ERROR
    await channels.send(first, b"")

    stdin_queue: asyncio.Queue[bytes | None] = asyncio.Queue()

    async def pump() -> None:
        async for channel, data in channels.frames():
            if channel == STDIN and want["stdin"]:
                await stdin_queue.put(data)
            elif channel == CLOSE and channels.version >= 5 and data[:1] == bytes([STDIN]):
                await stdin_queue.put(None)
        await stdin_queue.put(None)

    async def stdin_chunks() -> AsyncIterator[bytes]:
        while (chunk := await stdin_queue.get()) is not None:
            yield chunk

    async def out(data: bytes) -> None:
        if want["stdout"] and data:
            await channels.send(STDOUT, data)

    async def err(data: bytes) -> None:
        if data:
            if want["tty"] and want["stdout"]:
                await channels.send(STDOUT, data)
            elif want["stderr"]:
                await channels.send(STDERR, data)

    reader = asyncio.create_task(pump())
    ctx = commands.Context(pod, container)
    try:
        code = await commands.run(argv, ctx, stdin_chunks() if want["stdin"] else None, out, err)
        if code == 0:
            result = SUCCESS if channels.version >= 4 else b""
        elif channels.version >= 4:
            result = _status(
                f"command terminated with non-zero exit code: error executing command {argv}, "
                f"exit code {code}",
                "NonZeroExitCode",
                0,
                [{"reason": "ExitCode", "message": str(code)}],
            )
        else:
            result = f"command terminated with non-zero exit code: exit code {code}".encode()
    except commands.CommandNotFound as missing:
        message = (
            f'error executing command in container: exec: "{missing.name}": executable file not '
            f"found in $PATH (this test server runs only its built-in commands: "
            f"{', '.join(sorted(commands.COMMANDS))})"
        )
        result = (
            _status(
                f"Internal error occurred: {message}", "InternalError", 500, [{"message": message}]
            )
            if channels.version >= 4
            else message.encode()
        )
    if result:
        await channels.send(ERROR, result)
    await ws.close()
    reader.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await reader
    return ws
