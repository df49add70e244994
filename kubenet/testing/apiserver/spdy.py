"""Just enough SPDY/3.1 framing for kubectl's port-forward.

kubectl 1.30+ tunnels a SPDY/3.1 session inside a WebSocket
(subprotocol ``SPDY/3.1+portforward.k8s.io``) and opens two streams per local
connection.  This module is a pure codec (bytes in, frames out, and back) for the
frames that session uses: SYN_STREAM, SYN_REPLY, RST_STREAM, PING, GOAWAY and DATA.
Header blocks are zlib streams primed with the dictionary the SPDY/3 specification
defines (section 2.6.10.1); each direction keeps one compression context for the
whole session.  There is no flow control: the Go client (moby/spdystream) neither
sends nor honours WINDOW_UPDATE.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass, field

VERSION = 3
SYN_STREAM, SYN_REPLY, RST_STREAM, SETTINGS, PING, GOAWAY, HEADERS, WINDOW_UPDATE = (
    1,
    2,
    3,
    4,
    6,
    7,
    8,
    9,
)
FLAG_FIN = 0x01
#: RST_STREAM status codes used here.
PROTOCOL_ERROR, CANCEL = 1, 5


def _dictionary() -> bytes:
    """The SPDY/3 header compression dictionary, built as the specification lays it out:
    length-prefixed header names and common values, then a run of status codes and
    common header text."""
    words = [
        "options",
        "head",
        "post",
        "put",
        "delete",
        "trace",
        "accept",
        "accept-charset",
        "accept-encoding",
        "accept-language",
        "accept-ranges",
        "age",
        "allow",
        "authorization",
        "cache-control",
        "connection",
        "content-base",
        "content-encoding",
        "content-language",
        "content-length",
        "content-location",
        "content-md5",
        "content-range",
        "content-type",
        "date",
        "etag",
        "expect",
        "expires",
        "from",
        "host",
        "if-match",
        "if-modified-since",
        "if-none-match",
        "if-range",
        "if-unmodified-since",
        "last-modified",
        "location",
        "max-forwards",
        "pragma",
        "proxy-authenticate",
        "proxy-authorization",
        "range",
        "referer",
        "retry-after",
        "server",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "user-agent",
        "vary",
        "via",
        "warning",
        "www-authenticate",
        "method",
        "get",
        "status",
    ]
    words += [
        "200 OK",
        "version",
        "HTTP/1.1",
        "url",
        "public",
        "set-cookie",
        "keep-alive",
        "origin",
    ]
    prefixed = b"".join(struct.pack(">I", len(w)) + w.encode() for w in words)
    tail = (
        "100101201202205206300302303304305306307402405406407408409410411412413414415416417502"
        "504505203 Non-Authoritative Information204 No Content301 Moved Permanently400 Bad "
        "Request401 Unauthorized403 Forbidden404 Not Found500 Internal Server Error501 Not "
        "Implemented503 Service UnavailableJan Feb Mar Apr May Jun Jul Aug Sept Oct Nov Dec "
        "00:00:00 Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMTchunked,text/html,image/png,image/jpg,"
        "image/gif,application/xml,application/xhtml+xml,text/plain,text/javascript,"
        "publicprivatemax-age=gzip,deflate,sdchcharset=utf-8charset=iso-8859-1,utf-,*,enq=0."
    )
    return prefixed + tail.encode()


DICTIONARY = _dictionary()


class ProtocolError(ValueError):
    """Bytes that are not valid SPDY/3."""


@dataclass(frozen=True)
class Control:
    """A control frame: ``kind`` is SYN_STREAM, PING, ...; ``headers`` for SYN_* frames."""

    kind: int
    flags: int
    stream_id: int = 0
    headers: dict[str, str] = field(default_factory=dict)
    #: PING id, GOAWAY last-good stream, RST_STREAM status: the frame's integer argument.
    value: int = 0


@dataclass(frozen=True)
class Data:
    stream_id: int
    flags: int
    data: bytes

    @property
    def fin(self) -> bool:
        return bool(self.flags & FLAG_FIN)


Frame = Control | Data


class HeaderCodec:
    """One direction's header compression context (it spans the whole session)."""

    def __init__(self) -> None:
        self._inflate = zlib.decompressobj(zdict=DICTIONARY)
        self._deflate = zlib.compressobj(
            zlib.Z_DEFAULT_COMPRESSION,
            zlib.DEFLATED,
            15,
            8,
            zlib.Z_DEFAULT_STRATEGY,
            zdict=DICTIONARY,
        )

    def decode(self, block: bytes) -> dict[str, str]:
        try:
            raw = self._inflate.decompress(block)
        except zlib.error as err:
            raise ProtocolError(f"bad header block: {err}") from None
        headers: dict[str, str] = {}
        try:
            (count,) = struct.unpack_from(">I", raw, 0)
            pos = 4
            for _ in range(count):
                (n,) = struct.unpack_from(">I", raw, pos)
                name = raw[pos + 4 : pos + 4 + n].decode()
                pos += 4 + n
                (n,) = struct.unpack_from(">I", raw, pos)
                value = raw[pos + 4 : pos + 4 + n].decode()
                pos += 4 + n
                # Multiple values of one name are NUL-separated; keep the first.
                headers[name.lower()] = value.split("\x00", 1)[0]
        except (struct.error, UnicodeDecodeError) as err:
            raise ProtocolError(f"bad header block: {err}") from None
        return headers

    def encode(self, headers: dict[str, str]) -> bytes:
        raw = struct.pack(">I", len(headers))
        for name, value in headers.items():
            raw += struct.pack(">I", len(name)) + name.lower().encode()
            raw += struct.pack(">I", len(value)) + value.encode()
        return self._deflate.compress(raw) + self._deflate.flush(zlib.Z_SYNC_FLUSH)


