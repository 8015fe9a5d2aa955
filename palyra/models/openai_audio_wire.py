"""The wire format of OpenAI's transcriptions and translations (`POST /v1/audio/*`): what
Palyra answers in json, verbose_json and diarized_json, and the events of a streamed
transcription. TypedDicts after openai-python's `types/audio/transcription*.py` models
(`NotRequired` where the model has a default); tests/models/test_openai_wire.py holds their
keys to the SDK's. An upstream's own answer or event is relayed as it came, over what Palyra
made (`openai_wire.merge_extra`), so these type what Palyra writes, not what it relays.
"""

from __future__ import annotations

from typing import Literal, NotRequired, TypeAlias, TypedDict


class TranscriptionLanguage(TypedDict):
    code: str


class Logprob(TypedDict, total=False):
    """openai-python's `transcription.Logprob` (and the events' own, alike)."""

    token: str | None
    bytes: list[float] | None  # (the events' are ints)
    logprob: float | None


class UsageTokensInputTokenDetails(TypedDict, total=False):
    audio_tokens: int | None
    text_tokens: int | None


class UsageTokens(TypedDict):
    type: Literal["tokens"]
    input_tokens: int
    output_tokens: int
    total_tokens: int
    input_token_details: NotRequired[UsageTokensInputTokenDetails | None]


class UsageDuration(TypedDict):
    type: Literal["duration"]
    seconds: float


# --- whole answers ------------------------------------------------------------------------


class Transcription(TypedDict):
    """json (and a translation's, which has its text only)."""

    text: str
    languages: NotRequired[list[TranscriptionLanguage] | None]
    logprobs: NotRequired[list[Logprob] | None]
    usage: NotRequired[UsageTokens | UsageDuration | None]


class TranscriptionSegment(TypedDict):
    id: int
    seek: int
    start: float
    end: float
    text: str
    tokens: list[int]
    temperature: float
    avg_logprob: float
    compression_ratio: float
    no_speech_prob: float


class TranscriptionWord(TypedDict):
    word: str
    start: float
    end: float


class TranscriptionVerbose(TypedDict):
    """verbose_json, of a transcription or a translation (`TranslationVerbose`: the same but
    for words and usage)."""

    # Not openai-python's: what the API sends and Palyra writes, ahead of the rest.
    task: Literal["transcribe", "translate"]
    language: str
    duration: float
    text: str
    segments: NotRequired[list[TranscriptionSegment] | None]
    words: NotRequired[list[TranscriptionWord] | None]
    usage: NotRequired[UsageDuration | None]


class TranscriptionDiarizedSegment(TypedDict):
    type: Literal["transcript.text.segment"]
    id: str
    start: float
    end: float
    text: str
    speaker: str


class TranscriptionDiarized(TypedDict):
    """diarized_json."""

    task: Literal["transcribe"]
    duration: float
    text: str
    segments: list[TranscriptionDiarizedSegment]
    usage: NotRequired[UsageTokens | UsageDuration | None]


# --- a streamed transcription's events ----------------------------------------------------


class TranscriptionTextDeltaEvent(TypedDict):
    type: Literal["transcript.text.delta"]
    delta: str
    logprobs: NotRequired[list[Logprob] | None]
    segment_id: NotRequired[str | None]


class TranscriptionTextDoneEvent(TypedDict):
    type: Literal["transcript.text.done"]
    text: str
    languages: NotRequired[list[TranscriptionLanguage] | None]
    logprobs: NotRequired[list[Logprob] | None]
    usage: NotRequired[UsageTokens | None]


class TranscriptionTextSegmentEvent(TypedDict):
    """A diarized stream's segment (relayed from an upstream; Palyra makes none)."""

    type: Literal["transcript.text.segment"]
    id: str
    start: float
    end: float
    text: str
    speaker: str


TranscriptionStreamEvent: TypeAlias = (
    TranscriptionTextDeltaEvent | TranscriptionTextDoneEvent | TranscriptionTextSegmentEvent
)
