"""The deterministic provider: exact, offline answers for every capability."""

from __future__ import annotations

import io
import json
import math
import time
import wave

import pytest

from palyra.config import ModelConfig, ProviderConfig
from palyra.errors import InvalidRequest
from palyra.limits import DETERMINISTIC_MAX_EMBEDDING_VALUES
from palyra.models.deterministic import DeterministicProvider
from palyra.tokens import estimate_text_tokens
from palyra.types import ChatRequest, EmbeddingsRequest, TranscriptionRequest

PROVIDER = DeterministicProvider(ProviderConfig(provider_id="det", kind="deterministic"))
MODEL = ModelConfig(model_id="deterministic", provider_id="det")
TOOLS = [{"type": "function", "function": {"name": "calculator", "parameters": {}}}]


def request(*messages: dict[str, object], **extra: object) -> ChatRequest:
    return ChatRequest.model_validate({"messages": list(messages), **extra})


async def test_echoes_last_user_message_with_usage() -> None:
    result = await PROVIDER.chat(
        request({"role": "system", "content": "sys"}, {"role": "user", "content": "echo me"}), MODEL
    )
    assert result.content == "echo me"
    assert result.finish_reason == "stop"
    assert result.usage.prompt_tokens > 0 and result.usage.completion_tokens == 2


async def test_stream_is_small_chunks_of_the_same_answer() -> None:
    text = "a somewhat longer sentence to stream in pieces"
    deltas = [
        d async for d in PROVIDER.stream_chat(request({"role": "user", "content": text}), MODEL)
    ]
    pieces = [d.content for d in deltas if d.content]
    assert len(pieces) > 3 and "".join(pieces) == text
    assert deltas[-1].finish_reason == "stop" and deltas[-1].usage is not None


async def test_json_mode_is_valid_json() -> None:
    result = await PROVIDER.chat(
        request(
            {"role": "user", "content": 'quote " and \\ ok'},
            response_format={"type": "json_object"},
        ),
        MODEL,
    )
    assert json.loads(result.content or "") == {"echo": 'quote " and \\ ok'}


async def test_tool_command_becomes_a_tool_call_then_text_after_the_result() -> None:
    ask = {"role": "user", "content": '/tool calculator {"expression": "2+2"}'}
    first = await PROVIDER.chat(request(ask, tools=TOOLS), MODEL)
    assert first.finish_reason == "tool_calls"
    call = first.tool_calls[0]
    assert call.name == "calculator" and json.loads(call.arguments) == {"expression": "2+2"}
    again = await PROVIDER.chat(request(ask, tools=TOOLS), MODEL)
    assert again.tool_calls[0].id == call.id  # exact: same request, same id
    follow_up = request(
        ask,
        {
            "role": "assistant",
            "tool_calls": [
                {
                    "id": call.id,
                    "type": "function",
                    "function": {"name": "calculator", "arguments": call.arguments},
                }
            ],
        },
        {"role": "tool", "tool_call_id": call.id, "content": "4"},
        tools=TOOLS,
    )
    final = await PROVIDER.chat(follow_up, MODEL)
    assert final.finish_reason == "stop" and final.content == f"tool {call.id} returned: 4"


async def test_tool_command_without_tools_or_for_unknown_tool_is_echoed() -> None:
    text = '/tool calculator {"a": 1}'
    plain = await PROVIDER.chat(request({"role": "user", "content": text}), MODEL)
    assert plain.content == text
    other = await PROVIDER.chat(
        request({"role": "user", "content": "/tool nope {}"}, tools=TOOLS), MODEL
    )
    assert other.content == "/tool nope {}"
    with pytest.raises(InvalidRequest):
        await PROVIDER.chat(
            request({"role": "user", "content": "/tool calculator {bad"}, tools=TOOLS), MODEL
        )


async def test_streamed_tool_call_has_id_name_then_arguments() -> None:
    ask = request(
        {"role": "user", "content": '/tool calculator {"expression": "1+2*3"}'}, tools=TOOLS
    )
    deltas = [d async for d in PROVIDER.stream_chat(ask, MODEL)]
    fragments = [call for d in deltas for call in d.tool_calls or ()]
    assert fragments[0].id and fragments[0].name == "calculator"
    assert json.loads("".join(f.arguments for f in fragments)) == {"expression": "1+2*3"}
    assert deltas[-1].finish_reason == "tool_calls"


async def test_max_tokens_cuts_like_a_model() -> None:
    result = await PROVIDER.chat(
        request({"role": "user", "content": "one two three four five six seven"}, max_tokens=3),
        MODEL,
    )
    assert result.finish_reason == "length"
    assert result.content == "one two three"


