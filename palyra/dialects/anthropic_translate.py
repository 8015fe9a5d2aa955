"""Anthropic Messages requests onto the internal chat shape (the way back is
`anthropic_render`).

`to_chat_request` reads a Messages API body (checking it as the API would, with errors that
name the field by its path in the client's body, `messages.0.content.1.source.media_type`)
into a `ChatRequest`. It is pure, so the translation is tested without a server. The body is
the client's JSON, each field checked where it is read (`object` until then); the chat
request is written in `openai_wire`'s types, which mypy checks.

Where the two shapes differ:
- A user turn's `tool_result` blocks become `tool` messages ahead of the rest of the turn (the
  internal shape, like OpenAI's, answers tool calls right after the assistant turn). A result
  with `is_error` says so in its text ("Error: ..."): the internal shape has no flag for it.
- `thinking` with a budget becomes `reasoning_effort` (the knob OpenAI-compatible reasoning
  models have), by the size of the budget; thinking blocks of earlier turns become the
  assistant's `reasoning_content`.
- `top_k` has no OpenAI name; it is kept as an extra field, which OpenAI-compatible servers
  that know it (vLLM, llama.cpp, ...) honour.
- Hints that do not change what the answer says (`cache_control`, `service_tier`, `speed`,
  `inference_geo`) are left out. Anything else without an internal counterpart (server
  tools, `search_result` blocks, documents by URL or file id, citations, `container`, ...) is
  listed in `Translation.untranslatable`: only an Anthropic provider, which takes the body as
  it came, can serve such a request, and any other is refused with a 400 naming it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, cast

import orjson

from palyra.errors import InvalidRequest, Unsupported
from palyra.limits import MAX_CHAT_MESSAGES, MAX_INTEGER
from palyra.models.anthropic_honour import MIN_THINKING_BUDGET
from palyra.models.anthropic_request import IMAGE_MEDIA_TYPES
from palyra.models.openai_wire import (
    ChatCompletionAssistantMessageParam,
    ChatCompletionContentPartImageParam,
    ChatCompletionContentPartParam,
    ChatCompletionContentPartRefusalParam,
    ChatCompletionContentPartTextParam,
    ChatCompletionMessageFunctionToolCallParam,
    ChatCompletionMessageParam,
    ChatCompletionMessageToolCallUnionParam,
    ChatCompletionToolMessageParam,
    ChatCompletionToolUnionParam,
    ChatCompletionUserMessageParam,
    ChatRequestParams,
    FileFile,
    FunctionDefinition,
    merge_extra,
)
from palyra.server.json_body import validate
from palyra.types import ChatRequest

# Thinking budgets onto reasoning efforts: up to 4K tokens is a light think, up to 16K a
# medium one, more is a long one.
_EFFORT_BY_BUDGET = ((4096, "low"), (16384, "medium"))
_TOOL_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
_ANTHROPIC_TOOL_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,128}$")

# Top-level fields read into the internal shape.
_TRANSLATED = frozenset(
    {
        "model",
        "messages",
        "system",
        "max_tokens",
        "tools",
        "tool_choice",
        "thinking",
        "stop_sequences",
        "metadata",
        "temperature",
        "top_p",
        "top_k",
        "stream",
        "output_config",
    }
)
# Hints about caching, capacity and placement: what the answer says does not depend on them.
_HINTS = frozenset({"cache_control", "service_tier", "speed", "inference_geo"})


@dataclass(slots=True)
class Translation:
    request: ChatRequest
    # (path in the body, what is there) for each part without an internal counterpart.
    untranslatable: list[tuple[str, str]] = field(default_factory=list)
    stop_sequences: tuple[str, ...] = ()

    def refusal_for(self, provider: str) -> Unsupported | None:
        """The 400 for serving this request on a provider that is not Anthropic, or None.
        (An `Unsupported` raised while serving makes the router try the next candidate: an
        Anthropic one further down the chain can still serve it.)"""
        if not self.untranslatable:
            return None
        where, what = self.untranslatable[0]
        more = len(self.untranslatable) - 1
        tail = f" (and {more} more)" if more else ""
        return Unsupported(
            f"{where}: {what} cannot be served by provider {provider}, which is not an "
            f"Anthropic provider{tail}",
            param=where,
            code="unsupported_parameter",
        )


def _error(where: str, message: str) -> InvalidRequest:
    return InvalidRequest(f"{where}: {message}", param=where)


def _kind(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, list):
        return "an array"
    return "an object"


def _string(value: object, where: str, *, empty: bool = True) -> str:
    if not isinstance(value, str):
        raise _error(where, f"must be a string, not {_kind(value)}")
    if not empty and not value:
        raise _error(where, "must not be empty")
    return value


def _object(value: object, where: str) -> dict[str, object]:
    """A JSON object of the body: its fields are checked one by one where they are read."""
    if not isinstance(value, dict):
        raise _error(where, f"must be an object, not {_kind(value)}")
    return value


def _integer(value: object, where: str, *, least: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _error(where, f"must be an integer, not {_kind(value)}")
    if not least <= value <= MAX_INTEGER:
        raise _error(where, f"must be from {least} to {MAX_INTEGER}, got {value}")
    return value


def _number(value: object, where: str, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _error(where, f"must be a number, not {_kind(value)}")
    if not 0 <= value <= high:
        raise _error(where, f"must be from 0 to {high:g}, got {value}")
    return float(value)


def effort_for_budget(budget_tokens: int) -> str:
    for ceiling, effort in _EFFORT_BY_BUDGET:
        if budget_tokens <= ceiling:
            return effort
    return "high"


class _Reader:
    """One body's translation; collects what cannot be translated as it goes."""

    def __init__(self) -> None:
        self.untranslatable: list[tuple[str, str]] = []

    def skip(self, where: str, what: str) -> None:
        self.untranslatable.append((where, what))

    # --- top level ---------------------------------------------------------------------

    def read(self, body: Mapping[str, object], counting: bool) -> Translation:
        # (The messages are read after the model and max_tokens, whose errors come first.)
        chat: ChatRequestParams = {"messages": []}
        for name in body:
            if name not in _TRANSLATED and name not in _HINTS:
                self.skip(name, f"the parameter {name!r}")
        model = body.get("model")
        if model is not None:
            chat["model"] = _string(model, "model", empty=False)
        if not counting:
            if "max_tokens" not in body:
                raise _error("max_tokens", "Field required")
            max_tokens = _integer(body["max_tokens"], "max_tokens", least=0)
            if max_tokens == 0:
                self.skip("max_tokens", "max_tokens 0 (warming the prompt cache)")
            else:
                chat["max_tokens"] = max_tokens
        messages: list[ChatCompletionMessageParam] = []
        system = body.get("system")
        if system is not None:
            content = self._system(system, "system")
            if content:
                messages.append({"role": "system", "content": content})
        messages += self._messages(body.get("messages"))
        chat["messages"] = messages
        tools = self._tools(body.get("tools"))
        if tools:
            chat["tools"] = tools
        tool_choice = body.get("tool_choice")
        if tool_choice is not None:
            self._tool_choice(tool_choice, tools, chat)
        thinking = body.get("thinking")
        if thinking is not None:
            self._thinking(thinking, chat)
        stop = self._stop_sequences(body.get("stop_sequences"))
        if stop:
            chat["stop"] = list(stop)
        metadata = body.get("metadata")
        if metadata is not None:
            user = _object(metadata, "metadata").get("user_id")
            if user is not None:
                chat["user"] = _string(user, "metadata.user_id")
        temperature = body.get("temperature")
        if temperature is not None:
            chat["temperature"] = _number(temperature, "temperature", 1)
        top_p = body.get("top_p")
        if top_p is not None:
            chat["top_p"] = _number(top_p, "top_p", 1)
        top_k = body.get("top_k")
        if top_k is not None:
            # No OpenAI name: an extra, which servers that know it honour (see the module doc).
            merge_extra(chat, {"top_k": _integer(top_k, "top_k", least=0)})
        stream = body.get("stream")
        if stream is not None:
            if not isinstance(stream, bool):
                raise _error("stream", f"must be a boolean, not {_kind(stream)}")
            chat["stream"] = stream
        output_config = body.get("output_config")
        if output_config is not None:
            self._output_config(output_config, chat)
        # `validate` takes a plain JSON object: what was typed up to here is checked again, as
        # `ChatRequest`, past this cast.
        request = validate(cast("dict[str, Any]", chat), ChatRequest)
        return Translation(request, self.untranslatable, stop)

    def _messages(self, value: object) -> list[ChatCompletionMessageParam]:
        if value is None:
            raise _error("messages", "Field required")
        if not isinstance(value, list):
            raise _error("messages", f"must be an array of messages, not {_kind(value)}")
        if not value:
            raise _error("messages", "at least one message is required")
        if len(value) > MAX_CHAT_MESSAGES:
            raise _error("messages", f"{len(value)} messages; at most {MAX_CHAT_MESSAGES}")
        out: list[ChatCompletionMessageParam] = []
        for index, item in enumerate(value):
            where = f"messages.{index}"
            message = _object(item, where)
            role = message.get("role")
            if "content" not in message:
                raise _error(f"{where}.content", "Field required")
            content = message["content"]
            if role == "user":
                out += self._user(content, where)
            elif role == "assistant":
                out.append(self._assistant(content, where))
            elif role == "system":
                out.append({"role": "system", "content": self._system(content, f"{where}.content")})
            else:
                raise _error(f"{where}.role", "must be 'user' or 'assistant'")
        return out

    # --- turns -------------------------------------------------------------------------

    def _system(self, value: object, where: str) -> str | list[ChatCompletionContentPartParam]:
        if isinstance(value, str):
            return value
        if not isinstance(value, list):
            raise _error(where, f"must be a string or an array of text blocks, not {_kind(value)}")
        parts: list[ChatCompletionContentPartParam] = []
        for index, item in enumerate(value):
            block_where = f"{where}.{index}"
            block = _object(item, block_where)
            if block.get("type") != "text":
                raise _error(f"{block_where}.type", "must be 'text' (system takes text blocks)")
            parts.append(self._text(block, block_where))
        return parts

    def _blocks(self, content: object, where: str) -> list[tuple[str, dict[str, object]]]:
        """The content as (path, block) pairs, each block with a string `type`; a string is
        one text block."""
        if isinstance(content, str):
            return [(f"{where}.content", {"type": "text", "text": content})]
        if not isinstance(content, list):
            raise _error(
                f"{where}.content",
                f"must be a string or an array of content blocks, not {_kind(content)}",
            )
        blocks = []
        for index, item in enumerate(content):
            block_where = f"{where}.content.{index}"
            block = _object(item, block_where)
            if not isinstance(block.get("type"), str):
                raise _error(f"{block_where}.type", "Field required (the block's type)")
            blocks.append((block_where, block))
        return blocks

    def _user(self, content: object, where: str) -> list[ChatCompletionMessageParam]:
        if isinstance(content, str):
            return [{"role": "user", "content": content}]
        results: list[ChatCompletionMessageParam] = []
        parts: list[ChatCompletionContentPartParam] = []
        for block_where, block in self._blocks(content, where):
            kind = block["type"]
            if kind == "tool_result":
                results.append(self._tool_result(block, block_where))
            elif kind == "tool_use":
                raise _error(f"{block_where}.type", "a tool_use block belongs in an assistant turn")
            else:
                parts += self._part(block, block_where)
        if parts or not results:
            user: ChatCompletionUserMessageParam = {"role": "user", "content": parts}
            results.append(user)
        return results

    def _assistant(self, content: object, where: str) -> ChatCompletionAssistantMessageParam:
        if isinstance(content, str):
            return {"role": "assistant", "content": content}
        parts: list[ChatCompletionContentPartTextParam | ChatCompletionContentPartRefusalParam] = []
        calls: list[ChatCompletionMessageToolCallUnionParam] = []
        reasoning: list[str] = []
        for block_where, block in self._blocks(content, where):
            kind = block["type"]
            if kind == "text":
                parts.append(self._text(block, block_where))
            elif kind == "tool_use":
                calls.append(self._tool_use(block, block_where))
            elif kind == "thinking":
                reasoning.append(_string(block.get("thinking"), f"{block_where}.thinking"))
            elif kind == "redacted_thinking":
                # Encrypted reasoning only Anthropic can read; it says nothing to another model.
                continue
            else:
                self.skip(block_where, f"a {kind} block in an assistant turn")
        message: ChatCompletionAssistantMessageParam = {
            "role": "assistant",
            "content": parts or ("" if not calls else None),
        }
        if calls:
            message["tool_calls"] = calls
        if reasoning:
            message["reasoning_content"] = "".join(reasoning)
        return message

    # --- blocks ------------------------------------------------------------------------

    def _text(self, block: dict[str, object], where: str) -> ChatCompletionContentPartTextParam:
        text = _string(block.get("text"), f"{where}.text")
        citations = block.get("citations")
        if citations:
            self.skip(f"{where}.citations", "citations on a text block")
        return {"type": "text", "text": text}

    def _part(self, block: dict[str, object], where: str) -> list[ChatCompletionContentPartParam]:
        """A user turn's (or a tool result's) block as content parts."""
        kind = block["type"]
        if kind == "text":
            return [self._text(block, where)]
        if kind == "image":
            image = self._image(block, where)
            return [image] if image else []
        if kind == "document":
            return self._document(block, where)
        if kind in ("thinking", "redacted_thinking"):
            raise _error(f"{where}.type", f"a {kind} block belongs in an assistant turn")
        self.skip(where, f"a {kind} block")
        return []

    def _image(
        self, block: dict[str, object], where: str
    ) -> ChatCompletionContentPartImageParam | None:
        source = _object(block.get("source"), f"{where}.source")
        kind = source.get("type")
        if kind == "base64":
            media_type = source.get("media_type")
            if media_type not in IMAGE_MEDIA_TYPES:
                allowed = ", ".join(sorted(IMAGE_MEDIA_TYPES))
                raise _error(f"{where}.source.media_type", f"must be one of {allowed}")
            data = _string(source.get("data"), f"{where}.source.data", empty=False)
            url = f"data:{media_type};base64,{data}"
        elif kind == "url":
            url = _string(source.get("url"), f"{where}.source.url", empty=False)
            if not url.lower().startswith(("https://", "http://")):
                raise _error(f"{where}.source.url", "must be an http(s) URL")
        elif kind == "file":
            self.skip(where, "an image by file id (the Files API)")
            return None
        else:
            raise _error(f"{where}.source.type", "must be 'base64', 'url' or 'file'")
        return {"type": "image_url", "image_url": {"url": url}}

    def _document(
        self, block: dict[str, object], where: str
    ) -> list[ChatCompletionContentPartParam]:
        source = _object(block.get("source"), f"{where}.source")
        citations = block.get("citations")
        if isinstance(citations, dict) and citations.get("enabled"):
            self.skip(f"{where}.citations", "citations on a document")
        title = block.get("title")
        kind = source.get("type")
        if kind == "base64":
            if source.get("media_type") != "application/pdf":
                raise _error(f"{where}.source.media_type", "must be 'application/pdf'")
            data = _string(source.get("data"), f"{where}.source.data", empty=False)
            filename = title if isinstance(title, str) and title else "document.pdf"
            file: FileFile = {
                "file_data": f"data:application/pdf;base64,{data}",
                "filename": filename,
            }
            return [{"type": "file", "file": file}]
        if kind == "text":
            data = _string(source.get("data"), f"{where}.source.data")
            context = block.get("context")
            # The title and context are what the model is told of the document: kept with it.
            head = [x for x in (title, context) if isinstance(x, str) and x]
            return [{"type": "text", "text": "\n\n".join([*head, data])}]
        if kind == "content":
            content = source.get("content")
            if isinstance(content, str):
                return [{"type": "text", "text": content}]
            parts: list[ChatCompletionContentPartParam] = []
            for block_where, inner in self._blocks(content, f"{where}.source"):
                if inner["type"] not in ("text", "image"):
                    raise _error(f"{block_where}.type", "must be 'text' or 'image'")
                parts += self._part(inner, block_where)
            return parts
        if kind in ("url", "file"):
            what = "by URL" if kind == "url" else "by file id (the Files API)"
            self.skip(where, f"a document {what}")
            return []
        raise _error(f"{where}.source.type", "must be 'base64', 'text', 'content', 'url' or 'file'")

    def _tool_use(
        self, block: dict[str, object], where: str
    ) -> ChatCompletionMessageFunctionToolCallParam:
        call_id = _string(block.get("id"), f"{where}.id", empty=False)
        name = _string(block.get("name"), f"{where}.name", empty=False)
        arguments = _object(block.get("input"), f"{where}.input")
        try:
            encoded = orjson.dumps(arguments).decode()
        except orjson.JSONEncodeError as exc:
            # An integer past 64 bits (orjson's limit, and every upstream's), or text that
            # is no Unicode (a lone surrogate escape).
            raise _error(f"{where}.input", f"cannot be passed on as JSON ({exc})") from None
        return {
            "id": call_id,
            "type": "function",
            "function": {"name": name, "arguments": encoded},
        }

    def _tool_result(self, block: dict[str, object], where: str) -> ChatCompletionToolMessageParam:
        call_id = _string(block.get("tool_use_id"), f"{where}.tool_use_id", empty=False)
        is_error = block.get("is_error")
        if is_error is not None and not isinstance(is_error, bool):
            raise _error(f"{where}.is_error", f"must be a boolean, not {_kind(is_error)}")
        content = block.get("content")
        result: str | list[ChatCompletionContentPartParam]
        if content is None or isinstance(content, str):
            result = content or ""
            if is_error:
                result = f"Error: {result}" if result else "Error"
        else:
            result = []
            for block_where, inner in self._blocks(content, where):
                result += self._part(inner, block_where)
            if is_error:
                result.insert(0, {"type": "text", "text": "Error:"})
        return {"role": "tool", "tool_call_id": call_id, "content": result}

    # --- parameters --------------------------------------------------------------------

    def _tools(self, value: object) -> list[ChatCompletionToolUnionParam]:
        if value is None:
            return []
        if not isinstance(value, list):
            raise _error("tools", f"must be an array of tools, not {_kind(value)}")
        tools: list[ChatCompletionToolUnionParam] = []
        for index, item in enumerate(value):
            where = f"tools.{index}"
            tool = _object(item, where)
            kind = tool.get("type")
            if kind not in (None, "custom"):
                self.skip(where, f"the server tool {str(kind)!r}")
                continue
            name = _string(tool.get("name"), f"{where}.name", empty=False)
            if not _TOOL_NAME.match(name):
                if not _ANTHROPIC_TOOL_NAME.match(name):
                    raise _error(f"{where}.name", "must be letters, digits, _ or -, at most 128")
                self.skip(f"{where}.name", "a tool name longer than 64 characters")
                continue
            function: FunctionDefinition = {
                "name": name,
                "parameters": _object(tool.get("input_schema"), f"{where}.input_schema"),
            }
            description = tool.get("description")
            if description is not None:
                function["description"] = _string(description, f"{where}.description")
            strict = tool.get("strict")
            if isinstance(strict, bool):
                function["strict"] = strict
            tools.append({"type": "function", "function": function})
        return tools

    def _tool_choice(
        self, value: object, tools: list[ChatCompletionToolUnionParam], chat: ChatRequestParams
    ) -> None:
        choice = _object(value, "tool_choice")
        kind = choice.get("type")
        if not tools and kind in ("auto", "none", "any"):
            if kind == "any" and not self._skipped_tools():
                raise _error("tool_choice", "'any' needs tools to choose from")
            # Without tools (a server tool aside) there is no choice to make or forbid; an
            # OpenAI-compatible upstream refuses a tool_choice without tools.
            return
        if kind == "auto":
            chat["tool_choice"] = "auto"
        elif kind == "any":
            chat["tool_choice"] = "required"
        elif kind == "none":
            chat["tool_choice"] = "none"
            return  # parallelism is moot without tool use
        elif kind == "tool":
            name = _string(choice.get("name"), "tool_choice.name", empty=False)
            # (Every tool here is a function: the type is for mypy, which cannot know it.)
            if any(
                tool["type"] == "function" and tool["function"]["name"] == name for tool in tools
            ):
                chat["tool_choice"] = {"type": "function", "function": {"name": name}}
            elif not self._skipped_tools():
                raise _error("tool_choice.name", f"no tool named {name!r} in tools")
        else:
            raise _error("tool_choice.type", "must be 'auto', 'any', 'tool' or 'none'")
        disable = choice.get("disable_parallel_tool_use")
        if disable is not None and not isinstance(disable, bool):
            raise _error("tool_choice.disable_parallel_tool_use", "must be a boolean")
        if disable:
            chat["parallel_tool_calls"] = False

    def _skipped_tools(self) -> bool:
        return any(where.startswith("tools.") for where, _ in self.untranslatable)

    def _thinking(self, value: object, chat: ChatRequestParams) -> None:
        thinking = _object(value, "thinking")
        kind = thinking.get("type")
        if kind == "enabled":
            budget = _integer(
                thinking.get("budget_tokens"), "thinking.budget_tokens", least=MIN_THINKING_BUDGET
            )
            limit = chat.get("max_tokens")
            if limit is not None and budget >= limit:
                raise _error("thinking.budget_tokens", "must be less than max_tokens")
            chat["reasoning_effort"] = effort_for_budget(budget)
        elif kind not in ("disabled", "adaptive"):
            # adaptive: the model decides how much to think, as it does without an effort.
            raise _error("thinking.type", "must be 'enabled', 'disabled' or 'adaptive'")

    def _stop_sequences(self, value: object) -> tuple[str, ...]:
        if value is None:
            return ()
        if not isinstance(value, list):
            raise _error("stop_sequences", f"must be an array of strings, not {_kind(value)}")
        return tuple(_string(s, f"stop_sequences.{i}", empty=False) for i, s in enumerate(value))

    def _output_config(self, value: object, chat: ChatRequestParams) -> None:
        config = _object(value, "output_config")
        for name, setting in config.items():
            if setting is None:
                continue
            where = f"output_config.{name}"
            if name == "effort":
                chat["reasoning_effort"] = _string(setting, where, empty=False)
            elif name == "format":
                fmt = _object(setting, where)
                if fmt.get("type") != "json_schema":
                    raise _error(f"{where}.type", "must be 'json_schema'")
                schema = _object(fmt.get("schema"), f"{where}.schema")
                chat["response_format"] = {
                    "type": "json_schema",
                    "json_schema": {"name": "output", "schema": schema, "strict": True},
                }
            else:
                self.skip(where, f"the output setting {name!r}")


def to_chat_request(body: Mapping[str, object], *, counting: bool = False) -> Translation:
    """The internal request for a Messages API body (`counting`: a count_tokens body, which
    has no max_tokens). Raises `InvalidRequest` naming the first problem."""
    return _Reader().read(body, counting)
