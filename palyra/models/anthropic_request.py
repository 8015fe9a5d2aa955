"""Chat completions requests translated to Anthropic Messages API requests (pure, no I/O).

`build_messages_request` translates a request into a `POST /v1/messages` body. What Anthropic
cannot honour is named first (`unhonoured`, `anthropic_honour.py`; the router then picks a
candidate that can); what only translating finds Anthropic cannot honour is raised as
`CannotHonour` (the fallback skips the candidate on that too). `InvalidRequest` is kept for a
request that is wrong whatever serves it (a tool_choice naming no tool, a malformed data URL,
...): that is the client's to fix, and no other candidate would do better.

Where the two APIs differ:
- System and developer messages become the top-level `system` string, in order, joined by a
  blank line. Anthropic requires user and assistant turns to alternate, so consecutive messages
  of one role are merged into one; `tool` (and deprecated `function`) messages become
  `tool_result` blocks of a user turn. Deprecated `functions` / `function_call` are tools.
- Fields of a reply object that a client keeps in its history (`reasoning_content`,
  `annotations`, ...) are never sent: only the fields translated here are. A `refusal` part
  or field of an assistant turn is what the assistant said: text. An earlier audio answer is
  its transcript.
- `thinking_blocks` of an assistant message (the thinking and redacted_thinking blocks an
  earlier Anthropic answer gave back, signatures included; `anthropic_response.py`) open its
  assistant turn, as they came, when the request thinks: Anthropic then requires them before
  the tool_use blocks of the turn it is continuing, and checks their signatures. Without
  thinking they are left out (see `_thinking_blocks`).
- `file` parts: a PDF becomes a document block (base64 source), text/plain a document with a
  text source, an image an image block. OpenAI file ids mean nothing to Anthropic.
- JSON response formats become the answer tool, and a tool_choice that forces a call to it
  (`anthropic_answer.py`).
- `reasoning_effort` becomes `thinking` with a token budget (`THINKING_BUDGETS` of
  `anthropic_honour.py`; "none" and "minimal" mean no thinking). Anthropic counts thinking in
  max_tokens and wants a budget of at least 1024 below it: a client's max_tokens keeps its
  meaning (a cap on everything generated, as OpenAI's max_completion_tokens, which counts
  reasoning tokens too) and the budget takes at most half of it; without one, max_tokens is
  the model's max_output_tokens plus the budget, so the answer keeps the room it has without
  thinking. What thinking does not go with is not honoured (`anthropic_honour.py`), never
  changed silently.
- `user` (or `safety_identifier`) becomes `metadata.user_id`; `top_k` (not OpenAI's, but
  Anthropic's, sent by clients that know they reach Claude) is Anthropic's `top_k`. What is
  dropped as harmless, and what is not honoured, `anthropic_honour.py` says.
"""

from __future__ import annotations

import base64
import binascii
import re
from typing import Any, Literal, cast, get_args
from urllib.parse import unquote_to_bytes

import orjson

from palyra.config import ModelConfig
from palyra.errors import InvalidRequest
from palyra.models.anthropic_answer import answer_tool, answer_tool_param
from palyra.models.anthropic_honour import (
    MIN_THINKING_BUDGET,
    THINKING_BUDGETS,
    CannotHonour,
    audio_transcript,
    unhonoured,
)
from palyra.models.anthropic_wire import (
    Base64PDFSourceParam,
    ContentBlockParam,
    DocumentBlockParam,
    ImageBlockParam,
    ImageMediaType,
    MessageCreateParams,
    MessageParam,
    PlainTextSourceParam,
    RedactedThinkingBlockParam,
    ThinkingBlockParam,
    ThinkingConfigEnabledParam,
    ToolChoiceAnyParam,
    ToolChoiceAutoParam,
    ToolChoiceParam,
    ToolChoiceToolParam,
    ToolParam,
    ToolResultBlockParam,
    ToolResultContentParam,
    ToolUseBlockParam,
)
from palyra.types import (
    ChatRequest,
    FilePart,
    FunctionDefinition,
    ImagePart,
    Message,
    NamedToolChoice,
    RefusalPart,
    TextPart,
)

