"""palyra/models/openai_wire.py names what openai-python names: each TypedDict has the keys of
its counterpart in the SDK (its `*_param.py` TypedDicts for the request, its models for the
answer and the chunk), plus only the fields written down here as not the SDK's. A field the
SDK gains, loses or renames fails here, with the names."""

from __future__ import annotations

from typing import Any

import pytest
from openai.types import (
    EmbeddingCreateParams,
    completion_usage,
    create_embedding_response,
    embedding,
    model,
    shared,
    shared_params,
)
from openai.types.audio import (
    transcription,
    transcription_diarized,
    transcription_diarized_segment,
    transcription_segment,
    transcription_text_delta_event,
    transcription_text_done_event,
    transcription_text_segment_event,
    transcription_verbose,
    transcription_word,
)
from openai.types.audio.transcription_language import TranscriptionLanguage
from openai.types.chat import (
    chat_completion,
    chat_completion_allowed_tool_choice_param,
    chat_completion_allowed_tools_param,
    chat_completion_assistant_message_param,
    chat_completion_audio,
    chat_completion_audio_param,
    chat_completion_chunk,
    chat_completion_content_part_image_param,
    chat_completion_content_part_input_audio_param,
    chat_completion_content_part_param,
    chat_completion_content_part_refusal_param,
    chat_completion_content_part_text_param,
    chat_completion_custom_tool_param,
    chat_completion_developer_message_param,
    chat_completion_function_call_option_param,
    chat_completion_function_message_param,
    chat_completion_function_tool_param,
    chat_completion_message,
    chat_completion_message_custom_tool_call,
    chat_completion_message_custom_tool_call_param,
    chat_completion_message_function_tool_call,
    chat_completion_message_function_tool_call_param,
    chat_completion_named_tool_choice_custom_param,
    chat_completion_named_tool_choice_param,
    chat_completion_prediction_content_param,
    chat_completion_stream_options_param,
    chat_completion_system_message_param,
    chat_completion_token_logprob,
    chat_completion_tool_message_param,
    chat_completion_user_message_param,
    completion_create_params,
)
from openai.types.shared_params import response_format_json_schema

from palyra.models import openai_audio_wire as audio
from palyra.models import openai_wire as wire
from tests.support.sdk_keys import keys, mismatch

# The reasoning of a model, as compatible servers send it and Palyra writes it.
REASONING = {"reasoning_content", "reasoning"}

