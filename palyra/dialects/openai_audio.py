"""OpenAI audio: `POST /v1/audio/transcriptions`."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from palyra.dialects.base import Dialect
from palyra.dialects.common import json_response, route_headers
from palyra.server.forms import read_transcription
from palyra.server.keys import GATEWAY, ROUTE, STARTED
from palyra.types import TranscriptionResult


async def transcriptions(request: web.Request) -> web.Response:
    started = request[STARTED]
    body = await read_transcription(request)
    routed = await request.app[GATEWAY].router.transcribe(body)
    request[ROUTE] = routed.route
    headers = route_headers(routed.route, started)
    if body.response_format == "text":
        return web.Response(text=routed.value.text, content_type="text/plain", headers=headers)
    return json_response(render_transcription(routed.value, body.response_format), headers)


def render_transcription(result: TranscriptionResult, response_format: str) -> dict[str, Any]:
    if response_format != "verbose_json":
        return {"text": result.text}
    return {
        "task": "transcribe",
        "language": result.language or "unknown",
        "duration": result.duration_s or 0.0,
        "text": result.text,
        "segments": [
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
        ],
    }


DIALECT = Dialect("openai_audio", (("POST", "/v1/audio/transcriptions", transcriptions),))
