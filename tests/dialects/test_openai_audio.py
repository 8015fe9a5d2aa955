"""`/v1/audio/transcriptions` and `/v1/audio/translations`, driven by the official `openai`
SDK, on the deterministic provider and an OpenAI-compatible one on the fake upstream."""

from __future__ import annotations

import io
import wave
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import openai
import pytest
from aiohttp.test_utils import TestServer
from openai import AsyncOpenAI

from palyra.config import validate_config
from palyra.dialects.openai_audio import render_text
from palyra.types import TranscriptionResult, TranscriptionSegment
from tests.conftest import ADMIN_TOKEN, GatewayFactory, gateway_config
from tests.fakes.upstream import ErrorReply, FakeUpstream, Reply


def wav_bytes(seconds: float, rate: int = 8000) -> bytes:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(rate)
        wav.writeframes(b"\0\0" * int(seconds * rate))
    return buffer.getvalue()


AUDIO = wav_bytes(1.5)
DET_TEXT_START = "deterministic transcript of 1.50 seconds of WAV audio ("


@pytest.fixture
async def audio_gateway(
    upstream: FakeUpstream, tmp_path: Path, start_gateway: GatewayFactory
) -> TestServer:
    """The shared setup, with a streaming OpenAI model, an Anthropic audio model, and one
    that fails over to the deterministic provider."""
    config = gateway_config(upstream, tmp_path / "state", max_retries=0, discovery_ttl_ms=3_600_000)
    raw = config.model_dump(mode="json", exclude_unset=True)
    raw["model_provider"]["models"] += [
        {"model_id": "gpt-4o-transcribe", "provider_id": "oai", "role": "audio_transcription"},
        {"model_id": "claude-transcribe", "provider_id": "claude", "role": "audio_transcription"},
        {
            "model_id": "flaky-transcribe",
            "provider_id": "oai",
            "upstream_model": "gpt-4o-transcribe",
            "role": "audio_transcription",
            "fallbacks": ["deterministic-transcribe"],
        },
    ]
    return await start_gateway(validate_config(raw))


@pytest.fixture
async def audio_client(audio_gateway: TestServer) -> AsyncIterator[AsyncOpenAI]:
    sdk = AsyncOpenAI(
        api_key=ADMIN_TOKEN, base_url=str(audio_gateway.make_url("/v1")), max_retries=0
    )
    yield sdk
    await sdk.close()


def sent_formats(upstream: FakeUpstream, path: str = "/v1/audio/transcriptions") -> list[Any]:
    return [r.form["response_format"] for r in upstream.requests_to(path) if r.form]


def audio_requests(upstream: FakeUpstream) -> list[Any]:
    return [r for r in upstream.requests if r.path.startswith("/v1/audio/")]


# --- whole answers ---------------------------------------------------------------------------


async def test_transcriptions(client: AsyncOpenAI, upstream: FakeUpstream) -> None:
    audio = wav_bytes(1.5)
    result = await client.audio.transcriptions.create(
        model="deterministic-transcribe", file=("clip.wav", audio, "audio/wav")
    )
    assert "1.50 seconds" in result.text
    verbose = await client.audio.transcriptions.create(
        model="deterministic-transcribe", file=("clip.wav", audio), response_format="verbose_json"
    )
    assert verbose.duration == pytest.approx(1.5)
    assert verbose.language == "english" and verbose.words is None
    text = await client.audio.transcriptions.create(
        model="whisper-1", file=("clip.wav", audio), response_format="text"
    )
    assert str(text).strip() == f"transcript of {len(audio)} bytes"
    sent = upstream.requests_to("/v1/audio/transcriptions")[-1]
    assert sent.form is not None and sent.form["model"] == "whisper-1"
    assert sent.form["file"] == audio


@pytest.mark.parametrize("temperature", ["nan", "1e999", "-0.5", "1.5", "warm"])
async def test_a_transcription_temperature_outside_0_to_1_is_a_400(
    client: AsyncOpenAI, upstream: FakeUpstream, temperature: str
) -> None:
    # float() took "nan" and "1e999" (found in review): sent upstream as they were.
    with pytest.raises(openai.BadRequestError) as caught:
        await client.audio.transcriptions.create(
            model="whisper-1",
            file=("clip.wav", wav_bytes(0.5)),
            extra_body={"temperature": temperature},
        )
    assert caught.value.body["param"] == "temperature"  # type: ignore[index]
    assert "from 0 to 1" in caught.value.message
    assert upstream.requests_to("/v1/audio/transcriptions") == []


