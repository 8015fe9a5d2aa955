from palyra.sse import SSEDecoder, SSEEvent


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
