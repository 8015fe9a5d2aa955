"""A `POST /v1/responses` body, read: checked, its input items given ids, and translated
onto the internal chat shape (`ChatRequest`) for providers that do not speak the Responses
API themselves. The chat request is written in `openai_wire`'s types; an input item, once
checked, is read in `responses_wire`'s.

What a translation cannot carry (a built-in tool, an item type chat completions has no word
for, a parameter with no counterpart) is not refused at once: it is collected in
`ResponsesCall.untranslatable`, and refused (400, naming it) only when a provider that needs
the translation is asked to serve the request. A provider with `responses_passthrough` gets
the body as the client sent it and may well honour it.

Reasoning state (`responses_reasoning`): read from an `input` item or the stored chain of
`previous_response_id`, Palyra's `encrypted_content` becomes `thinking_blocks` of the
assistant message the reasoning item precedes; content that is not Palyra's means nothing to
a translated provider and is left out, and Palyra's means nothing to an upstream served
natively (it would refuse it): such a reasoning item is left out of the pass-through body. A
reasoning item sent back by its id without its content (openai-agents with `store` on) gets
the content of the stored item with that id, as the API finds its stored reasoning.
`include` with `reasoning.encrypted_content` decides whether the client is shown it; the
stored response keeps it either way (see `openai_responses`).

Parameters dropped because dropping them changes nothing a client can see of the answer:
`include` but for `reasoning.encrypted_content` (Palyra's answers carry no logprobs and no
outputs of built-in tools), `stream_options` (`include_obfuscation`: no obfuscation padding
is sent), `truncation` (a conversation that does not fit is refused either way), `max_tool_calls`
(it bounds built-in tool calls, which a translated provider never makes),
`prompt_cache_retention`, `reasoning.summary` / `reasoning.generate_summary` (a reasoning
text the provider gives is returned as the summary), and `background: false`. `metadata` is
kept on the stored response and never sent upstream (chat completions would want
`store: true` with it).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, cast

from pydantic import BaseModel, ConfigDict, Field, field_validator

from palyra.dialects.common import random_id
from palyra.dialects.responses_reasoning import (
    INCLUDE_REASONING_STATE,
    carries_palyra_state,
    reasoning_state,
)
from palyra.dialects.responses_wire import FunctionCallOutputParam, FunctionCallParam, MessageParam
from palyra.errors import InvalidRequest, Unsupported
from palyra.limits import MAX_CHAT_MESSAGES, MAX_CHAT_TOOLS, MAX_INTEGER
from palyra.models.anthropic_wire import RedactedThinkingBlockParam, ThinkingBlockParam
from palyra.models.openai_wire import (
    ChatCompletionAssistantMessageParam,
    ChatCompletionContentPartParam,
    ChatCompletionMessageFunctionToolCallParam,
    ChatCompletionMessageParam,
    ChatCompletionToolChoiceOptionParam,
    ChatCompletionToolUnionParam,
    ChatRequestParams,
    FileFile,
    FunctionDefinition,
    ImageURL,
    JSONSchema,
    merge_extra,
)
from palyra.server.json_body import validate
from palyra.types import ChatRequest, Native

NATIVE_DIALECT = "openai_responses"

# Parameters the API documents that change nothing a client sees when dropped (see above).
DROPPED_PARAMETERS = frozenset(
    {"include", "stream_options", "truncation", "max_tool_calls", "prompt_cache_retention"}
)
# Documented parameters chat completions takes under the same name: passed on as they are.
FORWARDED_PARAMETERS = frozenset({"safety_identifier", "prompt_cache_key", "service_tier"})
MAX_METADATA_PAIRS, MAX_METADATA_KEY, MAX_METADATA_VALUE = 16, 64, 512
_FUNCTION_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
_TOOL_CHOICE_MODES: dict[str, ChatCompletionToolChoiceOptionParam] = {
    "none": "none",
    "auto": "auto",
    "required": "required",
}
_DETAILS: dict[str, Literal["auto", "low", "high"]] = {"auto": "auto", "low": "low", "high": "high"}


class ResponsesBody(BaseModel):
    """The parameters with a fixed type, checked as such; `input`, `tools`, `tool_choice`,
    `text` and `reasoning` are read by hand below so an error names the item, not a
    pydantic path through a union."""

    model_config = ConfigDict(extra="allow")

    model: str | None = None
    input: object = None
    instructions: str | None = None
    # `tools` and `tool_choice` stay Any here only because responses_render echoes them into
    # the response object as the client sent them; `_Translation` reads them as `object`.
    tools: list[Any] | None = Field(default=None, max_length=MAX_CHAT_TOOLS)
    tool_choice: Any = None
    text: object = None
    reasoning: object = None
    max_output_tokens: int | None = Field(default=None, ge=1, le=MAX_INTEGER)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, ge=0, le=1)
    parallel_tool_calls: bool | None = None
    metadata: dict[str, str] | None = Field(default=None, max_length=MAX_METADATA_PAIRS)
    user: str | None = None
    store: bool | None = None
    previous_response_id: str | None = None
    stream: bool | None = None
    background: bool | None = None

    @field_validator("metadata")
    @classmethod
    def _check_metadata(cls, metadata: dict[str, str] | None) -> dict[str, str] | None:
        # The API's bounds: it is stored with the response.
        for key, value in (metadata or {}).items():
            if len(key) > MAX_METADATA_KEY:
                raise ValueError(f"keys are at most {MAX_METADATA_KEY} characters long")
            if len(value) > MAX_METADATA_VALUE:
                raise ValueError(f"values are at most {MAX_METADATA_VALUE} characters long")
        return metadata


@dataclass(slots=True)
class ResponsesCall:
    """One request, read."""

    body: dict[str, Any]  # as the client sent it
    params: ResponsesBody
    # This turn's own input items (a string input is one user message), each with an id.
    input_items: list[dict[str, Any]]
    # What a provider serving by translation would have to refuse, in words.
    untranslatable: list[str] = field(default_factory=list)
    # Whether the input differs from the body's (item references resolved, reasoning state
    # found by id).
    expanded: bool = False

    def references(self) -> list[str]:
        """The ids of stored items this turn needs: those its `item_reference` items name,
        and those of its reasoning items sent back without their encrypted content."""
        return [
            item["id"]
            for item in self.input_items
            if item["type"] == "item_reference"
            or (item["type"] == "reasoning" and not item.get("encrypted_content"))
        ]

    def resolve(self, found: dict[str, dict[str, Any]]) -> None:
        """Each `item_reference` replaced by the stored item it names, and each reasoning item
        without encrypted content given that of the stored item with its id, if it has any
        (`found`: by id)."""
        resolved = []
        for i, item in enumerate(self.input_items):
            if item["type"] == "item_reference":
                target = found.get(item["id"])
                if target is None:
                    raise InvalidRequest(
                        f"input[{i}]: item_reference {item['id']!r} names no stored item",
                        param=f"input[{i}]",
                    )
                item, self.expanded = target, True
            elif item["type"] == "reasoning" and not item.get("encrypted_content"):
                stored = found.get(item["id"]) or {}
                if stored.get("type") == "reasoning" and stored.get("encrypted_content"):
                    item = {**item, "encrypted_content": stored["encrypted_content"]}
                    self.expanded = True
            resolved.append(item)
        self.input_items = resolved

    @property
    def shows_reasoning_state(self) -> bool:
        """Whether the client asked to be shown reasoning items' `encrypted_content`."""
        return INCLUDE_REASONING_STATE in (self.body.get("include") or ())

    @property
    def store(self) -> bool:
        return self.params.store is not False  # the API's default is to store

    @property
    def stream(self) -> bool:
        return self.params.stream is True

    def chat_request(self, history: list[dict[str, Any]]) -> ChatRequest:
        """The internal request for `history` (the items of earlier turns, resolved from
        `previous_response_id`) then this turn, with the native body attached for providers
        that take it as it is."""
        translation = _Translation(self.untranslatable)
        messages: list[ChatCompletionMessageParam] = []
        if self.params.instructions:
            messages.append({"role": "system", "content": self.params.instructions})
        for where, item in [
            *((f"previous_response_id item {i}", h) for i, h in enumerate(history)),
            *((f"input[{i}]", item) for i, item in enumerate(self.input_items)),
        ]:
            translation.item(where, item, messages)
        if not messages:
            raise InvalidRequest("input: there is nothing to answer", param="input")
        if len(messages) > MAX_CHAT_MESSAGES:
            raise InvalidRequest(
                f"input: {len(messages)} messages with the earlier turns; at most "
                f"{MAX_CHAT_MESSAGES}",
                param="input",
            )
        chat: ChatRequestParams = {"messages": messages, "stream": self.stream}
        params = self.params
        if params.model is not None:
            chat["model"] = params.model
        if params.temperature is not None:
            chat["temperature"] = params.temperature
        if params.top_p is not None:
            chat["top_p"] = params.top_p
        if params.parallel_tool_calls is not None:
            chat["parallel_tool_calls"] = params.parallel_tool_calls
        if params.user is not None:
            chat["user"] = params.user
        if params.max_output_tokens is not None:
            chat["max_completion_tokens"] = params.max_output_tokens
        for name in FORWARDED_PARAMETERS:
            value = self.body.get(name)
            if value is not None:
                merge_extra(chat, {name: value})  # as the client sent it, unchecked
        translation.tools(self.params.tools, chat)
        translation.tool_choice(self.params.tool_choice, chat)
        translation.text(self.params.text, chat)
        translation.reasoning(self.params.reasoning, chat)
        # `validate` takes a plain JSON object: what was typed up to here is checked again, as
        # `ChatRequest`, past this cast.
        request = validate(cast("dict[str, Any]", chat), ChatRequest)
        return request.with_native(Native(NATIVE_DIALECT, self.native_body(history)))

    def native_body(self, history: list[dict[str, Any]]) -> dict[str, Any]:
        """The body for an upstream that serves `/responses` itself: as the client sent it,
        but with the earlier turns spelled out and nothing stored there (Palyra resolves
        `previous_response_id` and stores the answer itself)."""
        body = {k: v for k, v in self.body.items() if k != "previous_response_id"}
        body["store"] = False
        ours = any(carries_palyra_state(item) for item in self.input_items)
        if history or self.expanded or ours:
            # An earlier answer's reasoning goes back only with its encrypted content: the
            # upstream keeps nothing (`store: false`) to find it by its id. Palyra's own
            # content (a translated answer's) it cannot read: that reasoning stays behind.
            earlier = [
                replayable(item)
                for item in history
                if item.get("type") != "reasoning"
                or (item.get("encrypted_content") and not carries_palyra_state(item))
            ]
            current = [replayable(i) for i in self.input_items if not carries_palyra_state(i)]
            body["input"] = [*earlier, *current]
        return body


