"""``pods/{name}/portforward``: forward TCP connections to a port the test names.

Two client protocols are served:

* The WebSocket channel protocol (``portforward.k8s.io`` / ``v4.channel.k8s.io``), which
  the Python client speaks: one connection per requested port, opened when the
  socket opens; channel ``2*i`` carries the *i*-th port's data and ``2*i+1`` its
  errors, and each channel first carries its port as a little-endian uint16.
* SPDY/3.1 tunnelled in a WebSocket (``SPDY/3.1+portforward.k8s.io``), which kubectl
  1.30+ speaks: for every local connection kubectl opens an ``error`` and a ``data``
  stream (headers ``streamType``, ``port``, ``requestID``); the server replies to
  each, connects, copies bytes both ways, and ends both streams when the target
  closes (an error, if any, is written to the error stream first).

Where a port leads is configured, never guessed (:func:`forward_target`): the server
option ``port_forward={"ns/pod:port": (host, port)}``, or the pod annotation
``kubenet.dev/port-forward: "8080=127.0.0.1:18080"``, which may only name loopback
addresses unless the server allows any.  Plain SPDY upgrades (kubectl's fallback)
are refused with a clear message.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSMsgType, web

from kubenet.testing.apiserver import errors, spdy
from kubenet.testing.apiserver.upgrade import Channels, check_upgrade

JsonObject = dict[str, Any]

#: Pod annotation naming port-forward targets: ``"8080=127.0.0.1:18080,53=[::1]:1053"``.
FORWARD_ANNOTATION = "kubenet.dev/port-forward"
SPDY_TUNNEL = "SPDY/3.1+portforward.k8s.io"
CHANNEL_PROTOCOLS = (
    "portforward.k8s.io",
    "v4.channel.k8s.io",
    "channel.k8s.io",
    "v4.base64.channel.k8s.io",
    "base64.channel.k8s.io",
)
PROTOCOLS = (SPDY_TUNNEL, *CHANNEL_PROTOCOLS)


@dataclass(frozen=True)
class ForwardPolicy:
    """Where port-forwarded connections may go.

    ``targets`` maps ``"namespace/pod:port"`` to ``(host, port)`` and is set by whoever
    starts the server (tests).  The pod annotation :data:`FORWARD_ANNOTATION` may name
    targets too, but only loopback ones unless ``annotation_any_host`` is set, so a
    client allowed to create pods cannot make the server connect anywhere else.
    """

    targets: Mapping[str, tuple[str, int]] = field(default_factory=dict)
    annotation_any_host: bool = False


def parse_forward_annotation(value: str) -> dict[int, tuple[str, int]]:
    out: dict[int, tuple[str, int]] = {}
    for item in value.split(","):
        item = item.strip()
        if not item:
            continue
        port_text, _, target = item.partition("=")
        host, _, target_port = target.rpartition(":")
        out[int(port_text)] = (host.strip("[]"), int(target_port))
    return out


def forward_target(pod: JsonObject, port: int, policy: ForwardPolicy) -> tuple[str, int]:
    """The address a forwarded ``port`` of ``pod`` connects to, or ValueError."""
    meta = pod["metadata"]
    key = f"{meta.get('namespace', '')}/{meta['name']}:{port}"
    if key in policy.targets:
        return policy.targets[key]
    annotation = (meta.get("annotations") or {}).get(FORWARD_ANNOTATION)
    if annotation:
        try:
            targets = parse_forward_annotation(annotation)
        except ValueError:
            raise ValueError(
                f"annotation {FORWARD_ANNOTATION} is malformed: {annotation!r}"
            ) from None
        if port in targets:
            host, target_port = targets[port]
            if not policy.annotation_any_host and not ipaddress.ip_address(host).is_loopback:
                raise ValueError(f"annotation target {host} is not a loopback address")
            return host, target_port
    raise ValueError(
        f"no port-forward target configured for {key} (set the {FORWARD_ANNOTATION} annotation "
        "or the server's port_forward option)"
    )


def parse_ports(request: web.Request) -> list[int]:
    raw = request.query.getall("ports", []) + request.query.getall("port", [])
    if not raw:
        raise errors.bad_request('query parameter "port" is required')
    ports: list[int] = []
    for text in raw:
        for part in text.split(","):
            try:
                port = int(part)
            except ValueError:
                raise errors.bad_request(f'unable to parse "{part}" as a port') from None
            if not 0 < port < 65536:
                raise errors.bad_request(f'port "{part}" must be > 0')
            ports.append(port)
    return ports


async def serve(
    request: web.Request, pod: JsonObject, policy: ForwardPolicy
) -> web.WebSocketResponse:
    check_upgrade(request, PROTOCOLS)
    if SPDY_TUNNEL in request.headers.get("Sec-WebSocket-Protocol", ""):
        ws = web.WebSocketResponse(protocols=(SPDY_TUNNEL,), autoping=True, heartbeat=None)
        await ws.prepare(request)
        await SpdyTunnel(ws, pod, policy).run()
        return ws
    ports = parse_ports(request)
    ws = web.WebSocketResponse(protocols=CHANNEL_PROTOCOLS, autoping=True, heartbeat=None)
    await ws.prepare(request)
    await _serve_channels(ws, pod, policy, ports)
    return ws


# --- WebSocket channel protocol ---------------------------------------------------------


async def _serve_channels(
    ws: web.WebSocketResponse, pod: JsonObject, policy: ForwardPolicy, ports: list[int]
) -> None:
    channels = Channels(ws, ws.ws_protocol or "channel.k8s.io")
    writers: dict[int, asyncio.StreamWriter] = {}
    name = pod["metadata"]["name"]

    async def upstream(index: int, port: int) -> None:
        data_ch, err_ch = 2 * index, 2 * index + 1
        prefix = struct.pack("<H", port)
        # Connect before announcing the port, so nothing the client sends is lost.
        try:
            host, target_port = forward_target(pod, port, policy)
            reader, writer = await asyncio.open_connection(host, target_port)
        except (ValueError, OSError) as err:
            await channels.send(data_ch, prefix)
            await channels.send(err_ch, prefix)
            await channels.send(
                err_ch, f"error forwarding port {port} to pod {name}: {err}".encode()
            )
            return
        writers[data_ch] = writer
        await channels.send(data_ch, prefix)
        await channels.send(err_ch, prefix)
        try:
            while chunk := await reader.read(65536):
                await channels.send(data_ch, chunk)
        except OSError:
            pass
        finally:
            writers.pop(data_ch, None)
            writer.close()

    tasks = [asyncio.create_task(upstream(i, port)) for i, port in enumerate(ports)]

    async def downstream() -> None:
        async for channel, payload in channels.frames():
            writer = writers.get(channel)
            if writer is not None and payload:
                writer.write(payload)
                await writer.drain()
        # The client went away: end every forwarded connection.
        for writer in list(writers.values()):
            writer.close()

    reader_task = asyncio.create_task(downstream())
    await asyncio.gather(*tasks, return_exceptions=True)
    await ws.close()
    reader_task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await reader_task


# --- SPDY/3.1 tunnelled in a WebSocket ----------------------------------------------------


@dataclass
class _Pair:
    """The error and data streams kubectl opens for one local connection."""

    port: int = 0
    error_stream: int = 0
    data_stream: int = 0
    writer: asyncio.StreamWriter | None = None
    #: Client bytes that arrived before the target connection was up.
    pending: list[bytes] = field(default_factory=list)
    client_done: bool = False
    task: asyncio.Task[None] | None = None


class SpdyTunnel:
    """One kubectl port-forward session."""

    def __init__(self, ws: web.WebSocketResponse, pod: JsonObject, policy: ForwardPolicy) -> None:
        self.ws = ws
        self.pod = pod
        self.policy = policy
        self.decoder = spdy.Decoder()
        self.encoder = spdy.HeaderCodec()
        self.pairs: dict[str, _Pair] = {}
        self.by_stream: dict[int, _Pair] = {}
        self._lock = asyncio.Lock()
        self._last_stream = 0

    async def send(self, frame: bytes) -> None:
        async with self._lock:
            if not self.ws.closed:
                await self.ws.send_bytes(frame)

    async def run(self) -> None:
        try:
            async for msg in self.ws:
                if msg.type != WSMsgType.BINARY:
                    continue
                try:
                    frames = self.decoder.feed(msg.data)
                except spdy.ProtocolError:
                    break
                for frame in frames:
                    if not await self._handle(frame):
                        return
        finally:
            for pair in list(self.pairs.values()):
                if pair.task is not None:
                    pair.task.cancel()
                if pair.writer is not None:
                    pair.writer.close()

    async def _handle(self, frame: spdy.Frame) -> bool:
        if isinstance(frame, spdy.Data):
            pair = self.by_stream.get(frame.stream_id)
            if pair is None or frame.stream_id != pair.data_stream:
                return True  # error-stream FIN or a stream already gone
            if frame.data:
                if pair.writer is None:
                    pair.pending.append(frame.data)
                else:
                    pair.writer.write(frame.data)
                    await pair.writer.drain()
            if frame.fin:
                pair.client_done = True
                if pair.writer is not None and pair.writer.can_write_eof():
                    pair.writer.write_eof()
            return True
        if frame.kind == spdy.SYN_STREAM:
            await self._open(frame)
        elif frame.kind == spdy.PING:
            await self.send(spdy.ping(frame.value))
        elif frame.kind == spdy.RST_STREAM:
            pair = self.by_stream.get(frame.stream_id)
            if pair is not None and frame.stream_id == pair.data_stream and pair.writer is not None:
                pair.writer.close()
        elif frame.kind == spdy.GOAWAY:
            return False
        return True

    async def _open(self, frame: spdy.Control) -> None:
        self._last_stream = frame.stream_id
        headers = frame.headers
        kind, request_id = headers.get("streamtype", ""), headers.get("requestid", "")
        try:
            port = int(headers.get("port", ""))
        except ValueError:
            await self.send(spdy.rst_stream(frame.stream_id, spdy.PROTOCOL_ERROR))
            return
        await self.send(spdy.syn_reply(self.encoder, frame.stream_id, {}))
        pair = self.pairs.setdefault(request_id, _Pair(port=port))
        if kind == "error":
            pair.error_stream = frame.stream_id
        elif kind == "data":
            pair.data_stream = frame.stream_id
            if frame.flags & spdy.FLAG_FIN:
                pair.client_done = True
        else:
            await self.send(spdy.rst_stream(frame.stream_id, spdy.PROTOCOL_ERROR))
            return
        self.by_stream[frame.stream_id] = pair
        if pair.error_stream and pair.data_stream and pair.task is None:
            pair.task = asyncio.create_task(self._forward(request_id, pair))

    async def _forward(self, request_id: str, pair: _Pair) -> None:
        name = self.pod["metadata"]["name"]
        try:
            host, target_port = forward_target(self.pod, pair.port, self.policy)
            reader, writer = await asyncio.open_connection(host, target_port)
        except (ValueError, OSError) as err:
            message = f"error forwarding port {pair.port} to pod {name}: {err}"
            await self.send(spdy.data(pair.error_stream, message.encode(), fin=True))
            await self.send(spdy.data(pair.data_stream, b"", fin=True))
            self._forget(request_id, pair)
            return
        pair.writer = writer
        for chunk in pair.pending:
            writer.write(chunk)
        pair.pending.clear()
        if pair.client_done and writer.can_write_eof():
            writer.write_eof()
        try:
            while chunk := await reader.read(65536):
                await self.send(spdy.data(pair.data_stream, chunk))
        except OSError:
            pass
        finally:
            writer.close()
            # End the data stream, then the (empty) error stream kubectl waits on.
            await self.send(spdy.data(pair.data_stream, b"", fin=True))
            await self.send(spdy.data(pair.error_stream, b"", fin=True))
            self._forget(request_id, pair)

    def _forget(self, request_id: str, pair: _Pair) -> None:
        self.pairs.pop(request_id, None)
        self.by_stream.pop(pair.error_stream, None)
        self.by_stream.pop(pair.data_stream, None)
