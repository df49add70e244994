"""HTTP/1.1 framing for the upstream side, with no I/O (bytes in, events out).

The proxy speaks to the API server over pooled HTTP/1.1 connections. This module
writes request heads and reads response streams (RFC 9112): the status line and
headers, then the body framed by ``Content-Length``, by chunked transfer coding, or by
the connection closing, and says when a response is complete so the connection can
go back to the pool. It never decides policy (which headers to send, what to retry);
:mod:`kubenet.forward.upstream` does.

A general-purpose client library costs several times more per request than the
proxy's whole job; this is the small part of HTTP/1.1 a proxy in front of one server
actually needs, kept pure so every framing case is tested byte by byte.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from enum import Enum

#: Longest response head accepted (status line and headers).
MAX_HEAD = 64 * 1024
#: Longest chunk-size line (with extensions) accepted.
MAX_CHUNK_LINE = 4096


class FramingError(Exception):
    """The API server sent something that is not HTTP/1.1 (message is safe to show)."""


def request_head(method: str, target: str, host: str, headers: Sequence[tuple[str, str]]) -> bytes:
    """The bytes of a request head; ``headers`` must not contain Host."""
    lines = [f"{method} {target} HTTP/1.1", f"Host: {host}"]
    lines += [f"{name}: {value}" for name, value in headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8", "surrogateescape")


def chunk(data: bytes) -> bytes:
    """One chunk of a chunked request body."""
    return b"%x\r\n%b\r\n" % (len(data), data)


LAST_CHUNK = b"0\r\n\r\n"


@dataclass(frozen=True)
class Head:
    """A parsed response head."""

    status: int
    reason: str
    headers: list[tuple[str, str]]
    #: The body length when fixed by Content-Length (None: chunked or until close).
    content_length: int | None
    chunked: bool
    #: The server will close the connection after this response.
    close: bool

    def get(self, name: str) -> str | None:
        lowered = name.lower()
        return next((v for n, v in self.headers if n.lower() == lowered), None)


def parse_head(raw: bytes, method: str) -> Head:
    """Parse a response head (without its final blank line)."""
    text = raw.decode("latin-1")
    lines = text.split("\r\n")
    if any("\n" in line for line in lines):
        raise FramingError("malformed HTTP response: bare LF")
    status_line = lines[0]
    version, _, rest = status_line.partition(" ")
    code, _, reason = rest.partition(" ")
    if version not in ("HTTP/1.1", "HTTP/1.0") or len(code) != 3 or not code.isdigit():
        raise FramingError(f"malformed HTTP response {status_line[:60]!r}")
    headers: list[tuple[str, str]] = []
    connection: list[str] = []
    encodings: list[str] = []
    lengths: set[str] = set()
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if not sep or not name or name[0] in " \t" or name[-1] in " \t":
            raise FramingError("malformed HTTP response header")
        value = value.strip(" \t")
        if not value.isascii():
            # Header bytes are opaque; UTF-8 is what the API server writes, if anything.
            value = value.encode("latin-1").decode("utf-8", "replace")
        headers.append((name, value))
        lowered = name.lower()
        if lowered == "content-length":
            lengths.add(value)
        elif lowered == "transfer-encoding":
            encodings.append(value.lower())
        elif lowered == "connection":
            connection += [token.strip().lower() for token in value.split(",")]
    status = int(code)
    close = "close" in connection or (version == "HTTP/1.0" and "keep-alive" not in connection)
    chunked = False
    content_length: int | None = None
    if method == "HEAD" or status in (204, 304) or 100 <= status < 200:
        # The framing is empty; a Content-Length header still describes the resource
        # and is passed on as is.
        content_length = 0
    elif encodings:
        # RFC 9112 6.3: chunked must be last; anything else is read until close.
        chunked = encodings[-1].split(",")[-1].strip() == "chunked"
        if not chunked:
            close = True
    elif lengths:
        if len(lengths) != 1 or not next(iter(lengths)).isdigit():
            raise FramingError("malformed HTTP response: bad Content-Length")
        content_length = int(next(iter(lengths)))
    else:
        close = True  # the body ends when the connection does
    return Head(status, reason, headers, content_length, chunked, close)


class _State(Enum):
    HEAD = "head"
    BODY = "body"
    CHUNK_SIZE = "chunk-size"
    CHUNK_DATA = "chunk-data"
    CHUNK_CRLF = "chunk-crlf"
    TRAILER = "trailer"
    UNTIL_CLOSE = "until-close"
    DONE = "done"


@dataclass(frozen=True)
class HeadEvent:
    head: Head


@dataclass(frozen=True)
class DataEvent:
    data: bytes


@dataclass(frozen=True)
class EndEvent:
    """The response is complete; ``tail`` holds bytes received after it."""

    tail: bytes


Event = HeadEvent | DataEvent | EndEvent


class ResponseReader:
    """Turns the bytes of one response into events.

    Feed bytes with :meth:`feed` (any split), then :meth:`feed_eof` when the
    connection closes. Informational (1xx) responses other than 101 are skipped.
    """

    def __init__(self, method: str) -> None:
        self.method = method
        self._state = _State.HEAD
        self._buffer = bytearray()
        self._remaining = 0
        self.head: Head | None = None

    @property
    def done(self) -> bool:
        return self._state is _State.DONE

    @property
    def started(self) -> bool:
        """Whether any byte of the response arrived."""
        return bool(self._buffer) or self._state is not _State.HEAD

    def feed(self, data: bytes) -> Iterator[Event]:
        if self._state is _State.DONE:
            self._buffer += data
            return
        if self._state is _State.HEAD and not self._buffer:
            # The common case, a whole small answer in one read: no buffer copies.
            end = data.find(b"\r\n\r\n")
            if end >= 0:
                head = parse_head(data[:end], self.method)
                length = head.content_length
                if length is not None and not head.chunked and head.status >= 200:
                    body = data[end + 4 :]
                    if len(body) == length:
                        self.head = head
                        self._state = _State.DONE
                        yield HeadEvent(head)
                        if body:
                            yield DataEvent(body)
                        yield EndEvent(b"")
                        return
        self._buffer += data
        while True:
            state = self._state
            if state is _State.HEAD:
                end = self._buffer.find(b"\r\n\r\n")
                if end < 0:
                    if len(self._buffer) > MAX_HEAD:
                        raise FramingError("HTTP response head too long")
                    return
                head = parse_head(bytes(self._buffer[:end]), self.method)
                del self._buffer[: end + 4]
                if 100 <= head.status < 200 and head.status != 101:
                    continue  # 100 Continue and friends: wait for the real answer
                self.head = head
                yield HeadEvent(head)
                if head.status == 101:
                    self._state = _State.DONE
                elif head.chunked:
                    self._state = _State.CHUNK_SIZE
                elif head.content_length is not None:
                    self._remaining = head.content_length
                    self._state = _State.BODY
                else:
                    self._state = _State.UNTIL_CLOSE
                continue
            if state is _State.BODY:
                if self._remaining == 0:
                    self._state = _State.DONE
                    continue
                if not self._buffer:
                    return
                take = min(self._remaining, len(self._buffer))
                piece = bytes(self._buffer[:take])
                del self._buffer[:take]
                self._remaining -= take
                yield DataEvent(piece)
                continue
            if state is _State.CHUNK_SIZE:
                end = self._buffer.find(b"\r\n")
                if end < 0:
                    if len(self._buffer) > MAX_CHUNK_LINE:
                        raise FramingError("malformed chunked encoding")
                    return
                line = bytes(self._buffer[:end]).split(b";", 1)[0].strip()
                del self._buffer[: end + 2]
                try:
                    size = int(line, 16)
                except ValueError:
                    raise FramingError("malformed chunked encoding") from None
                if size < 0:
                    raise FramingError("malformed chunked encoding")
                if size == 0:
                    self._state = _State.TRAILER
                else:
                    self._remaining = size
                    self._state = _State.CHUNK_DATA
                continue
            if state is _State.CHUNK_DATA:
                if not self._buffer:
                    return
                take = min(self._remaining, len(self._buffer))
                piece = bytes(self._buffer[:take])
                del self._buffer[:take]
                self._remaining -= take
                if self._remaining == 0:
                    self._state = _State.CHUNK_CRLF
                yield DataEvent(piece)
                continue
            if state is _State.CHUNK_CRLF:
                if len(self._buffer) < 2:
                    return
                if self._buffer[:2] != b"\r\n":
                    raise FramingError("malformed chunked encoding")
                del self._buffer[:2]
                self._state = _State.CHUNK_SIZE
                continue
            if state is _State.TRAILER:
                end = self._buffer.find(b"\r\n")
                if end < 0:
                    if len(self._buffer) > MAX_HEAD:
                        raise FramingError("malformed chunked trailer")
                    return
                del self._buffer[: end + 2]
                if end == 0:
                    self._state = _State.DONE
                continue  # trailer fields are dropped, as Go's proxy does by default
            if state is _State.UNTIL_CLOSE:
                if self._buffer:
                    piece = bytes(self._buffer)
                    self._buffer.clear()
                    yield DataEvent(piece)
                return
            # DONE
            yield EndEvent(bytes(self._buffer))
            self._buffer.clear()
            return

    def feed_eof(self) -> Iterator[Event]:
        """The connection closed: the end of a read-until-close body, else an error."""
        if self._state is _State.UNTIL_CLOSE:
            self._state = _State.DONE
            yield EndEvent(b"")
            return
        if self._state is _State.DONE:
            return
        if self._state is _State.HEAD and not self._buffer:
            raise FramingError("EOF")
        raise FramingError("unexpected EOF")
