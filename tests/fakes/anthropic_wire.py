"""Bodies and SSE events in the wire format of the Anthropic Messages API, for the fake upstream."""

from __future__ import annotations

import base64
import hashlib
import math
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

from .replies import (
    ChatReply,
    RateLimits,
    ToolCall,
    WireError,
    new_id,
    normalized_tool_calls,
    rough_tokens,
    split_json,
    split_text,
)


@dataclass
class ClaudeReply(ChatReply):
    """A `ChatReply` with what only the Messages API sends: thinking (a thinking block with
    its signature, streamed as thinking_delta and signature_delta), a redacted_thinking block,
    and prompt-cache counts in usage (`usage` then holds the uncached input tokens)."""

    thinking: str | None = None
    redacted_thinking: bool = False
    cache_read_tokens: int = 0
    cache_creation_tokens: int = 0


_TOOL_COMMAND = re.compile(r"^/tool\s+(\S+)\s*(.*)$", re.DOTALL)

_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    504: "timeout_error",
    529: "overloaded_error",
}
_DEFAULT_MESSAGES = {
    "invalid_request_error": "Invalid request.",
    "authentication_error": "invalid x-api-key",
    "billing_error": "Your credit balance is too low.",
    "permission_error": "Your API key does not have permission to use the specified resource.",
    "not_found_error": "Not found.",
    "request_too_large": "Request exceeds the maximum allowed number of bytes.",
    "rate_limit_error": "Number of requests has exceeded your rate limit.",
    "api_error": "Internal server error",
    "timeout_error": "Request timed out.",
    "overloaded_error": "Overloaded",
}
# Stop reasons a test may write in OpenAI's spelling for a route that speaks Anthropic.
_FROM_OPENAI = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "content_filter": "refusal",
}


def error_body(
    status: int, message: str | None = None, *, error_type: str | None = None
) -> dict[str, Any]:
    if error_type is None:
        # The docs map unlisted 4xx to invalid_request_error; unlisted 5xx are api_error.
        fallback = "api_error" if status >= 500 else "invalid_request_error"
        error_type = _ERROR_TYPES.get(status, fallback)
    return {
        "type": "error",
        "error": {"type": error_type, "message": message or _DEFAULT_MESSAGES.get(error_type, "")},
        "request_id": new_id("req_"),
    }


def event(name: str, data: dict[str, Any]) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


def stream_error_frame() -> bytes:
    body = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
    return event("error", body)


def message_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            str(block.get("text", ""))
            for block in content
            if isinstance(block, dict) and block.get("type") == "text"
        )
    return ""


def input_tokens(body: dict[str, Any]) -> int:
    messages = body.get("messages")
    parts = [message_text(body.get("system"))]
    if isinstance(messages, list):
        parts += [message_text(m.get("content")) for m in messages if isinstance(m, dict)]
    return rough_tokens(" ".join(parts))


def default_chat_reply(body: dict[str, Any]) -> ChatReply:
    """The model's answer: an echo of the last user text, or a call of a tool when that text
    (or, in a tool loop, the tool's result) is `/tool NAME {json}`. With thinking enabled the
    answer thinks first (a signed thinking block; a redacted one too when the prompt holds
    Anthropic's documented test string), and the request is held to the thinking rules."""
    for name in ("model", "max_tokens", "messages"):
        if name not in body:
            raise WireError(400, f"{name}: Field required")
    messages = body["messages"]
    if not isinstance(messages, list) or not messages:
        raise WireError(400, "messages: at least one message is required")
    check_thinking(body)
    last_user = next(
        (m for m in reversed(messages) if isinstance(m, dict) and m.get("role") == "user"), {}
    )
    text = message_text(last_user.get("content")) or tool_results_text(last_user.get("content"))
    reply = _answer(body, text)
    if not thinking_enabled(body):
        return reply
    prompt = " ".join(
        [message_text(body.get("system"))]
        + [message_text(m.get("content")) for m in messages if isinstance(m, dict)]
    )
    return ClaudeReply(
        content=reply.content,
        tool_calls=reply.tool_calls,
        thinking=f"thinking about: {text}",
        redacted_thinking=REDACTED_THINKING_TRIGGER in prompt,
    )


