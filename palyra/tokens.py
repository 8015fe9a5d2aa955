"""Prompt token estimates, so a request that cannot fit a model's context is refused before
anything is sent upstream.

Text is counted with the o200k_base BPE (quicktok, whose vocabularies ship in its wheel;
tiktoken would try to download them). Around the text the estimate adds what providers bill
on top: per-message framing, tool schemas and images by their size.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import io
import json
import math
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, Literal, NamedTuple

import imagesize
import quicktok

from palyra.errors import InvalidRequest
from palyra.models.kinds import spec_for
from palyra.types import (
    ChatRequest,
    FilePart,
    ImagePart,
    ImageURL,
    InputAudioPart,
    ModelProviderKind,
    RefusalPart,
    TextPart,
)

DEFAULT_ENCODING = "o200k_base"

# OpenAI's published accounting for chat models: each message is framed by about three
# tokens, a name costs one more, and the reply is primed with three.
TOKENS_PER_MESSAGE = 3
TOKENS_PER_NAME = 1
REPLY_PRIMING = 3
# Tool calls and tool definitions are rendered upstream in a format we cannot see. Compact
# JSON is usually longer than that rendering, and these overheads sit on the high side of
# what has been observed, so tools are over- rather than under-counted.
TOKENS_PER_TOOL_CALL = 8
TOOLS_BASE = 12
TOKENS_PER_TOOL = 8
# What differs by provider kind (a text scale, a tools prompt, whose image accounting) is in
# each kind's `TokenRules`, in palyra/models/kinds.py.

OPENAI_LOW_DETAIL = 85
OPENAI_TILE = 170
OPENAI_TILE_BASE = 85
# The largest image after OpenAI's resizing is 768x2048: 2x4 tiles.
OPENAI_HIGH_DETAIL_MAX = OPENAI_TILE * 8 + OPENAI_TILE_BASE
ANTHROPIC_IMAGE_MAX = 1600
ANTHROPIC_LONG_EDGE = 1568
ANTHROPIC_PIXELS_PER_TOKEN = 750

# Image headers sit in the first bytes of a file, except JPEGs whose EXIF or ICC blocks push
# the size marker further back. Trying a small prefix first keeps the common case cheap
# without ever decoding a whole multi-megabyte payload.
_DATA_URL_PREFIXES = (4096, 65536)

# Past this much text, counting (about 6 MB/s on a slow core) takes long enough to hold up
# every other request, so it is done in a worker thread (`prepare_chat`, `prepare_texts`).
# The tokenizer lets go of the interpreter while it counts, so the thread really runs beside
# the event loop.
COUNT_INLINE_BYTES = 64 * 1024

_encoders: dict[str, Any] = {}
_encoders_lock = threading.Lock()


class _Memo:
    """Counts worked out while one request is served, kept for whoever asks next: the
    router's budget checks, then the provider's usage. Keyed by object identity (the object
    is kept too, so a reused id cannot match), since a request is not changed once it has
    been validated."""

    __slots__ = ("_values",)

    def __init__(self) -> None:
        self._values: dict[tuple[int, str], tuple[object, int]] = {}

    def get(self, obj: object, what: str) -> int | None:
        hit = self._values.get((id(obj), what))
        return hit[1] if hit is not None and hit[0] is obj else None

    def put(self, obj: object, what: str, value: int) -> int:
        self._values[(id(obj), what)] = (obj, value)
        return value


_memo: ContextVar[_Memo | None] = ContextVar("palyra_token_memo", default=None)


@contextmanager
def remembering() -> Iterator[None]:
    """Within the block (one request being served), counts are kept and not worked out
    twice; `prepare_chat` and `prepare_texts` fill them in off the event loop."""
    token = _memo.set(_Memo())
    try:
        yield
    finally:
        _memo.reset(token)


class BudgetCheck(NamedTuple):
    fits: bool
    # The estimate; when `counted` is False it is the byte bound, which is never below it.
    prompt_tokens: int
    counted: bool


def _encoder(name: str) -> Any:
    enc = _encoders.get(name)
    if enc is None:
        # Loading a vocabulary takes about half a second; the lock keeps concurrent first
        # requests from each paying for it.
        with _encoders_lock:
            enc = _encoders.get(name)
            if enc is None:
                enc = _encoders[name] = quicktok.get_encoding(name)
    return enc


def vocabulary_loaded(encoding: str = DEFAULT_ENCODING) -> bool:
    return encoding in _encoders


async def load_vocabulary(encoding: str = DEFAULT_ENCODING) -> None:
    """Load the vocabulary in a worker thread: reading it is half a second of blocking work
    that must never run on the event loop. Callers that may count await this first."""
    if encoding not in _encoders:
        await asyncio.to_thread(_encoder, encoding)


def warm_up(encoding: str = DEFAULT_ENCODING) -> None:
    """Load the vocabulary now, so the first request that needs it does not wait for it.

    The daemon does not call this at start: the vocabulary takes ~63 MB of memory, and the
    byte bounds (`prompt_bound`, `text_bound`) spare the tokenizer for any prompt that fits
    its model with room to spare, so most daemons never load it. The first prompt that comes
    near its budget pays the load (~0.5 s) once."""
    _encoder(encoding)


def _count(text: str, encoding: str = DEFAULT_ENCODING) -> int:
    if not text:
        return 0
    memo = _memo.get() if encoding == DEFAULT_ENCODING else None
    if memo is None:
        return _tokenize(text, encoding)
    known = memo.get(text, "tokens")
    return known if known is not None else memo.put(text, "tokens", _tokenize(text, encoding))


# quicktok copies its argument while it holds the interpreter (about 1 ms a megabyte on a
# slow machine), and only then lets go of it to count: a long text is counted a slice at a
# time, so that no copy holds up the event loop for long.
_TOKENIZE_SLICE = 512 * 1024


def _tokenize(text: str, encoding: str) -> int:
    if len(text) <= _TOKENIZE_SLICE:
        return _tokenize_slice(text, encoding)
    total = 0
    start = 0
    while start < len(text):
        cut = start + _TOKENIZE_SLICE
        if cut < len(text):
            # Just before a space: the pre-tokenizer starts a piece there (" word"), so the
            # counts of the two sides add up to the count of the whole.
            space = text.find(" ", cut, cut + 4096)
            cut = space if space > 0 else cut
        total += _tokenize_slice(text[start:cut], encoding)
        start = cut
    return total


def _tokenize_slice(text: str, encoding: str) -> int:
    enc = _encoder(encoding)
    try:
        return int(enc.count(text))
    except TypeError:
        # json.loads accepts lone surrogates, which quicktok refuses; each becomes "?".
        return int(enc.count(text.encode("utf-8", "replace").decode("utf-8")))


def token_pieces(text: str, encoding: str = DEFAULT_ENCODING) -> list[bytes]:
    """The bytes of each token of `text`, in order (a token may hold part of a character)."""
    enc = _encoder(encoding)
    try:
        tokens = enc.encode_ordinary(text)
    except TypeError:  # lone surrogates, as in `_tokenize_slice`
        tokens = enc.encode_ordinary(text.encode("utf-8", "replace").decode("utf-8"))
    return [bytes(enc.decode_single_token_bytes(t)) for t in tokens]


def _utf8_len(text: str) -> int:
    # isascii() is O(1) on CPython strings, so ASCII text, the usual case, is never copied.
    if text.isascii():
        return len(text)
    memo = _memo.get()
    known = memo.get(text, "bytes") if memo is not None else None
    if known is not None:
        return known
    size = len(text.encode("utf-8", "replace"))
    return memo.put(text, "bytes", size) if memo is not None else size


def text_bound(text: str) -> int:
    """An upper bound of `estimate_text_tokens(text)` with any encoding: its UTF-8 bytes
    (every BPE token spans at least one byte)."""
    return _utf8_len(text)


def estimate_text_tokens(text: str, *, encoding: str = DEFAULT_ENCODING) -> int:
    """Tokens of bare text, as for an embeddings input. OpenAI's embeddings models use
    cl100k_base, which counts non-English text higher than o200k does; pass it for them."""
    return _count(text, encoding)


def _compact_json(value: Any, param: str) -> str:
    try:
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    except RecursionError:
        # Bodies are refused past MAX_JSON_DEPTH when parsed; this is for requests built in
        # code, which must not crash the estimate either.
        raise InvalidRequest(f"{param}: nested too deep to count its tokens", param=param) from None


def _tools_json(request: ChatRequest) -> str:
    functions = [
        {
            "name": t.function.name,
            "description": t.function.description,
            "parameters": t.function.parameters,
        }
        for t in request.tools or ()
    ]
    return _compact_json(functions, "tools")


# Audio is billed by its length (about 10 tokens a second of speech); 16-bit 16 kHz mono, the
# usual recording, is 32,000 bytes a second, 3,200 bytes a token. A document by its pages,
# which its bytes bound only loosely: a page of PDF text is some 3 KB and 1,500 tokens.
_AUDIO_BYTES_PER_TOKEN = 3200
_FILE_BYTES_PER_TOKEN = 2


def media_tokens(part: InputAudioPart | FilePart) -> int:
    """What an audio or file part is billed, estimated from its size."""
    if isinstance(part, InputAudioPart):
        return len(part.input_audio.data) * 3 // 4 // _AUDIO_BYTES_PER_TOKEN + 1
    return len(part.file.file_data or "") * 3 // 4 // _FILE_BYTES_PER_TOKEN + 1


_Measure = Literal["tokens", "bytes"]
_ImageTokens = Callable[[ImageURL, ModelProviderKind], int]


def _measure(
    request: ChatRequest,
    kind: ModelProviderKind,
    image_tokens: _ImageTokens,
    count: Callable[[str], int] | None,
) -> tuple[int, int]:
    """In one pass: what a provider of `kind` bills around the text (framing, images, tool
    prompts), and the text measured by `count` (0 without one), which is the same for every
    kind."""
    fixed = REPLY_PRIMING
    text = 0
    for m in request.messages:
        fixed += TOKENS_PER_MESSAGE
        if m.name:
            fixed += TOKENS_PER_NAME
        if isinstance(m.content, list):
            for part in m.content:
                if isinstance(part, TextPart):
                    text += count(part.text) if count else 0
                elif isinstance(part, RefusalPart):
                    text += count(part.refusal) if count else 0
                elif isinstance(part, ImagePart):
                    fixed += image_tokens(part.image_url, kind)
                else:
                    fixed += media_tokens(part)
        if m.tool_calls:
            fixed += TOKENS_PER_TOOL_CALL * len(m.tool_calls)
        if count is None:
            continue
        text += count(m.role)
        if m.name:
            text += count(m.name)
        if isinstance(m.content, str):
            text += count(m.content)
        if m.refusal:
            text += count(m.refusal)
        for call in m.tool_calls or ():
            text += count(call.function.name) + count(call.function.arguments)
    if request.tools:
        fixed += TOOLS_BASE + TOKENS_PER_TOOL * len(request.tools)
        fixed += spec_for(kind).tokens.tools_prompt
        if count is not None:
            text += count(_tools_json(request))
    fmt = request.response_format
    if count is not None and fmt is not None and fmt.json_schema:
        # Structured output puts the schema in front of the model too.
        text += count(_compact_json(fmt.json_schema, "response_format.json_schema"))
    return fixed, text


def _total(
    request: ChatRequest, kind: ModelProviderKind, image_tokens: _ImageTokens, measure: _Measure
) -> int:
    memo = _memo.get()
    if memo is None:
        # The usual request: nothing kept, so nothing is looked up either; one pass.
        count = _plain_count if measure == "tokens" else _plain_utf8_len
        fixed, text = _measure(request, kind, image_tokens, count)
        return fixed + _scaled(text, kind)
    text_known = memo.get(request, measure)
    if text_known is None:
        count = _count if measure == "tokens" else _utf8_len
        fixed, text = _measure(request, kind, image_tokens, count)
        memo.put(request, measure, text)
    else:
        fixed, text = _measure(request, kind, image_tokens, None)[0], text_known
    return fixed + _scaled(text, kind)


def _plain_count(text: str) -> int:
    if not text:
        return 0
    enc = _encoders.get(DEFAULT_ENCODING)
    if enc is None or len(text) > _TOKENIZE_SLICE:
        return _tokenize(text, DEFAULT_ENCODING)
    try:
        return int(enc.count(text))
    except TypeError:
        return _tokenize_slice(text, DEFAULT_ENCODING)


def _plain_utf8_len(text: str) -> int:
    return len(text) if text.isascii() else len(text.encode("utf-8", "replace"))


def _scaled(text: int, kind: ModelProviderKind) -> int:
    num, den = spec_for(kind).tokens.text_scale
    return text if num == den else -(-text * num // den)


def estimate_token_count(
    request: ChatRequest, kind: ModelProviderKind = ModelProviderKind.OPENAI_COMPATIBLE
) -> int:
    """Estimated prompt tokens of `request` as a provider of `kind` would bill them."""
    memo = _memo.get()
    known = memo.get(request, kind) if memo is not None else None
    if known is not None:
        return known
    estimate = _total(request, kind, image_tokens, "tokens")
    return memo.put(request, kind, estimate) if memo is not None else estimate


def prompt_bound(
    request: ChatRequest, kind: ModelProviderKind = ModelProviderKind.OPENAI_COMPATIBLE
) -> int:
    """An upper bound of `estimate_token_count`, without running the tokenizer."""
    # Every BPE token spans at least one UTF-8 byte, so the same accounting with bytes in
    # place of token counts, and every image at its worst case, bounds the estimate from
    # above.
    return _total(request, kind, _worst_image_tokens, "bytes")


async def prepare_chat(
    request: ChatRequest, rooms: Mapping[ModelProviderKind, tuple[int, int]]
) -> None:
    """Inside `remembering()`: work out in a worker thread what checking a large request
    against its models will ask for, so that those synchronous checks find it done. `rooms`:
    per provider kind, the smallest token budget and the smallest room for a prompt (budget
    less output allowance), as `ModelRegistry.chat_rooms` gives them. The byte bounds are
    always needed; the token estimates only when a bound does not fit a room, which is when
    the router counts."""
    if _memo.get() is not None:
        await asyncio.to_thread(_prepare_chat, request, rooms)


def may_need_counts(
    request: ChatRequest,
    rooms: Mapping[ModelProviderKind, tuple[int, int]],
    bound: Callable[[ModelProviderKind], int],
) -> bool:
    """Whether checking `request` against some chat model could need exact counts: its byte
    bound (`bound(kind)`) does not fit that model's room for a prompt. The router's rule, and
    so what `prepare_chat` works out ahead."""
    limit = request.output_limit
    return any(
        bound(kind) > (least_budget - limit if limit else least_room)
        for kind, (least_budget, least_room) in rooms.items()
    )


def _prepare_chat(request: ChatRequest, rooms: Mapping[ModelProviderKind, tuple[int, int]]) -> None:
    # Every kind's bound is asked for, as the router will ask for each.
    bounds = {kind: prompt_bound(request, kind) for kind in rooms}
    if may_need_counts(request, rooms, bounds.__getitem__):
        _encoder(DEFAULT_ENCODING)  # this thread may as well wait for the vocabulary
        for kind in rooms:
            estimate_token_count(request, kind)


async def prepare_texts(texts: Sequence[str | list[int]], *, budget: int) -> None:
    """Inside `remembering()`: measure embeddings inputs in a worker thread, their bytes,
    and their tokens too when one has more bytes than `budget` (the smallest token budget in
    play: the router counts them then), so the synchronous measures that follow find them."""
    if _memo.get() is not None:
        await asyncio.to_thread(_prepare_texts, texts, budget)


def _prepare_texts(texts: Sequence[str | list[int]], budget: int) -> None:
    strings = [text for text in texts if isinstance(text, str)]
    if max(map(_utf8_len, strings), default=0) > budget:
        for text in strings:
            _count(text)


def check_token_budget(
    request: ChatRequest,
    kind: ModelProviderKind = ModelProviderKind.OPENAI_COMPATIBLE,
    *,
    budget: int,
    output_allowance: int,
    bound: int | None = None,
) -> BudgetCheck:
    """Whether the prompt plus `output_allowance` fits `budget` tokens. `bound` is
    `prompt_bound(request, kind)` when the caller has it already (one request checked
    against several models)."""
    # When the bound fits, the estimate fits too and the tokenizer need not run: most
    # prompts are a few KB against a context of 100k+ tokens.
    if bound is None:
        bound = prompt_bound(request, kind)
    if bound + output_allowance <= budget:
        return BudgetCheck(fits=True, prompt_tokens=bound, counted=False)
    estimate = estimate_token_count(request, kind)
    return BudgetCheck(estimate + output_allowance <= budget, estimate, counted=True)


def _worst_image_tokens(image: ImageURL, kind: ModelProviderKind) -> int:
    if spec_for(kind).tokens.images == "anthropic_pixels":
        return ANTHROPIC_IMAGE_MAX
    return OPENAI_LOW_DETAIL if image.detail == "low" else OPENAI_HIGH_DETAIL_MAX


def image_tokens(image: ImageURL, kind: ModelProviderKind) -> int:
    """Tokens billed for one image; its size is read from a data URL, and an image we cannot
    size (a remote URL, undecodable data) costs the worst case of `kind`."""
    tiles = spec_for(kind).tokens.images == "openai_tiles"
    if tiles and image.detail == "low":
        return OPENAI_LOW_DETAIL
    size = image_size(image.url)
    if size is None:
        return _worst_image_tokens(image, kind)
    return openai_image_tokens(*size) if tiles else anthropic_image_tokens(*size)


def openai_image_tokens(width: int, height: int) -> int:
    """High-detail cost: fit within 2048x2048, shrink the short side to 768, then 512px
    tiles."""
    w, h = float(width), float(height)
    scale = min(1.0, 2048 / max(w, h))
    w, h = w * scale, h * scale
    scale = min(1.0, 768 / min(w, h))
    w, h = w * scale, h * scale
    # The epsilon keeps float noise (2048.0000000002) from adding a tile.
    tiles = math.ceil(w / 512 - 1e-9) * math.ceil(h / 512 - 1e-9)
    return OPENAI_TILE * tiles + OPENAI_TILE_BASE


def anthropic_image_tokens(width: int, height: int) -> int:
    """width*height/750 after the long edge is shrunk to 1568; Anthropic shrinks anything
    still larger than about 1600 tokens' worth of pixels, so that is the cap."""
    scale = min(1.0, ANTHROPIC_LONG_EDGE / max(width, height))
    pixels = width * height * scale * scale
    return min(ANTHROPIC_IMAGE_MAX, math.ceil(pixels / ANTHROPIC_PIXELS_PER_TOKEN - 1e-9))


def image_size(url: str) -> tuple[int, int] | None:
    """(width, height) of a base64 data URL's image, or None when it cannot be read."""
    if not url.startswith("data:"):
        return None
    comma = url.find(",", 5, 512)
    if comma < 0 or not url[5:comma].lower().endswith(";base64"):
        return None
    start = comma + 1
    for chars in _DATA_URL_PREFIXES:
        chunk = url[start : start + chars]
        whole = len(chunk) < chars
        chunk = chunk[: len(chunk) - len(chunk) % 4]
        try:
            head = base64.b64decode(chunk)
        except (binascii.Error, ValueError):
            return None
        # A BytesIO, never a str: imagesize.get opens str paths and fetches http URLs.
        width, height = imagesize.get(io.BytesIO(head), exif_rotation=False)
        if width > 0 and height > 0:
            return int(width), int(height)
        if whole:
            break
    return None
