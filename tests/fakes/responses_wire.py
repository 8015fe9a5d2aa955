"""Bodies and SSE events of the public OpenAI Responses API (`POST /v1/responses`), for the
fake upstream: whole `response` objects and the typed event stream, rendered from a
`ChatReply` as the real API would send that answer.

Like the real API asked with `store: false`, the fake keeps nothing: a `previous_response_id`
is refused as unknown (Palyra must resolve it itself before passing a request through).
"""

from __future__ import annotations

import re
import time
from typing import Any

import orjson

from .replies import (
    ChatReply,
    ToolCall,
    WireError,
    new_id,
    normalized_tool_calls,
    rough_tokens,
    split_json,
    split_text,
)

RESPONSES_PATH = "/v1/responses"
_TOOL_COMMAND = re.compile(r"^/tool\s+(\S+)\s*(.*)$", re.DOTALL)


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            str(part.get("text", ""))
            for part in content
            if isinstance(part, dict) and part.get("type") in ("input_text", "output_text")
        )
    return ""


def _items(body: dict[str, Any]) -> list[dict[str, Any]]:
    raw = body["input"]
    if isinstance(raw, str):
        return [{"type": "message", "role": "user", "content": raw}]
    return [item for item in raw if isinstance(item, dict)]


def input_tokens(body: dict[str, Any]) -> int:
    text = " ".join(
        _text_of(item.get("content")) or str(item.get("output", "")) for item in _items(body)
    )
    return rough_tokens(f"{body.get('instructions') or ''} {text}")


def check(body: dict[str, Any]) -> None:
    for name in ("model", "input"):
        if name not in body:
            raise WireError(400, f"Missing required parameter: '{name}'.", param=name)
    if not isinstance(body["input"], str | list):
        raise WireError(400, "Invalid type for 'input'.", param="input")
    previous = body.get("previous_response_id")
    if previous:
        raise WireError(
            400, f"Previous response with id '{previous}' not found.", param="previous_response_id"
        )


def default_reply(body: dict[str, Any]) -> ChatReply:
    """An echo of the last user message; `/tool NAME {json}` calls a tool the request
    offers; after a tool's output, what it returned."""
    check(body)
    items = _items(body)
    if items and items[-1].get("type") == "function_call_output":
        return ChatReply(content=f"tool returned: {_text_of(items[-1].get('output'))}")
    text = next(
        (_text_of(item.get("content")) for item in reversed(items) if item.get("role") == "user"),
        "",
    )
    command = _TOOL_COMMAND.match(text.strip())
    if body.get("tools") and command:
        arguments = command.group(2).strip() or "{}"
        call = {"id": new_id("call_"), "name": command.group(1), "arguments": arguments}
        return ChatReply(content=None, tool_calls=[call])
    fmt = (body.get("text") or {}).get("format") or {}
    if isinstance(fmt, dict) and fmt.get("type") in ("json_object", "json_schema"):
        return ChatReply(content=orjson.dumps({"echo": text}).decode())
    return ChatReply(content=f"echo: {text}")


def _usage(reply: ChatReply, calls: list[ToolCall], prompt: int) -> dict[str, Any]:
    if reply.usage is not None:
        prompt, completion = reply.usage
    else:
        completion = rough_tokens(reply.content or "") + sum(
            rough_tokens(c.arguments) for c in calls
        )
    return {
        "input_tokens": prompt,
        # (openai-python 3.57 requires cache_write_tokens of every answer.)
        "input_tokens_details": {"cached_tokens": reply.cached_tokens, "cache_write_tokens": 0},
        "output_tokens": completion,
        "output_tokens_details": {"reasoning_tokens": reply.reasoning_tokens},
        "total_tokens": prompt + completion,
    }


def _shell(body: dict[str, Any], status: str) -> dict[str, Any]:
    return {
        "id": new_id("resp_"),
        "object": "response",
        "created_at": int(time.time()),
        "status": status,
        "background": False,
        "error": None,
        "incomplete_details": None,
        "instructions": body.get("instructions"),
        "max_output_tokens": body.get("max_output_tokens"),
        "max_tool_calls": None,
        "model": str(body.get("model")),
        "output": [],
        "parallel_tool_calls": body.get("parallel_tool_calls", True),
        "previous_response_id": None,
        "prompt_cache_key": None,
        "reasoning": {"effort": (body.get("reasoning") or {}).get("effort"), "summary": None},
        "safety_identifier": None,
        "service_tier": "default",
        "store": body.get("store", True),
        "temperature": body.get("temperature", 1.0),
        "text": {"format": {"type": "text"}, "verbosity": "medium", **(body.get("text") or {})},
        "tool_choice": body.get("tool_choice", "auto"),
        "tools": body.get("tools", []),
        "top_logprobs": 0,
        "top_p": body.get("top_p", 1.0),
        "truncation": "disabled",
        "usage": None,
        "user": None,
        "metadata": body.get("metadata") or {},
    }


