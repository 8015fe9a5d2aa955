"""The chat completions wire format, pure: a stream's usual chunk taken by its text
(`UsualChunk`) gives what the full parse gives, and every other shape takes the full parse;
the upstream payload."""

from __future__ import annotations

import json
from typing import Any

import orjson
import pytest

from palyra.config import ModelConfig
from palyra.models.openai_chat import ChunkFields, UsualChunk, chat_payload, parse_chunk
from palyra.types import ChatDelta, ChatRequest, Native

MODEL = ModelConfig(model_id="alias", provider_id="oai", upstream_model="gpt-4o-mini")

HEAD: dict[str, Any] = {
    "id": "chatcmpl-1",
    "object": "chat.completion.chunk",
    "created": 1,
    "model": "m",
    "system_fingerprint": "fp_1",
}


def chunk(delta: dict[str, Any], *, finish: str | None = None, **fields: Any) -> dict[str, Any]:
    choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
    return {**HEAD, "choices": [choice], **fields}


def compact(value: dict[str, Any]) -> str:
    return orjson.dumps(value).decode()


def spaced(value: dict[str, Any]) -> str:
    return json.dumps(value)  # Python's separators, `": "` and `", "`; non-ASCII escaped


def stream(texts: list[str]) -> tuple[list[ChatDelta | None], int]:
    """The deltas as `stream_chat` makes them, and how many took the usual chunk's way."""
    fields, usual = ChunkFields(), UsualChunk()
    deltas: list[ChatDelta | None] = []
    quick = 0
    for text in texts:
        delta = usual.parse(text)
        if delta is None:
            decoded = orjson.loads(text)
            delta = parse_chunk(decoded, fields)
            usual.learn(text, decoded, delta)
        else:
            quick += 1
        deltas.append(delta)
    return deltas, quick


def full(texts: list[str]) -> list[ChatDelta | None]:
    fields = ChunkFields()
    return [parse_chunk(orjson.loads(text), fields) for text in texts]


@pytest.mark.parametrize("encode", [compact, spaced])
def test_usual_chunks_by_their_text_are_what_the_full_parse_gives(encode: Any) -> None:
    texts = [encode(chunk({"role": "assistant", "content": "", "refusal": None}))]
    texts += [encode(chunk({"content": text})) for text in ["Hel", "lo", ' é"\\', "\n{}", "ü"]]
    texts += [encode(chunk({}, finish="stop"))]
    texts += [encode({**HEAD, "choices": [], "usage": {"prompt_tokens": 1}})]
    deltas, quick = stream(texts)
    assert deltas == full(texts)
    # The first content chunk teaches the text; the four after it take it.
    assert quick == 4
    assert [d.content for d in deltas if d is not None and d.content] == [
        "Hel",
        "lo",
        ' é"\\',
        "\n{}",
        "ü",
    ]
    assert deltas[0] is None  # (the role chunk: nothing to relay)
    assert all(d.chunk_extra == {"system_fingerprint": "fp_1"} for d in deltas if d is not None)


def test_every_other_shape_after_the_usual_text_takes_the_full_parse() -> None:
    usual = UsualChunk()
    learned = compact(chunk({"content": "a"}))
    usual.learn(learned, orjson.loads(learned), parse_chunk(orjson.loads(learned)))
    assert usual.parse(compact(chunk({"content": "b"}))) == ChatDelta(
        "b", chunk_extra={"system_fingerprint": "fp_1"}
    )
    unusual = [
        # What the full parse refuses, or gives more than content for, or nothing for.
        learned.replace('"a"', "5"),
        learned.replace('"a"', '"a","reasoning_content":"r"'),
        learned.replace('"a"', '"a"},"x":{"y":"b"'),
        learned.replace('"a"', '""'),
        learned.replace('"a"', "null"),
        learned.replace('"fp_1"', '"fp_2"'),
        learned.replace('"logprobs":null', '"logprobs":{"content":[]}'),
        learned.replace('"finish_reason":null', '"finish_reason":"stop"'),
        learned.replace("}]}", '}],"usage":{"prompt_tokens":3}}'),
        "[DONE]",
    ]
    for text in unusual:
        assert usual.parse(text) is None, text


def test_a_content_elsewhere_in_the_chunk_is_not_learned_as_the_deltas() -> None:
    # The first `{"content":` of this text is a field of the chunk's own, not the delta
    # (which spells its role first): no text is learned from it.
    decoded = {"x": {"content": "a"}, **chunk({"role": "assistant", "content": "a"})}
    text = compact(decoded)
    usual = UsualChunk()
    usual.learn(text, decoded, parse_chunk(decoded, ChunkFields()))
    assert usual.parse(text.replace('"a"}', '"b"}', 1)) is None
    assert usual.parse(text) is None


def test_a_chunk_with_more_than_content_teaches_nothing() -> None:
    usual = UsualChunk()
    for decoded in [
        chunk({"content": "a", "reasoning_content": "r"}),
        chunk({"content": "a"}, finish="stop"),
        {**chunk({"content": "a"}), "choices": [chunk({"content": "a"})["choices"][0]] * 2},
    ]:
        text = compact(decoded)
        usual.learn(text, decoded, parse_chunk(decoded, ChunkFields()))
        assert usual.parse(text) is None


def test_payload_sends_the_clients_stream_options_with_usage_and_no_reply_fields() -> None:
    request = ChatRequest.model_validate(
        {
            "messages": [
                {"role": "user", "content": "hi"},
                {
                    "role": "assistant",
                    "content": "yo",
                    "reasoning_content": "thought",
                    "audio": {"id": "a1", "data": "AAAA"},
                },
            ],
            "stream": True,
            "stream_options": {"include_obfuscation": False, "future_option": 1},
            "seed": 3,
        }
    )
    streamed = chat_payload(request, MODEL, stream=True)
    assert streamed == {
        "model": "gpt-4o-mini",
        "messages": [
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": "yo", "audio": {"id": "a1"}},
        ],
        "seed": 3,
        "stream": True,
        "stream_options": {
            "include_usage": True,
            "include_obfuscation": False,
            "future_option": 1,
        },
    }
    assert list(streamed)[-2:] == ["stream", "stream_options"]
    whole = chat_payload(request, MODEL, stream=False)
    assert "stream" not in whole and "stream_options" not in whole
    assert whole["messages"] == streamed["messages"]
    # The request itself is left as it came.
    assert request.messages[1].audio == {"id": "a1", "data": "AAAA"}


def test_a_request_keeps_its_native_body_and_tools_copy_out_of_its_dump() -> None:
    request = ChatRequest.model_validate(
        {
            "messages": [{"role": "user", "content": "hi"}],
            "functions": [{"name": "f"}],
        }
    )
    assert request.native is None
    as_tools = request.functions_as_tools()
    assert as_tools is request.functions_as_tools() and as_tools.functions is None
    request.with_native(Native("openai_responses", {"input": "hi"}))
    assert request.native == Native("openai_responses", {"input": "hi"})
    dumped = request.model_dump(exclude_none=True)
    assert "_native" not in dumped and "_as_tools" not in dumped
    assert request == ChatRequest.model_validate(
        {"messages": [{"role": "user", "content": "hi"}], "functions": [{"name": "f"}]}
    )
