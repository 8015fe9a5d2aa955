"""From a requested model id to a provider call: resolution, capability and budget checks.

Everything here runs in memory on the request path: no database, no blocking call.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from palyra.config import ModelConfig, ModelProviderConfig
from palyra.errors import ContextLengthExceeded, InvalidRequest, ModelNotFound, Unsupported
from palyra.models.base import ModelProvider
from palyra.tokens import check_token_budget, estimate_text_tokens
from palyra.types import (
    ChatDelta,
    ChatRequest,
    ChatResult,
    EmbeddingsRequest,
    EmbeddingsResult,
    ProviderModelRole,
    TranscriptionRequest,
    TranscriptionResult,
)

T = TypeVar("T")


@dataclass(slots=True)
class RouteInfo:
    """Who served a request and what it took; rendered as the `x-palyra-*` headers."""

    model_id: str = ""
    provider_id: str = ""
    retries: int = 0
    failovers: int = 0
    upstream_s: float = 0.0


@dataclass(slots=True)
class Routed(Generic[T]):
    value: T
    route: RouteInfo = field(default_factory=RouteInfo)


class ModelRegistry:
    """The models the daemon can route to, by id, and the default per role."""

    def __init__(self, config: ModelProviderConfig) -> None:
        self._config = config
        self._models = {m.model_id: m for m in config.models}
        self._defaults: dict[ProviderModelRole, str] = {}
        for role in ProviderModelRole:
            wanted = getattr(config, f"default_{role.value}_model_id")
            first = next(
                (
                    m.model_id
                    for m in config.models
                    if m.role == role
                    and m.enabled
                    and (p := config.provider(m.provider_id)) is not None
                    and p.enabled
                ),
                "",
            )
            self._defaults[role] = wanted or first

    def models(self) -> list[ModelConfig]:
        return list(self._models.values())

    def get(self, model_id: str) -> ModelConfig | None:
        return self._models.get(model_id)

    def resolve(self, model_id: str | None, role: ProviderModelRole) -> ModelConfig:
        wanted = model_id or self._defaults[role]
        if not wanted:
            raise ModelNotFound(
                f"no model given and no enabled {role} model is configured", param="model"
            )
        model = self._models.get(wanted)
        if model is None:
            raise ModelNotFound(f"model {wanted!r} does not exist", param="model")
        if model.role != role:
            raise InvalidRequest(
                f"model {wanted!r} is a {model.role} model, not a {role} model",
                param="model",
                code="model_role_mismatch",
            )
        if not model.enabled:
            raise ModelNotFound(
                f"model {wanted!r} is disabled", param="model", code="model_disabled"
            )
        return model


class Router:
    def __init__(
        self,
        config: ModelProviderConfig,
        registry: ModelRegistry,
        providers: dict[str, ModelProvider],
    ) -> None:
        self._config = config
        self.registry = registry
        self.providers = providers

    def _provider(self, model: ModelConfig) -> ModelProvider:
        provider = self.providers.get(model.provider_id)
        if provider is None or not provider.config.enabled:
            raise ModelNotFound(
                f"model {model.model_id!r} is served by provider {model.provider_id!r}, "
                "which is disabled",
                param="model",
                code="provider_disabled",
            )
        return provider

    def _check_chat(
        self, request: ChatRequest, model: ModelConfig, provider: ModelProvider
    ) -> None:
        if request.has_images and not model.vision:
            raise Unsupported(f"model {model.model_id!r} does not accept images", param="messages")
        if request.tools and not model.tool_calls:
            raise Unsupported(f"model {model.model_id!r} does not support tools", param="tools")
        if request.wants_json and not model.json_mode:
            raise Unsupported(
                f"model {model.model_id!r} does not support JSON mode", param="response_format"
            )
        budget = self._config.max_model_tokens_per_event or model.max_context_tokens
        allowance = request.output_limit or model.max_output_tokens
        check = check_token_budget(
            request, provider.kind, budget=budget, output_allowance=allowance
        )
        if not check.fits:
            raise ContextLengthExceeded(
                f"model {model.model_id!r} has a budget of {budget} tokens; the request needs "
                f"about {check.prompt_tokens} for its prompt plus {allowance} for the answer",
                param="messages",
            )

    async def chat(self, request: ChatRequest) -> Routed[ChatResult]:
        model = self.registry.resolve(request.model, ProviderModelRole.CHAT)
        provider = self._provider(model)
        self._check_chat(request, model, provider)
        route = RouteInfo(model.model_id, provider.provider_id)
        started = time.perf_counter()
        result = await provider.chat(request, model)
        route.upstream_s = time.perf_counter() - started
        return Routed(result, route)

    async def stream_chat(self, request: ChatRequest) -> Routed[AsyncIterator[ChatDelta]]:
        """Opens the stream and waits for its first delta, so a failure to start is still an
        ordinary error response rather than a broken stream."""
        model = self.registry.resolve(request.model, ProviderModelRole.CHAT)
        provider = self._provider(model)
        self._check_chat(request, model, provider)
        route = RouteInfo(model.model_id, provider.provider_id)
        started = time.perf_counter()
        stream = provider.stream_chat(request, model)
        try:
            first = await anext(stream)
        except StopAsyncIteration:
            first = None
        route.upstream_s = time.perf_counter() - started
        return Routed(_prepend(first, stream), route)

    async def embed(self, request: EmbeddingsRequest) -> Routed[EmbeddingsResult]:
        model = self.registry.resolve(request.model, ProviderModelRole.EMBEDDINGS)
        provider = self._provider(model)
        budget = self._config.max_model_tokens_per_event or model.max_context_tokens
        for i, item in enumerate(request.texts()):
            tokens = len(item) if isinstance(item, list) else estimate_text_tokens(item)
            if tokens > budget:
                raise ContextLengthExceeded(
                    f"input[{i}] has about {tokens} tokens; "
                    f"model {model.model_id!r} takes {budget}",
                    param="input",
                )
        route = RouteInfo(model.model_id, provider.provider_id)
        started = time.perf_counter()
        result = await provider.embed(request, model)
        route.upstream_s = time.perf_counter() - started
        return Routed(result, route)

    async def transcribe(self, request: TranscriptionRequest) -> Routed[TranscriptionResult]:
        model = self.registry.resolve(request.model, ProviderModelRole.AUDIO_TRANSCRIPTION)
        provider = self._provider(model)
        route = RouteInfo(model.model_id, provider.provider_id)
        started = time.perf_counter()
        result = await provider.transcribe(request, model)
        route.upstream_s = time.perf_counter() - started
        return Routed(result, route)


async def _prepend(
    first: ChatDelta | None, rest: AsyncIterator[ChatDelta]
) -> AsyncIterator[ChatDelta]:
    try:
        if first is not None:
            yield first
            async for delta in rest:
                yield delta
    finally:
        # Closing the provider's generator closes its upstream response (client went away).
        aclose = getattr(rest, "aclose", None)
        if aclose is not None:
            await aclose()