async def test_deterministic_srt_and_vtt_are_rendered_from_segments(client: AsyncOpenAI) -> None:
    srt = await client.audio.transcriptions.with_raw_response.create(
        model="deterministic-transcribe", file=("clip.wav", AUDIO), response_format="srt"
    )
    assert srt.headers["content-type"] == "text/plain; charset=utf-8"
    assert srt.headers["x-palyra-provider-id"] == "det"
    text = srt.parse()
    assert text.startswith("1\n00:00:00,000 --> 00:00:01,500\n" + DET_TEXT_START)
    assert text.endswith(")\n\n") and text.count("\n") == 4
    vtt = await client.audio.transcriptions.with_raw_response.create(
        model="deterministic-transcribe", file=("clip.wav", AUDIO), response_format="vtt"
    )
    assert vtt.headers["content-type"] == "text/vtt; charset=utf-8"
    assert vtt.parse() == "WEBVTT\n\n" + text.split("\n", 1)[1].replace(",", ".")
    # Audio with no timings: one cue holding the whole text.
    unknown = await client.audio.transcriptions.create(
        model="deterministic-transcribe", file=("clip.mp3", b"ID3 mp3"), response_format="srt"
    )
    assert unknown.startswith("1\n00:00:00,000 --> 00:00:00,000\ndeterministic transcript of 7")


async def test_upstream_subtitles_are_relayed_as_they_came(
    client: AsyncOpenAI, upstream: FakeUpstream
) -> None:
    own = "1\n00:00:00,000 --> 00:00:01,250\nSaid  -->  first.\n\n2\n00:00:01,250 --> x\n\n"
    upstream.script(
        "/v1/audio/transcriptions",
        Reply(body=own.encode(), headers={"Content-Type": "text/plain; charset=utf-8"}),
    )
    srt = await client.audio.transcriptions.create(
        model="whisper-1", file=("clip.wav", AUDIO), response_format="srt"
    )
    assert srt == own
    vtt = await client.audio.transcriptions.with_raw_response.create(
        model="whisper-1", file=("clip.wav", AUDIO), response_format="vtt"
    )
    assert vtt.headers["content-type"] == "text/vtt; charset=utf-8"
    assert vtt.parse().startswith("WEBVTT\n\n00:00:00.000 --> ")
    assert sent_formats(upstream) == ["srt", "vtt"]


async def test_subtitles_refused_upstream_are_rendered_from_verbose_json(
    client: AsyncOpenAI, upstream: FakeUpstream
) -> None:
    upstream.script(
        "/v1/audio/transcriptions",
        ErrorReply(400, "response_format 'srt' is not supported by this server"),
    )
    first = await client.audio.transcriptions.create(
        model="whisper-1", file=("clip.wav", AUDIO), response_format="srt"
    )
    seconds = round(len(AUDIO) / 32000, 2)
    assert first == f"1\n00:00:00,000 --> 00:00:00,{round(seconds * 1000):03d}\n" + (
        f"transcript of {len(AUDIO)} bytes\n\n"
    )
    # Remembered for the model: asked for what it can answer from then on.
    again = await client.audio.transcriptions.create(
        model="whisper-1", file=("clip.wav", AUDIO), response_format="srt"
    )
    assert again == first
    assert sent_formats(upstream) == ["srt", "verbose_json", "verbose_json"]


async def test_subtitles_a_model_cannot_give_in_any_form_are_its_400(
    audio_client: AsyncOpenAI, upstream: FakeUpstream
) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        await audio_client.audio.transcriptions.create(
            model="gpt-4o-transcribe", file=("clip.wav", AUDIO), response_format="vtt"
        )
    # The refusal of what the client asked for, not of what Palyra tried next.
    assert "'vtt' is not compatible" in caught.value.message
    assert caught.value.body["param"] == "response_format"  # type: ignore[index]
    assert sent_formats(upstream) == ["vtt", "verbose_json"]


