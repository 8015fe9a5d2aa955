"""The chat completions wire format, pure: the upstream payload."""

from __future__ import annotations

from palyra.config import ModelConfig
from palyra.models.openai_chat import chat_payload
from palyra.types import ChatRequest, Native

MODEL = ModelConfig(model_id="alias", provider_id="oai", upstream_model="gpt-4o-mini")


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
