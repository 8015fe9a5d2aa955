"""Reply kinds and the request record of the fake upstream, shared by both wire renderers.

Kept apart from `upstream.py` so the OpenAI and Anthropic renderers can use these types without
importing the server (which imports them). Import them from `tests.fakes.upstream`.
"""

from __future__ import annotations

import json
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]
    query: dict[str, str]
    body: bytes
    # Any rather than `Any | None` (the same set of values) so tests can index it directly.
    json: Any = None
    form: dict[str, str | bytes] | None = None
    file_name: str | None = None
    # Every part of a multipart form in order, repeated names (`include[]`) each time.
    form_items: list[tuple[str, str | bytes]] = field(default_factory=list)


@dataclass
class Reply:
    """A raw reply, sent as given."""

    status: int = 200
    json: Any | None = None
    headers: dict[str, str] | None = None
    body: bytes | None = None
    delay_s: float = 0


@dataclass
class ErrorReply:
    """An error in the wire format of the route's API (OpenAI or Anthropic).

    `message`, `error_type` and (for OpenAI 429) `code` default to what the real API sends for
    `status`.
    """

    status: int
    message: str | None = None
    retry_after: str | None = None
    retry_after_ms: int | None = None
    code: str | None = None
    error_type: str | None = None


@dataclass
class ChatReply:
    """A chat answer, rendered for the route's API and for the request's `stream` flag.

    `tool_calls` items: `{"id": "call_1", "name": "get_weather", "arguments": "{...}"}`
    (`arguments` may also be a dict; `id` is generated when missing). `finish_reason` accepts
    OpenAI or Anthropic spellings and is translated; None means "stop"/"tool_calls".
    `usage` is (prompt/input tokens, completion/output tokens); None means a rough word count.
    `break_after_chunks` counts SSE frames (for Anthropic every event, `ping` included) and
    never counts the terminator (`data: [DONE]` / `message_stop`).
    """

    content: str | None = "Hello from the fake upstream."
    tool_calls: list[dict[str, Any]] | None = None
    finish_reason: str | None = None
    usage: tuple[int, int] | None = None
    delay_s: float = 0
    chunk_delay_s: float = 0
    break_after_chunks: int | None = None
    error_event_after_chunks: int | None = None
    # What the OpenAI route sends beside the answer (Anthropic's ignores these): reasoning as
    # `reasoning_content` (or, with `reasoning_key`, as some servers spell it), a refusal,
    # `annotations`, usage details, and fields the schema does not name on the body, its
    # choices and its message (each delta of a stream; the body's on every chunk).
    reasoning: str | None = None
    reasoning_key: str = "reasoning_content"
    refusal: str | None = None
    annotations: list[dict[str, Any]] | None = None
    cached_tokens: int = 0
    reasoning_tokens: int = 0
    body_extra: dict[str, Any] | None = None
    choice_extra: dict[str, Any] | None = None
    message_extra: dict[str, Any] | None = None


@dataclass
class DropConnection:
    """Close the connection without sending any response."""


AnyReply = Reply | ErrorReply | ChatReply | DropConnection


@dataclass
class RateLimits:
    """The rate-limit state a fake upstream reports on every answer of a model route (chat,
    messages, responses, embeddings, audio), 429s included, in the real API's headers:
    OpenAI's `x-ratelimit-*` (resets as Go durations), Anthropic's `anthropic-ratelimit-*`
    (resets as RFC 3339 times, whole seconds rounded up, counted from `clock`).

    The counts stay as set unless `enforce`: then each answered request takes one from
    `requests_remaining`, and once none remain the route answers 429 (with Retry-After at
    the request reset) until a test sets it again. Nothing refills by itself."""

    requests_limit: int = 500
    requests_remaining: int = 499
    requests_reset_s: float = 0.12
    tokens_limit: int = 200_000
    tokens_remaining: int = 199_000
    tokens_reset_s: float = 6.0
    # Anthropic only: its separate input and output token limits (None: not sent).
    input_tokens_remaining: int | None = None
    input_tokens_reset_s: float | None = None
    output_tokens_remaining: int | None = None
    output_tokens_reset_s: float | None = None
    enforce: bool = False
    clock: Callable[[], float] = time.time

    @property
    def spent(self) -> bool:
        return self.requests_remaining <= 0


class WireError(Exception):
    """A request the real API would refuse; rendered in the route's error shape."""

    def __init__(self, status: int, message: str, *, param: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param


@dataclass
class ToolCall:
    """A tool call of a ChatReply with its defaults filled in."""

    id: str
    name: str
    arguments: str


def normalized_tool_calls(reply: ChatReply, id_prefix: str) -> list[ToolCall]:
    calls: list[ToolCall] = []
    for item in reply.tool_calls or []:
        arguments = item.get("arguments", "{}")
        if not isinstance(arguments, str):
            arguments = json.dumps(arguments)
        call_id = str(item.get("id") or new_id(id_prefix))
        calls.append(ToolCall(id=call_id, name=str(item["name"]), arguments=arguments))
    return calls


def new_id(prefix: str) -> str:
    return prefix + secrets.token_hex(12)


def rough_tokens(text: str) -> int:
    # A word count is close enough: tests need stable, non-zero numbers, not a tokenizer.
    return max(1, len(text.split()))


_PIECE = re.compile(r"\S{1,8}\s*|\s+")


def split_text(text: str) -> list[str]:
    """Split into word-sized pieces (<= 8 non-space chars each), like a model's token stream."""
    return _PIECE.findall(text) or [text]


def split_json(text: str, pieces: int = 3) -> list[str]:
    """Split a JSON string into `pieces` fragments (fewer only for very short text)."""
    size = max(1, -(-len(text) // pieces))
    return [text[i : i + size] for i in range(0, len(text), size)] or [""]
