"""The deterministic provider: offline, exact, and useful.

It lets the daemon, agents and tests run with no network and no keys. Every answer is a pure
function of the request, so tests can assert on exact text, vectors and tool calls.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import math
import re
import struct
import time
import wave
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import orjson

from palyra.config import ModelConfig, ProviderConfig, ProviderSettings
from palyra.errors import InvalidRequest
from palyra.limits import DETERMINISTIC_MAX_EMBEDDING_VALUES, MAX_JSON_DEPTH, json_too_deep
from palyra.models.base import ModelProvider
from palyra.tokens import (
    COUNT_INLINE_BYTES,
    estimate_text_tokens,
    estimate_token_count,
    load_vocabulary,
    prompt_bound,
)
from palyra.types import (
    ChatDelta,
    ChatRequest,
    ChatResult,
    EmbeddingsRequest,
    EmbeddingsResult,
    FinishReason,
    Message,
    ModelProviderKind,
    ToolCallDelta,
    ToolCallResult,
    TranscriptionDelta,
    TranscriptionRequest,
    TranscriptionResult,
    TranscriptionSegment,
    TranscriptionWord,
    Usage,
    Vector,
)

if TYPE_CHECKING:
    import aiohttp

    from palyra.credentials import CredentialSource

_TOOL_COMMAND = re.compile(r"^/tool\s+([A-Za-z0-9_-]{1,64})\s*(.*)$", re.DOTALL)
_CHUNK_CHARS = 8
# Below these sizes an answer takes a few milliseconds and is worked out on the event loop;
# above, in a worker thread (the tokenizer and hashlib let other threads run while they
# work), so a large request never holds up the others. Small requests pay no thread hop.
_INLINE_PROMPT_BYTES = COUNT_INLINE_BYTES
_INLINE_AUDIO_BYTES = 1024 * 1024
# Work done on the event loop in slices lets other requests run after about this long.
_TURN_S = 0.002


class DeterministicProvider(ModelProvider):
    kind = ModelProviderKind.DETERMINISTIC

    def __init__(
        self,
        config: ProviderConfig,
        *,
        session: aiohttp.ClientSession | None = None,
        settings: ProviderSettings | None = None,
        credentials: CredentialSource | None = None,
    ) -> None:
        # Built like every kind (palyra/models/kinds.py); it makes no connections, takes no
        # key, and has no settings to honour, so it keeps none of them.
        super().__init__(config)

    # Every answer reports usage, so the tokenizer is needed: loaded off the event loop.

    async def chat(self, request: ChatRequest, model: ModelConfig) -> ChatResult:
        await load_vocabulary()
        return await _answer(request, model)

    async def stream_chat(
        self, request: ChatRequest, model: ModelConfig
    ) -> AsyncIterator[ChatDelta]:
        await load_vocabulary()
        result = await _answer(request, model)
        for index, call in enumerate(result.tool_calls):
            yield ChatDelta(tool_calls=[ToolCallDelta(index, call.id, call.name, "")])
            for piece in _pieces(call.arguments):
                yield ChatDelta(tool_calls=[ToolCallDelta(index, arguments=piece)])
        for piece in _pieces(result.content or ""):
            yield ChatDelta(content=piece)
        yield ChatDelta(finish_reason=result.finish_reason, usage=result.usage)

    async def embed(self, request: EmbeddingsRequest, model: ModelConfig) -> EmbeddingsResult:
        await load_vocabulary()
        dims = request.dimensions or self.config.embedding_dimensions
        inputs = request.texts()
        values = len(inputs) * dims
        if values > DETERMINISTIC_MAX_EMBEDDING_VALUES:
            raise InvalidRequest(
                f"{len(inputs)} inputs of {dims} dimensions are {values} numbers; the "
                f"deterministic provider computes at most {DETERMINISTIC_MAX_EMBEDDING_VALUES} "
                "per request",
                param="dimensions" if request.dimensions else "input",
            )
        return await _embed(inputs, dims, model.upstream_name)

    async def transcribe(
        self, request: TranscriptionRequest, model: ModelConfig
    ) -> TranscriptionResult:
        """The transcript of `transcribe_bytes`. A translation is that same transcript,
        marked as English (what a translation into English says of its language); the form
        fields OpenAI's newer models take (`chunking_strategy`, `include[]`, speaker names)
        are ignored, as OpenAI's models ignore parameters they do not support."""
        if len(request.file) <= _INLINE_AUDIO_BYTES:
            return transcribe_bytes(request.file)
        return await asyncio.to_thread(transcribe_bytes, request.file)

    async def stream_transcribe(
        self, request: TranscriptionRequest, model: ModelConfig
    ) -> AsyncIterator[TranscriptionDelta]:
        """The transcript a word at a time (each with the space before it, as OpenAI's
        deltas come), then the whole result."""
        result = await self.transcribe(request, model)
        for word in _WORD.findall(result.text):
            yield TranscriptionDelta(text=word)
        yield TranscriptionDelta(result=result)

    async def list_models(self) -> list[str]:
        return []


async def _answer(request: ChatRequest, model: ModelConfig) -> ChatResult:
    if prompt_bound(request, ModelProviderKind.DETERMINISTIC) <= _INLINE_PROMPT_BYTES:
        return answer(request, model)
    return await asyncio.to_thread(answer, request, model)