async def test_timestamp_granularities_are_forwarded_and_words_returned(
    client: AsyncOpenAI, upstream: FakeUpstream
) -> None:
    verbose = await client.audio.transcriptions.create(
        model="whisper-1",
        file=("clip.wav", AUDIO),
        response_format="verbose_json",
        timestamp_granularities=["word", "segment"],
    )
    assert verbose.words is not None and verbose.words[0].word == "transcript"
    assert verbose.segments is not None
    # The upstream's own segment fields come back as they were, not rebuilt.
    assert verbose.segments[0].tokens == [50364, 50365]
    sent = upstream.requests_to("/v1/audio/transcriptions")[-1].form_items
    granularities = [value for name, value in sent if name == "timestamp_granularities[]"]
    assert granularities == ["word", "segment"]

    words = await client.audio.transcriptions.create(
        model="deterministic-transcribe",
        file=("clip.wav", AUDIO),
        response_format="verbose_json",
        timestamp_granularities=["word"],
    )
    assert words.segments is None and words.words is not None
    assert " ".join(w.word for w in words.words) == words.text
    assert words.words[0].start == 0 and words.words[-1].end == pytest.approx(1.5)
    assert all(a.end == b.start for a, b in zip(words.words, words.words[1:], strict=False))


async def test_other_api_fields_are_forwarded_unchanged_and_ignored_by_deterministic(
    audio_client: AsyncOpenAI, upstream: FakeUpstream
) -> None:
    fields: dict[str, Any] = {
        "chunking_strategy": {"type": "server_vad", "threshold": 0.5},
        "include": ["logprobs"],
        "known_speaker_names": ["agent", "customer"],
        "known_speaker_references": [
            "data:audio/wav;base64,UklGRg==",
            "data:audio/wav;base64,AA==",
        ],
    }
    result = await audio_client.audio.transcriptions.create(
        model="gpt-4o-transcribe",
        file=("clip.wav", AUDIO),
        extra_body={"a_future_parameter": "kept"},
        **fields,
    )
    # What the upstream sent and Palyra has no name for comes back: logprobs, usage.
    assert result.logprobs is not None and result.logprobs[0].token == "transcript"
    assert result.usage is not None and result.usage.type == "tokens"
    sent = upstream.requests_to("/v1/audio/transcriptions")[-1].form_items
    forwarded = [(name, value) for name, value in sent if name not in ("file", "model")]
    assert forwarded == [
        ("response_format", "json"),
        ("chunking_strategy[type]", "server_vad"),
        ("chunking_strategy[threshold]", "0.5"),
        ("include[]", "logprobs"),
        ("known_speaker_names[]", "agent"),
        ("known_speaker_names[]", "customer"),
        ("known_speaker_references[]", "data:audio/wav;base64,UklGRg=="),
        ("known_speaker_references[]", "data:audio/wav;base64,AA=="),
        ("a_future_parameter", "kept"),
    ]
    det = await audio_client.audio.transcriptions.create(
        model="deterministic-transcribe", file=("clip.wav", AUDIO), **fields
    )
    assert det.text.startswith(DET_TEXT_START)


async def test_diarized_json(client: AsyncOpenAI) -> None:
    diarized = await client.audio.transcriptions.create(
        model="deterministic-transcribe", file=("clip.wav", AUDIO), response_format="diarized_json"
    )
    assert [(s.speaker, s.start, s.end) for s in diarized.segments] == [("A", 0.0, 1.5)]
    assert diarized.text == diarized.segments[0].text


@pytest.mark.parametrize(
    ("field", "value", "param", "words"),
    [
        ("response_format", "xml", "response_format", "'xml' is not offered for transcriptions"),
        ("timestamp_granularities[]", "sentence", "timestamp_granularities", "'sentence'"),
        ("stream", "maybe", "stream", "'maybe' is not a boolean"),
    ],
)
async def test_bad_fields_are_400s_naming_them(
    client: AsyncOpenAI, upstream: FakeUpstream, field: str, value: str, param: str, words: str
) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        await client.audio.transcriptions.create(
            model="whisper-1", file=("clip.wav", AUDIO), extra_body={field: value}
        )
    assert caught.value.body["param"] == param  # type: ignore[index]
    assert words in caught.value.message
    assert audio_requests(upstream) == []


# --- streamed --------------------------------------------------------------------------------


