"""HTTP/1.1 framing: heads, bodies in every framing, any split, and strictness."""

from __future__ import annotations

import pytest

from kubenet.forward.http1 import (
    LAST_CHUNK,
    BodyDecoder,
    Framing,
    FramingError,
    ResponseReader,
    chunk,
    parse_head,
    parse_request_head,
    request_head,
    response_head,
)


def splits(data: bytes) -> list[list[bytes]]:
    """The same bytes cut every possible way in two, plus one byte at a time."""
    cuts = [[data[:i], data[i:]] for i in range(len(data) + 1)]
    return [*cuts, [bytes([b]) for b in data]]


def read_response(
    parts: list[bytes], method: str = "GET", eof: bool = False
) -> tuple[int, bytes, bool, bytes]:
    reader = ResponseReader(method)
    body = b""
    for part in parts:
        body += b"".join(reader.feed(part))
    if eof:
        reader.feed_eof()
    assert reader.head is not None
    return reader.head.status, body, reader.done, reader.tail


def test_request_head_is_what_the_api_server_reads() -> None:
    head = request_head("GET", "/api/v1/pods?watch=1", "10.0.0.1:6443", [("Accept", "a/b")])
    assert head == (
        b"GET /api/v1/pods?watch=1 HTTP/1.1\r\nHost: 10.0.0.1:6443\r\nAccept: a/b\r\n\r\n"
    )
    again = parse_request_head(head[:-4])
    assert (again.method, again.target, again.version) == (
        "GET",
        "/api/v1/pods?watch=1",
        "HTTP/1.1",
    )
    assert again.headers == [("Host", "10.0.0.1:6443"), ("Accept", "a/b")]
    assert again.framing == Framing(0) and again.keep_alive


def test_response_head_and_chunks() -> None:
    assert response_head(404, "", [("A", "b")]) == b"HTTP/1.1 404 Not Found\r\nA: b\r\n\r\n"
    assert chunk(b"hello") == b"5\r\nhello\r\n"
    assert LAST_CHUNK == b"0\r\n\r\n"


@pytest.mark.parametrize(
    "body",
    [
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"2\r\nhe\r\n3;ext=1\r\nllo\r\n0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5\r\nhello\r\n0\r\nTrailer: x\r\n\r\n",
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
    ],
)
def test_response_bodies_in_any_split(body: bytes) -> None:
    for parts in splits(body):
        status, data, done, tail = read_response(parts)
        assert (status, data, done, tail) == (200, b"hello", True, b"")


