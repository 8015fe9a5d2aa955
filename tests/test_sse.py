import pytest

from palyra.sse import SSEDecoder, SSEError, SSEEvent, encode_event


def feed_all(*chunks: bytes) -> list[SSEEvent]:
    decoder = SSEDecoder()
    events = [event for chunk in chunks for event in decoder.feed(chunk)]
    tail = decoder.close()
    return events + ([tail] if tail else [])


def test_events_split_anywhere_are_reassembled() -> None:
    raw = b'event: message_start\ndata: {"a": 1}\n\n: comment\ndata: x\ndata: y\n\n'
    whole = feed_all(raw)
    bytewise = feed_all(*(raw[i : i + 1] for i in range(len(raw))))
    assert whole == bytewise == [SSEEvent("message_start", '{"a": 1}'), SSEEvent("message", "x\ny")]


def test_crlf_and_cr_line_ends() -> None:
    assert feed_all(b"data: a\r\n\r\ndata: b\r\r") == [
        SSEEvent("message", "a"),
        SSEEvent("message", "b"),
    ]
    # A \r\n split across chunks is one line end, not two.
    assert feed_all(b"data: a\r", b"\n\r\n") == [SSEEvent("message", "a")]


def test_long_lines_and_unterminated_tail() -> None:
    big = "x" * 300_000
    assert feed_all(f"data: {big}\n\ndata: tail".encode()) == [
        SSEEvent("message", big),
        SSEEvent("message", "tail"),
    ]


def test_utf8_split_inside_a_character() -> None:
    raw = "data: héllo\n\n".encode()
    cut = raw.index(b"\xc3") + 1
    assert feed_all(raw[:cut], raw[cut:]) == [SSEEvent("message", "héllo")]


def reference(raw: bytes) -> list[SSEEvent]:
    """The spec's algorithm, line by line, as plainly as it reads (plus the kept tail)."""
    text = raw.decode().replace("\r\n", "\n").replace("\r", "\n")
    events, name, data = [], "", []
    for line in text.split("\n"):
        if not line:
            if data:
                events.append(SSEEvent(name or "message", "\n".join(data)))
            name, data = "", []
        elif not line.startswith(":"):
            field, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if field == "data":
                data.append(value)
            elif field == "event":
                name = value
    if data:
        events.append(SSEEvent(name or "message", "\n".join(data)))
    return events


def test_every_split_of_a_mixed_stream_matches_the_spec() -> None:
    raw = (
        b'data: {"a":1}\n\n'
        b"data:  two spaces kept one\n\n"
        b"data:nospace\n\n"
        b"event: ping\ndata: after a name\n\n"
        b"event: lonely\n\n"  # no data: nothing dispatched, and the name does not linger
        b"data: after a lonely name\n\n"
        b"data: first\ndata: second\n\n"
        b": a comment\n\n"
        b"data: \n\n"
        b"data: x\r\n\r\n"
        b"id: 7\ndata: with an id\n\n"
        b"event: \ndata: an empty name is a message\n\n"
        b'event: content_block_delta\ndata: {"b":2}\n\n'
        b"event: two\ndata: lines\ndata: of data\n\n"
        b"event: then\n: a comment\ndata: between\n\n"
        b"event:tight\ndata:packed\n\n"
        b"event: crlf\r\ndata: ended\r\n\r\n"
        b"data: [DONE]\n\n"
    )
    expected = reference(raw)
    assert SSEEvent("content_block_delta", '{"b":2}') in expected
    assert SSEEvent("message", "an empty name is a message") in expected
    assert SSEEvent("message", " two spaces kept one") in expected
    assert SSEEvent("message", "after a lonely name") in expected
    assert all(event.event != "lonely" for event in expected)
    assert feed_all(raw) == expected
    for cut in range(1, len(raw)):
        assert feed_all(raw[:cut], raw[cut:]) == expected, cut
    for a in range(1, len(raw), 7):
        for b in range(a + 1, len(raw), 5):
            assert feed_all(raw[:a], raw[a:b], raw[b:]) == expected, (a, b)


def test_a_cr_line_end_is_not_held_back_by_a_chunk_without_line_ends() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"data: a\r") == []
    assert decoder.feed(b"\rdata: b") == [SSEEvent("message", "a")]
    assert decoder.feed(b"cd") == []
    # The last \r may be half of a \r\n, so it waits; what comes next, line end or not, ends it.
    assert decoder.feed(b"\r\r") == []
    assert decoder.feed(b"data: e") == [SSEEvent("message", "bcd")]


def test_a_line_split_over_many_reads_is_joined_once() -> None:
    decoder = SSEDecoder()
    pieces = [b"data: "] + [b"x" * 1000] * 500
    for piece in pieces:
        assert decoder.feed(piece) == []
    assert decoder.feed(b"\n\n") == [SSEEvent("message", "x" * 500_000)]


def test_bytes_that_are_not_utf8_are_replaced_not_raised() -> None:
    # The spec decodes streams with replacement; a raised UnicodeDecodeError was a 500.
    assert feed_all(b"data: \xff\xfeok\n\nevent: e\ndata: \x80\n\n") == [
        SSEEvent("message", "\ufffd\ufffdok"),
        SSEEvent("e", "\ufffd"),
    ]


def test_a_line_or_event_past_the_limit_is_an_error() -> None:
    decoder = SSEDecoder(max_event_bytes=100)
    decoder.feed(b"data: " + b"x" * 60)
    with pytest.raises(SSEError, match="line longer than 100"):
        decoder.feed(b"y" * 60)
    many = SSEDecoder(max_event_bytes=100)
    with pytest.raises(SSEError, match="event longer than 100"):
        many.feed(b"data: 0123456789\n" * 20)
    # Within the limit all is well.
    assert SSEDecoder(max_event_bytes=100).feed(b"data: " + b"z" * 90 + b"\n\n") == [
        SSEEvent("message", "z" * 90)
    ]


def test_native_frames_keep_multiline_data() -> None:
    # (Moved from tests/dialects/test_anthropic_messages.py with the encoder; the Responses
    # pass-through relays with it too.)
    assert encode_event("ping", '{"type":"ping"}') == b'event: ping\ndata: {"type":"ping"}\n\n'
    assert encode_event("x", "{\n}") == b"event: x\ndata: {\ndata: }\n\n"
