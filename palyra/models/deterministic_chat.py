"""How the deterministic provider answers a chat request: a pure function of the request.

The rules, in order (docs/deterministic.md says them for users):

1. Tool calls, when tools are offered and `tool_choice` is not "none":
   - `/tool NAME ARGS` lines in the last user message call those tools, in that order, when
     every NAME is an offered tool (tool_choice auto, unset or required). Each line that
     starts with `/tool` begins a call; ARGS (JSON for a function tool, free text for a
     custom tool, `{}` when empty) run to the next such line, so they may span lines. With
     `parallel_tool_calls: false`, only the first is called.
   - tool_choice "required" without such lines: one call of the first offered tool not yet
     called since the last user message (tools the message names come first), else of the
     first; its arguments are an instance of its parameters schema (`schema_instance.py`).
   - tool_choice naming a tool: one call of it, its arguments from a `/tool` line for it,
     else generated. Always, after tool results too: that is what naming a tool asks for.
   - `allowed_tools`: as its mode says, among the tools it lists.
2. Otherwise text: after tool results (the last messages are `tool` messages),
   "tool <id> returned: <content>" for each, so agent loops end; else the last user
   message's text, echoed. It is cut at the first `stop` sequence, and at the output limit
   (the request's, else the model's) with finish_reason "length".
3. With `response_format`: json_object gives `{"echo": <that text>}`; json_schema an instance
   of the schema seeded by that text and the schema's name. Neither is ever cut.

`n` > 1 gives n identical choices (what sampling a deterministic model n times gives), and
usage counts them all. `logprobs` lists every token of the answer's text with logprob 0
(probability 1); `top_logprobs` lists that one token only, fewer than asked, as the API allows
when no other token has any probability. Only text is read: image, audio and file parts are
ignored. It cannot answer with audio, nor search the web: `unsupported` names those.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator, Mapping
from typing import Any, cast

import orjson

from palyra.config import ModelConfig
from palyra.errors import InvalidRequest
from palyra.limits import MAX_JSON_DEPTH, json_too_deep
from palyra.models.openai_wire import (
    ChatCompletionMessage,
    ChatCompletionTokenLogprob,
    Choice,
    ChoiceDelta,
    ChoiceDeltaToolCall,
    ChoiceLogprobs,
    ChunkChoice,
    message_tool_call,
)
from palyra.models.schema_instance import SchemaError, instance_json
from palyra.tokens import estimate_text_tokens, estimate_token_count, token_pieces
from palyra.types import (
    AllowedToolsChoice,
    ChatDelta,
    ChatRequest,
    ChatResult,
    CustomTool,
    FinishReason,
    Message,
    ModelProviderKind,
    NamedCustomToolChoice,
    NamedToolChoice,
    Tool,
    ToolCallDelta,
    ToolCallResult,
    Usage,
)

_TOOL_LINE = re.compile(r"(?m)^(?=/tool\s)")
_TOOL_COMMAND = re.compile(r"/tool\s+([A-Za-z0-9_-]{1,64})\s*(.*)", re.DOTALL)
_CHUNK_CHARS = 8

AnyTool = Tool | CustomTool


def unsupported_parameter(request: ChatRequest) -> tuple[str, str] | None:
    """(what, param) of the first thing in `request` this provider cannot honour, or None."""
    extra = request.model_extra or {}
    if "audio" in (request.modalities or ()) or extra.get("audio") is not None:
        return "audio output", "modalities" if "audio" in (request.modalities or ()) else "audio"
    if extra.get("web_search_options") is not None:
        return "web_search_options (it cannot search the web)", "web_search_options"
    return None


def answer(request: ChatRequest, model: ModelConfig) -> ChatResult:
    prompt_tokens = estimate_token_count(request, ModelProviderKind.DETERMINISTIC)
    calls = _tool_calls(request)
    if calls:
        completion = sum(estimate_text_tokens(c.name + c.arguments) for c in calls)
        result = ChatResult(None, "tool_calls", Usage(prompt_tokens, completion), calls)
    else:
        result = _text_answer(request, model, prompt_tokens)
    result.upstream_model = model.upstream_name
    if request.logprobs:
        logprobs: ChoiceLogprobs = {
            "content": _logprobs(result.content, request.top_logprobs),
            "refusal": None,
        }
        result.logprobs = logprobs
    choices = request.n or 1
    if choices > 1:
        result.usage.completion_tokens *= choices
        more = [_whole_choice(result, index) for index in range(1, choices)]
        # The shared shape holds other choices as plain JSON (an upstream's, relayed unread:
        # palyra/types.py); these are the API's `Choice`.
        result.more_choices = cast("list[dict[str, Any]]", more)
    return result


def deltas(result: ChatResult, request: ChatRequest) -> Iterator[ChatDelta]:
    """`result` as a stream: each tool call's id and name, then its arguments in pieces
    (indexes 0..n-1), then the text in pieces of whole tokens, then the finish with usage."""
    for index, call in enumerate(result.tool_calls):
        yield ChatDelta(tool_calls=[ToolCallDelta(index, call.id, call.name, "", type=call.type)])
        for piece in _pieces(call.arguments):
            yield ChatDelta(tool_calls=[ToolCallDelta(index, arguments=piece, type=call.type)])
    if request.logprobs:
        for piece, entries in _token_pieces(result.content or "", request.top_logprobs):
            logprobs: ChoiceLogprobs = {"content": entries, "refusal": None}
            yield ChatDelta(content=piece, logprobs=logprobs)
    else:
        for piece in _pieces(result.content or ""):
            yield ChatDelta(content=piece)
    more = None
    if result.more_choices:
        streamed = [_streamed_choice(result, choice["index"]) for choice in result.more_choices]
        # (Plain JSON in the shared shape, as in `answer`: these are the API's chunk choices.)
        more = cast("list[dict[str, Any]]", streamed)
    yield ChatDelta(finish_reason=result.finish_reason, usage=result.usage, more_choices=more)


# --- tool calls ------------------------------------------------------------------------------


def _tool_calls(request: ChatRequest) -> list[ToolCallResult]:
    tools: list[AnyTool] = list(request.tools or ())
    choice = request.tool_choice
    if not tools or choice == "none":
        return []
    if isinstance(choice, AllowedToolsChoice):
        allowed = {_allowed_name(item) for item in choice.allowed_tools.tools}
        tools = [t for t in tools if t.function.name in allowed]
        choice = choice.allowed_tools.mode
        if not tools:
            return []
    by_name = {t.function.name: t for t in tools}
    last = request.messages[-1]
    commands = _commands(last.text()) if last.role == "user" else []
    if commands and not all(name in by_name for name, _ in commands):
        commands = []  # not commands after all: a message about them
    if isinstance(choice, NamedToolChoice | NamedCustomToolChoice):
        name = choice.function.name if isinstance(choice, NamedToolChoice) else choice.custom.name
        tool = by_name.get(name)
        if tool is None:
            raise InvalidRequest(
                f"tool_choice names {name!r}, which is not among the tools", param="tool_choice"
            )
        given = next((raw for n, raw in commands if n == name), None)
        return [_call(request, 0, tool, given)]
    if commands:
        if request.parallel_tool_calls is False:
            commands = commands[:1]
        return [_call(request, i, by_name[n], raw) for i, (n, raw) in enumerate(commands)]
    if choice == "required":
        return [_call(request, 0, _next_tool(request, tools), None)]
    return []


def _allowed_name(item: Mapping[str, object]) -> str | None:
    # {"type": "function", "function": {"name": ...}}, or the flatter {"type": ..., "name": ...}
    inner = item.get(str(item.get("type", "function")))
    name = inner.get("name") if isinstance(inner, dict) else item.get("name")
    return name if isinstance(name, str) else None


def _commands(text: str) -> list[tuple[str, str]]:
    """(name, raw arguments) of each `/tool` line, or [] when the text is not commands."""
    text = text.strip()
    if not text.startswith("/tool"):
        return []
    found: list[tuple[str, str]] = []
    for chunk in _TOOL_LINE.split(text):
        if not chunk.strip():
            continue
        match = _TOOL_COMMAND.fullmatch(chunk.rstrip())
        if match is None:
            return []
        found.append((match.group(1), match.group(2).strip()))
    return found


def _next_tool(request: ChatRequest, tools: list[AnyTool]) -> AnyTool:
    """The first tool not yet called since the last user message (those the message names
    first), else the first of them."""
    called: set[str] = set()
    user_text = ""
    for message in reversed(request.messages):
        if message.role == "user":
            user_text = message.text()
            break
        for call in message.tool_calls or ():
            called.add(call.function.name)
    named = [t for t in tools if re.search(rf"\b{re.escape(t.function.name)}\b", user_text)]
    ordered = named + [t for t in tools if t not in named]
    return next((t for t in ordered if t.function.name not in called), ordered[0])


def _call(request: ChatRequest, index: int, tool: AnyTool, raw: str | None) -> ToolCallResult:
    name = tool.function.name
    custom = isinstance(tool, CustomTool)
    if custom:
        arguments = raw if raw is not None else f"input for {name} {_seed(request)[:8]}"
    elif raw is not None:
        arguments = _json_arguments(name, raw or "{}")
    else:
        schema = tool.function.parameters or {"type": "object", "properties": {}}
        try:
            arguments = instance_json(schema, f"{name}\0{len(request.messages)}\0{_seed(request)}")
        except SchemaError as exc:
            raise InvalidRequest(
                f"tools: {name}: no arguments can be built for its parameters ({exc})",
                param="tools",
            ) from None
    digest = hashlib.sha256(
        f"{len(request.messages)}\0{index}\0{name}\0{arguments}".encode("utf-8", "replace")
    ).hexdigest()
    return ToolCallResult(
        "call_" + digest[:24], name, arguments, type="custom" if custom else "function"
    )


def _json_arguments(name: str, raw: str) -> str:
    try:
        arguments = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        reason = str(exc).split(":", 1)[0]  # orjson's reason, without the position
        raise InvalidRequest(
            f"/tool {name}: arguments are not valid JSON ({reason})", param="messages"
        ) from None
    # As deep as a request body may be, no deeper: the arguments travel on as JSON.
    if json_too_deep(arguments):
        raise InvalidRequest(
            f"/tool {name}: arguments nested more than {MAX_JSON_DEPTH} levels deep "
            f"(the limit is {MAX_JSON_DEPTH})",
            param="messages",
        )
    return orjson.dumps(arguments).decode()


def _seed(request: ChatRequest) -> str:
    user = next((m.text() for m in reversed(request.messages) if m.role == "user"), "")
    return hashlib.sha256(user.encode("utf-8", "replace")).hexdigest()


# --- text ------------------------------------------------------------------------------------


def _text_answer(request: ChatRequest, model: ModelConfig, prompt_tokens: int) -> ChatResult:
    last = request.messages[-1]
    if last.role == "tool":
        # After a tool result, answer in text so agent loops end instead of calling again.
        text = "\n".join(
            f"tool {m.tool_call_id} returned: {m.text()}" for m in _trailing_tool_messages(request)
        )
    else:
        text = next((m.text() for m in reversed(request.messages) if m.role == "user"), "")
    fmt = request.response_format
    if fmt is not None and fmt.type != "text":
        content = _structured(text, fmt.json_schema if fmt.type == "json_schema" else None)
        usage = Usage(prompt_tokens, estimate_text_tokens(content))
        return ChatResult(content, "stop", usage)
    finish: FinishReason = "stop"
    text = _cut_at_stop(text, request.stop)
    # The request's limit, else the model's own: a real model stops there too, and it keeps
    # the answer to an echoed prompt of megabytes bounded.
    limit = request.output_limit or model.max_output_tokens
    completion_tokens = estimate_text_tokens(text)
    if completion_tokens > limit:
        text = _first_tokens(text, limit)
        completion_tokens = limit
        finish = "length"
    return ChatResult(text, finish, Usage(prompt_tokens, completion_tokens))


def _structured(text: str, json_schema: Mapping[str, object] | None) -> str:
    schema = (json_schema or {}).get("schema")
    if schema is None:
        return orjson.dumps({"echo": text}).decode()
    name = (json_schema or {}).get("name")
    try:
        return instance_json(schema, f"{name}\0{text}")
    except SchemaError as exc:
        raise InvalidRequest(
            f"response_format.json_schema: no answer can be built for the schema ({exc})",
            param="response_format",
        ) from None


def _cut_at_stop(text: str, stop: str | list[str] | None) -> str:
    stops = [stop] if isinstance(stop, str) else stop or []
    cut = min((i for s in stops if s and (i := text.find(s)) >= 0), default=-1)
    return text if cut < 0 else text[:cut]


def _first_tokens(text: str, limit: int) -> str:
    """The longest run of whole words from the start whose tokens fit `limit`. Every word is
    at least one token, so only the first `limit` words can fit; a binary search over them
    counts O(log limit) prefixes instead of one per word."""
    words = text.split(" ", limit)[:limit]
    low, high = 0, len(words)  # words[:low] fits; words[:high + 1] does not
    while low < high:
        middle = (low + high + 1) // 2
        if estimate_text_tokens(" ".join(words[:middle])) <= limit:
            low = middle
        else:
            high = middle - 1
    return " ".join(words[:low])


def _trailing_tool_messages(request: ChatRequest) -> list[Message]:
    trailing: list[Message] = []
    for message in reversed(request.messages):
        if message.role != "tool":
            break
        trailing.append(message)
    return list(reversed(trailing))


def _pieces(text: str) -> list[str]:
    return [text[i : i + _CHUNK_CHARS] for i in range(0, len(text), _CHUNK_CHARS)]


# --- logprobs and more choices ---------------------------------------------------------------


def _entry(piece: bytes, top: int | None) -> ChatCompletionTokenLogprob:
    token = piece.decode("utf-8", "backslashreplace")
    data = list(piece)
    return {
        "token": token,
        "logprob": 0.0,
        "bytes": data,
        "top_logprobs": [{"token": token, "logprob": 0.0, "bytes": data}] if top else [],
    }


def _logprobs(text: str | None, top: int | None) -> list[ChatCompletionTokenLogprob] | None:
    if text is None:
        return None
    return [_entry(piece, top) for piece in token_pieces(text)]


def _token_pieces(
    text: str, top: int | None
) -> Iterator[tuple[str, list[ChatCompletionTokenLogprob]]]:
    """The text in pieces of whole tokens (about `_CHUNK_CHARS` long, never splitting a
    character), each with its tokens' logprobs."""
    held = b""
    entries: list[ChatCompletionTokenLogprob] = []
    for piece in token_pieces(text):
        held += piece
        entries.append(_entry(piece, top))
        try:
            decoded = held.decode("utf-8")
        except UnicodeDecodeError:
            continue  # a character split between tokens: wait for its end
        if len(decoded) >= _CHUNK_CHARS:
            yield decoded, entries
            held, entries = b"", []
    if entries:
        yield held.decode("utf-8", "replace"), entries