async def _embed(inputs: list[str | list[int]], dims: int, upstream_model: str) -> EmbeddingsResult:
    """Vectors and usage for `inputs`, in turns of `_TURN_S` on the event loop. Hashing is
    Python through and through: in a worker thread it would take the interpreter from the
    event loop for 5 ms at every switch, so it runs here and lets others run in between."""
    vectors: list[Vector] = []
    prompt_tokens = 0
    turn_ends = time.perf_counter() + _TURN_S
    for item in inputs:
        vectors.append(hash_vector(_input_bytes(item), dims))
        prompt_tokens += len(item) if isinstance(item, list) else estimate_text_tokens(item)
        if time.perf_counter() > turn_ends:
            await asyncio.sleep(0)
            turn_ends = time.perf_counter() + _TURN_S
    return EmbeddingsResult(vectors, Usage(prompt_tokens, 0), upstream_model)


def answer(request: ChatRequest, model: ModelConfig) -> ChatResult:
    last = request.messages[-1]
    prompt_tokens = estimate_token_count(request, ModelProviderKind.DETERMINISTIC)
    if last.role == "tool":
        # After a tool result, answer in text so agent loops end instead of calling again.
        results = _trailing_tool_messages(request)
        text = "\n".join(f"tool {m.tool_call_id} returned: {m.text()}" for m in results)
        return _text_result(text, request, model, prompt_tokens, upstream_model="deterministic")
    user_text = next((m.text() for m in reversed(request.messages) if m.role == "user"), "")
    call = _requested_tool_call(request, user_text)
    if call is not None:
        usage = Usage(prompt_tokens, estimate_text_tokens(call.name + call.arguments))
        return ChatResult(None, "tool_calls", usage, [call], model.upstream_name)
    if request.wants_json:
        user_text = orjson.dumps({"echo": user_text}).decode()
    return _text_result(user_text, request, model, prompt_tokens, model.upstream_name)


def _text_result(
    text: str,
    request: ChatRequest,
    model: ModelConfig,
    prompt_tokens: int,
    upstream_model: str,
) -> ChatResult:
    finish: FinishReason = "stop"
    # The request's limit, else the model's own: a real model stops there too, and it keeps
    # the answer to an echoed prompt of megabytes bounded.
    limit = request.output_limit or model.max_output_tokens
    completion_tokens = estimate_text_tokens(text)
    if completion_tokens > limit and not request.wants_json:
        # Cut like a real model at its token limit; JSON mode never returns broken JSON.
        text = _first_tokens(text, limit)
        completion_tokens = limit
        finish = "length"
    return ChatResult(text, finish, Usage(prompt_tokens, completion_tokens), [], upstream_model)


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


def _requested_tool_call(request: ChatRequest, text: str) -> ToolCallResult | None:
    if not request.tools or request.tool_choice == "none":
        return None
    match = _TOOL_COMMAND.match(text.strip())
    if match is None:
        return None
    name, raw_args = match.group(1), match.group(2).strip() or "{}"
    if name not in {tool.function.name for tool in request.tools}:
        return None
    try:
        arguments = orjson.loads(raw_args)
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
    call_id = "call_" + hashlib.sha256(f"{name}\0{raw_args}".encode()).hexdigest()[:24]
    return ToolCallResult(call_id, name, orjson.dumps(arguments).decode())


def _pieces(text: str) -> list[str]:
    return [text[i : i + _CHUNK_CHARS] for i in range(0, len(text), _CHUNK_CHARS)]


def _input_bytes(item: str | list[int]) -> bytes:
    if isinstance(item, str):
        return item.encode("utf-8")
    return b"tokens:" + b",".join(str(t).encode() for t in item)


def hash_vector(data: bytes, dims: int) -> list[float]:
    """A unit vector drawn from SHA-256 in counter mode: same input, same vector."""
    raw = bytearray()
    counter = 0
    while len(raw) < dims * 4:
        raw += hashlib.sha256(counter.to_bytes(4, "big") + data).digest()
        counter += 1
    ints = struct.unpack(f">{dims}I", bytes(raw[: dims * 4]))
    values = [(v / 0xFFFFFFFF) * 2.0 - 1.0 for v in ints]
    norm = math.sqrt(sum(v * v for v in values)) or 1.0
    return [v / norm for v in values]


def transcribe_bytes(audio: bytes) -> TranscriptionResult:
    """One sentence naming the audio's size (or a WAV's duration) and hash. A WAV's words
    share its duration evenly, in one segment; other audio has no timings to give (its
    words all start and end at 0). The language is named as OpenAI's verbose_json names
    it."""
    digest = hashlib.sha256(audio).hexdigest()[:12]
    duration = _wav_duration(audio)
    if duration is None:
        text = f"deterministic transcript of {len(audio)} bytes of audio ({digest})"
        return TranscriptionResult(text=text, language="english", words=_timed_words(text, 0.0))
    text = f"deterministic transcript of {duration:.2f} seconds of WAV audio ({digest})"
    segment = TranscriptionSegment(0, 0.0, duration, text)
    return TranscriptionResult(
        text=text,
        language="english",
        duration_s=duration,
        segments=[segment],
        words=_timed_words(text, duration),
    )


_WORD = re.compile(r"\s*\S+")


def _timed_words(text: str, duration: float) -> list[TranscriptionWord]:
    words = text.split()
    step = duration / len(words) if words else 0.0
    return [
        TranscriptionWord(word, round(i * step, 3), round((i + 1) * step, 3))
        for i, word in enumerate(words)
    ]


def _wav_duration(audio: bytes) -> float | None:
    if not (audio[:4] == b"RIFF" and audio[8:12] == b"WAVE"):
        return None
    try:
        with wave.open(io.BytesIO(audio)) as wav:
            rate = wav.getframerate()
            return wav.getnframes() / rate if rate else None
    except (wave.Error, EOFError):
        return None