def _answer(body: dict[str, Any], text: str) -> ChatReply:
    command = _TOOL_COMMAND.match(text.strip())
    choice = body.get("tool_choice")
    if body.get("tools") and isinstance(choice, dict) and choice.get("type") == "tool":
        # A forced call is what the model makes, whatever was said.
        name = str(choice.get("name"))
        arguments = command.group(2).strip() or "{}" if command else "{}"
        return ChatReply(content=None, tool_calls=[{"name": name, "arguments": arguments}])
    if body.get("tools") and command:
        # Lets a test ask for a tool call through the gateway without scripting the upstream
        # (and, as a tool's result, for the next call of a tool loop).
        arguments = command.group(2).strip() or "{}"
        try:
            orjson.loads(arguments)
        except orjson.JSONDecodeError as exc:
            raise WireError(400, f"/tool arguments are not JSON: {exc}") from exc
        call = {"id": new_id("toolu_"), "name": command.group(1), "arguments": arguments}
        return ChatReply(content=None, tool_calls=[call])
    return ChatReply(content=f"echo: {text}")


def tool_results_text(content: Any) -> str:
    """The text of the tool_result blocks of a user message."""
    if not isinstance(content, list):
        return ""
    return "".join(
        message_text(block.get("content"))
        for block in content
        if isinstance(block, dict) and block.get("type") == "tool_result"
    )


# --- thinking ---------------------------------------------------------------------------------

# Anthropic's documented string that makes a thinking model answer with a redacted_thinking
# block, for testing how clients handle one.
REDACTED_THINKING_TRIGGER = (
    "ANTHROPIC_MAGIC_STRING_TRIGGER_REDACTED_THINKING_46C9A13E193C177646C7398A98432ECCCE4C1253"
)
REDACTED_DATA = "EmwKAhgBEgy3va3pzix/LafPsn4a"
_THINKING_DOCS = "https://docs.claude.com/en/docs/build-with-claude/extended-thinking"
_THINKING_KINDS = ("thinking", "redacted_thinking")


def thinking_enabled(body: dict[str, Any]) -> bool:
    thinking = body.get("thinking")
    return isinstance(thinking, dict) and thinking.get("type") == "enabled"


def check_thinking(body: dict[str, Any]) -> None:
    """Hold a request to the rules the real API has for thinking blocks in the history, with
    its words (400 invalid_request_error):

    - every thinking block comes back as it was issued: its signature checks out against its
      text, and a redacted block's data is what was sent;
    - with thinking enabled, the assistant turn the request continues (the assistant
      messages after the last user message that holds no tool_result, when the request ends
      in tool results) starts with a thinking or redacted_thinking block;
    - with thinking disabled, an assistant message in the final position holds none.
    """
    messages: list[Any] = body["messages"]
    for index, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") != "assistant":
            continue
        for position, block in enumerate(_blocks_of(message)):
            where = f"messages.{index}.content.{position}"
            kind = block.get("type")
            if kind == "thinking" and block.get("signature") != _signature(
                str(block.get("thinking"))
            ):
                raise WireError(400, f"{where}: Invalid `signature` in `thinking` block")
            if kind == "redacted_thinking" and block.get("data") != REDACTED_DATA:
                raise WireError(400, f"{where}: Invalid `data` in `redacted_thinking` block")
            final = index == len(messages) - 1
            if kind in _THINKING_KINDS and final and not thinking_enabled(body):
                raise WireError(
                    400,
                    f"{where}: When thinking is disabled, an `assistant` message in the final "
                    "position cannot contain `thinking`. To use thinking blocks, enable "
                    "`thinking` in your request.",
                )
    if not thinking_enabled(body):
        return
    opened = _open_turn(messages)
    if opened is not None and opened[1].get("type") not in _THINKING_KINDS:
        index, first = opened
        raise WireError(
            400,
            f"messages.{index}.content.0.type: Expected `thinking` or `redacted_thinking`, but "
            f"found `{first.get('type')}`. When `thinking` is enabled, a final `assistant` "
            "message must start with a thinking block (preceeding the lastmost set of "
            "`tool_use` and `tool_result` blocks). We recommend you include thinking blocks "
            "from previous turns. To avoid this requirement, disable `thinking`. Please "
            f"consult our documentation at {_THINKING_DOCS}",
        )


def _open_turn(messages: list[Any]) -> tuple[int, dict[str, Any]] | None:
    """(index, first block) of the first assistant message of the turn a request ending in
    tool results continues; None when the request ends in a turn of its own."""
    last = messages[-1]
    if not isinstance(last, dict) or last.get("role") != "user" or not _has_tool_results(last):
        return None
    start = max(
        (
            i
            for i, m in enumerate(messages)
            if isinstance(m, dict) and m.get("role") == "user" and not _has_tool_results(m)
        ),
        default=-1,
    )
    for index in range(start + 1, len(messages)):
        message = messages[index]
        if isinstance(message, dict) and message.get("role") == "assistant":
            blocks = _blocks_of(message)
            return (index, blocks[0]) if blocks else None
    return None