async def test_deterministic_stream(audio_client: AsyncOpenAI) -> None:
    raw = await audio_client.audio.transcriptions.with_raw_response.create(
        model="deterministic-transcribe", file=("clip.wav", AUDIO), stream=True
    )
    assert raw.headers["content-type"] == "text/event-stream"
    assert raw.headers["x-palyra-provider-id"] == "det"
    assert raw.headers["x-palyra-model-id"] == "deterministic-transcribe"
    events = [event async for event in raw.parse()]
    *deltas, done = events
    assert {e.type for e in deltas} == {"transcript.text.delta"} and len(deltas) > 3
    assert done.type == "transcript.text.done"
    assert "".join(e.delta for e in deltas) == done.text  # type: ignore[union-attr]
    assert done.text.startswith(DET_TEXT_START)


async def test_upstream_stream_is_relayed_whole(
    audio_client: AsyncOpenAI, upstream: FakeUpstream
) -> None:
    stream = await audio_client.audio.transcriptions.create(
        model="gpt-4o-transcribe", file=("clip.wav", AUDIO), stream=True, include=["logprobs"]
    )
    events = [event async for event in stream]
    *deltas, done = events
    assert done.type == "transcript.text.done"
    assert "".join(e.delta for e in deltas) == done.text  # type: ignore[union-attr]
    assert done.text == f"transcript of {len(AUDIO)} bytes"
    # The upstream's logprobs and usage details, as it sent them.
    assert deltas[0].logprobs is not None  # type: ignore[union-attr]
    assert done.usage is not None and done.usage.input_token_details is not None
    sent = upstream.requests_to("/v1/audio/transcriptions")[-1].form_items
    assert ("stream", "true") in sent and ("include[]", "logprobs") in sent


async def test_an_upstream_that_ignores_stream_is_streamed_its_whole_answer(
    audio_client: AsyncOpenAI, upstream: FakeUpstream
) -> None:
    # whisper-1 ignores `stream` (as OpenAI documents) and answers JSON: the client asked for
    # events and gets them, the whole text in one delta.
    stream = await audio_client.audio.transcriptions.create(
        model="whisper-1", file=("clip.wav", AUDIO), stream=True
    )
    events = [event async for event in stream]
    assert [e.type for e in events] == ["transcript.text.delta", "transcript.text.done"]
    assert events[0].delta == events[1].text == f"transcript of {len(AUDIO)} bytes"  # type: ignore[union-attr]


async def test_stream_on_a_provider_that_cannot_is_a_400_naming_it(
    audio_client: AsyncOpenAI, upstream: FakeUpstream
) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        await audio_client.audio.transcriptions.create(
            model="claude-transcribe", file=("clip.wav", AUDIO), stream=True
        )
    assert caught.value.body["param"] == "stream"  # type: ignore[index]
    assert "provider claude (anthropic) cannot stream" in caught.value.message
    assert "'claude-transcribe'" in caught.value.message
    assert caught.value.response.headers["x-palyra-provider-id"] == "claude"
    assert audio_requests(upstream) == []


async def test_stream_fails_over_before_its_first_event(
    audio_client: AsyncOpenAI, upstream: FakeUpstream
) -> None:
    upstream.script("/v1/audio/transcriptions", ErrorReply(503))
    raw = await audio_client.audio.transcriptions.with_raw_response.create(
        model="flaky-transcribe", file=("clip.wav", AUDIO), stream=True
    )
    assert raw.headers["x-palyra-provider-id"] == "det"
    assert raw.headers["x-palyra-failover-count"] == "1"
    events = [event async for event in raw.parse()]
    assert events[-1].text.startswith(DET_TEXT_START)  # type: ignore[union-attr]


async def test_a_stream_broken_after_its_first_event_ends_with_an_error_event(
    audio_client: AsyncOpenAI, upstream: FakeUpstream
) -> None:
    frame = b'data: {"type":"transcript.text.delta","delta":"Hello"}\n\n'
    upstream.script(
        "/v1/audio/transcriptions",
        Reply(body=frame, headers={"Content-Type": "text/event-stream"}),
    )
    stream = await audio_client.audio.transcriptions.create(
        model="gpt-4o-transcribe", file=("clip.wav", AUDIO), stream=True
    )
    seen = []
    with pytest.raises(openai.APIError) as caught:
        async for event in stream:
            seen.append(event)
    assert [e.delta for e in seen] == ["Hello"]  # type: ignore[union-attr]
    assert "ended before transcript.text.done" in caught.value.message


# --- translations ----------------------------------------------------------------------------

# openai 3.57 marks `audio.translations.create` deprecated; the API still serves it, and
# clients still call it.
translations_sdk = pytest.mark.filterwarnings("ignore:deprecated:DeprecationWarning")


