"""OpenAI audio: `POST /v1/audio/transcriptions` (whole or streamed) and
`POST /v1/audio/translations`.

Answers come in the format asked for, as the API sends it: json and verbose_json (and
diarized_json) as JSON, text and srt as text/plain, vtt as text/vtt. What an upstream answered
in the format asked for is given back as it came; what Palyra has to make (the deterministic
provider's answers, subtitles of an upstream that has none) is made from the segments.
A streamed transcription is `data:` frames holding `transcript.text.delta` events, then
`transcript.text.done`, as OpenAI streams it; their text is plain whatever `response_format`
says (the API streams json and text only), and a failure after the first event is a last
`data:` frame holding an `error` object, which the SDK raises.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping

import structlog
from aiohttp import web

from palyra.dialects.base import Dialect
from palyra.dialects.common import Relay, json_response, route_headers, sse_response
from palyra.errors import PalyraError
from palyra.models.openai_audio_wire import (
    Transcription,
    TranscriptionDiarized,
    TranscriptionStreamEvent,
    TranscriptionTextDoneEvent,
    TranscriptionVerbose,
)
from palyra.models.openai_wire import merge_extra
from palyra.server.forms import read_transcription
from palyra.server.keys import GATEWAY, ROUTE, STARTED
from palyra.sse import encode_data
from palyra.types import (
    TranscriptionDelta,
    TranscriptionRequest,
    TranscriptionResult,
    TranscriptionSegment,
)

log = structlog.get_logger("palyra.inference")

# The content type of each text format, as OpenAI answers it.
_TEXT_TYPES = {"text": "text/plain", "srt": "text/plain", "vtt": "text/vtt"}


async def transcriptions(request: web.Request) -> web.StreamResponse:
    body = await read_transcription(request)
    if body.stream:
        return await _stream(request, body)
    return await _whole(request, body)


async def translations(request: web.Request) -> web.StreamResponse:
    return await _whole(request, await read_transcription(request, translate=True))


async def _whole(request: web.Request, body: TranscriptionRequest) -> web.Response:
    started = request[STARTED]
    routed = await request.app[GATEWAY].router.transcribe(body)
    request[ROUTE] = routed.route
    headers = route_headers(routed.route, started)
    text_type = _TEXT_TYPES.get(body.response_format)
    if text_type is not None:
        text = render_text(routed.value, body.response_format)
        return web.Response(text=text, content_type=text_type, charset="utf-8", headers=headers)
    return json_response(render_json(routed.value, body), headers)


async def _stream(request: web.Request, body: TranscriptionRequest) -> web.StreamResponse:
    started = request[STARTED]
    routed = await request.app[GATEWAY].router.stream_transcribe(body)
    request[ROUTE] = routed.route
    response = await sse_response(request, routed.route, started)
    relay = Relay(response)
    try:
        await _relay_events(routed.value, relay)
        await relay.close()
    finally:
        relay.abandon()
    await response.write_eof()
    return response


async def _relay_events(events: AsyncIterator[TranscriptionDelta], relay: Relay) -> None:
    try:
        async for event in events:
            if relay.push(encode_data(stream_event(event))):
                await relay.taken()
    except PalyraError as exc:
        # Headers are gone; the only honest signal left is an error event, then the end.
        log.warning("stream_failed", error=exc.message, code=exc.code)
        relay.push(encode_data(exc.body()))


# --- rendering ---------------------------------------------------------------------------


def stream_event(delta: TranscriptionDelta) -> TranscriptionStreamEvent | Mapping[str, object]:
    """One event of a streamed transcription: the upstream's own when it sent one (relayed
    unread, as it came)."""
    if delta.event is not None:
        return delta.event
    if delta.result is None:
        return {"type": "transcript.text.delta", "delta": delta.text}
    done: TranscriptionTextDoneEvent = {"type": "transcript.text.done", "text": delta.result.text}
    usage = delta.result.usage
    if usage.total_tokens:
        done["usage"] = {
            "type": "tokens",
            "input_tokens": usage.prompt_tokens,
            "output_tokens": usage.completion_tokens,
            "total_tokens": usage.total_tokens,
        }
    return done


def render_json(
    result: TranscriptionResult, request: TranscriptionRequest
) -> Transcription | TranscriptionVerbose | TranscriptionDiarized:
    """json, verbose_json or diarized_json. An upstream's own body is given back as it came,
    with any field the format must have and it left out filled in."""
    made: Transcription | TranscriptionVerbose | TranscriptionDiarized
    if request.response_format == "verbose_json":
        made = _verbose(result, request)
    elif request.response_format == "diarized_json":
        made = _diarized(result)
    else:
        made = {"text": result.text}
    if result.body is not None:
        # The upstream's fields over those made, in the made ones' order, then its others.
        merge_extra(made, result.body)
    return made


def _verbose(result: TranscriptionResult, request: TranscriptionRequest) -> TranscriptionVerbose:
    verbose: TranscriptionVerbose = {
        "task": "translate" if request.translate else "transcribe",
        "language": "english" if request.translate else result.language or "unknown",
        "duration": result.duration_s or 0.0,
        "text": result.text,
    }
    # Segments unless only words were asked for, as the API has it.
    granularities = request.timestamp_granularities or ["segment"]
    if "segment" in granularities:
        verbose["segments"] = [
            {
                "id": s.id,
                "seek": 0,
                "start": s.start,
                "end": s.end,
                "text": s.text,
                "tokens": [],
                "temperature": 0.0,
                "avg_logprob": 0.0,
                "compression_ratio": 0.0,
                "no_speech_prob": 0.0,
            }
            for s in result.segments
        ]
    if "word" in granularities:
        verbose["words"] = [{"word": w.word, "start": w.start, "end": w.end} for w in result.words]
    return verbose


def _diarized(result: TranscriptionResult) -> TranscriptionDiarized:
    # A provider that does not tell speakers apart has one speaker.
    return {
        "task": "transcribe",
        "duration": result.duration_s or 0.0,
        "text": result.text,
        "segments": [
            {
                "type": "transcript.text.segment",
                "id": f"seg_{s.id}",
                "start": s.start,
                "end": s.end,
                "text": s.text,
                "speaker": "A",
            }
            for s in _cues(result)
        ],
    }


def render_text(result: TranscriptionResult, response_format: str) -> str:
    """text, srt or vtt: an upstream's own subtitles as they came, or made from segments."""
    if response_format == "text":
        return result.text
    if result.subtitles is not None:
        return result.subtitles
    if response_format == "srt":
        return "".join(
            f"{n}\n{_timestamp(s.start, ',')} --> {_timestamp(s.end, ',')}\n{_cue_text(s)}\n\n"
            for n, s in enumerate(_cues(result), 1)
        )
    return "WEBVTT\n\n" + "".join(
        f"{_timestamp(s.start, '.')} --> {_timestamp(s.end, '.')}\n{_cue_text(s)}\n\n"
        for s in _cues(result)
    )


def _cues(result: TranscriptionResult) -> list[TranscriptionSegment]:
    """The segments, or (an answer without any) the whole text as one, over the duration."""
    if result.segments or not result.text:
        return result.segments
    return [TranscriptionSegment(0, 0.0, result.duration_s or 0.0, result.text)]


def _cue_text(segment: TranscriptionSegment) -> str:
    # As Whisper writes cues: trimmed, and never holding the arrow that ends a timing line.
    return segment.text.strip().replace("-->", "->")


def _timestamp(seconds: float, decimal: str) -> str:
    millis = max(0, round(seconds * 1000))
    hours, millis = divmod(millis, 3_600_000)
    minutes, millis = divmod(millis, 60_000)
    whole, millis = divmod(millis, 1000)
    return f"{hours:02d}:{minutes:02d}:{whole:02d}{decimal}{millis:03d}"


DIALECT = Dialect(
    "openai_audio",
    (
        ("POST", "/v1/audio/transcriptions", transcriptions),
        ("POST", "/v1/audio/translations", translations),
    ),
)
