"""An OpenAI-compatible upstream's own `/responses` answers (pass-through), read into the
shared shapes: what routing, metering and failover need of them. The answer itself goes back
to the client as it came (`ChatResult.native`, `ChatDelta.native`). What is read of them is
untrusted JSON, typed `object` (or `Mapping[str, object]`) until checked, so mypy sees that
each field relied on is."""

from __future__ import annotations

from collections.abc import Mapping

from palyra.models.http import Malformed, kind_of, token_count
from palyra.types import ChatDelta, ChatResult, FinishReason, ToolCallDelta, ToolCallResult, Usage

RESPONSES_PATH = "/responses"
# The events that end a stream: after them the upstream sends nothing of the answer.
RESPONSE_FINAL_EVENTS = frozenset({"response.completed", "response.incomplete"})


def parse_usage(data: object) -> Usage:
    if data is None:
        return Usage()
    if not isinstance(data, dict):
        raise Malformed(f"usage is {kind_of(data)}, not an object")
    inputs = data.get("input_tokens_details")
    outputs = data.get("output_tokens_details")
    return Usage(
        token_count(data.get("input_tokens"), "usage.input_tokens"),
        token_count(data.get("output_tokens"), "usage.output_tokens"),
        cached_tokens=token_count(
            inputs.get("cached_tokens") if isinstance(inputs, dict) else None,
            "usage.input_tokens_details.cached_tokens",
        ),
        reasoning_tokens=token_count(
            outputs.get("reasoning_tokens") if isinstance(outputs, dict) else None,
            "usage.output_tokens_details.reasoning_tokens",
        ),
    )


def _finish(response: Mapping[str, object], has_calls: bool) -> FinishReason:
    if response.get("status") == "incomplete":
        details = response.get("incomplete_details")
        reason = details.get("reason") if isinstance(details, dict) else None
        return "content_filter" if reason == "content_filter" else "length"
    return "tool_calls" if has_calls else "stop"


def parse_response(body: object) -> ChatResult:
    """A `response` object as a `ChatResult` (the object itself kept in `native`)."""
    if not isinstance(body, dict):
        raise Malformed(f"the body is {kind_of(body)}, not a JSON object")
    output = body.get("output")
    if not isinstance(output, list):
        raise Malformed(f"output is {kind_of(output)}, not a list")
    texts: list[str] = []
    refusals: list[str] = []
    reasoning: list[str] = []
    calls: list[ToolCallResult] = []
    for i, item in enumerate(output):
        if not isinstance(item, dict):
            raise Malformed(f"output[{i}] is {kind_of(item)}, not an object")
        kind = item.get("type")
        if kind == "message":
            for part in item.get("content") or ():
                if isinstance(part, dict) and part.get("type") == "output_text":
                    texts.append(str(part.get("text") or ""))
                elif isinstance(part, dict) and part.get("type") == "refusal":
                    refusals.append(str(part.get("refusal") or ""))
        elif kind == "function_call":
            call_id, name, arguments = item.get("call_id"), item.get("name"), item.get("arguments")
            if not (isinstance(call_id, str) and isinstance(name, str)):
                raise Malformed(f"output[{i}] is a function_call without call_id and name")
            calls.append(
                ToolCallResult(call_id, name, arguments if isinstance(arguments, str) else "")
            )
        elif kind == "reasoning":
            for part in item.get("summary") or ():
                if isinstance(part, dict):
                    reasoning.append(str(part.get("text") or ""))
    model = body.get("model")
    return ChatResult(
        content="".join(texts) if texts else None,
        finish_reason=_finish(body, bool(calls)),
        usage=parse_usage(body.get("usage")),
        tool_calls=calls,
        upstream_model=model if isinstance(model, str) else "",
        reasoning="".join(reasoning) or None,
        refusal="".join(refusals) or None,
        native=body,
    )


def response_failure(data: Mapping[str, object]) -> tuple[str, str | None]:
    """(message, code) of a `response.failed` event's or a failed response's error."""
    response = data.get("response") if "response" in data else data
    error = response.get("error") if isinstance(response, dict) else None
    if isinstance(error, dict):
        code = error.get("code")
        return str(error.get("message") or "the response failed"), (
            str(code) if code is not None else None
        )
    return "the response failed", None


def response_stream_delta(kind: str, data: Mapping[str, object]) -> ChatDelta | None:
    """What one event of an upstream's response stream is in the shared shape (None: nothing
    a client sees of the answer, as `response.created`). A function call's index is its
    `output_index`."""
    if kind == "response.output_text.delta":
        return ChatDelta(content=_text(data, "delta"))
    if kind == "response.refusal.delta":
        return ChatDelta(refusal=_text(data, "delta"))
    if kind in ("response.reasoning_summary_text.delta", "response.reasoning_text.delta"):
        return ChatDelta(reasoning=_text(data, "delta"))
    if kind == "response.output_item.added":
        item = data.get("item")
        if isinstance(item, dict) and item.get("type") == "function_call":
            call_id, name = item.get("call_id"), item.get("name")
            return ChatDelta(
                tool_calls=[
                    ToolCallDelta(
                        _index(data),
                        call_id if isinstance(call_id, str) else None,
                        name if isinstance(name, str) else None,
                    )
                ]
            )
        return None
    if kind == "response.function_call_arguments.delta":
        return ChatDelta(tool_calls=[ToolCallDelta(_index(data), arguments=_text(data, "delta"))])
    if kind in RESPONSE_FINAL_EVENTS:
        response = data.get("response")
        if not isinstance(response, dict):
            raise Malformed(f"{kind} has no response object")
        output = response.get("output") or []
        has_calls = any(isinstance(i, dict) and i.get("type") == "function_call" for i in output)
        return ChatDelta(
            finish_reason=_finish(response, has_calls), usage=parse_usage(response.get("usage"))
        )
    return None


def _text(data: Mapping[str, object], name: str) -> str:
    value = data.get(name)
    if not isinstance(value, str):
        raise Malformed(f"{data.get('type')}.{name} is {kind_of(value)}, not a string")
    return value


def _index(data: Mapping[str, object]) -> int:
    index = data.get("output_index", 0)
    if type(index) is not int or not 0 <= index <= 1023:
        raise Malformed("output_index is not a whole number from 0 to 1023")
    return index