IMAGE_MEDIA_TYPES: frozenset[str] = frozenset(get_args(ImageMediaType))
PDF: Literal["application/pdf"] = "application/pdf"
PLAIN_TEXT: Literal["text/plain"] = "text/plain"
# What a file part without a data URL is, by its file name.
FILE_SUFFIXES = {".pdf": PDF, ".txt": PLAIN_TEXT}
EMPTY_SCHEMA: dict[str, Any] = {"type": "object", "properties": {}}

_DATA_URL = re.compile(r"^data:(?P<media>[^;,]*)(?P<params>(;[^;,]*)*),(?P<data>.*)$", re.DOTALL)


# --- the request -----------------------------------------------------------------------------


def build_messages_request(
    request: ChatRequest, model: ModelConfig, *, stream: bool = False
) -> MessageCreateParams:
    """The `POST /v1/messages` body for a chat request.

    Raises `CannotHonour` for what Anthropic cannot honour (what `unhonoured` finds, and what
    only translating finds), and `InvalidRequest` for what is wrong whatever serves the request,
    naming the offending field, so the caller gets a precise 400 rather than an upstream one.
    """
    found = unhonoured(request)
    if found is not None:
        raise CannotHonour(*found)
    request = request.functions_as_tools()
    max_tokens, thinking = _thinking(request, model)
    system_parts: list[str] = []
    turns: list[tuple[str, list[ContentBlockParam]]] = []
    for index, message in enumerate(request.messages):
        if message.role in ("system", "developer"):
            _refuse_media(message, index)
            text = message.text()
            if text:
                system_parts.append(text)
        elif message.role == "user":
            turns.append(("user", list(_content_blocks(message, index))))
        elif message.role == "assistant":
            blocks = _assistant_blocks(message, index)
            if thinking is not None:
                blocks[:0] = _thinking_blocks(message, index)
            turns.append(("assistant", blocks))
        else:  # tool (function messages are tool messages by now)
            turns.append(("user", [_tool_result_block(message, index)]))

    messages = _merge_turns(turns)
    if not messages:
        # OpenAI answers a request of system messages alone; Anthropic does not.
        raise CannotHonour(
            "messages",
            "a request without a non-empty user or assistant message (Anthropic needs one)",
        )
    payload: MessageCreateParams = {
        "model": model.upstream_name,
        "max_tokens": max_tokens,
        "messages": messages,
    }
    if system_parts:
        payload["system"] = "\n\n".join(system_parts)
    tools, choice = _tools_and_choice(request)
    if tools:
        payload["tools"] = tools
    if choice is not None:
        payload["tool_choice"] = choice
    if thinking is not None:
        payload["thinking"] = thinking
    if request.temperature is not None:
        payload["temperature"] = request.temperature
    if request.top_p is not None:
        payload["top_p"] = request.top_p
    top_k = (request.model_extra or {}).get("top_k")
    if top_k is not None:  # an integer from 0: `unhonoured` checked
        payload["top_k"] = top_k
    stop = [request.stop] if isinstance(request.stop, str) else list(request.stop or [])
    if stop:
        payload["stop_sequences"] = stop
    user = request.user or getattr(request, "safety_identifier", None)
    if isinstance(user, str) and user:
        payload["metadata"] = {"user_id": user}
    if stream:
        payload["stream"] = True
    return payload


