"""Structured logs: JSON lines when not on a terminal, readable lines when on one.

Request ids travel in contextvars, so every line logged while serving a request carries it.
Nothing here logs headers or bodies: that is how keys stay out of the logs.

Every request writes an access line, so the JSON path is kept cheap (measured in
benchmarks/README.md): orjson instead of the json module, a timestamp whose date and time of
day are formatted once a second, and one write of bytes per line.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable
from typing import Any, BinaryIO, TextIO

import orjson
import structlog

_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}

# (second, "YYYY-MM-DDTHH:MM:SS") of the last line; swapped whole, so threads that log at
# once never pair one second with another's text.
_stamp: tuple[int, str] = (0, "")


def timestamp(_logger: Any, _method: str, event_dict: Any) -> Any:
    """ISO 8601 UTC with microseconds, as `TimeStamper(fmt="iso", utc=True)` writes it."""
    global _stamp
    now = time.time()
    second = int(now)
    stamp = _stamp
    if stamp[0] != second:
        stamp = _stamp = (second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second)))
    event_dict["timestamp"] = f"{stamp[1]}.{int((now - second) * 1_000_000):06d}Z"
    return event_dict


def _fallback(value: Any) -> str:
    # What structlog's JSONRenderer does with values JSON has no type for.
    return repr(value)


def render_json(_logger: Any, _method: str, event_dict: Any) -> bytes:
    return orjson.dumps(event_dict, default=_fallback)


class LineLogger:
    """Writes each rendered line to the stream with one write and a flush: a line is on disk
    (or in the pipe) when the call returns, as with structlog's PrintLogger, for less."""

    def __init__(self, stream: TextIO) -> None:
        self._text = stream
        self._bytes: BinaryIO | None = getattr(stream, "buffer", None)

    def msg(self, line: bytes) -> None:
        if self._bytes is not None:
            self._bytes.write(line + b"\n")
            self._bytes.flush()
        else:
            self._text.write(line.decode() + "\n")
            self._text.flush()

    log = debug = info = warn = warning = error = err = critical = exception = fatal = msg
    failure = msg


# Where the access line goes when it can skip structlog (JSON lines at info or below): set
# by configure_logging, None otherwise.
_access_writer: Callable[[bytes], None] | None = None
# What every line of this process carries (a worker's index), for the access line: the
# other lines have it from structlog's context.
_process_fields: dict[str, Any] = {}


def bind_process(**fields: Any) -> None:
    """Fields every line this process logs carries from now on (a worker's index)."""
    structlog.contextvars.bind_contextvars(**fields)
    _process_fields.update(fields)


def access(
    request_id: str,
    method: str,
    path: str,
    status: int,
    duration_ms: float,
    model: str | None,
    provider: str | None,
) -> None:
    """The one line every request writes, as `log.info("request", ...)` with the request id
    bound would write it (the same keys, level and timestamp), without structlog's
    processor chain: a quarter of the cost, and it runs at every request."""
    write = _access_writer
    if write is None:
        # (A logger got here, not kept: a kept one keeps the configuration of its first use.)
        structlog.get_logger("palyra.http").info(
            "request",
            method=method,
            path=path,
            status=status,
            duration_ms=duration_ms,
            model=model,
            provider=provider,
        )
        return
    line = {
        "method": method,
        "path": path,
        "status": status,
        "duration_ms": duration_ms,
        "model": model,
        "provider": provider,
        "event": "request",
        **_process_fields,
        "request_id": request_id,
        "level": "info",
    }
    write(render_json(None, "info", timestamp(None, "info", line)))


def configure_logging(
    level: str = "info", stream: TextIO | None = None, json: bool | None = None
) -> None:
    global _access_writer
    stream = stream or sys.stderr
    if json is None:
        json = not stream.isatty()
    processors: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        timestamp,
        structlog.processors.format_exc_info,
    ]
    logger_factory: Any
    if json:
        processors.append(render_json)
        # Text written to the stream before (start-up errors) is flushed by now: stderr is
        # line-buffered, so bytes written below it cannot overtake it.
        if hasattr(stream, "flush"):
            stream.flush()
        logger_factory = lambda *_args: LineLogger(stream)  # noqa: E731
        _access_writer = LineLogger(stream).msg if _LEVELS[level] <= logging.INFO else None
    else:
        processors.append(structlog.dev.ConsoleRenderer(colors=False))
        _access_writer = None
        logger_factory = structlog.PrintLoggerFactory(stream)
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[level]),
        logger_factory=logger_factory,
        cache_logger_on_first_use=True,
    )
    # aiohttp's own access log duplicates ours; its errors still reach stderr.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