# Palyra's TypedDict, openai-python's type, the keys Palyra has that the SDK does not.
PAIRS: list[tuple[Any, Any, set[str]]] = [
    # the request
    (
        wire.ChatCompletionContentPartTextParam,
        chat_completion_content_part_text_param.ChatCompletionContentPartTextParam,
        set(),
    ),
    (wire.ImageURL, chat_completion_content_part_image_param.ImageURL, set()),
    (
        wire.ChatCompletionContentPartImageParam,
        chat_completion_content_part_image_param.ChatCompletionContentPartImageParam,
        set(),
    ),
    (wire.InputAudio, chat_completion_content_part_input_audio_param.InputAudio, set()),
    (
        wire.ChatCompletionContentPartInputAudioParam,
        chat_completion_content_part_input_audio_param.ChatCompletionContentPartInputAudioParam,
        set(),
    ),
    (wire.FileFile, chat_completion_content_part_param.FileFile, set()),
    (wire.ChatCompletionContentPartFileParam, chat_completion_content_part_param.File, set()),
    (
        wire.ChatCompletionContentPartRefusalParam,
        chat_completion_content_part_refusal_param.ChatCompletionContentPartRefusalParam,
        set(),
    ),
    (
        wire.ChatCompletionDeveloperMessageParam,
        chat_completion_developer_message_param.ChatCompletionDeveloperMessageParam,
        set(),
    ),
    (
        wire.ChatCompletionSystemMessageParam,
        chat_completion_system_message_param.ChatCompletionSystemMessageParam,
        set(),
    ),
    (
        wire.ChatCompletionUserMessageParam,
        chat_completion_user_message_param.ChatCompletionUserMessageParam,
        set(),
    ),
    (wire.FunctionCall, chat_completion_assistant_message_param.FunctionCall, set()),
    (wire.Audio, chat_completion_assistant_message_param.Audio, set()),
    (
        wire.ChatCompletionAssistantMessageParam,
        chat_completion_assistant_message_param.ChatCompletionAssistantMessageParam,
        {"reasoning_content", "thinking_blocks"},
    ),
    (
        wire.ChatCompletionToolMessageParam,
        chat_completion_tool_message_param.ChatCompletionToolMessageParam,
        set(),
    ),
    (
        wire.ChatCompletionFunctionMessageParam,
        chat_completion_function_message_param.ChatCompletionFunctionMessageParam,
        set(),
    ),
    (wire.Function, chat_completion_message_function_tool_call_param.Function, set()),
    (
        wire.ChatCompletionMessageFunctionToolCallParam,
        chat_completion_message_function_tool_call_param.ChatCompletionMessageFunctionToolCallParam,
        set(),
    ),
    (wire.Custom, chat_completion_message_custom_tool_call_param.Custom, set()),
    (
        wire.ChatCompletionMessageCustomToolCallParam,
        chat_completion_message_custom_tool_call_param.ChatCompletionMessageCustomToolCallParam,
        set(),
    ),
    (wire.FunctionDefinition, shared_params.FunctionDefinition, set()),
    (
        wire.ChatCompletionFunctionToolParam,
        chat_completion_function_tool_param.ChatCompletionFunctionToolParam,
        set(),
    ),
    (wire.CustomToolDefinition, chat_completion_custom_tool_param.Custom, set()),
    (
        wire.ChatCompletionCustomToolParam,
        chat_completion_custom_tool_param.ChatCompletionCustomToolParam,
        set(),
    ),
    (wire.NamedTool, chat_completion_named_tool_choice_param.Function, set()),
    (
        wire.ChatCompletionNamedToolChoiceParam,
        chat_completion_named_tool_choice_param.ChatCompletionNamedToolChoiceParam,
        set(),
    ),
    (
        wire.ChatCompletionNamedToolChoiceCustomParam,
        chat_completion_named_tool_choice_custom_param.ChatCompletionNamedToolChoiceCustomParam,
        set(),
    ),
    (
        wire.ChatCompletionAllowedToolsParam,
        chat_completion_allowed_tools_param.ChatCompletionAllowedToolsParam,
        set(),
    ),
    (
        wire.ChatCompletionAllowedToolChoiceParam,
        chat_completion_allowed_tool_choice_param.ChatCompletionAllowedToolChoiceParam,
        set(),
    ),
    (wire.ResponseFormatText, shared_params.ResponseFormatText, set()),
    (wire.ResponseFormatJSONObject, shared_params.ResponseFormatJSONObject, set()),
    (wire.ResponseFormatJSONSchema, shared_params.ResponseFormatJSONSchema, set()),
    (wire.JSONSchema, response_format_json_schema.JSONSchema, set()),
    (
        wire.ChatCompletionStreamOptionsParam,
        chat_completion_stream_options_param.ChatCompletionStreamOptionsParam,
        set(),
    ),
    (wire.ChatCompletionAudioParam, chat_completion_audio_param.ChatCompletionAudioParam, set()),
    (
        wire.ChatCompletionPredictionContentParam,
        chat_completion_prediction_content_param.ChatCompletionPredictionContentParam,
        set(),
    ),
    (
        wire.FunctionCallOption,
        chat_completion_function_call_option_param.ChatCompletionFunctionCallOptionParam,
        set(),
    ),
    (wire.CompletionCreateParams, completion_create_params.CompletionCreateParamsStreaming, set()),
    # (The same keys: only the model is optional.)
    (wire.ChatRequestParams, completion_create_params.CompletionCreateParamsStreaming, set()),
    (wire.EmbeddingCreateParams, EmbeddingCreateParams, set()),
    # the embeddings answer
    (wire.Embedding, embedding.Embedding, set()),
    (wire.EmbeddingUsage, create_embedding_response.Usage, set()),
    (wire.CreateEmbeddingResponse, create_embedding_response.CreateEmbeddingResponse, set()),
    # models and errors
    (wire.Model, model.Model, {"palyra"}),
    (wire.ErrorObject, shared.ErrorObject, set()),
    # the answer
    (wire.TopLogprob, chat_completion_token_logprob.TopLogprob, set()),
    (
        wire.ChatCompletionTokenLogprob,
        chat_completion_token_logprob.ChatCompletionTokenLogprob,
        set(),
    ),
    (wire.ChoiceLogprobs, chat_completion.ChoiceLogprobs, set()),
    (
        wire.ChatCompletionMessageFunctionToolCall,
        chat_completion_message_function_tool_call.ChatCompletionMessageFunctionToolCall,
        set(),
    ),
    (
        wire.ChatCompletionMessageCustomToolCall,
        chat_completion_message_custom_tool_call.ChatCompletionMessageCustomToolCall,
        set(),
    ),
    (wire.ChatCompletionAudio, chat_completion_audio.ChatCompletionAudio, set()),
    (wire.ChatCompletionMessage, chat_completion_message.ChatCompletionMessage, REASONING),
    (wire.Choice, chat_completion.Choice, set()),
    (wire.PromptTokensDetails, completion_usage.PromptTokensDetails, set()),
    (wire.CompletionTokensDetails, completion_usage.CompletionTokensDetails, set()),
    (wire.CompletionUsage, completion_usage.CompletionUsage, set()),
    (wire.ChatCompletion, chat_completion.ChatCompletion, set()),
    # the stream chunk
    (wire.ChoiceDeltaFunctionCall, chat_completion_chunk.ChoiceDeltaFunctionCall, set()),
    (wire.ChoiceDeltaToolCallFunction, chat_completion_chunk.ChoiceDeltaToolCallFunction, set()),
    # (The SDK streams no custom tool call: its keys are those of the whole one.)
    (wire.ChoiceDeltaToolCallCustom, chat_completion_message_custom_tool_call.Custom, set()),
    (wire.ChoiceDeltaToolCall, chat_completion_chunk.ChoiceDeltaToolCall, {"custom"}),
    (wire.ChoiceDeltaAudio, chat_completion_chunk.ChoiceDeltaAudio, set()),
    (wire.ChoiceDelta, chat_completion_chunk.ChoiceDelta, REASONING),
    (wire.ChunkChoice, chat_completion_chunk.Choice, set()),
    (wire.ChatCompletionChunk, chat_completion_chunk.ChatCompletionChunk, set()),
]


