"""Reading the multipart form of `/v1/audio/transcriptions` and `/v1/audio/translations`
into a `TranscriptionRequest`.

The fields Palyra reads are checked here, each error naming its field; every other field
(`chunking_strategy`, `include[]`, `known_speaker_names[]`, ...) is kept as sent, for
OpenAI-compatible upstreams to judge (the deterministic provider has no use for them, and
ignores them as OpenAI's models ignore parameters they do not support).

aiohttp holds each part of a multipart body to client_max_size, never the body as a whole:
here the whole body counts toward that limit, headers and boundaries included, checked as it
arrives (a chunked body has no Content-Length to refuse it by). Each part is read a chunk at
a time, so that neither its own cap nor the body's limit is ever passed by more than a chunk.
Whatever aiohttp raises on a malformed or cut-short body is answered 400, and so is a
malformed Content-Disposition, which aiohttp only warns about (on stderr, outside the
structured log) before going on with the part unnamed."""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field

from aiohttp import BadContentDispositionHeader, BodyPartReader, web
from aiohttp.helpers import parse_mimetype
from aiohttp.http_exceptions import HttpProcessingError

from palyra.errors import InvalidRequest
from palyra.limits import (
    ALLOWED_TRANSFER_ENCODINGS,
    MAX_AUDIO_BYTES,
    MAX_FORM_FIELD_BYTES,
    MAX_FORM_PARTS,
)
from palyra.types import AudioResponseFormat, TranscriptionRequest

_PART_CHUNK = 64 * 1024

# aiohttp reports a malformed Content-Disposition as a warning, printed on stderr outside
# the structured log, and goes on with the part unnamed. `_read_form` turns it into a 400;
# everywhere else (aiohttp's own look at the first part) it is noise.
warnings.filterwarnings("ignore", category=BadContentDispositionHeader)


def _too_large(what: str, limit: int, param: str | None = None) -> InvalidRequest:
    return InvalidRequest(
        f"{what}: larger than {limit} bytes (the limit)",
        status=413,
        code="request_too_large",
        param=param,
    )


async def read_transcription(
    request: web.Request, *, translate: bool = False
) -> TranscriptionRequest:
    """The form of a transcription request, or (`translate`) of a translation request."""
    what = "translate" if translate else "transcribe"
    if not request.content_type.startswith("multipart/"):
        raise InvalidRequest(
            f"send multipart/form-data with `file` (the audio to {what}) and `model`",
            param="file",
        )
    boundary = parse_mimetype(request.headers.get("Content-Type", "")).parameters.get("boundary")
    if not boundary:
        raise InvalidRequest(
            "Content-Type: multipart/form-data needs a boundary parameter "
            '(multipart/form-data; boundary="...")'
        )
    # aiohttp bounds each part by client_max_size, not the body: the whole body counts here.
    limit = request.client_max_size
    if request.content_length is not None and request.content_length > limit:
        raise _too_large("request body", limit)
    try:
        form = await _read_form(request, limit)
    except (ValueError, RuntimeError, AssertionError, HttpProcessingError, ConnectionError) as exc:
        # aiohttp's word for a malformed or cut-short body (its own 400s included); a
        # ConnectionError means the client went away, and this answer will not reach it.
        reason = str(exc)[:200] or type(exc).__name__
        raise InvalidRequest(f"multipart body is malformed or cut short: {reason}") from None
    return _translation(form) if translate else _transcription(form)


@dataclass(slots=True)
class _Form:
    audio: bytes | None = None
    filename: str = "audio"
    content_type: str = "application/octet-stream"
    # Every other named part, in order, repeated names (`include[]`) included.
    fields: list[tuple[str, str]] = field(default_factory=list)


async def _read_form(request: web.Request, limit: int) -> _Form:
    form = _Form()
    reader = await request.multipart()
    parts = 0
    async for part in reader:
        parts += 1
        if parts > MAX_FORM_PARTS:
            raise InvalidRequest(f"multipart body: more than {MAX_FORM_PARTS} parts (the limit)")
        if not isinstance(part, BodyPartReader):
            raise InvalidRequest(f"multipart body: part {parts} is itself multipart")
        with warnings.catch_warnings(record=True) as caught:
            # aiohttp warns (on stderr, outside the log) about a malformed disposition and
            # carries on without a name: a malformed form, to us. No await in this block, so
            # no other request's warnings are caught here.
            warnings.simplefilter("always", BadContentDispositionHeader)
            name, filename = part.name, part.filename
        if any(issubclass(w.category, BadContentDispositionHeader) for w in caught):
            raise InvalidRequest(
                f"multipart body: part {parts} has a malformed Content-Disposition header"
            )
        for header in ("Content-Transfer-Encoding", "Content-Encoding"):
            encoding = part.headers.get(header, "").strip().lower()
            if encoding and encoding not in ALLOWED_TRANSFER_ENCODINGS | {"identity"}:
                raise InvalidRequest(
                    f"{name or f'part {parts}'}: {header} {encoding!r} is not supported "
                    "(send the part as it is, binary)",
                    param=name,
                )
        if name == "file":
            form.audio = await _read_part(request, part, MAX_AUDIO_BYTES, "file", limit)
            form.filename = filename or form.filename
            form.content_type = part.headers.get("Content-Type", form.content_type)
        else:
            # Speaker references are audio samples (as data URLs): as large as audio may be.
            cap = MAX_AUDIO_BYTES if name in _AUDIO_FIELDS else MAX_FORM_FIELD_BYTES
            value = await _read_part(request, part, cap, name, limit)
            if name is not None:
                form.fields.append((name, value.decode("utf-8", "replace")))
    _check_total(request, limit)
    return form


