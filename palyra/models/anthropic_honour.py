"""What Anthropic cannot honour in a chat completions request (pure, no I/O).

`unhonoured` names it: the parameter or part, and what it asks in words (the router then picks
a candidate that can serve). What only translating finds Anthropic cannot honour, the
translation (`anthropic_request.py`) raises as `CannotHonour` (the fallback skips the
candidate on that too). Not honoured means never changed or dropped silently:
- With thinking (a `reasoning_effort` in `THINKING_BUDGETS`, which the translation turns into
  a token budget; "none" and "minimal" mean no thinking) Anthropic takes temperature 1 only,
  top_p from 0.95 only, a max_tokens above 1024 (`MIN_THINKING_BUDGET`, counted in max_tokens)
  and no forced tool call: such requests are not honoured (another candidate serves them, or
  the 400 names the parameters), never changed silently.
- Anthropic's temperature range is 0..1; a higher value is not honoured (not clamped, which
  would change the sampling the caller asked for).
- Not honoured, so never silently dropped (`unhonoured`): n > 1, logprobs / top_logprobs,
  audio input and output, frequency / presence penalties, logit_bias, `verbosity`,
  `web_search_options` and `moderation` (each changes the answer), custom tools and
  allowed_tools choices. Dropped as harmless (`HARMLESS_PARAMETERS` and the declared `seed`,
  `metadata`, `stream_options`): `seed` (best-effort determinism, no promise to break),
  `service_tier` (billing and latency, not the answer), `prediction` (a latency hint), `store`
  and `metadata` (OpenAI's stored completions), `stream_options` (usage always comes),
  `prompt_cache_key`, `prompt_cache_retention` and `prompt_cache_options` (cache hints;
  Anthropic caches what a request marks, and a translated one marks nothing).
  `safety_identifier` and `top_k` (an integer from 0) are translated (`anthropic_request.py`).
- A top-level parameter Palyra has no name for (`ChatRequest.model_extra`) is forwarded to
  OpenAI-compatible upstreams as it came; to Anthropic it means nothing, and leaving it out
  may change the answer the client asked for, so it is not honoured either (null is absent).
"""

from __future__ import annotations

from typing import Any

from palyra.models.anthropic_answer import answer_schema, answer_tool, forced_call
from palyra.types import (
    AllowedToolsChoice,
    ChatRequest,
    CustomTool,
    CustomToolCall,
    FilePart,
    InputAudioPart,
    Message,
    NamedCustomToolChoice,
)

MIN_THINKING_BUDGET = 1024
THINKING_BUDGETS = {"low": MIN_THINKING_BUDGET, "medium": 4096, "high": 16384}
NO_THINKING = frozenset({"none", "minimal"})
# With thinking Anthropic samples at temperature 1 and takes top_p from 0.95 to 1 only.
THINKING_TOP_P = 0.95

# Top-level parameters (kept as extras) that change the answer and that Anthropic has no
# counterpart for; an empty value asks nothing.
_UNHONOURED = {
    "audio": "audio output",
    "logit_bias": "logit_bias (Anthropic cannot bias tokens)",
    "verbosity": "verbosity (Anthropic has no such setting)",
    "web_search_options": "web_search_options (OpenAI's web search)",
    "moderation": "moderation (OpenAI's moderation of the input and answer)",
}
# Documented OpenAI parameters (kept as extras) that do not change the answer, so leaving them
# out on the way to Anthropic is faithful. What real clients send by default (openai-python,
# langchain-openai, openai-agents: model, messages, stream, stream_options, tools, tool_choice,
# parallel_tool_calls, response_format, store, metadata, ...) is declared or listed here.
HARMLESS_PARAMETERS = frozenset(
    {
        "service_tier",  # billing and latency
        "prediction",  # a latency hint: the answer is the model's either way
        "store",  # OpenAI's stored completions
        "prompt_cache_key",  # cache hints: Anthropic caches what a request marks
        "prompt_cache_retention",
        "prompt_cache_options",
        "safety_identifier",  # translated: metadata.user_id
    }
)


class CannotHonour(Exception):
    """What Anthropic cannot honour in a request, found while translating it: as `unhonoured`
    words it (the parameter or part, what it asks in words). The provider raises it as its
    `Unsupported`, on which the fallback skips to a candidate that can serve."""

    def __init__(self, param: str, what: str) -> None:
        super().__init__(f"{param}: {what}")
        self.param = param
        self.what = what