# palyra/models/openai_audio_wire.py, against openai-python's `types/audio/transcription*.py`.
AUDIO_PAIRS: list[tuple[Any, Any, set[str]]] = [
    (audio.TranscriptionLanguage, TranscriptionLanguage, set()),
    (audio.Logprob, transcription.Logprob, set()),
    # (The events' own logprob has the same keys.)
    (audio.Logprob, transcription_text_delta_event.Logprob, set()),
    (audio.Logprob, transcription_text_done_event.Logprob, set()),
    (audio.UsageTokensInputTokenDetails, transcription.UsageTokensInputTokenDetails, set()),
    (audio.UsageTokens, transcription.UsageTokens, set()),
    (audio.UsageTokens, transcription_text_done_event.Usage, set()),
    (audio.UsageDuration, transcription.UsageDuration, set()),
    (audio.Transcription, transcription.Transcription, set()),
    (audio.TranscriptionSegment, transcription_segment.TranscriptionSegment, set()),
    (audio.TranscriptionWord, transcription_word.TranscriptionWord, set()),
    # (The API sends the task; openai-python's model does not name it.)
    (audio.TranscriptionVerbose, transcription_verbose.TranscriptionVerbose, {"task"}),
    (
        audio.TranscriptionDiarizedSegment,
        transcription_diarized_segment.TranscriptionDiarizedSegment,
        set(),
    ),
    (audio.TranscriptionDiarized, transcription_diarized.TranscriptionDiarized, set()),
    (
        audio.TranscriptionTextDeltaEvent,
        transcription_text_delta_event.TranscriptionTextDeltaEvent,
        set(),
    ),
    (
        audio.TranscriptionTextDoneEvent,
        transcription_text_done_event.TranscriptionTextDoneEvent,
        set(),
    ),
    (
        audio.TranscriptionTextSegmentEvent,
        transcription_text_segment_event.TranscriptionTextSegmentEvent,
        set(),
    ),
]

