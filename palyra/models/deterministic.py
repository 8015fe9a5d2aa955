"""The deterministic provider: offline, exact, and useful.

It lets the daemon, agents and tests run with no network and no keys. Every answer is a pure
function of the request, so tests can assert on exact text, vectors and tool calls.

Chat (`deterministic_chat.py` has the rules): the last user message echoed; `/tool NAME ARGS`
lines call tools; `tool_choice` "required" or a named tool calls one with arguments built from
its parameters schema; a `json_schema` response format is answered with an instance of the
schema (`schema_instance.py`). What it honours and what it does not (`unsupported`):
`n` > 1 gives n identical choices (a deterministic model samples the same answer each time);
`logprobs` gives each token of the text with logprob 0, and `top_logprobs` that one token;
`stop` cuts the text at the first stop sequence; `temperature`, `top_p`, `seed` and the
penalties change nothing, as they cannot for a deterministic model. It cannot answer with
audio (`modalities` with "audio", `audio`) nor search the web (`web_search_options`): those
are refused as unsupported, so the router picks a provider that can or answers 400 naming
them. It reads only text: image, audio and file parts are not looked at.
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

from palyra.config import ModelConfig, ProviderConfig, ProviderSettings
from palyra.errors import InvalidRequest, Unsupported
from palyra.limits import DETERMINISTIC_MAX_EMBEDDING_VALUES
from palyra.models.base import ModelProvider
from palyra.models.deterministic_chat import answer, deltas, unsupported_parameter
from palyra.tokens import (
    COUNT_INLINE_BYTES,
    estimate_text_tokens,
    load_vocabulary,
    prompt_bound,
)
from palyra.types import (
    ChatDelta,
    ChatRequest,
    ChatResult,
    EmbeddingsRequest,
    EmbeddingsResult,
    ModelProviderKind,
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

    from palyra.models.base import CredentialSource

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

    def unsupported(self, request: ChatRequest) -> Unsupported | None:
        found = unsupported_parameter(request)
        return None if found is None else self.cannot_honour(*found)

    async def chat(self, request: ChatRequest, model: ModelConfig) -> ChatResult:
        refusal = self.unsupported(request)
        if refusal is not None:
            raise refusal
        await load_vocabulary()
        return await _answer(request, model)

    async def stream_chat(
        self, request: ChatRequest, model: ModelConfig
    ) -> AsyncIterator[ChatDelta]:
        refusal = self.unsupported(request)
        if refusal is not None:
            raise refusal
        await load_vocabulary()
        result = await _answer(request, model)
        for delta in deltas(result, request):
            yield delta

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