def _delta_call_json(call: ToolCallResult, index: int) -> ChoiceDeltaToolCall:
    if call.type == "custom":
        return {
            "index": index,
            "id": call.id,
            "type": "custom",
            "custom": {"name": call.name, "input": call.arguments},
        }
    return {
        "index": index,
        "id": call.id,
        "type": "function",
        "function": {"name": call.name, "arguments": call.arguments},
    }


def _whole_choice(result: ChatResult, index: int) -> Choice:
    message: ChatCompletionMessage = {
        "role": "assistant",
        "content": result.content,
        "refusal": None,
    }
    if result.tool_calls:
        message["tool_calls"] = [message_tool_call(c) for c in result.tool_calls]
    return {
        "index": index,
        "message": message,
        "finish_reason": result.finish_reason,
        "logprobs": result.logprobs,
    }


def _streamed_choice(result: ChatResult, index: int) -> ChunkChoice:
    # Another choice of a stream: the same answer, given whole in one chunk.
    delta: ChoiceDelta = {"role": "assistant", "content": result.content}
    if result.tool_calls:
        delta["tool_calls"] = [_delta_call_json(c, i) for i, c in enumerate(result.tool_calls)]
    return {
        "index": index,
        "delta": delta,
        "finish_reason": result.finish_reason,
        "logprobs": result.logprobs,
    }
