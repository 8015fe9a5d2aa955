"""The OpenAI audio wire format (transcriptions and translations), as an OpenAI-compatible
provider reads it: answers and stream events parsed into the shared shapes, and the formats
the upstream is asked for. Pure: no I/O.
"""

from __future__ import annotations

from typing import Any

from palyra.errors import (
    ErrorClass,
    ProviderError,
)
from palyra.models.http import Malformed, kind_of, token_count
from palyra.types import (
    TranscriptionDelta,
    TranscriptionRequest,
    TranscriptionResult,
    TranscriptionSegment,
    TranscriptionWord,
    Usage,
)


def parse_transcription(body: Any) -> TranscriptionResult:
    if not isinstance(body, dict):
        raise Malformed(f"the body is {kind_of(body)}, not a JSON object")
    text = body.get("text")
    if not isinstance(text, str):
        raise Malformed(f"text is {kind_of(text)}, not a string")
    segments = [
        TranscriptionSegment(
            int(s.get("id", i)), float(s["start"]), float(s["end"]), str(s["text"])
        )
        for i, s in enumerate(body.get("segments") or ())
    ]
    words = [
        TranscriptionWord(str(w["word"]), float(w["start"]), float(w["end"]))
        for w in body.get("words") or ()
    ]
    duration = body.get("duration")
    language = body.get("language")
    return TranscriptionResult(
        text=text,
        language=language if isinstance(language, str) else None,
        duration_s=float(duration) if duration is not None else None,
        segments=segments,
        usage=transcription_usage(body.get("usage")),
        words=words,
        body=body,
    )


def transcription_usage(usage: Any) -> Usage:
    """Usage billed in tokens; usage billed by duration (whisper-1) counts none."""
    if usage is None:
        return Usage()
    if not isinstance(usage, dict):
        raise Malformed(f"usage is {kind_of(usage)}, not an object")
    return Usage(
        token_count(usage.get("input_tokens"), "usage.input_tokens"),
        token_count(usage.get("output_tokens"), "usage.output_tokens"),
    )


def transcription_delta(event: Any) -> TranscriptionDelta:
    """One event of a transcription stream (`transcript.text.delta`, `.done`, or one we
    relay without reading, such as `.segment`), kept whole to be relayed as it came."""
    if not isinstance(event, dict):
        raise Malformed(f"an event is {kind_of(event)}, not a JSON object")
    kind = event.get("type")
    if kind == "transcript.text.delta":
        delta = event.get("delta")
        if not isinstance(delta, str):
            raise Malformed(f"transcript.text.delta has a delta that is {kind_of(delta)}")
        return TranscriptionDelta(text=delta, event=event)
    if kind == "transcript.text.done":
        text = event.get("text")
        if not isinstance(text, str):
            raise Malformed(f"transcript.text.done has a text that is {kind_of(text)}")
        result = TranscriptionResult(text=text, usage=transcription_usage(event.get("usage")))
        return TranscriptionDelta(result=result, event=event)
    if not isinstance(kind, str):
        raise Malformed(f"an event has a type that is {kind_of(kind)}, not a string")
    return TranscriptionDelta(event=event)


# Subtitle formats, and the form the upstream is asked for to answer each format.
SUBTITLES = ("srt", "vtt")


def upstream_format(response_format: str) -> str:
    # Plain text is the text of a json answer, which also carries usage.
    return "json" if response_format == "text" else response_format


def audio_path(request: TranscriptionRequest) -> str:
    return "/audio/translations" if request.translate else "/audio/transcriptions"


def refuses_format(error: ProviderError) -> bool:
    """Whether an upstream's 4xx refused the response_format (a server or model without
    subtitles), not the request as a whole."""
    return (
        error.upstream_status in (400, 422)
        and error.error_class is ErrorClass.CLIENT
        and (error.param == "response_format" or "response_format" in error.message)
    )