_AUDIO_FIELDS = frozenset({"known_speaker_references[]", "known_speaker_references"})

# The fields each route reads; the rest are passed on as they came.
_COMMON_FIELDS = frozenset({"model", "prompt", "response_format", "temperature", "stream"})
_TRANSCRIPTION_FIELDS = _COMMON_FIELDS | {
    "language",
    "timestamp_granularities[]",
    "timestamp_granularities",
}
_TRANSCRIPTION_FORMATS = ("json", "text", "srt", "verbose_json", "vtt", "diarized_json")
_TRANSLATION_FORMATS = ("json", "text", "srt", "verbose_json", "vtt")
_GRANULARITIES = ("word", "segment")
_BOOLEANS = {"true": True, "false": False, "1": True, "0": False}


def _transcription(form: _Form) -> TranscriptionRequest:
    known, extra = _split(form, _TRANSCRIPTION_FIELDS)
    granularities: list[str] = []
    for name, value in form.fields:
        if name in ("timestamp_granularities[]", "timestamp_granularities"):
            if value not in _GRANULARITIES:
                raise InvalidRequest(
                    f"timestamp_granularities[]: {value[:40]!r} is not one of "
                    f"{', '.join(_GRANULARITIES)}",
                    param="timestamp_granularities",
                )
            if value not in granularities:
                granularities.append(value)
    return TranscriptionRequest(
        model=known.get("model") or None,
        file=_audio(form, "transcribe"),
        filename=form.filename,
        content_type=form.content_type,
        response_format=_response_format(known, _TRANSCRIPTION_FORMATS, "transcriptions"),
        language=known.get("language") or None,
        prompt=known.get("prompt") or None,
        temperature=_temperature(known),
        timestamp_granularities=granularities,
        stream=_stream(known),
        extra_fields=extra,
    )


def _translation(form: _Form) -> TranscriptionRequest:
    known, extra = _split(form, _COMMON_FIELDS)
    if _stream(known):
        raise InvalidRequest(
            "stream: translations are not streamed (the API streams transcriptions only); "
            "send stream=false or leave it out",
            param="stream",
        )
    return TranscriptionRequest(
        model=known.get("model") or None,
        file=_audio(form, "translate"),
        filename=form.filename,
        content_type=form.content_type,
        response_format=_response_format(known, _TRANSLATION_FORMATS, "translations"),
        prompt=known.get("prompt") or None,
        temperature=_temperature(known),
        translate=True,
        extra_fields=extra,
    )


def _split(form: _Form, reads: frozenset[str]) -> tuple[dict[str, str], list[tuple[str, str]]]:
    """(the fields this route reads, the last of each name; the others, as they came)."""
    known: dict[str, str] = {}
    extra: list[tuple[str, str]] = []
    for name, value in form.fields:
        if name in reads:
            known[name] = value
        else:
            extra.append((name, value))
    return known, extra


def _audio(form: _Form, what: str) -> bytes:
    if not form.audio:
        raise InvalidRequest(f"file: required (the audio to {what})", param="file")
    return form.audio


def _response_format(
    known: dict[str, str], formats: tuple[str, ...], route: str
) -> AudioResponseFormat:
    response_format = known.get("response_format") or "json"
    if response_format not in formats:
        raise InvalidRequest(
            f"response_format: {response_format[:40]!r} is not offered for {route}; use one "
            f"of {', '.join(formats)}",
            param="response_format",
        )
    return response_format  # type: ignore[return-value]


def _temperature(known: dict[str, str]) -> float | None:
    if not known.get("temperature"):
        return None
    try:
        temperature = float(known["temperature"])
    except ValueError:
        temperature = math.nan
    # float() takes "nan" and "1e999"; the API's range is 0 to 1.
    if not 0 <= temperature <= 1:
        raise InvalidRequest("temperature: must be a number from 0 to 1", param="temperature")
    return temperature


def _stream(known: dict[str, str]) -> bool:
    raw = known.get("stream")
    if raw is None or raw == "":
        return False
    value = _BOOLEANS.get(raw.strip().lower())
    if value is None:
        raise InvalidRequest(
            f"stream: {raw[:40]!r} is not a boolean (send true or false)", param="stream"
        )
    return value


async def _read_part(
    request: web.Request, part: BodyPartReader, cap: int, name: str | None, limit: int
) -> bytes:
    """A part's bytes as sent, read a chunk at a time so that neither the part's own cap nor
    the body's total is ever passed by more than a chunk."""
    chunks: list[bytes] = []
    size = 0
    while not part.at_eof():
        chunk = await part.read_chunk(_PART_CHUNK)
        size += len(chunk)
        if size > cap:
            raise _too_large(name or "a multipart part", cap, name)
        _check_total(request, limit)
        chunks.append(chunk)
    return b"".join(chunks)


def _check_total(request: web.Request, limit: int) -> None:
    # What has arrived of the body so far, headers and boundaries included.
    if request.content.total_bytes > limit:
        raise _too_large("request body", limit)