def read_call(body: dict[str, Any]) -> ResponsesCall:
    params = validate(body, ResponsesBody)
    untranslatable: list[str] = []
    for name in sorted((params.model_extra or {}).keys()):
        if name in DROPPED_PARAMETERS or name in FORWARDED_PARAMETERS:
            continue
        if name == "conversation" and body[name] is not None:
            raise Unsupported(
                "conversation: Palyra does not serve the Conversations API; chain responses "
                "with previous_response_id",
                param="conversation",
            )
        if body[name] is not None:
            untranslatable.append(f"the parameter {name!r}")
    if params.background:
        raise Unsupported(
            "background: Palyra answers every response in the foreground", param="background"
        )
    if params.input is None:
        raise InvalidRequest("you must provide an input parameter", param="input")
    include = body.get("include")
    if include is not None and (
        not isinstance(include, list) or not all(isinstance(i, str) for i in include)
    ):
        raise InvalidRequest("include must be a list of strings", param="include")
    return ResponsesCall(body, params, input_items(params.input), untranslatable)


def input_items(raw: object) -> list[dict[str, Any]]:
    """This turn's items, each with an id (what `input_items` lists): a string is one user
    message. Items are checked for their shape here, once."""
    if isinstance(raw, str):
        return [{"id": item_id("msg"), "type": "message", "role": "user", "content": raw}]
    if not isinstance(raw, list):
        raise InvalidRequest("input must be a string or a list of items", param="input")
    if len(raw) > MAX_CHAT_MESSAGES:
        raise InvalidRequest(f"input: {len(raw)} items; at most {MAX_CHAT_MESSAGES}", param="input")
    items = []
    for i, item in enumerate(raw):
        where = f"input[{i}]"
        if not isinstance(item, dict):
            raise InvalidRequest(f"{where} must be an object", param=where)
        kind = item_type(item)
        if kind is None:
            raise InvalidRequest(
                f"{where} has no type (and no role, as a message has)", param=where
            )
        if kind == "item_reference":
            if not isinstance(item.get("id"), str):
                raise InvalidRequest(f"{where}.id must be a string", param=f"{where}.id")
            items.append({"type": kind, "id": item["id"]})  # resolved by the dialect
            continue
        _check_item(where, kind, item)
        items.append(
            {"id": item.get("id") or item_id(_ID_PREFIX.get(kind, "item")), **item, "type": kind}
        )
    return items