# TypedDicts openai-python has no type for (what it reads without one), and their keys.
OWN: dict[Any, set[str]] = {
    # Not the SDK's at all: Palyra's, under `palyra` in a model object.
    wire.PalyraModelInfo: {"role", "provider_id", "source", "enabled", "max_context_tokens"},
    # `GET /v1/models`: the SDK pages `data`.
    wire.ModelList: {"object", "data"},
    # An error answer: the SDK reads its `error` (an `ErrorObject`).
    wire.ErrorResponse: {"error"},
}


@pytest.mark.parametrize(
    ("ours", "theirs", "extensions"), PAIRS, ids=[pair[0].__name__ for pair in PAIRS]
)
def test_the_typeddict_has_the_sdk_keys(ours: Any, theirs: Any, extensions: set[str]) -> None:
    assert mismatch(ours, theirs, extensions) is None


@pytest.mark.parametrize(
    ("ours", "theirs", "extensions"),
    AUDIO_PAIRS,
    ids=[
        f"{ours.__name__}-{theirs.__module__.rsplit('.', 1)[-1]}" for ours, theirs, _ in AUDIO_PAIRS
    ],
)
def test_the_audio_typeddict_has_the_sdk_keys(ours: Any, theirs: Any, extensions: set[str]) -> None:
    assert mismatch(ours, theirs, extensions) is None


@pytest.mark.parametrize(("ours", "expected"), OWN.items(), ids=[t.__name__ for t in OWN])
def test_a_typeddict_without_an_sdk_type_has_its_keys(ours: Any, expected: set[str]) -> None:
    assert keys(ours) == expected


def typeddicts(module: Any) -> set[str]:
    return {
        name
        for name, value in vars(module).items()
        if isinstance(value, type)
        and issubclass(value, dict)
        and value.__module__ == module.__name__
        and not name.startswith("_")
    }


def test_every_typeddict_of_the_modules_is_checked() -> None:
    # (A private base, `_CompletionParams`, has no counterpart of its own: its keys are
    # checked as those of the bodies that extend it.)
    assert typeddicts(wire) == {pair[0].__name__ for pair in PAIRS} | {t.__name__ for t in OWN}
    assert typeddicts(audio) == {pair[0].__name__ for pair in AUDIO_PAIRS}


def test_the_check_tells_a_missing_an_unknown_and_a_stale_key() -> None:
    class Named(dict[str, Any]):
        # (stands for a TypedDict: its keys are its annotations)
        __annotations__ = {"index": int, "delta": dict, "reasoning_content": str}

    found = mismatch(Named, chat_completion_chunk.Choice, set())
    assert found is not None
    assert "missing ['finish_reason', 'logprobs']" in found
    assert "not the SDK's ['reasoning_content']" in found
    stale = mismatch(wire.Choice, chat_completion.Choice, {"logprobs"})
    assert stale is not None and "the SDK's now ['logprobs']" in stale
