"""Internal chat results as the Anthropic Messages API answers: a `Message`, its stop reason
and usage (the streamed events are `anthropic_stream`'s).

Reasoning that comes back becomes a thinking block, without a signature (only Anthropic can
sign one); tool calls become tool_use blocks; cache reads and writes are counted apart from
the fresh input tokens, as Anthropic counts them.
"""

from __future__ import annotations

from typing import Any

import orjson

from palyra.dialects.common import random_id
from palyra.errors import UpstreamProtocolError
from palyra.models.anthropic_wire import ContentBlock, Message, StopReason, ToolUseBlock
from palyra.models.anthropic_wire import Usage as WireUsage
from palyra.types import ChatResult, FinishReason, Usage

_STOP_REASONS: dict[FinishReason, StopReason] = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "content_filter": "refusal",
}


def message_id() -> str:
    return "msg_" + random_id()


def stop_reason(
    finish: FinishReason | None, stop_sequences: tuple[str, ...], extra: dict[str, Any] | None
) -> tuple[StopReason, str | None]:
    """Anthropic's stop reason (and stop sequence) for an internal finish reason. OpenAI says
    "stop" for a stop sequence as for an end of turn; servers that say which sequence matched
    (vLLM's `stop_reason` on the choice) let it come back as `stop_sequence`."""
    matched = extra.get("stop_reason") if extra else None
    if finish == "stop" and isinstance(matched, str) and matched in stop_sequences:
        return "stop_sequence", matched
    return _STOP_REASONS.get(finish or "stop", "end_turn"), None


def render_usage(usage: Usage) -> WireUsage:
    # Anthropic's input_tokens are the fresh ones: cache reads and writes are counted apart.
    fresh = usage.prompt_tokens - usage.cached_tokens - usage.cache_creation_tokens
    return {
        "input_tokens": max(0, fresh),
        "output_tokens": usage.completion_tokens,
        "cache_creation_input_tokens": usage.cache_creation_tokens,
        "cache_read_input_tokens": usage.cached_tokens,
    }


def tool_input(arguments: str, provider_id: str) -> dict[str, Any]:
    """A tool call's arguments as the object a tool_use block holds."""
    if not arguments.strip():
        return {}
    try:
        value = orjson.loads(arguments)
    except orjson.JSONDecodeError:
        value = None
    if not isinstance(value, dict):
        raise UpstreamProtocolError(
            "answered a tool call whose arguments are not a JSON object", provider_id=provider_id
        )
    return value


def render_message(
    result: ChatResult, model_id: str, provider_id: str, stop_sequences: tuple[str, ...] = ()
) -> Message:
    content: list[ContentBlock] = []
    if result.reasoning:
        content.append({"type": "thinking", "thinking": result.reasoning, "signature": ""})
    text = result.content or result.refusal
    if text:
        content.append({"type": "text", "text": text})
    for call in result.tool_calls:
        block: ToolUseBlock = {
            "type": "tool_use",
            "id": call.id,
            "name": call.name,
            "input": tool_input(call.arguments, provider_id),
        }
        content.append(block)
    finish: FinishReason = "content_filter" if result.refusal else result.finish_reason
    reason, sequence = stop_reason(finish, stop_sequences, result.choice_extra)
    return {
        "id": message_id(),
        "type": "message",
        "role": "assistant",
        "content": content,
        "model": model_id,
        "stop_reason": reason,
        "stop_sequence": sequence,
        "usage": render_usage(result.usage),
    }