def _thinking(
    request: ChatRequest, model: ModelConfig
) -> tuple[int, ThinkingConfigEnabledParam | None]:
    """max_tokens, and the thinking configuration for the request's reasoning_effort."""
    limit = request.output_limit
    effort = request.reasoning_effort
    if effort is None or effort not in THINKING_BUDGETS:
        return limit or model.max_output_tokens, None
    # (The limits thinking puts on the rest of the request are `unhonoured`'s to name.)
    budget = THINKING_BUDGETS[effort]
    if limit is None:
        return model.max_output_tokens + budget, {"type": "enabled", "budget_tokens": budget}
    budget = min(budget, max(MIN_THINKING_BUDGET, limit // 2))
    return limit, {"type": "enabled", "budget_tokens": budget}


# --- tools -----------------------------------------------------------------------------------


def _tools_and_choice(request: ChatRequest) -> tuple[list[ToolParam], ToolChoiceParam | None]:
    tools = [_tool(tool.function) for tool in request.tools or []]
    choice = request.tool_choice
    names = {tool["name"] for tool in tools}
    if isinstance(choice, NamedToolChoice) and choice.function.name not in names:
        if not tools:
            raise InvalidRequest(
                "tool_choice: names a function but the request has no tools", param="tool_choice"
            )
        raise InvalidRequest(
            f"tool_choice: no tool named {choice.function.name!r} in tools", param="tool_choice"
        )
    answer = answer_tool(request)
    if answer is not None:
        answer_spec = answer_tool_param(request, answer)
        if answer_spec is None:  # `unhonoured` names it first
            raise CannotHonour("response_format", "a json_schema whose root is not an object")
        tools.append(answer_spec)
        if len(tools) == 1 or choice == "none":
            # One answer, so one call: a second would be a second answer.
            return tools, {"type": "tool", "name": answer, "disable_parallel_tool_use": True}
        result: ToolChoiceAutoParam | ToolChoiceAnyParam | ToolChoiceToolParam = {"type": "any"}
    elif not tools:
        return [], None
    elif choice is None:
        result = {"type": "auto"}
    elif isinstance(choice, NamedToolChoice):
        result = {"type": "tool", "name": choice.function.name}
    elif choice == "none":
        # Anthropic's "none" takes no other fields; parallelism is moot without tool use.
        return tools, {"type": "none"}
    elif choice == "required":
        result = {"type": "any"}
    elif choice == "auto":
        result = {"type": "auto"}
    else:  # custom and allowed_tools choices: `unhonoured` names them
        raise CannotHonour("tool_choice", f"tool_choice {choice}")
    if request.parallel_tool_calls is False:
        result["disable_parallel_tool_use"] = True
    elif choice is None and answer is None:
        return tools, None  # Anthropic's default is auto: nothing to say
    return tools, result


def _tool(function: FunctionDefinition) -> ToolParam:
    spec: ToolParam = {
        "name": function.name,
        # Anthropic requires an input schema; OpenAI lets a function without parameters omit it.
        "input_schema": function.parameters or dict(EMPTY_SCHEMA),
    }
    if function.description is not None:
        spec["description"] = function.description
    return spec


# --- content ---------------------------------------------------------------------------------


def _refuse_media(message: Message, index: int) -> None:
    kinds = message.part_types() & {"image_url", "file", "input_audio"}
    if kinds:
        raise InvalidRequest(
            f"messages[{index}]: {', '.join(sorted(kinds))} parts are only allowed in user "
            f"and tool messages, not in {message.role} messages",
            param=f"messages[{index}].content",
        )


def _content_blocks(message: Message, index: int) -> list[ToolResultContentParam]:
    """Text, image and document blocks of a message's content; empty text is left out
    because Anthropic refuses empty text blocks."""
    if message.content is None:
        return []
    if isinstance(message.content, str):
        return [{"type": "text", "text": message.content}] if message.content else []
    blocks: list[ToolResultContentParam] = []
    for part_index, part in enumerate(message.content):
        where = f"messages[{index}].content[{part_index}]"
        if isinstance(part, TextPart | RefusalPart):
            # A refusal in the history is what the assistant said: text, to Anthropic.
            text = part.text if isinstance(part, TextPart) else part.refusal
            if text:
                blocks.append({"type": "text", "text": text})
        elif isinstance(part, ImagePart):
            blocks.append(image_block(part.image_url.url, f"{where}.image_url.url"))
        elif isinstance(part, FilePart):
            blocks.append(file_block(part, where))
        else:  # `unhonoured` names it first
            raise CannotHonour(f"{where}.type", f"{part.type} content parts")
    return blocks


def image_block(url: str, where: str = "image_url.url") -> ImageBlockParam:
    """An Anthropic image block for an OpenAI `image_url`: base64 for data URLs, a URL source
    for http(s) URLs (Anthropic fetches those itself)."""
    if url.startswith("data:"):
        media_type, data = _base64_data_url(url, where)
        if media_type not in IMAGE_MEDIA_TYPES:
            allowed = ", ".join(sorted(IMAGE_MEDIA_TYPES))
            raise CannotHonour(
                where, f"an image of type {media_type or '(none)'!r} (Anthropic reads {allowed})"
            )
        return {
            "type": "image",
            "source": {
                "type": "base64",
                "media_type": cast(ImageMediaType, media_type),  # checked just above
                "data": data,
            },
        }
    if url.lower().startswith(("https://", "http://")):
        return {"type": "image", "source": {"type": "url", "url": url}}
    raise InvalidRequest(f"{where}: must be an http(s) URL or a base64 data URL", param=where)


def _base64_data_url(url: str, where: str) -> tuple[str, str]:
    """(media type, base64 data) of a base64 data URL."""
    match = _DATA_URL.match(url)
    if match is None:
        raise InvalidRequest(f"{where}: not a valid data URL", param=where)
    params = [p.strip().lower() for p in match.group("params").split(";") if p.strip()]
    if "base64" not in params:
        raise InvalidRequest(f"{where}: data URLs must be base64-encoded", param=where)
    return match.group("media").strip().lower(), match.group("data")


def file_block(part: FilePart, where: str) -> ImageBlockParam | DocumentBlockParam:
    """A document block for a PDF or plain text file part (an image block for an image)."""
    where = f"{where}.file.file_data"
    raw = part.file.file_data or ""
    name = part.file.filename
    if raw.startswith("data:"):
        match = _DATA_URL.match(raw)
        if match is None:
            raise InvalidRequest(f"{where}: not a valid data URL", param=where)
        media_type = match.group("media").strip().lower()
    else:
        # Bare base64, as some clients send it: what it is, its file name says.
        suffix = name[name.rfind(".") :].lower() if name and "." in name else ""
        media_type = FILE_SUFFIXES.get(suffix, "")
        if not media_type:
            # An upstream may tell the type from the bytes; Anthropic must be told it.
            raise CannotHonour(
                where,
                f"bare base64 of a file named {name!r} (Anthropic must be told the type: send a "
                "data URL naming it, application/pdf or text/plain, or a file name ending .pdf "
                "or .txt)",
            )
        raw = f"data:{media_type};base64,{raw}"
    source: Base64PDFSourceParam | PlainTextSourceParam
    if media_type == PDF:
        source = {"type": "base64", "media_type": PDF, "data": _base64_data_url(raw, where)[1]}
    elif media_type == PLAIN_TEXT:
        source = {"type": "text", "media_type": PLAIN_TEXT, "data": _plain_text(raw, where)}
    elif media_type in IMAGE_MEDIA_TYPES:
        return image_block(raw, where)
    else:
        raise CannotHonour(
            where,
            f"a file of type {media_type or '(none)'!r} (Anthropic reads application/pdf and "
            "text/plain files, and images)",
        )
    block: DocumentBlockParam = {"type": "document", "source": source}
    if name:
        block["title"] = name
    return block


def _plain_text(url: str, where: str) -> str:
    match = _DATA_URL.match(url)
    assert match is not None  # checked by the caller
    params = [p.strip().lower() for p in match.group("params").split(";") if p.strip()]
    data = match.group("data")
    try:
        raw = (
            base64.b64decode(data, validate=True) if "base64" in params else unquote_to_bytes(data)
        )
        return raw.decode("utf-8")
    except (binascii.Error, ValueError):
        # Anthropic's plain text source is text; the bytes are for an upstream to judge.
        raise CannotHonour(where, "a text/plain file that is not UTF-8 text") from None


def _assistant_blocks(message: Message, index: int) -> list[ContentBlockParam]:
    _refuse_media(message, index)
    blocks: list[ContentBlockParam] = list(_content_blocks(message, index))
    if not blocks and (message.refusal or audio_transcript(message)):
        # What the assistant said, when the content holds nothing: its refusal, or the
        # transcript of its audio answer.
        blocks.append({"type": "text", "text": message.refusal or audio_transcript(message)})
    for call_index, call in enumerate(message.tool_calls or []):
        where = f"messages[{index}].tool_calls[{call_index}].function.arguments"
        blocks.append(_tool_use(call.id, call.function.name, call.function.arguments, where))
    return blocks


def _thinking_blocks(
    message: Message, index: int
) -> list[ThinkingBlockParam | RedactedThinkingBlockParam]:
    """The thinking blocks an assistant message of the history carries (`thinking_blocks`,
    as an earlier answer gave them), to open its turn in a request that thinks.

    Only a request that thinks sends them. Anthropic requires them then (an assistant turn
    with tool_use that the request continues must start with the thinking that led to it,
    signature intact) and uses them as context. Without thinking it requires none, refuses
    them in a final assistant message ("When thinking is disabled, an `assistant` message in
    the final position cannot contain `thinking`") and has no thinking to continue: leaving
    them out never fails and changes nothing the model could use, as leaving out
    `reasoning_content` does. Signatures are Anthropic's to check; their shape is ours."""
    raw = (message.model_extra or {}).get("thinking_blocks")
    if raw is None:
        return []
    where = f"messages[{index}].thinking_blocks"
    if not isinstance(raw, list):
        raise InvalidRequest(
            f"{where}: must be a list of thinking blocks, as the answer gave them", param=where
        )
    blocks: list[ThinkingBlockParam | RedactedThinkingBlockParam] = []
    for position, block in enumerate(raw):
        at = f"{where}[{position}]"
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "thinking":
            thinking, signature = block.get("thinking"), block.get("signature")
            if not isinstance(thinking, str):
                raise InvalidRequest(f"{at}.thinking: must be a string", param=f"{at}.thinking")
            if signature is not None and not isinstance(signature, str):
                raise InvalidRequest(f"{at}.signature: must be a string", param=f"{at}.signature")
            sent: ThinkingBlockParam = {"type": "thinking", "thinking": thinking}
            if signature is not None:
                sent["signature"] = signature
            blocks.append(sent)
        elif kind == "redacted_thinking":
            data = block.get("data")
            if not isinstance(data, str):
                raise InvalidRequest(f"{at}.data: must be a string", param=f"{at}.data")
            blocks.append({"type": "redacted_thinking", "data": data})
        else:
            raise InvalidRequest(
                f"{at}: must be a block of type thinking or redacted_thinking, as the answer "
                "gave it",
                param=at,
            )
    return blocks


def _tool_use(call_id: str, name: str, raw: str, where: str) -> ToolUseBlockParam:
    # Some clients send "" for a call without arguments; Anthropic wants an object. OpenAI
    # takes the arguments a model wrote back as they are, JSON or not (a cut-off answer's are
    # not), so anything else is Anthropic's limit, not the request's fault.
    if not raw.strip():
        arguments: Any = {}
    else:
        try:
            arguments = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise CannotHonour(where, "tool call arguments that are not JSON") from None
    if not isinstance(arguments, dict):
        raise CannotHonour(where, "tool call arguments that are not a JSON object")
    return {"type": "tool_use", "id": call_id, "name": name, "input": arguments}


def _tool_result_block(message: Message, index: int) -> ToolResultBlockParam:
    content: str | list[ToolResultContentParam]
    if isinstance(message.content, str) or message.content is None:
        content = message.content or ""
    else:
        # Parts that were all empty text leave nothing; "" is the empty result Anthropic takes.
        content = _content_blocks(message, index) or ""
    return {"type": "tool_result", "tool_use_id": message.tool_call_id or "", "content": content}


def _merge_turns(turns: list[tuple[str, list[ContentBlockParam]]]) -> list[MessageParam]:
    """Anthropic wants strictly alternating roles: join runs of one role into one message."""
    merged: list[tuple[str, list[ContentBlockParam]]] = []
    for role, blocks in turns:
        if not blocks:
            continue  # an empty message carries nothing and would be refused upstream
        if merged and merged[-1][0] == role:
            merged[-1][1].extend(blocks)
        else:
            merged.append((role, list(blocks)))
    out: list[MessageParam] = []
    for position, (role, blocks) in enumerate(merged):
        if role == "user":
            # Tool results must open the user turn that answers the tool calls.
            blocks.sort(key=lambda block: block["type"] != "tool_result")
            out.append({"role": "user", "content": _compact(blocks)})
            continue
        if position == len(merged) - 1:
            _strip_final_assistant(blocks)
            if not blocks:
                continue
        out.append({"role": "assistant", "content": _compact(blocks)})
    return out


def _strip_final_assistant(blocks: list[ContentBlockParam]) -> None:
    # A final assistant message is a prefill, and Anthropic refuses one that ends in whitespace.
    last = blocks[-1] if blocks else None
    if last is not None and last["type"] == "text":
        text = last["text"].rstrip()
        if text:
            blocks[-1] = {"type": "text", "text": text}
        else:
            blocks.pop()


def _compact(blocks: list[ContentBlockParam]) -> str | list[ContentBlockParam]:
    # A lone text block is sent as a plain string, the shape most Anthropic examples use.
    if len(blocks) == 1 and blocks[0]["type"] == "text":
        return blocks[0]["text"]
    return blocks