def _has_tool_results(message: dict[str, Any]) -> bool:
    return any(block.get("type") == "tool_result" for block in _blocks_of(message))


def _blocks_of(message: dict[str, Any]) -> list[dict[str, Any]]:
    content = message.get("content")
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    if isinstance(content, list):
        return [block for block in content if isinstance(block, dict)]
    return []


def count_tokens(body: dict[str, Any]) -> dict[str, Any]:
    """`POST /v1/messages/count_tokens`: the input tokens `message` would report."""
    for name in ("model", "messages"):
        if name not in body:
            raise WireError(400, f"{name}: Field required")
    if not isinstance(body["messages"], list) or not body["messages"]:
        raise WireError(400, "messages: at least one message is required")
    return {"input_tokens": input_tokens(body)}


def stop_reason(reply: ChatReply) -> str:
    if reply.finish_reason is not None:
        return _FROM_OPENAI.get(reply.finish_reason, reply.finish_reason)
    return "tool_use" if reply.tool_calls else "end_turn"


def _signature(thinking: str) -> str:
    # Opaque to clients; the real one is an encrypted digest that the API checks when the
    # block comes back in a later turn.
    return base64.b64encode(hashlib.sha256(thinking.encode()).digest()).decode()


def _thinking_blocks(reply: ChatReply) -> list[dict[str, Any]]:
    if not isinstance(reply, ClaudeReply):
        return []
    blocks: list[dict[str, Any]] = []
    if reply.thinking is not None:
        signature = _signature(reply.thinking)
        blocks.append({"type": "thinking", "thinking": reply.thinking, "signature": signature})
    if reply.redacted_thinking:
        blocks.append({"type": "redacted_thinking", "data": REDACTED_DATA})
    return blocks


def _blocks(reply: ChatReply, calls: list[ToolCall]) -> list[dict[str, Any]]:
    blocks = _thinking_blocks(reply)
    if reply.content:
        blocks.append({"type": "text", "text": reply.content})
    blocks += [
        {"type": "tool_use", "id": c.id, "name": c.name, "input": orjson.loads(c.arguments)}
        for c in calls
    ]
    return blocks


def _output_tokens(reply: ChatReply, calls: list[ToolCall]) -> int:
    if reply.usage is not None:
        return reply.usage[1]
    return rough_tokens(reply.content or "") + sum(rough_tokens(c.arguments) for c in calls)


def _usage(reply: ChatReply, input_count: int, output_count: int) -> dict[str, Any]:
    cached = isinstance(reply, ClaudeReply)
    return {
        "input_tokens": input_count,
        "cache_creation_input_tokens": reply.cache_creation_tokens if cached else 0,
        "cache_read_input_tokens": reply.cache_read_tokens if cached else 0,
        "output_tokens": output_count,
        "service_tier": "standard",
    }


def message(reply: ChatReply, *, model: str, prompt: int) -> dict[str, Any]:
    calls = normalized_tool_calls(reply, "toolu_")
    input_count = reply.usage[0] if reply.usage is not None else prompt
    return {
        "id": new_id("msg_"),
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": _blocks(reply, calls),
        "stop_reason": stop_reason(reply),
        "stop_sequence": None,
        "usage": _usage(reply, input_count, _output_tokens(reply, calls)),
    }


