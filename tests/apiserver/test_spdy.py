"""The SPDY/3.1 codec used for kubectl's port-forward tunnel."""

from __future__ import annotations

import pytest

from kubenet.testing.apiserver import spdy


def test_dictionary_has_the_specification_length() -> None:
    assert len(spdy.DICTIONARY) == 1423
    assert spdy.DICTIONARY.startswith(b"\x00\x00\x00\x07options\x00\x00\x00\x04head")
    assert spdy.DICTIONARY.endswith(b",*,enq=0.")


def test_frames_round_trip_across_arbitrary_chunking() -> None:
    client, server = spdy.HeaderCodec(), spdy.Decoder()
    stream = b"".join(
        [
            spdy.syn_stream(client, 1, {"streamType": "error", "port": "8080", "requestID": "0"}),
            spdy.syn_stream(client, 3, {"streamType": "data", "port": "8080", "requestID": "0"}),
            spdy.data(3, b"hello"),
            spdy.data(3, b"", fin=True),
            spdy.ping(7),
            spdy.rst_stream(3, spdy.CANCEL),
            spdy.goaway(3),
        ]
    )
    frames: list[spdy.Frame] = []
    for i in range(0, len(stream), 5):  # five bytes at a time
        frames += server.feed(stream[i : i + 5])
    syn1, syn2, data, fin, ping, rst, away = frames
    assert isinstance(syn1, spdy.Control) and syn1.kind == spdy.SYN_STREAM
    assert syn1.headers == {"streamtype": "error", "port": "8080", "requestid": "0"}
    assert isinstance(syn2, spdy.Control) and syn2.stream_id == 3
    assert syn2.headers["streamtype"] == "data", "one compression context spans the session"
    assert data == spdy.Data(3, 0, b"hello") and isinstance(fin, spdy.Data) and fin.fin
    assert isinstance(ping, spdy.Control) and (ping.kind, ping.value) == (spdy.PING, 7)
    assert isinstance(rst, spdy.Control) and (rst.stream_id, rst.value) == (3, spdy.CANCEL)
    assert isinstance(away, spdy.Control) and away.kind == spdy.GOAWAY


def test_reply_headers_decode_with_the_peer_context() -> None:
    server, client = spdy.HeaderCodec(), spdy.Decoder()
    frames = client.feed(spdy.syn_reply(server, 5, {}) + spdy.syn_reply(server, 7, {"a": "b"}))
    assert [(f.kind, f.stream_id, f.headers) for f in frames if isinstance(f, spdy.Control)] == [
        (spdy.SYN_REPLY, 5, {}),
        (spdy.SYN_REPLY, 7, {"a": "b"}),
    ]


def test_garbage_is_a_protocol_error() -> None:
    with pytest.raises(spdy.ProtocolError):
        spdy.Decoder().feed(b"\x80\x02\x00\x01\x00\x00\x00\x00")  # SPDY/2
    with pytest.raises(spdy.ProtocolError):
        spdy.Decoder().feed(b"\x80\x03\x00\x01\x00\x00\x00\x0e" + b"\x00" * 10 + b"junk")