async def test_embeddings_are_unit_vectors_stable_per_input() -> None:
    model = ModelConfig(model_id="e", provider_id="det", role="embeddings")
    first = await PROVIDER.embed(EmbeddingsRequest(input=["alpha", "beta"]), model)
    again = await PROVIDER.embed(EmbeddingsRequest(input="alpha"), model)
    assert len(first.vectors[0]) == 64
    assert first.vectors[0] == again.vectors[0] != first.vectors[1]
    assert math.isclose(math.fsum(x * x for x in first.vectors[1]), 1.0, rel_tol=1e-9)
    sized = await PROVIDER.embed(EmbeddingsRequest(input=[[1, 2, 3]], dimensions=16), model)
    assert len(sized.vectors[0]) == 16 and sized.usage.prompt_tokens == 3


async def test_transcription_reads_wav_duration() -> None:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(16000)
        wav.writeframes(b"\0\0" * 40000)
    model = ModelConfig(model_id="t", provider_id="det", role="audio_transcription")
    audio = TranscriptionRequest(
        model="t", file=buffer.getvalue(), filename="a.wav", content_type="audio/wav"
    )
    result = await PROVIDER.transcribe(audio, model)
    assert result.duration_s == 2.5 and "2.50 seconds" in result.text
    same = await PROVIDER.transcribe(audio, model)
    assert same.text == result.text
    other = await PROVIDER.transcribe(
        TranscriptionRequest(model="t", file=b"not audio", filename="x", content_type="x"), model
    )
    assert "9 bytes" in other.text


# --- bad input and large requests --------------------------------------------------------


@pytest.mark.parametrize(
    ("arguments", "words"),
    [
        ("[" * 300 + "]" * 300, "nested more than 64 levels deep"),  # orjson would not encode it
        ("[" * 2000 + "]" * 2000, "not valid JSON (depth limit exceeded"),
        ('{"a": ', "not valid JSON (unexpected end of data"),
    ],
)
async def test_tool_arguments_that_cannot_travel_are_a_clear_error(
    arguments: str, words: str
) -> None:
    ask = {"role": "user", "content": f"/tool calculator {arguments}"}
    with pytest.raises(InvalidRequest) as caught:
        await PROVIDER.chat(request(ask, tools=TOOLS), MODEL)
    assert words in caught.value.message and caught.value.param == "messages"


async def test_tool_arguments_as_deep_as_a_body_may_be_are_fine() -> None:
    arguments = "[" * 63 + "]" * 63
    ask = {"role": "user", "content": f"/tool calculator {arguments}"}
    result = await PROVIDER.chat(request(ask, tools=TOOLS), MODEL)
    assert json.loads(result.tool_calls[0].arguments) == json.loads(arguments)


async def test_cutting_at_max_tokens_takes_no_time_on_long_text() -> None:
    # The cut used to count every prefix, word by word: quadratic, minutes for this one.
    text = " ".join(f"word{i}" for i in range(150_000))
    started = time.perf_counter()
    result = await PROVIDER.chat(
        request({"role": "user", "content": text}, max_tokens=100_000), MODEL
    )
    assert time.perf_counter() - started < 5
    content = result.content or ""
    assert result.finish_reason == "length" and result.usage.completion_tokens == 100_000
    assert text.startswith(content) and estimate_text_tokens(content) <= 100_000
    next_word = text.split(" ")[len(content.split(" "))]
    assert estimate_text_tokens(content + " " + next_word) > 100_000


async def test_an_echo_stops_at_the_models_output_limit() -> None:
    model = ModelConfig(model_id="small", provider_id="det", max_output_tokens=50)
    text = "many words " * 200
    result = await PROVIDER.chat(request({"role": "user", "content": text}), model)
    assert result.finish_reason == "length" and result.usage.completion_tokens == 50
    assert (
        text.startswith(result.content or "") and estimate_text_tokens(result.content or "") <= 50
    )


async def test_embeddings_past_the_providers_own_limit_are_refused() -> None:
    model = ModelConfig(model_id="e", provider_id="det", role="embeddings")
    wide = EmbeddingsRequest(input=["x"] * 129, dimensions=8192)
    with pytest.raises(InvalidRequest) as caught:
        await PROVIDER.embed(wide, model)
    assert str(DETERMINISTIC_MAX_EMBEDDING_VALUES) in caught.value.message
    assert caught.value.param == "dimensions"
    # Its configured size counts the same way.
    provider = DeterministicProvider(
        ProviderConfig(provider_id="det", kind="deterministic", embedding_dimensions=8192)
    )
    with pytest.raises(InvalidRequest) as caught:
        await provider.embed(EmbeddingsRequest(input=["x"] * 129), model)
    assert caught.value.param == "input"
    result = await provider.embed(EmbeddingsRequest(input=["x"] * 128), model)
    assert len(result.vectors) == 128 and len(result.vectors[0]) == 8192