def test_bytes_after_a_response_are_its_tail() -> None:
    status, data, done, tail = read_response(
        [b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhiEXTRA"]
    )
    assert (status, data, done, tail) == (200, b"hi", True, b"EXTRA")


def test_read_until_close() -> None:
    raw = b"HTTP/1.1 200 OK\r\n\r\nsome bytes"
    reader = ResponseReader("GET")
    assert reader.feed(raw) == [b"some bytes"]
    assert reader.head is not None and reader.head.close and not reader.done
    reader.feed_eof()
    assert reader.done


@pytest.mark.parametrize(
    ("raw", "method"),
    [
        (b"HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\n", "HEAD"),
        (b"HTTP/1.1 204 No Content\r\n\r\n", "DELETE"),
        (b"HTTP/1.1 304 Not Modified\r\nContent-Length: 99\r\n\r\n", "GET"),
    ],
)
def test_answers_without_a_body(raw: bytes, method: str) -> None:
    reader = ResponseReader(method)
    assert reader.feed(raw) == []
    assert reader.done and reader.head is not None
    # The header still says what a GET would get, and is passed on.
    assert reader.head.get("Content-Length") in (None, "1234", "99")


def test_switching_protocols_hands_over_the_rest() -> None:
    reader = ResponseReader("GET")
    reader.feed(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: SPDY/3.1\r\n\r\n\x80\x03")
    assert reader.done and reader.head is not None and reader.head.status == 101
    assert reader.tail == b"\x80\x03"


def test_connection_close_and_http_1_0() -> None:
    assert parse_head(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0", "GET").close
    assert parse_head(b"HTTP/1.0 200 OK\r\nContent-Length: 0", "GET").close
    assert not parse_head(
        b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 0", "GET"
    ).close


@pytest.mark.parametrize(
    "raw",
    [
        b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2",
        b"HTTP/1.1 200 OK\r\nContent-Length: -1",
        b"HTTP/1.1 200 OK\r\nBad Header: x",
        b"HTTP/1.1 200 OK\r\n folded: x",
        b"HTTP/1.1 200 OK\nContent-Length: 0",
        b"HTTP/2 200 OK",
        b"HTTP/1.1 2000 OK",
        b"garbage",
    ],
)
def test_malformed_responses(raw: bytes) -> None:
    with pytest.raises(FramingError):
        parse_head(raw, "GET")


def test_truncated_responses_are_errors() -> None:
    reader = ResponseReader("GET")
    reader.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
    with pytest.raises(FramingError, match="unexpected EOF"):
        reader.feed_eof()
    with pytest.raises(FramingError, match=r"^EOF$"):
        ResponseReader("GET").feed_eof()


@pytest.mark.parametrize(
    ("raw", "framing", "keep_alive"),
    [
        (b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 3", Framing(3), True),
        (b"POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked", Framing(None, True), True),
        (b"GET /x HTTP/1.1\r\nHost: a\r\nConnection: close", Framing(0), False),
        (b"GET /x HTTP/1.0", Framing(0), False),
        (b"GET /x HTTP/1.0\r\nConnection: keep-alive", Framing(0), True),
        (b"\r\n\r\nGET /x HTTP/1.1\r\nHost: a", Framing(0), True),
    ],
)
def test_request_framing(raw: bytes, framing: Framing, keep_alive: bool) -> None:
    head = parse_request_head(raw)
    assert head.framing == framing
    assert head.keep_alive is keep_alive


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        # Smuggling shapes: refused, never guessed at.
        (b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked", 400),
        (b"POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip", 501),
        (b"POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, gzip", 501),
        (b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 4", 400),
        (b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: +3", 400),
        (b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length : 3", 400),
        (b"POST /x HTTP/1.1\r\nHost: a\r\n Transfer-Encoding: chunked", 400),
        (b"GET /x HTTP/1.1\r\nHost: a\nX: y", 400),
        (b"GET /x HTTP/1.1\r\nHost: a\rX: y", 400),
        (b"GET /x HTTP/1.1\r\nHost: a\r\nX: y\x00z", 400),
        # Request line and Host.
        (b"GET /x HTTP/1.1", 400),
        (b"GET /x HTTP/1.1\r\nHost: a\r\nHost: b", 400),
        (b"GET  /x HTTP/1.1\r\nHost: a", 400),
        (b"GET /x y HTTP/1.1\r\nHost: a", 400),
        (b"G(T /x HTTP/1.1\r\nHost: a", 400),
        (b"GET /x HTTP/2.0\r\nHost: a", 505),
        (b"GET /x FOO/1.1\r\nHost: a", 400),
        (b"", 400),
    ],
)
def test_request_strictness(raw: bytes, status: int) -> None:
    with pytest.raises(FramingError) as info:
        parse_request_head(raw)
    assert info.value.status == status


@pytest.mark.parametrize(
    ("framing", "raw", "data"),
    [
        (Framing(5), b"helloNEXT", b"hello"),
        (Framing(None, True), b"3\r\nhel\r\n2\r\nlo\r\n0\r\n\r\nNEXT", b"hello"),
        (Framing(None, True), b"3\r\nhel\r\n2\r\nlo\r\n0\r\nX-Trailer: 1\r\n\r\nNEXT", b"hello"),
    ],
)
def test_body_decoder_in_any_split(framing: Framing, raw: bytes, data: bytes) -> None:
    for parts in splits(raw):
        decoder = BodyDecoder(framing)
        got, after = b"", b""
        for part in parts:
            pieces, tail = decoder.feed(part)
            got += b"".join(pieces)
            if tail is not None:
                after += tail  # anything after the end is handed back untouched
        assert got == data and decoder.done
        assert after == b"NEXT"


@pytest.mark.parametrize("raw", [b"zz\r\n", b"-1\r\n", b"\r\n", b"3\r\nabcXY", b"1" * 5000])
def test_bad_chunks(raw: bytes) -> None:
    with pytest.raises(FramingError):
        BodyDecoder(Framing(None, True)).feed(raw)


def test_chunked_body_cut_short_is_an_error() -> None:
    decoder = BodyDecoder(Framing(None, True))
    decoder.feed(b"5\r\nhel")
    with pytest.raises(FramingError):
        decoder.feed_eof()