_ID_PREFIX = {
    "message": "msg",
    "function_call": "fc",
    "function_call_output": "fco",
    "reasoning": "rs",
}


def item_id(prefix: str) -> str:
    return f"{prefix}_{random_id()}"


def item_type(item: Mapping[str, object]) -> str | None:
    kind = item.get("type")
    if kind is None and "role" in item:
        return "message"  # EasyInputMessage: the type may be left out
    return kind if isinstance(kind, str) else None


def replayable(item: dict[str, Any]) -> dict[str, Any]:
    """An item as an upstream's input takes it: the ids Palyra gave input messages and tool
    outputs are Palyra's own (the API's input params have none there)."""
    if item.get("type") == "function_call_output" or (
        item.get("type") == "message" and item.get("role") != "assistant"
    ):
        return {k: v for k, v in item.items() if k != "id"}
    return item


def _check_item(where: str, kind: str, item: Mapping[str, object]) -> None:
    if kind == "message":
        role = item.get("role")
        if role not in ("user", "assistant", "system", "developer"):
            raise InvalidRequest(
                f"{where}.role must be user, assistant, system or developer", param=where
            )
        content = item.get("content")
        if not isinstance(content, str | list):
            raise InvalidRequest(
                f"{where}.content must be a string or a list of parts", param=f"{where}.content"
            )
        if isinstance(content, list):
            for j, part in enumerate(content):
                if not isinstance(part, dict) or not isinstance(part.get("type"), str):
                    raise InvalidRequest(
                        f"{where}.content[{j}] must be an object with a type",
                        param=f"{where}.content[{j}]",
                    )
    elif kind == "function_call":
        for name in ("call_id", "name", "arguments"):
            if not isinstance(item.get(name), str):
                raise InvalidRequest(f"{where}.{name} must be a string", param=f"{where}.{name}")
    elif kind == "function_call_output":
        if not isinstance(item.get("call_id"), str):
            raise InvalidRequest(f"{where}.call_id must be a string", param=f"{where}.call_id")
        if not isinstance(item.get("output"), str | list):
            raise InvalidRequest(
                f"{where}.output must be a string or a list of parts", param=f"{where}.output"
            )
    elif kind == "reasoning" and not isinstance(item.get("summary", []), list):
        raise InvalidRequest(f"{where}.summary must be a list", param=f"{where}.summary")


