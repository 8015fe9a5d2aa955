"""The one interface every provider kind implements."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator
from typing import Protocol

from palyra.config import ModelConfig, ProviderConfig
from palyra.errors import Unsupported
from palyra.ratelimits import LimitsListener
from palyra.types import (
    ChatDelta,
    ChatRequest,
    ChatResult,
    EmbeddingsRequest,
    EmbeddingsResult,
    ModelProviderKind,
    TranscriptionDelta,
    TranscriptionRequest,
    TranscriptionResult,
)


class CredentialSource(Protocol):
    """Where a provider gets its key, asked on every call (palyra.credentials has the
    sources: environment variables, the vault, auth profiles)."""

    async def api_key(self, provider: ProviderConfig) -> str | None:
        """The key to send, None when the provider is configured with no credential at all."""
        ...

    async def credential_rejected(self, provider: ProviderConfig, api_key: str | None) -> bool:
        """The provider answered 401/403 to `api_key`. True when a different credential is
        now available (an OAuth token was refreshed), so one retry is worth making."""
        ...


class ModelProvider(ABC):
    """A connection to one configured provider.

    Methods receive the validated request and the model entry it was routed to; they talk to
    the upstream and return the shared result shapes, or raise `ProviderError`.
    """

    kind: ModelProviderKind
    # Whether the kind takes OpenAI's deprecated `functions` as they are; the others are
    # handed the request with them spelled as tools (`ChatRequest.functions_as_tools`).
    takes_functions: bool = False
    # Told what each upstream answer's rate-limit headers say, with the upstream's name of the
    # model asked (set by whoever balances deployments; None: nobody asks, nothing is parsed).
    limits_listener: LimitsListener | None = None

    def __init__(self, config: ProviderConfig) -> None:
        self.config = config
        # (Read several times a request: an attribute, not a property.)
        self.provider_id: str = config.provider_id

    @abstractmethod
    async def chat(self, request: ChatRequest, model: ModelConfig) -> ChatResult: ...

    @abstractmethod
    def stream_chat(self, request: ChatRequest, model: ModelConfig) -> AsyncIterator[ChatDelta]:
        """Chat as a stream of deltas. Errors before the first delta are raised on the first
        `__anext__`, so a caller can still pick another provider."""

    def unsupported(self, request: ChatRequest) -> Unsupported | None:
        """What in `request` this provider kind cannot honour faithfully (a parameter or a
        content part type), or None: `cannot_honour` words it. The router skips a candidate
        that cannot serve a request for one that can, and answers with this when none can.
        `request` is as the provider will get it (see `takes_functions`)."""
        return None

    def cannot_honour(self, what: str, param: str) -> Unsupported:
        """The refusal `unsupported` returns, in the one wording clients see:
        `provider claude (anthropic) cannot honour logprobs`."""
        return Unsupported(
            f"provider {self.provider_id} ({self.kind}) cannot honour {what}", param=param
        )

    def accepts(self, request: ChatRequest) -> ChatRequest:
        """`request` as this provider is handed it."""
        return request if self.takes_functions else request.functions_as_tools()

    async def embed(self, request: EmbeddingsRequest, model: ModelConfig) -> EmbeddingsResult:
        raise Unsupported(f"provider {self.provider_id} ({self.kind}) does not serve embeddings")

    async def transcribe(
        self, request: TranscriptionRequest, model: ModelConfig
    ) -> TranscriptionResult:
        raise Unsupported(
            f"provider {self.provider_id} ({self.kind}) does not serve audio transcription"
        )

    def stream_transcribe(
        self, request: TranscriptionRequest, model: ModelConfig
    ) -> AsyncIterator[TranscriptionDelta]:
        """Transcription as a stream of text deltas (the last carries the whole result)."""
        raise Unsupported(
            f"provider {self.provider_id} ({self.kind}) cannot stream audio transcription",
            param="stream",
        )

    async def list_models(self) -> list[str]:
        """Model ids the upstream offers now (discovery)."""
        return []

    async def aclose(self) -> None:  # noqa: B027 - optional hook
        """Release what the provider holds; the shared HTTP session is not its to close."""