def stream_events(reply: ChatReply, *, model: str, prompt: int) -> tuple[list[bytes], bytes]:
    """Every event of the stream, and apart from them the `message_stop` terminator."""
    calls = normalized_tool_calls(reply, "toolu_")
    input_count = reply.usage[0] if reply.usage is not None else prompt
    start: dict[str, Any] = {
        "id": new_id("msg_"),
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        # The real API reports a token or so of output up front and the total in message_delta.
        "usage": _usage(reply, input_count, 1),
    }
    frames = [event("message_start", {"type": "message_start", "message": start})]
    ping = event("ping", {"type": "ping"})
    index = 0
    for block in _thinking_blocks(reply):
        frames += _thinking_frames(block, index)
        index += 1
    if reply.content:
        frames.append(
            event(
                "content_block_start",
                {
                    "type": "content_block_start",
                    "index": index,
                    "content_block": {"type": "text", "text": ""},
                },
            )
        )
        frames.append(ping)
        for piece in split_text(reply.content):
            delta = {"type": "text_delta", "text": piece}
            frames.append(
                event(
                    "content_block_delta",
                    {"type": "content_block_delta", "index": index, "delta": delta},
                )
            )
        frames.append(event("content_block_stop", {"type": "content_block_stop", "index": index}))
        index += 1
    else:
        frames.append(ping)
    for offset, call in enumerate(calls, start=index):
        block = {"type": "tool_use", "id": call.id, "name": call.name, "input": {}}
        frames.append(
            event(
                "content_block_start",
                {"type": "content_block_start", "index": offset, "content_block": block},
            )
        )
        # The real API opens every tool input with an empty fragment.
        for piece in ["", *split_json(call.arguments)]:
            delta = {"type": "input_json_delta", "partial_json": piece}
            frames.append(
                event(
                    "content_block_delta",
                    {"type": "content_block_delta", "index": offset, "delta": delta},
                )
            )
        frames.append(event("content_block_stop", {"type": "content_block_stop", "index": offset}))
    frames.append(
        event(
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": stop_reason(reply), "stop_sequence": None},
                "usage": {"output_tokens": _output_tokens(reply, calls)},
            },
        )
    )
    return frames, event("message_stop", {"type": "message_stop"})


def _thinking_frames(block: dict[str, Any], index: int) -> list[bytes]:
    """A thinking block streamed as the API does: opened empty, its text in thinking_delta
    pieces, its signature in one signature_delta; a redacted one arrives whole at its start."""
    if block["type"] == "redacted_thinking":
        opened = block
        deltas: list[dict[str, Any]] = []
    else:
        opened = {"type": "thinking", "thinking": "", "signature": ""}
        deltas = [{"type": "thinking_delta", "thinking": p} for p in split_text(block["thinking"])]
        deltas.append({"type": "signature_delta", "signature": block["signature"]})
    start = {"type": "content_block_start", "index": index, "content_block": opened}
    frames = [event("content_block_start", start)]
    frames += [
        event("content_block_delta", {"type": "content_block_delta", "index": index, "delta": d})
        for d in deltas
    ]
    frames.append(event("content_block_stop", {"type": "content_block_stop", "index": index}))
    return frames


def models_list(models: list[str]) -> dict[str, Any]:
    data = [
        {
            "type": "model",
            "id": m,
            "display_name": m.replace("-", " ").title(),
            "created_at": "2025-01-01T00:00:00Z",
            # Required by ModelInfo in anthropic 2.14, absent from older docs.
            "lifecycle": "active",
            "deprecated_at": None,
            "retires_at": None,
        }
        for m in models
    ]
    return {
        "data": data,
        "has_more": False,
        "first_id": models[0] if models else None,
        "last_id": models[-1] if models else None,
    }


# --- rate limits ------------------------------------------------------------------------------


def rate_limit_headers(limits: RateLimits) -> dict[str, str]:
    """The `anthropic-ratelimit-*` headers Anthropic sends on an answer."""
    now = limits.clock()
    headers = {
        "anthropic-ratelimit-requests-limit": str(limits.requests_limit),
        "anthropic-ratelimit-requests-remaining": str(max(0, limits.requests_remaining)),
        "anthropic-ratelimit-requests-reset": rfc3339(now + limits.requests_reset_s),
        "anthropic-ratelimit-tokens-limit": str(limits.tokens_limit),
        "anthropic-ratelimit-tokens-remaining": str(max(0, limits.tokens_remaining)),
        "anthropic-ratelimit-tokens-reset": rfc3339(now + limits.tokens_reset_s),
    }
    for kind, left, reset in (
        ("input-tokens", limits.input_tokens_remaining, limits.input_tokens_reset_s),
        ("output-tokens", limits.output_tokens_remaining, limits.output_tokens_reset_s),
    ):
        if left is not None:
            headers[f"anthropic-ratelimit-{kind}-limit"] = str(limits.tokens_limit)
            headers[f"anthropic-ratelimit-{kind}-remaining"] = str(max(0, left))
            headers[f"anthropic-ratelimit-{kind}-reset"] = rfc3339(
                now + (limits.tokens_reset_s if reset is None else reset)
            )
    return headers


def rfc3339(epoch_s: float) -> str:
    """As Anthropic writes its resets: UTC, whole seconds (rounded up, so a reset is never
    announced earlier than it comes), "Z"."""
    return datetime.fromtimestamp(math.ceil(epoch_s), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