@translations_sdk
async def test_deterministic_translations(client: AsyncOpenAI) -> None:
    as_json = await client.audio.translations.create(
        model="deterministic-transcribe", file=("clip.wav", AUDIO)
    )
    assert as_json.text.startswith(DET_TEXT_START)
    verbose = await client.audio.translations.create(
        model="deterministic-transcribe", file=("clip.wav", AUDIO), response_format="verbose_json"
    )
    assert verbose.language == "english" and verbose.duration == pytest.approx(1.5)
    assert verbose.segments is not None and verbose.segments[0].text == verbose.text
    assert verbose.model_extra == {"task": "translate"}
    vtt = await client.audio.translations.create(
        model="deterministic-transcribe", file=("clip.wav", AUDIO), response_format="vtt"
    )
    assert vtt.startswith("WEBVTT\n\n00:00:00.000 --> 00:00:01.500\n" + DET_TEXT_START)


@translations_sdk
async def test_translations_go_to_the_upstream_translations_route(
    client: AsyncOpenAI, upstream: FakeUpstream
) -> None:
    raw = await client.audio.translations.with_raw_response.create(
        model="whisper-1", file=("clip.wav", AUDIO), prompt="Hola", temperature=0.2
    )
    assert raw.headers["x-palyra-provider-id"] == "oai"
    assert raw.parse().text == f"English translation of {len(AUDIO)} bytes"
    srt = await client.audio.translations.create(
        model="whisper-1", file=("clip.wav", AUDIO), response_format="srt"
    )
    assert srt.startswith("1\n00:00:00,000 --> ")
    sent = upstream.requests_to("/v1/audio/translations")
    assert [r.form["response_format"] for r in sent if r.form] == ["json", "srt"]
    assert sent[0].form is not None and sent[0].form["prompt"] == "Hola"
    assert sent[0].form["temperature"] == "0.2" and "language" not in sent[0].form
    assert upstream.requests_to("/v1/audio/transcriptions") == []


@translations_sdk
@pytest.mark.parametrize(
    ("field", "value", "words"),
    [
        ("response_format", "diarized_json", "'diarized_json' is not offered for translations"),
        ("stream", "true", "translations are not streamed"),
    ],
)
async def test_translation_errors_name_the_field(
    client: AsyncOpenAI, upstream: FakeUpstream, field: str, value: str, words: str
) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        await client.audio.translations.create(
            model="whisper-1", file=("clip.wav", AUDIO), extra_body={field: value}
        )
    assert caught.value.body["param"] == field  # type: ignore[index]
    assert words in caught.value.message
    assert audio_requests(upstream) == []


async def test_translation_without_a_file_says_so(gateway: TestServer) -> None:
    form = aiohttp.FormData(default_to_multipart=True)
    form.add_field("model", "whisper-1")
    form.add_field("response_format", "json")
    async with aiohttp.ClientSession() as http:
        async with http.post(
            gateway.make_url("/v1/audio/translations"),
            data=form(),
            headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
        ) as response:
            body = await response.json()
    assert response.status == 400
    assert body["error"]["message"] == "file: required (the audio to translate)"


async def test_subtitles_asked_to_stream_of_an_upstream_that_ignores_stream(
    audio_client: AsyncOpenAI, upstream: FakeUpstream
) -> None:
    # The whole srt answer is all its text: nothing of it is lost on the way to events.
    stream = await audio_client.audio.transcriptions.create(
        model="whisper-1", file=("clip.wav", AUDIO), stream=True, response_format="srt"
    )
    events = [event async for event in stream]
    assert events[1].text.startswith("1\n00:00:00,000 --> ")  # type: ignore[union-attr]
    assert events[0].delta == events[1].text  # type: ignore[union-attr]


def test_cues_past_an_hour_and_with_an_arrow_in_their_text() -> None:
    result = TranscriptionResult(
        text="a --> b",
        segments=[
            TranscriptionSegment(0, 3725.5, 3726.0004, " a --> b "),
            TranscriptionSegment(1, 3726.0004, 3727.9996, "c"),
        ],
    )
    assert render_text(result, "srt") == (
        "1\n01:02:05,500 --> 01:02:06,000\na -> b\n\n2\n01:02:06,000 --> 01:02:08,000\nc\n\n"
    )
    assert render_text(result, "vtt").startswith("WEBVTT\n\n01:02:05.500 --> 01:02:06.000\n")
