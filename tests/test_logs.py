"""The log lines: JSON with the request id, and the access line's fast path written exactly as
structlog would write it."""

from __future__ import annotations

import io
from collections.abc import Iterator

import orjson
import pytest
import structlog

from palyra import logs


@pytest.fixture
def stream() -> Iterator[io.TextIOWrapper]:
    buffer = io.BytesIO()
    text = io.TextIOWrapper(buffer, write_through=True)
    yield text
    logs.configure_logging("info", stream=io.StringIO(), json=True)
    structlog.contextvars.clear_contextvars()


def _lines(stream: io.TextIOWrapper) -> list[dict[str, object]]:
    raw = stream.buffer.getvalue()  # type: ignore[attr-defined]
    return [orjson.loads(line) for line in raw.splitlines()]


def test_access_line_is_the_structlog_line(stream: io.TextIOWrapper) -> None:
    logs.configure_logging("info", stream=stream, json=True)
    structlog.contextvars.bind_contextvars(request_id="req-1")
    logs.access("req-1", "POST", "/v1/chat/completions", 200, 1.25, "gpt", "openai")
    # The same line through structlog's processors, as every other line is written.
    structlog.get_logger("palyra.http").info(
        "request",
        method="POST",
        path="/v1/chat/completions",
        status=200,
        duration_ms=1.25,
        model="gpt",
        provider="openai",
    )
    fast, slow = _lines(stream)
    assert str(fast.pop("timestamp")).endswith("Z")
    slow.pop("timestamp")
    assert list(fast.items()) == list(slow.items())
    assert fast["request_id"] == "req-1" and fast["level"] == "info"


def test_access_line_follows_the_level(stream: io.TextIOWrapper) -> None:
    logs.configure_logging("warning", stream=stream, json=True)
    logs.access("req-2", "GET", "/v1/models", 200, 0.5, None, None)
    assert _lines(stream) == []


def test_access_line_on_a_terminal_is_readable(stream: io.TextIOWrapper) -> None:
    logs.configure_logging("info", stream=stream, json=False)
    structlog.contextvars.bind_contextvars(request_id="req-3")
    logs.access("req-3", "GET", "/v1/models", 404, 0.5, None, None)
    text = stream.buffer.getvalue().decode()  # type: ignore[attr-defined]
    assert "request" in text and "req-3" in text and "status=404" in text


def test_a_workers_access_line_says_which_worker(stream: io.TextIOWrapper) -> None:
    logs.configure_logging("info", stream=stream, json=True)
    logs.bind_process(worker=1)
    try:
        structlog.contextvars.bind_contextvars(request_id="req-4")
        logs.access("req-4", "POST", "/v1/chat/completions", 200, 2.0, "gpt", "openai")
        structlog.get_logger("palyra.http").info("something_else")
        access, other = _lines(stream)
        assert access["worker"] == 1 and other["worker"] == 1
        assert access["request_id"] == "req-4"
    finally:
        logs._process_fields.clear()