class Decoder:
    """Reassembles frames from arbitrary chunks of the byte stream."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        self.headers = HeaderCodec()

    def feed(self, chunk: bytes) -> list[Frame]:
        self._buffer += chunk
        frames: list[Frame] = []
        while len(self._buffer) >= 8:
            (length,) = struct.unpack_from(">I", self._buffer, 4)
            flags, length = length >> 24, length & 0xFFFFFF
            if len(self._buffer) < 8 + length:
                break
            head = bytes(self._buffer[:8])
            body = bytes(self._buffer[8 : 8 + length])
            del self._buffer[: 8 + length]
            frames.append(self._frame(head, flags, body))
        return frames

    def _frame(self, head: bytes, flags: int, body: bytes) -> Frame:
        (first,) = struct.unpack_from(">I", head, 0)
        if not first & 0x80000000:
            return Data(first & 0x7FFFFFFF, flags, body)
        version, kind = (first >> 16) & 0x7FFF, first & 0xFFFF
        if version != VERSION:
            raise ProtocolError(f"unsupported SPDY version {version}")
        if kind in (SYN_STREAM, SYN_REPLY, HEADERS):
            (stream,) = struct.unpack_from(">I", body, 0)
            block = body[10:] if kind == SYN_STREAM else body[4:]
            return Control(kind, flags, stream & 0x7FFFFFFF, self.headers.decode(block))
        if kind in (RST_STREAM, GOAWAY):
            stream, value = struct.unpack_from(">II", body, 0)
            return Control(kind, flags, stream & 0x7FFFFFFF, value=value)
        if kind == PING:
            (ping,) = struct.unpack_from(">I", body, 0)
            return Control(kind, flags, value=ping)
        return Control(kind, flags)  # SETTINGS, WINDOW_UPDATE, ...: ignored by the session


def _control(kind: int, flags: int, body: bytes) -> bytes:
    return struct.pack(">HHI", 0x8000 | VERSION, kind, (flags << 24) | len(body)) + body


def syn_reply(
    codec: HeaderCodec, stream_id: int, headers: dict[str, str], fin: bool = False
) -> bytes:
    body = struct.pack(">I", stream_id) + codec.encode(headers)
    return _control(SYN_REPLY, FLAG_FIN if fin else 0, body)


def rst_stream(stream_id: int, status: int) -> bytes:
    return _control(RST_STREAM, 0, struct.pack(">II", stream_id, status))


def ping(ping_id: int) -> bytes:
    return _control(PING, 0, struct.pack(">I", ping_id))


def goaway(last_stream: int, status: int = 0) -> bytes:
    return _control(GOAWAY, 0, struct.pack(">II", last_stream, status))


def data(stream_id: int, payload: bytes, fin: bool = False) -> bytes:
    return struct.pack(">II", stream_id, ((FLAG_FIN if fin else 0) << 24) | len(payload)) + payload


def syn_stream(
    codec: HeaderCodec, stream_id: int, headers: dict[str, str], fin: bool = False
) -> bytes:
    """A SYN_STREAM (the client's frame; here for tests)."""
    body = struct.pack(">IIH", stream_id, 0, 0) + codec.encode(headers)
    return _control(SYN_STREAM, FLAG_FIN if fin else 0, body)
