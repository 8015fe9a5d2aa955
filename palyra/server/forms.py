"""Reading the multipart form of `/v1/audio/transcriptions` into a `TranscriptionRequest`.

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
from palyra.types import TranscriptionRequest

_TRANSCRIPTION_FORMATS = ("json", "text", "verbose_json")
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


async def read_transcription(request: web.Request) -> TranscriptionRequest:
    if not request.content_type.startswith("multipart/"):
        raise InvalidRequest("send multipart/form-data with `file` and `model`", param="file")
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
        return await _read_form(request, limit)
    except (ValueError, RuntimeError, AssertionError, HttpProcessingError, ConnectionError) as exc:
        # aiohttp's word for a malformed or cut-short body (its own 400s included); a
        # ConnectionError means the client went away, and this answer will not reach it.
        reason = str(exc)[:200] or type(exc).__name__
        raise InvalidRequest(f"multipart body is malformed or cut short: {reason}") from None


async def _read_form(request: web.Request, limit: int) -> TranscriptionRequest:
    fields: dict[str, str] = {}
    audio: bytes | None = None
    audio_name, content_type = "audio", "application/octet-stream"
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
            audio = await _read_part(request, part, MAX_AUDIO_BYTES, "file", limit)
            audio_name = filename or audio_name
            content_type = part.headers.get("Content-Type", content_type)
        else:
            value = await _read_part(request, part, MAX_FORM_FIELD_BYTES, name, limit)
            if name is not None:
                fields[name] = value.decode("utf-8", "replace")
    _check_total(request, limit)
    if not audio:
        raise InvalidRequest("file: required (the audio to transcribe)", param="file")
    response_format = fields.get("response_format", "json")
    if response_format not in _TRANSCRIPTION_FORMATS:
        raise InvalidRequest(
            f"response_format: must be one of {', '.join(_TRANSCRIPTION_FORMATS)}",
            param="response_format",
        )
    temperature = None
    if fields.get("temperature"):
        try:
            temperature = float(fields["temperature"])
        except ValueError:
            temperature = math.nan
        # float() takes "nan" and "1e999"; the API's range is 0 to 1.
        if not 0 <= temperature <= 1:
            raise InvalidRequest("temperature: must be a number from 0 to 1", param="temperature")
    return TranscriptionRequest(
        model=fields.get("model") or None,
        file=audio,
        filename=audio_name,
        content_type=content_type,
        response_format=response_format,  # type: ignore[arg-type]
        language=fields.get("language") or None,
        prompt=fields.get("prompt") or None,
        temperature=temperature,
    )


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