def unhonoured(request: ChatRequest) -> tuple[str, str] | None:
    """What in `request` Anthropic cannot honour: (the parameter or part, what it asks in
    words), or None. `AnthropicProvider.unsupported` words the refusal."""
    request = request.functions_as_tools()
    if request.n is not None and request.n > 1:
        return "n", f"n={request.n} (Anthropic gives one answer per request)"
    if request.logprobs:
        return "logprobs", "logprobs (Anthropic gives no token probabilities)"
    if request.top_logprobs:
        return "top_logprobs", "top_logprobs (Anthropic gives no token probabilities)"
    if request.modalities and "audio" in request.modalities:
        return "modalities", "audio output (modalities includes audio)"
    for penalty in ("frequency_penalty", "presence_penalty"):
        if getattr(request, penalty):  # 0 is no penalty, and means what it says
            return penalty, f"{penalty} (Anthropic has no repetition penalties)"
    found = _unhonoured_extras(request.model_extra or {})
    if found is not None:
        return found
    found = _unhonoured_tools(request)
    if found is not None:
        return found
    if request.temperature is not None and request.temperature > 1:
        return "temperature", f"temperature {request.temperature} (Anthropic takes 0 to 1)"
    effort = request.reasoning_effort
    if effort is not None and effort not in NO_THINKING and effort not in THINKING_BUDGETS:
        return "reasoning_effort", (
            f"reasoning_effort {effort!r} (Anthropic thinking is mapped from none, minimal, "
            "low, medium and high)"
        )
    if effort is not None and effort in THINKING_BUDGETS:
        found = _unhonoured_thinking(request, effort)
        if found is not None:
            return found
    if answer_tool(request) is not None and answer_schema(request) is None:
        return "response_format", (
            "a json_schema whose root is not an object (Anthropic enforces the schema as a "
            "tool's input, which is an object)"
        )
    return _unhonoured_content(request.messages)


def _unhonoured_extras(extras: dict[str, Any]) -> tuple[str, str] | None:
    for name, value in extras.items():
        if value is None or name in HARMLESS_PARAMETERS:
            continue
        if name == "top_k":
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                return name, f"top_k {value!r} (Anthropic's top_k is an integer from 0)"
            continue
        what = _UNHONOURED.get(name)
        if what is None:
            return name, (
                f"parameter {name!r} (unknown to Palyra, so only OpenAI-compatible providers "
                "are sent it)"
            )
        if value:
            return name, what
    return None


def _unhonoured_thinking(request: ChatRequest, effort: str) -> tuple[str, str] | None:
    """What Anthropic's extended thinking (for `effort`) does not go with in `request`."""
    asked = f"with reasoning_effort {effort!r}"
    if forced_call(request):
        return "tool_choice", (
            f"a tool_choice that forces a tool call {asked} (Anthropic thinks only when the "
            "model may choose)"
        )
    if answer_tool(request) is not None:
        return "response_format", (
            f"a JSON response_format {asked} (Anthropic enforces JSON by forcing a tool call, "
            "and does not think then)"
        )
    if request.temperature is not None and request.temperature != 1:
        return "temperature", (
            f"temperature {request.temperature} {asked} (Anthropic thinks at temperature 1 "
            "only; leave temperature or reasoning_effort out)"
        )
    if request.top_p is not None and request.top_p < THINKING_TOP_P:
        return "top_p", (
            f"top_p {request.top_p} {asked} (Anthropic thinks with top_p from "
            f"{THINKING_TOP_P} to 1 only; raise top_p or leave reasoning_effort out)"
        )
    limit = request.output_limit
    if limit is not None and limit <= MIN_THINKING_BUDGET:
        name = "max_completion_tokens" if request.max_completion_tokens else "max_tokens"
        return name, (
            f"{name} {limit} {asked} (Anthropic thinks in at least {MIN_THINKING_BUDGET} "
            f"tokens, counted in {name}, and needs room for an answer too; raise {name} above "
            f"{MIN_THINKING_BUDGET} or leave reasoning_effort out)"
        )
    return None


def _unhonoured_tools(request: ChatRequest) -> tuple[str, str] | None:
    for index, tool in enumerate(request.tools or []):
        if isinstance(tool, CustomTool):
            return f"tools[{index}]", "custom tools (Anthropic's tools take JSON input only)"
    if isinstance(request.tool_choice, NamedCustomToolChoice):
        return "tool_choice", "a tool_choice naming a custom tool"
    if isinstance(request.tool_choice, AllowedToolsChoice):
        return (
            "tool_choice",
            "tool_choice allowed_tools (Anthropic cannot narrow the tools offered)",
        )
    for index, message in enumerate(request.messages):
        for call_index, call in enumerate(message.tool_calls or []):
            if isinstance(call, CustomToolCall):
                return f"messages[{index}].tool_calls[{call_index}]", "custom tool calls"
    return None


def _unhonoured_content(messages: list[Message]) -> tuple[str, str] | None:
    for index, message in enumerate(messages):
        # (Content as a string has no parts; walking it would visit every character.)
        parts = message.content if isinstance(message.content, list) else ()
        for part_index, part in enumerate(parts):
            where = f"messages[{index}].content[{part_index}]"
            if isinstance(part, InputAudioPart):
                return where, "input_audio content parts (Anthropic takes no audio input)"
            if isinstance(part, FilePart) and not part.file.file_data:
                return where, "file parts given by file_id (OpenAI file ids mean nothing to it)"
        if message.audio is not None and not audio_transcript(message) and not message.text():
            return f"messages[{index}].audio", "an earlier audio answer without its transcript"
    return None


def audio_transcript(message: Message) -> str:
    """The transcript of an earlier audio answer in the history, or ""."""
    transcript = (message.audio or {}).get("transcript")
    return transcript if isinstance(transcript, str) else ""
