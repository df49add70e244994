"""HTTP/1.1 framing, both directions, with no I/O (bytes in, values out).

The proxy reads requests from its clients and responses from the API server, and
writes the other two. This module is all of HTTP/1.1 it needs (RFC 9112): heads,
and bodies framed by ``Content-Length``, by chunked transfer coding or (responses
only) by the connection closing. It never decides policy (which headers to forward,
what to retry); the I/O modules do.

Requests are read strictly, because a proxy that reads a body boundary differently
from the server behind it can be used to smuggle a second request past its filter:
a request with both Content-Length and Transfer-Encoding, with a transfer coding
other than chunked, with conflicting lengths, with whitespace before a header's
colon, with folded headers or a bare LF is refused.

Heads are NamedTuples rather than frozen dataclasses: as immutable, and built at a
third of the cost, which counts on a path taken for every request.

A general-purpose HTTP library costs several times more per request than the rest of
the proxy's job; keeping this part small and pure lets every framing case be tested
byte by byte (tests/forward/test_http1.py).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from enum import Enum
from http import HTTPStatus
from typing import NamedTuple

#: Longest head (request or response line plus headers) accepted.
MAX_HEAD = 64 * 1024
#: Longest chunk-size line (with extensions) accepted.
MAX_CHUNK_LINE = 4096
#: Most header fields accepted in one head.
MAX_HEADERS = 256

_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")

#: Hop-by-hop header fields (RFC 9110 7.6.1): about one connection, never forwarded.
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)
_SPECIAL = HOP_BY_HOP | {"content-length"}

REASONS = {s.value: s.phrase for s in HTTPStatus}


class FramingError(Exception):
    """Bytes that are not acceptable HTTP/1.1 (message is safe to show).

    ``status`` is what a server answers a client that sent them.
    """

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


# --- writing ---------------------------------------------------------------------------


def request_head(method: str, target: str, host: str, headers: Sequence[tuple[str, str]]) -> bytes:
    """The bytes of a request head; ``headers`` must not contain Host."""
    lines = [f"{method} {target} HTTP/1.1", f"Host: {host}"]
    lines += [f"{name}: {value}" for name, value in headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8", "surrogateescape")


def response_head(
    status: int, reason: str, headers: Sequence[tuple[str, str]], raw: str = ""
) -> bytes:
    """The bytes of a response head (always HTTP/1.1, as Go's server writes it).

    ``raw``: header lines passed through as received (a :attr:`Head.forward` block),
    written byte for byte before ``headers``.
    """
    lines = [f"HTTP/1.1 {status} {reason or REASONS.get(status, '')}"]
    if raw:
        lines.append(raw)
    lines += [f"{name}: {value}" for name, value in headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1", "replace")


def chunk(data: bytes) -> bytes:
    """One chunk of a chunked body."""
    return b"%x\r\n%b\r\n" % (len(data), data)


LAST_CHUNK = b"0\r\n\r\n"


# --- heads -------------------------------------------------------------------------------


def _fields(lines: list[str], kind: str, ascii_only: bool) -> list[tuple[str, str]]:
    if len(lines) > MAX_HEADERS:
        raise FramingError(f"too many {kind} header fields", 431)
    headers: list[tuple[str, str]] = []
    token = _TOKEN.fullmatch
    for line in lines:
        name, sep, value = line.partition(":")
        if not sep or token(name) is None:
            # Also catches obs-fold (a line starting with whitespace) and whitespace
            # before the colon, both of which RFC 9112 says to reject.
            raise FramingError(f"malformed {kind} header field")
        headers.append((name, value.strip(" \t")))
    if not ascii_only:
        # Field bytes are opaque; UTF-8 is what anyone sends, if anything.
        headers = [(n, v.encode("latin-1").decode("utf-8", "replace")) for n, v in headers]
    return headers


def _split_head(raw: bytes, kind: str) -> tuple[list[str], bool]:
    """The head's lines, after the checks that are cheapest on the whole head at once:
    no bare LF or CR (RFC 9112 2.2) and no NUL. Also says whether it is all ASCII."""
    text = raw.decode("latin-1")
    lines = text.split("\r\n")
    breaks = len(lines) - 1
    if text.count("\n") != breaks or text.count("\r") != breaks or "\x00" in text:
        raise FramingError(f"malformed {kind}: stray CR, LF or NUL")
    return lines, text.isascii()


class Framing(NamedTuple):
    """How a message body is delimited."""

    length: int | None  # Content-Length (0: no body); None: chunked or until close
    chunked: bool = False

    @property
    def until_close(self) -> bool:
        return self.length is None and not self.chunked


class RequestHead(NamedTuple):
    """A parsed request head."""

    method: str
    target: str
    version: str  # "HTTP/1.1" or "HTTP/1.0"
    headers: list[tuple[str, str]]
    framing: Framing
    keep_alive: bool
    #: The Host header ("" when absent, which only HTTP/1.0 allows).
    host: str = ""
    #: "upgrade" appears in a Connection header (apimachinery's IsUpgradeRequest).
    upgrade: bool = False
    #: The client sent "Expect: 100-continue".
    expect_continue: bool = False

    def get(self, name: str) -> str | None:
        lowered = name.lower()
        return next((v for n, v in self.headers if n.lower() == lowered), None)


def parse_request_head(raw: bytes) -> RequestHead:
    """Parse a request head (without its final blank line); raises FramingError.

    One pass over the fields validates them and picks out everything the framing and
    the proxy need, as this runs for every request.
    """
    lines, ascii_only = _split_head(raw, "request")
    while lines and lines[0] == "":
        lines.pop(0)  # RFC 9112 2.2: ignore empty lines before the request line
    if not lines:
        raise FramingError("malformed request line")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[1] or not _TOKEN.fullmatch(parts[0]):
        raise FramingError("malformed request line")
    method, target, version = parts
    if version not in ("HTTP/1.1", "HTTP/1.0"):
        if version.startswith("HTTP/"):
            raise FramingError("unsupported HTTP version", 505)
        raise FramingError("malformed HTTP version")
    headers = _fields(lines[1:], "request", ascii_only)
    hosts: list[str] = []
    lengths: set[str] = set()
    encodings: list[str] | None = None
    connection: list[str] = []
    expect_continue = False
    for name, value in headers:
        lowered = name.lower()
        if lowered == "host":
            hosts.append(value)
        elif lowered == "content-length":
            lengths.add(value)
        elif lowered == "transfer-encoding":
            encodings = (encodings or []) + [
                t.strip().lower() for t in value.split(",") if t.strip()
            ]
        elif lowered == "connection":
            connection += [t.strip().lower() for t in value.split(",") if t.strip()]
        elif lowered == "expect":
            expect_continue = value.lower() == "100-continue"
    if encodings is not None:
        if lengths:
            raise FramingError("both Transfer-Encoding and Content-Length")
        if not encodings or encodings[-1] != "chunked" or encodings.count("chunked") != 1:
            raise FramingError("unsupported transfer encoding", 501)
        framing = Framing(None, chunked=True)
    elif lengths:
        if len(lengths) != 1 or not next(iter(lengths)).isdigit():
            raise FramingError("malformed request: bad Content-Length")
        framing = Framing(int(next(iter(lengths))))
    else:
        framing = Framing(0)  # RFC 9112 6.3: a request without either has no body
    if len(hosts) > 1 or (not hosts and version == "HTTP/1.1"):
        raise FramingError("missing required Host header" if not hosts else "too many Host headers")
    # HTTP/1.1 keeps the connection unless told to close; 1.0 closes unless told not to.
    keep_alive = "close" not in connection if version == "HTTP/1.1" else "keep-alive" in connection
    upgrade = any("upgrade" in token for token in connection)
    return RequestHead(
        method,
        target,
        version,
        headers,
        framing,
        keep_alive,
        hosts[0] if hosts else "",
        upgrade,
        expect_continue,
    )


class Head(NamedTuple):
    """A parsed response head.

    The header lines are kept as received (latin-1 text, so bytes survive the round
    trip): a proxy passes almost all of them on untouched, and splitting every field
    into a name and a value only to join them again costs more than the rest of its
    work on an answer. :attr:`headers` parses them when someone asks.
    """

    status: int
    reason: str
    #: All header lines, CRLF-separated, as received.
    block: str
    #: The body length when fixed by Content-Length (None: chunked or until close).
    content_length: int | None
    chunked: bool
    #: The server will close the connection after this response.
    close: bool
    #: The end-to-end header lines: without hop-by-hop ones (RFC 9110 7.6.1, and those
    #: the Connection header names) and without Content-Length, which the next hop sets.
    forward: str

    @property
    def headers(self) -> list[tuple[str, str]]:
        return _pairs(self.block)

    def get(self, name: str) -> str | None:
        lowered = name.lower()
        return next((v for n, v in self.headers if n.lower() == lowered), None)


def _pairs(block: str) -> list[tuple[str, str]]:
    pairs = []
    for line in block.split("\r\n") if block else ():
        name, _, value = line.partition(":")
        value = value.strip(" \t")
        if not value.isascii():
            value = value.encode("latin-1").decode("utf-8", "replace")
        pairs.append((name, value))
    return pairs


def has_field(block: str, name: str) -> bool:
    """Whether a header block has a field ``name`` (a lower-case name)."""
    return _field_pattern(name).search(block) is not None


@functools.cache
def _field_pattern(name: str) -> re.Pattern[str]:
    # Asked of every proxied response head: each name's pattern is built once.
    return re.compile(f"^{re.escape(name)}[ \t]*:", re.I | re.M)


def parse_head(raw: bytes, method: str) -> Head:
    """Parse a response head (without its final blank line) to a ``method`` request.

    One loop over the lines checks them, picks out the few fields that matter to the
    framing and to the next hop, and keeps the others' lines as they are.
    """
    text = raw.decode("latin-1")
    lines = text.split("\r\n")
    breaks = len(lines) - 1
    if text.count("\n") != breaks or text.count("\r") != breaks or "\x00" in text:
        raise FramingError("malformed HTTP response: stray CR, LF or NUL")
    status_line = lines[0]
    version, _, rest = status_line.partition(" ")
    code, _, reason = rest.partition(" ")
    if version not in ("HTTP/1.1", "HTTP/1.0") or len(code) != 3 or not code.isdigit():
        raise FramingError(f"malformed HTTP response {status_line[:60]!r}")
    if breaks > MAX_HEADERS:
        raise FramingError("too many HTTP response header fields", 431)
    forward: list[str] = []
    lengths: set[str] = set()
    encodings: list[str] = []
    connection: list[str] = []
    special = _SPECIAL
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        # The API server is not the party a proxy distrusts; a cheap check that keeps
        # what is passed on well formed is enough here (requests get the strict one).
        if not sep or not name or " " in name or "\t" in name:
            raise FramingError("malformed HTTP response header field")
        lowered = name.lower()
        if lowered not in special:
            forward.append(line)
        elif lowered == "content-length":
            lengths.add(value.strip(" \t"))
        elif lowered == "transfer-encoding":
            encodings += [t.strip().lower() for t in value.split(",") if t.strip()]
        elif lowered == "connection":
            connection += [t.strip().lower() for t in value.split(",") if t.strip()]
    listed = set(connection) - {"close", "keep-alive"}
    if listed:
        forward = [line for line in forward if line.partition(":")[0].lower() not in listed]
    block = "\r\n".join(lines[1:])
    passed = "\r\n".join(forward)
    status = int(code)
    close = "close" in connection or (version == "HTTP/1.0" and "keep-alive" not in connection)
    if method == "HEAD" or status in (204, 304) or 100 <= status < 200:
        # The framing is empty; a Content-Length header still describes the resource
        # and is passed on as is.
        return Head(status, reason, block, 0, False, close, passed)
    if encodings:
        # RFC 9112 6.3: chunked must be last; anything else is read until close.
        chunked = encodings[-1] == "chunked"
        return Head(status, reason, block, None, chunked, close or not chunked, passed)
    if lengths:
        if len(lengths) != 1 or not next(iter(lengths)).isdigit():
            raise FramingError("malformed HTTP response: bad Content-Length")
        return Head(status, reason, block, int(next(iter(lengths))), False, close, passed)
    return Head(status, reason, block, None, False, True, passed)  # until close


# --- bodies ----------------------------------------------------------------------------


class _State(Enum):
    LENGTH = "length"
    CHUNK_SIZE = "chunk-size"
    CHUNK_DATA = "chunk-data"
    CHUNK_CRLF = "chunk-crlf"
    TRAILER = "trailer"
    UNTIL_CLOSE = "until-close"
    DONE = "done"


class BodyDecoder:
    """Turns the bytes of one body into its data, and says where it ends.

    :meth:`feed` returns the data found and, once the body is complete, the bytes that
    followed it (``None`` while it is not). Trailer fields are read and dropped, as
    Go's reverse proxy does by default.
    """

    def __init__(self, framing: Framing) -> None:
        self._buffer = bytearray()
        self._remaining = 0
        if framing.chunked:
            self._state = _State.CHUNK_SIZE
        elif framing.length is not None:
            self._remaining = framing.length
            self._state = _State.LENGTH if framing.length else _State.DONE
        else:
            self._state = _State.UNTIL_CLOSE

    @property
    def done(self) -> bool:
        return self._state is _State.DONE

    def feed(self, data: bytes) -> tuple[list[bytes], bytes | None]:
        state = self._state
        if state is _State.DONE:
            return [], data
        if state is _State.UNTIL_CLOSE:
            return ([data] if data else []), None
        if state is _State.LENGTH and not self._buffer:
            # Plain bodies need no buffer at all.
            if len(data) < self._remaining:
                self._remaining -= len(data)
                return ([data] if data else []), None
            piece, rest = data[: self._remaining], data[self._remaining :]
            self._remaining = 0
            self._state = _State.DONE
            return ([piece] if piece else []), rest
        self._buffer += data
        return self._chunked()

    def _chunked(self) -> tuple[list[bytes], bytes | None]:
        out: list[bytes] = []
        buffer = self._buffer
        while True:
            state = self._state
            if state is _State.CHUNK_SIZE:
                end = buffer.find(b"\r\n")
                if end < 0:
                    if len(buffer) > MAX_CHUNK_LINE:
                        raise FramingError("malformed chunked encoding")
                    return out, None
                line = bytes(buffer[:end]).split(b";", 1)[0].strip(b" \t")
                del buffer[: end + 2]
                if not line or any(c not in b"0123456789abcdefABCDEF" for c in line):
                    raise FramingError("malformed chunked encoding")
                size = int(line, 16)
                if size == 0:
                    self._state = _State.TRAILER
                else:
                    self._remaining = size
                    self._state = _State.CHUNK_DATA
            elif state is _State.CHUNK_DATA:
                if not buffer:
                    return out, None
                take = min(self._remaining, len(buffer))
                out.append(bytes(buffer[:take]))
                del buffer[:take]
                self._remaining -= take
                if self._remaining == 0:
                    self._state = _State.CHUNK_CRLF
            elif state is _State.CHUNK_CRLF:
                if len(buffer) < 2:
                    return out, None
                if buffer[:2] != b"\r\n":
                    raise FramingError("malformed chunked encoding")
                del buffer[:2]
                self._state = _State.CHUNK_SIZE
            elif state is _State.TRAILER:
                end = buffer.find(b"\r\n")
                if end < 0:
                    if len(buffer) > MAX_HEAD:
                        raise FramingError("malformed chunked trailer")
                    return out, None
                del buffer[: end + 2]
                if end == 0:
                    self._state = _State.DONE
                    rest = bytes(buffer)
                    buffer.clear()
                    return out, rest
            else:  # LENGTH with buffered bytes (never happens) or DONE
                rest = bytes(buffer)
                buffer.clear()
                return out, rest

    def feed_eof(self) -> None:
        """The connection closed: fine for a body read until close, else an error."""
        if self._state is _State.UNTIL_CLOSE:
            self._state = _State.DONE
        elif self._state is not _State.DONE:
            raise FramingError("unexpected EOF")


class ResponseReader:
    """Reads one response: :meth:`feed` bytes (any split), get the head, then data.

    Informational (1xx) answers other than 101 are skipped. After a 101 the reader is
    done, and the bytes after the head are the upgraded stream's.
    """

    def __init__(self, method: str) -> None:
        self.method = method
        self.head: Head | None = None
        self._head_buffer = bytearray()
        self._body: BodyDecoder | None = None
        self.done = False
        #: Bytes received after the end of the response.
        self.tail = b""

    @property
    def started(self) -> bool:
        """Whether any byte of the response arrived."""
        return self.head is not None or bool(self._head_buffer)

    def feed(self, data: bytes) -> list[bytes]:
        """Feed bytes; returns body data. Check :attr:`head` and :attr:`done` after."""
        if self.done:
            self.tail += data
            return []
        body = self._body
        if body is None:
            buffer = self._head_buffer
            if buffer:
                buffer += data
                data = bytes(buffer)
            while True:
                end = data.find(b"\r\n\r\n")
                if end < 0:
                    if len(data) > MAX_HEAD:
                        raise FramingError("HTTP response head too long")
                    self._head_buffer = bytearray(data)
                    return []
                head = parse_head(data[:end], self.method)
                data = data[end + 4 :]
                if 100 <= head.status < 200 and head.status != 101:
                    continue  # 100 Continue and friends: wait for the real answer
                break
            self._head_buffer = bytearray()
            self.head = head
            if head.status == 101:
                self.done = True
                self.tail = data
                return []
            body = self._body = BodyDecoder(Framing(head.content_length, head.chunked))
            if body.done:
                self.done = True
                self.tail = data
                return []
        pieces, rest = body.feed(data)
        if rest is not None:
            self.done = True
            self.tail = rest
        return pieces

    def feed_eof(self) -> None:
        """The connection closed; raises FramingError unless that ends the response."""
        if self.done:
            return
        if self._body is None:
            raise FramingError("EOF" if not self._head_buffer else "unexpected EOF")
        self._body.feed_eof()
        self.done = True