def _output(reply: ChatReply, calls: list[ToolCall]) -> list[dict[str, Any]]:
    output: list[dict[str, Any]] = []
    if reply.reasoning:
        output.append(
            {
                "id": new_id("rs_"),
                "type": "reasoning",
                "summary": [{"type": "summary_text", "text": reply.reasoning}],
            }
        )
    if reply.content is not None:
        output.append(
            {
                "id": new_id("msg_"),
                "type": "message",
                "status": "completed",
                "role": "assistant",
                "content": [
                    {
                        "type": "output_text",
                        "text": reply.content,
                        "annotations": [],
                        "logprobs": [],
                    }
                ],
            }
        )
    output += [
        {
            "id": new_id("fc_"),
            "type": "function_call",
            "status": "completed",
            "call_id": c.id,
            "name": c.name,
            "arguments": c.arguments,
        }
        for c in calls
    ]
    return output


def _finish(response: dict[str, Any], reply: ChatReply) -> None:
    if reply.finish_reason in ("length", "max_tokens"):
        response["status"] = "incomplete"
        response["incomplete_details"] = {"reason": "max_output_tokens"}
    else:
        response["status"] = "completed"


def response(reply: ChatReply, body: dict[str, Any]) -> dict[str, Any]:
    """The whole answer: a `response` object."""
    calls = normalized_tool_calls(reply, "call_")
    answer = _shell(body, "completed")
    answer["output"] = _output(reply, calls)
    answer["usage"] = _usage(reply, calls, input_tokens(body))
    _finish(answer, reply)
    return answer


def frame(data: dict[str, Any]) -> bytes:
    kind = str(data["type"])
    return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


def stream_events(reply: ChatReply, body: dict[str, Any]) -> tuple[list[bytes], bytes]:
    """The stream's events but the last, and the last (`response.completed`), in order."""
    calls = normalized_tool_calls(reply, "call_")
    answer = _shell(body, "in_progress")
    sequence = 0
    frames: list[bytes] = []

    def emit(kind: str, **fields: Any) -> bytes:
        nonlocal sequence
        data = {"type": kind, "sequence_number": sequence, **fields}
        sequence += 1
        return frame(data)

    frames.append(emit("response.created", response={**answer}))
    frames.append(emit("response.in_progress", response={**answer}))
    output = _output(reply, calls)
    for index, item in enumerate(output):
        item_id = item["id"]
        if item["type"] == "reasoning":
            text = item["summary"][0]["text"]
            part = {"type": "summary_text", "text": ""}
            where = {"item_id": item_id, "output_index": index, "summary_index": 0}
            frames.append(
                emit("response.output_item.added", output_index=index, item={**item, "summary": []})
            )
            frames.append(emit("response.reasoning_summary_part.added", **where, part=part))
            frames += [
                emit("response.reasoning_summary_text.delta", **where, delta=piece)
                for piece in split_text(text)
            ]
            frames.append(emit("response.reasoning_summary_text.done", **where, text=text))
            frames.append(
                emit("response.reasoning_summary_part.done", **where, part={**part, "text": text})
            )
        elif item["type"] == "message":
            text = item["content"][0]["text"]
            where = {"item_id": item_id, "output_index": index, "content_index": 0}
            empty = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
            frames.append(
                emit(
                    "response.output_item.added",
                    output_index=index,
                    item={**item, "status": "in_progress", "content": []},
                )
            )
            frames.append(emit("response.content_part.added", **where, part=empty))
            frames += [
                emit("response.output_text.delta", **where, delta=piece, logprobs=[])
                for piece in split_text(text)
            ]
            frames.append(emit("response.output_text.done", **where, text=text, logprobs=[]))
            frames.append(emit("response.content_part.done", **where, part={**empty, "text": text}))
        else:
            where = {"item_id": item_id, "output_index": index}
            frames.append(
                emit(
                    "response.output_item.added",
                    output_index=index,
                    item={**item, "status": "in_progress", "arguments": ""},
                )
            )
            frames += [
                emit("response.function_call_arguments.delta", **where, delta=piece)
                for piece in split_json(item["arguments"])
            ]
            frames.append(
                emit("response.function_call_arguments.done", **where, arguments=item["arguments"])
            )
        frames.append(emit("response.output_item.done", output_index=index, item=item))
    answer["output"] = output
    answer["usage"] = _usage(reply, calls, input_tokens(body))
    _finish(answer, reply)
    kind = "response.incomplete" if answer["status"] == "incomplete" else "response.completed"
    return frames, emit(kind, response=answer)


def stream_error_frame() -> bytes:
    # A failure mid-stream: an `error` event, and the stream ends.
    return frame(
        {
            "type": "error",
            "sequence_number": 0,
            "code": "server_error",
            "message": "The server had an error while processing your request.",
            "param": None,
        }
    )