class _Translation:
    """Responses items and parameters onto chat completions; what has no counterpart is
    noted in `untranslatable`."""

    def __init__(self, untranslatable: list[str]) -> None:
        self.untranslatable = untranslatable
        # Thinking blocks of reasoning items read, for the assistant message that follows.
        self._thinking: list[ThinkingBlockParam | RedactedThinkingBlockParam] = []

    def _cannot(self, what: str) -> None:
        if what not in self.untranslatable:
            self.untranslatable.append(what)

    def item(
        self, where: str, item: dict[str, Any], messages: list[ChatCompletionMessageParam]
    ) -> None:
        # The casts below name the shape an item of each type has here: this turn's items,
        # and the earlier turns' inputs (stored as they were read), were checked for it by
        # `_check_item`; the earlier turns' outputs are Palyra's or the API's own.
        kind = item_type(item)
        if kind == "message":
            self._message(where, cast(MessageParam, item), messages)
        elif kind == "function_call":
            function_call = cast(FunctionCallParam, item)
            call: ChatCompletionMessageFunctionToolCallParam = {
                "id": function_call["call_id"],
                "type": "function",
                "function": {
                    "name": function_call["name"],
                    "arguments": function_call["arguments"],
                },
            }
            last = messages[-1] if messages else None
            if last is not None and last["role"] == "assistant":
                last.setdefault("tool_calls", []).append(call)  # parallel calls: one turn
                turn = last
            else:
                turn = {"role": "assistant", "content": None, "tool_calls": [call]}
                messages.append(turn)
            self._think(turn)
        elif kind == "function_call_output":
            call_output = cast(FunctionCallOutputParam, item)
            output = call_output["output"]
            text = output if isinstance(output, str) else self._tool_output(where, output)
            messages.append(
                {"role": "tool", "tool_call_id": call_output["call_id"], "content": text}
            )
            self._thinking = []
        elif kind == "reasoning":
            # An earlier answer's reasoning, echoed back: chat completions takes its summary
            # nowhere as input; the provider's state it carries goes with the answer it led
            # to, as that message's `thinking_blocks` (see the module doc). (`reasoning_state`
            # checked each block it gives is a thinking or redacted_thinking block:
            # `is_thinking_block`.)
            self._thinking += cast(
                "list[ThinkingBlockParam | RedactedThinkingBlockParam]",
                reasoning_state(where, item),
            )
        else:
            self._cannot(f"{where}: items of type {kind!r}")

    def _think(self, message: ChatCompletionAssistantMessageParam) -> None:
        """The thinking blocks read since the last message onto this assistant message."""
        if self._thinking:
            message.setdefault("thinking_blocks", []).extend(self._thinking)
            self._thinking = []

    def _message(
        self, where: str, item: MessageParam, messages: list[ChatCompletionMessageParam]
    ) -> None:
        role, content = item["role"], item["content"]
        if role == "assistant":
            answer = self._assistant(where, content)
            messages.append(answer)
            self._think(answer)
            return
        self._thinking = []  # reasoning that led to no answer given back: nothing to open
        if isinstance(content, str):
            messages.append(_turn(role, content))
            return
        parts = [self._part(f"{where}.content[{j}]", part) for j, part in enumerate(content)]
        messages.append(_turn(role, [p for p in parts if p is not None]))

    def _assistant(
        self, where: str, content: str | Sequence[Mapping[str, object]]
    ) -> ChatCompletionAssistantMessageParam:
        if isinstance(content, str):
            return {"role": "assistant", "content": content}
        texts, refusals = [], []
        for j, part in enumerate(content):
            kind = part["type"]
            if kind in ("output_text", "input_text", "text"):
                texts.append(str(part.get("text", "")))
            elif kind == "refusal":
                refusals.append(str(part.get("refusal", "")))
            else:
                self._cannot(f"{where}.content[{j}]: assistant parts of type {kind!r}")
        message: ChatCompletionAssistantMessageParam = {
            "role": "assistant",
            "content": "".join(texts) or None,
        }
        if refusals:
            message["refusal"] = "".join(refusals)
        elif message["content"] is None:
            message["content"] = ""
        return message

    def _part(
        self, where: str, part: Mapping[str, object]
    ) -> ChatCompletionContentPartParam | None:
        kind = part["type"]
        if kind in ("input_text", "output_text", "text"):
            text = part.get("text")
            if not isinstance(text, str):
                raise InvalidRequest(f"{where}.text must be a string", param=f"{where}.text")
            return {"type": "text", "text": text}
        if kind == "input_image":
            url = part.get("image_url")
            if not isinstance(url, str) or not url:
                self._cannot(f"{where}: input_image by file_id (only image_url)")
                return None
            image: ImageURL = {"url": url}
            detail = part.get("detail")
            if isinstance(detail, str) and detail in _DETAILS:
                image["detail"] = _DETAILS[detail]
            return {"type": "image_url", "image_url": image}
        if kind == "input_file":
            if part.get("file_url"):
                self._cannot(f"{where}: input_file by file_url")
                return None
            # As the client sent them: `ChatRequest` checks them (`validate` in chat_request),
            # whose errors name them; the casts say so.
            file: FileFile = {}
            if part.get("file_data"):
                file["file_data"] = cast(str, part["file_data"])
            if part.get("file_id"):
                file["file_id"] = cast(str, part["file_id"])
            if part.get("filename"):
                file["filename"] = cast(str, part["filename"])
            if not file:
                raise InvalidRequest(f"{where}: input_file needs file_data or file_id", param=where)
            return {"type": "file", "file": file}
        self._cannot(f"{where}: content parts of type {kind!r}")
        return None

    def _tool_output(
        self, where: str, output: Sequence[object]
    ) -> str | list[ChatCompletionContentPartParam]:
        parts: list[ChatCompletionContentPartParam] = []
        for j, value in enumerate(output):
            if not isinstance(value, dict):
                raise InvalidRequest(
                    f"{where}.output[{j}] must be an object", param=f"{where}.output"
                )
            part: Mapping[str, object] = value
            if part.get("type") not in ("input_text", "output_text", "text"):
                self._cannot(f"{where}.output[{j}]: tool output parts of type {part.get('type')!r}")
                continue
            parts.append({"type": "text", "text": str(part.get("text", ""))})
        return parts or ""

    def tools(self, tools: list[object] | None, chat: ChatRequestParams) -> None:
        if not tools:
            return
        translated: list[ChatCompletionToolUnionParam] = []
        for i, value in enumerate(tools):
            where = f"tools[{i}]"
            if not isinstance(value, dict) or not isinstance(value.get("type"), str):
                raise InvalidRequest(f"{where} must be an object with a type", param=where)
            tool: Mapping[str, object] = value
            if tool["type"] != "function":
                self._cannot(f"{where}: built-in tools of type {tool['type']!r}")
                continue
            name = tool.get("name")
            if not isinstance(name, str) or not _FUNCTION_NAME.match(name):
                raise InvalidRequest(
                    f"{where}.name must be 1 to 64 of a-z, A-Z, 0-9, _ and -", param=where
                )
            parameters = tool.get("parameters")
            if parameters is not None and not isinstance(parameters, dict):
                raise InvalidRequest(f"{where}.parameters must be an object", param=where)
            # `description` and `strict` as the client sent them: `ChatRequest` checks them
            # (`validate` in chat_request), whose errors name them; the casts say so.
            function: FunctionDefinition = {"name": name}
            if tool.get("description") is not None:
                function["description"] = cast(str, tool["description"])
            if parameters is not None:
                function["parameters"] = parameters
            if tool.get("strict") is not None:
                function["strict"] = cast(bool, tool["strict"])
            translated.append({"type": "function", "function": function})
        if translated:
            chat["tools"] = translated

    def tool_choice(self, value: object, chat: ChatRequestParams) -> None:
        if value is None:
            return
        if isinstance(value, str):
            mode = _TOOL_CHOICE_MODES.get(value)
            if mode is None:
                raise InvalidRequest(
                    "tool_choice must be none, auto, required or an object", param="tool_choice"
                )
            if "tools" in chat:
                chat["tool_choice"] = mode
            return
        if not isinstance(value, dict) or not isinstance(value.get("type"), str):
            raise InvalidRequest(
                "tool_choice must be none, auto, required or an object", param="tool_choice"
            )
        choice: Mapping[str, object] = value
        name = choice.get("name")
        if choice["type"] == "function" and isinstance(name, str):
            chat["tool_choice"] = {"type": "function", "function": {"name": name}}
        else:
            self._cannot(f"tool_choice of type {choice['type']!r}")

    def text(self, value: object, chat: ChatRequestParams) -> None:
        if value is None:
            return
        if not isinstance(value, dict):
            raise InvalidRequest("text must be an object", param="text")
        text: Mapping[str, object] = value
        verbosity = text.get("verbosity")
        if verbosity is not None:
            merge_extra(chat, {"verbosity": verbosity})  # as the client sent it, unchecked
        format_value = text.get("format")
        if format_value is None:
            return
        fmt: Mapping[str, object] = format_value if isinstance(format_value, dict) else {}
        kind = fmt.get("type")
        if kind == "text":
            chat["response_format"] = {"type": "text"}
            return
        if kind == "json_object":
            chat["response_format"] = {"type": "json_object"}
            return
        if kind != "json_schema":
            raise InvalidRequest(
                "text.format.type must be text, json_object or json_schema", param="text.format"
            )
        name, json_schema = fmt.get("name"), fmt.get("schema")
        if not isinstance(name, str) or not isinstance(json_schema, dict):
            raise InvalidRequest(
                "text.format: a json_schema format needs a name and a schema", param="text.format"
            )
        schema: JSONSchema = {"name": name, "schema": json_schema}
        # `description` and `strict` as the client sent them: `ChatRequest` checks them
        # (`validate` in chat_request), whose errors name them; the casts say so.
        if fmt.get("description") is not None:
            schema["description"] = cast(str, fmt["description"])
        if fmt.get("strict") is not None:
            schema["strict"] = cast(bool, fmt["strict"])
        chat["response_format"] = {"type": "json_schema", "json_schema": schema}

    def reasoning(self, value: object, chat: ChatRequestParams) -> None:
        if value is None:
            return
        if not isinstance(value, dict):
            raise InvalidRequest("reasoning must be an object", param="reasoning")
        reasoning: Mapping[str, object] = value
        effort = reasoning.get("effort")
        if effort is not None:
            if not isinstance(effort, str):
                raise InvalidRequest("reasoning.effort must be a string", param="reasoning")
            chat["reasoning_effort"] = effort


def _turn(
    role: Literal["user", "system", "developer"],
    content: str | list[ChatCompletionContentPartParam],
) -> ChatCompletionMessageParam:
    """A user, system or developer message (one shape per role)."""
    if role == "user":
        return {"role": "user", "content": content}
    if role == "system":
        return {"role": "system", "content": content}
    return {"role": "developer", "content": content}
