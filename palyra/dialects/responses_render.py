"""The `response` object: built from the internal result for a translated answer, or taken
from an upstream that answered natively and made Palyra's own (its id, what was asked).

A translated answer's reasoning item carries the provider's reasoning state (Anthropic's
thinking blocks) in `encrypted_content`, always, in what is stored; `shown` gives the client
its view, without it unless `include` asked for `reasoning.encrypted_content`, as the API
returns it only when asked.
"""

from __future__ import annotations

import time
from typing import Any

from palyra.dialects.responses_reasoning import encode_reasoning_state, is_thinking_block
from palyra.dialects.responses_request import ResponsesCall, item_id
from palyra.dialects.responses_wire import (
    FunctionCall,
    OutputMessage,
    OutputRefusal,
    OutputText,
    Reasoning,
    Response,
    ResponseStatus,
    ResponseUsage,
)
from palyra.types import ChatResult, FinishReason, Usage


def response_id() -> str:
    return item_id("resp")


def shell(
    call: ResponsesCall, rid: str, model_id: str, created_at: int, status: ResponseStatus
) -> Response:
    """The response object without its output and usage: what was asked, echoed as the API
    echoes it."""
    params = call.params
    reasoning = params.reasoning if isinstance(params.reasoning, dict) else {}
    text = params.text if isinstance(params.text, dict) else {}
    return {
        "id": rid,
        "object": "response",
        "created_at": created_at,
        "status": status,
        "error": None,
        "incomplete_details": None,
        "instructions": params.instructions,
        "max_output_tokens": params.max_output_tokens,
        "model": model_id,
        "output": [],
        "parallel_tool_calls": params.parallel_tool_calls is not False,
        "previous_response_id": params.previous_response_id,
        "reasoning": {
            "effort": reasoning.get("effort"),
            "summary": reasoning.get("summary"),
        },
        "store": call.store,
        "temperature": 1.0 if params.temperature is None else params.temperature,
        "text": {
            "format": text.get("format") or {"type": "text"},
            "verbosity": text.get("verbosity") or "medium",
        },
        "tool_choice": params.tool_choice if params.tool_choice is not None else "auto",
        "tools": list(params.tools or []),
        "top_p": 1.0 if params.top_p is None else params.top_p,
        "truncation": str(call.body.get("truncation") or "disabled"),
        "usage": None,
        "user": params.user,
        "metadata": dict(params.metadata or {}),
    }


def usage(value: Usage) -> ResponseUsage:
    return {
        "input_tokens": value.prompt_tokens,
        "input_tokens_details": {
            "cached_tokens": value.cached_tokens,
            "cache_write_tokens": value.cache_creation_tokens,
        },
        "output_tokens": value.completion_tokens,
        "output_tokens_details": {"reasoning_tokens": value.reasoning_tokens},
        "total_tokens": value.total_tokens,
    }


def finish(response: Response, finish_reason: FinishReason | None) -> None:
    """Status and incomplete details for how the answer ended."""
    response["completed_at"] = int(time.time())
    if finish_reason == "length":
        response["status"] = "incomplete"
        response["incomplete_details"] = {"reason": "max_output_tokens"}
    elif finish_reason == "content_filter":
        response["status"] = "incomplete"
        response["incomplete_details"] = {"reason": "content_filter"}
    else:
        response["status"] = "completed"


def output_text(text: str) -> OutputText:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def refusal(text: str) -> OutputRefusal:
    return {"type": "refusal", "refusal": text}


def message(content: list[OutputText | OutputRefusal], status: str = "completed") -> OutputMessage:
    return {
        "id": item_id("msg"),
        "type": "message",
        "role": "assistant",
        "status": "completed" if status == "completed" else "in_progress",
        "content": content,
    }


def function_call(call_id: str, name: str, arguments: str, *, done: bool = True) -> FunctionCall:
    return {
        "id": item_id("fc"),
        "type": "function_call",
        "status": "completed" if done else "in_progress",
        "call_id": call_id,
        "name": name,
        "arguments": arguments,
    }


def reasoning(text: str, thinking_blocks: list[dict[str, Any]] | None = None) -> Reasoning:
    item: Reasoning = {
        "id": item_id("rs"),
        "type": "reasoning",
        "summary": [{"type": "summary_text", "text": text}] if text else [],
    }
    if thinking_blocks:
        item["encrypted_content"] = encode_reasoning_state(thinking_blocks)
    return item


def thinking_blocks(extra: dict[str, Any] | None) -> list[dict[str, Any]]:
    """The thinking blocks a result's message (or a delta) carries, to go back to the
    provider that made them (see `anthropic_response`)."""
    blocks = (extra or {}).get("thinking_blocks")
    if not isinstance(blocks, list) or not all(map(is_thinking_block, blocks)):
        return []  # (an OpenAI-compatible upstream's field of that name, in another shape)
    return blocks


def shown(response: dict[str, Any], include: bool) -> dict[str, Any]:
    """A response as the client sees it: with its reasoning state only when `include` (it
    asked for `reasoning.encrypted_content`)."""
    output = response.get("output")
    if include or not output or not any(map(_has_state, output)):
        return response
    return {**response, "output": [shown_item(item, include) for item in output]}


def shown_item(item: dict[str, Any], include: bool) -> dict[str, Any]:
    """An item as the client sees it: a reasoning item's state only when `include`."""
    if include or not _has_state(item):
        return item
    return {k: v for k, v in item.items() if k != "encrypted_content"}


def _has_state(item: Any) -> bool:
    return (
        isinstance(item, dict) and item.get("type") == "reasoning" and "encrypted_content" in item
    )


def from_result(
    call: ResponsesCall, result: ChatResult, rid: str, model_id: str, created_at: int
) -> Response:
    """The whole answer of a translated provider as a response object."""
    response = shell(call, rid, model_id, created_at, "completed")
    output: list[Any] = []
    blocks = thinking_blocks(result.message_extra)
    if result.reasoning or blocks:
        output.append(reasoning(result.reasoning or "", blocks))
    content: list[OutputText | OutputRefusal] = []
    if result.content:
        content.append(output_text(result.content))
    if result.refusal:
        content.append(refusal(result.refusal))
    if content:
        output.append(message(content))
    output += [function_call(c.id, c.name, c.arguments) for c in result.tool_calls]
    response["output"] = output
    response["usage"] = usage(result.usage)
    finish(response, result.finish_reason)
    return response


def adopt(call: ResponsesCall, native: dict[str, Any], rid: str, model_id: str) -> dict[str, Any]:
    """An upstream's own response object, made Palyra's: its id, the model as the client
    named it, and what the client asked of storing and chaining (the upstream was sent
    `store: false` and the conversation spelled out)."""
    return {
        **native,
        "id": rid,
        "model": model_id,
        "store": call.store,
        "previous_response_id": call.params.previous_response_id,
    }
