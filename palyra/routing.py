"""From a requested model id to an answer: resolution, capability and budget checks, the
candidate list, and the fallback model that walks it.

Everything here runs in memory on the request path: no database, no blocking call.
"""

from __future__ import annotations

import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Generic, TypeVar

import orjson

from palyra.accounting import REQUEST, Accounting, Ticket
from palyra.balancing import order, prefix_key
from palyra.breaker import BreakerBoard
from palyra.callers import CALLER
from palyra.config import ModelConfig, ModelProviderConfig, ProviderConfig, ProviderSettings
from palyra.deployments import DeploymentBoard
from palyra.errors import (
    ContextLengthExceeded,
    InvalidRequest,
    ModelNotFound,
    PalyraError,
    Unsupported,
)
from palyra.health import DEFINITIVE, HealthBoard
from palyra.metrics import Metrics
from palyra.models.base import ModelProvider
from palyra.models.fallback import Candidate, FallbackModel, StreamEvent, no_tokens
from palyra.telemetry import TRACING
from palyra.tokens import (
    check_token_budget,
    estimate_text_tokens,
    load_vocabulary,
    may_need_counts,
    prompt_bound,
    text_bound,
    vocabulary_loaded,
)
from palyra.types import (
    ChatDelta,
    ChatRequest,
    ChatResult,
    EmbeddingsRequest,
    EmbeddingsResult,
    ModelProviderKind,
    ProviderModelRole,
    RouteInfo,
    TranscriptionDelta,
    TranscriptionRequest,
    TranscriptionResult,
)

__all__ = ["ModelRegistry", "RouteInfo", "Routed", "Router", "ServeChat", "ServeStream"]

T = TypeVar("T")
E = TypeVar("E", bound=StreamEvent)

# How a dialect has one candidate answer a chat request, whole or streamed.
ServeChat = Callable[[ModelProvider, ChatRequest, ModelConfig], Awaitable[ChatResult]]
ServeStream = Callable[[ModelProvider, ChatRequest, ModelConfig], AsyncIterator[ChatDelta]]


def _provider_chat(
    provider: ModelProvider, request: ChatRequest, model: ModelConfig
) -> Awaitable[ChatResult]:
    return provider.chat(request, model)


def _provider_stream(
    provider: ModelProvider, request: ChatRequest, model: ModelConfig
) -> AsyncIterator[ChatDelta]:
    return provider.stream_chat(request, model)


_COST = {"low": 0, "standard": 1, "premium": 2}
_LATENCY = {"low": 0, "standard": 1, "high": 2}


@dataclass(frozen=True, slots=True)
class _Plan:
    """What routing one request works from: the requested model, its candidates, its token
    estimates (for tpm limits, and a stream's usage when the upstream sends none), and its
    prompt as the ledger keeps it when it keeps prompts."""

    model: ModelConfig
    candidates: Iterable[Candidate]
    estimate: Callable[[], int] = no_tokens
    prompt: Callable[[], int] = no_tokens
    text: Callable[[], str] | None = None
    # Filled as `candidates` is walked: those left out for their provider's state.
    passed_over: list[Candidate] = field(default_factory=list)


@dataclass(slots=True)
class Routed(Generic[T]):
    value: T
    route: RouteInfo = field(default_factory=RouteInfo)


class ModelRegistry:
    """The models the daemon can route to: configured ones, then discovered ones (a
    configured entry wins an id), and the default per role."""

    def __init__(self, config: ModelProviderConfig) -> None:
        self._config = config
        self._configured = list(config.models)
        self._discovered: list[ModelConfig] = []
        self._index: dict[str, ModelConfig] = {}
        self._deployments: dict[str, list[ModelConfig]] = {}
        self._rooms: dict[ModelProviderKind, tuple[int, int]] = {}
        self._rebuild()

    def _rebuild(self) -> None:
        index: dict[str, ModelConfig] = {}
        deployments: dict[str, list[ModelConfig]] = {}
        for model in self._configured:
            index.setdefault(model.model_id, model)
            deployments.setdefault(model.model_id, []).append(model)
        for model in self._discovered:
            if model.model_id not in index:
                index[model.model_id] = model
                deployments[model.model_id] = [model]
        rooms: dict[ModelProviderKind, tuple[int, int]] = {}
        for model in (m for entries in deployments.values() for m in entries):
            provider = self._config.provider(model.provider_id)
            if model.role != ProviderModelRole.CHAT or provider is None:
                continue
            budget = token_budget(self._config, model)
            least = rooms.get(provider.kind, (budget, budget - model.max_output_tokens))
            rooms[provider.kind] = (
                min(least[0], budget),
                min(least[1], budget - model.max_output_tokens),
            )
        # Swapped whole: readers never see a half-built index.
        self._index, self._deployments, self._rooms = index, deployments, rooms

    def chat_rooms(self) -> dict[ModelProviderKind, tuple[int, int]]:
        """Per provider kind, over its chat models: the smallest token budget, and the
        smallest budget less the model's own output allowance. Worked out once per change of
        the model list, so a request checks one bound per kind, not one per model."""
        return self._rooms

    def set_discovered(self, models: list[ModelConfig]) -> None:
        self._discovered = models
        self._rebuild()

    def models(self) -> list[ModelConfig]:
        return list(self._index.values())

    def configured(self) -> list[ModelConfig]:
        return list(self._configured)

    def get(self, model_id: str) -> ModelConfig | None:
        """The model as clients name it: its first deployment stands for all of them."""
        return self._index.get(model_id)

    def deployment(self, model_id: str, provider_id: str) -> ModelConfig | None:
        """The entry of `model_id` on `provider_id` (the deployment that served)."""
        for model in self._deployments.get(model_id, ()):
            if model.provider_id == provider_id:
                return model
        return None

    def deployments(self, model_id: str) -> list[ModelConfig]:
        """Every entry that serves `model_id` (one per provider), in the file's order."""
        return self._deployments.get(model_id, [])

    def default_for(self, role: ProviderModelRole) -> str:
        wanted: str = getattr(self._config, f"default_{role.value}_model_id")
        if wanted:
            return wanted
        for model in self.models():
            provider = self._config.provider(model.provider_id)
            if model.role == role and model.enabled and provider is not None and provider.enabled:
                return model.model_id
        return ""

    def resolve(self, model_id: str | None, role: ProviderModelRole) -> ModelConfig:
        wanted = model_id or self.default_for(role)
        if not wanted:
            raise ModelNotFound(
                f"no model given and no enabled {role} model is configured", param="model"
            )
        model = self._index.get(wanted)
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


class _ChatFacts:
    """What checking one request against a model needs that does not depend on the model,
    worked out once however many candidate models the request is checked against."""

    __slots__ = ("_bounds", "has_images", "request")

    def __init__(self, request: ChatRequest) -> None:
        self.request = request
        self.has_images = request.has_images
        self._bounds: dict[ModelProviderKind, int] = {}

    def bound(self, kind: ModelProviderKind) -> int:
        bound = self._bounds.get(kind)
        if bound is None:
            bound = self._bounds[kind] = prompt_bound(self.request, kind)
        return bound


def _disabled(model: ModelConfig) -> ModelNotFound:
    return ModelNotFound(
        f"model {model.model_id!r} is served by provider {model.provider_id!r}, which is disabled",
        param="model",
        code="provider_disabled",
    )


def token_budget(config: ModelProviderConfig, model: ModelConfig) -> int:
    if config.max_model_tokens_per_event:
        return min(config.max_model_tokens_per_event, model.max_context_tokens)
    return model.max_context_tokens


class Router:
    def __init__(
        self,
        config: ModelProviderConfig,
        registry: ModelRegistry,
        providers: dict[str, ModelProvider],
        *,
        breakers: BreakerBoard,
        health: HealthBoard,
        metrics: Metrics,
        deployments: DeploymentBoard | None = None,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self.registry = registry
        self.deployments = deployments or DeploymentBoard(clock=clock)
        # Where balancing draws its chances and reads the time (tests put their own).
        self.rng = rng or random.Random()
        self.clock = clock
        # What callers may spend and what they spent (set by the daemon once the state
        # store is open; without it nothing is checked or recorded).
        self.accounting: Accounting | None = None
        self.providers = providers
        self.breakers = breakers
        self.health = health
        self.metrics = metrics
        # provider_id -> (its config, our config, its settings): rebuilt if either is replaced.
        self._settings: dict[str, tuple[ProviderConfig, ModelProviderConfig, ProviderSettings]] = {}

    # --- candidates -------------------------------------------------------------------

    def _settings_for(self, provider: ModelProvider) -> ProviderSettings:
        cached = self._settings.get(provider.provider_id)
        if cached is None or cached[0] is not provider.config or cached[1] is not self.config:
            cached = (provider.config, self.config, self.config.settings_for(provider.config))
            self._settings[provider.provider_id] = cached
        return cached[2]

    def _candidate(self, model: ModelConfig, balanced: bool = False) -> Candidate | None:
        provider = self.providers.get(model.provider_id)
        if provider is None or not provider.config.enabled or not model.enabled:
            return None
        settings = self._settings_for(provider)
        breaker = self.breakers.get(
            provider.provider_id,
            settings.circuit_breaker_failure_threshold,
            settings.circuit_breaker_cooldown_ms,
        )
        deployment = self.deployments.deployment(model)
        return Candidate(model, provider, settings, breaker, deployment, balanced)

    def candidates(
        self,
        model: ModelConfig,
        can_serve: Callable[[ModelConfig], bool],
        affinity: Callable[[], str | None] | None = None,
        passed_over: list[Candidate] | None = None,
    ) -> Iterable[Candidate]:
        """The requested model's deployments in the order its strategy gives, then its
        `fallbacks` in order, or else every other enabled model of its role on another
        provider that can serve the request, cheapest and fastest first (each model's
        deployments balanced the same way). `can_serve` is asked of every entry but the
        requested one (whose problems the caller has answered already); `affinity` gives the
        request's key for models with `affinity = "prefix"`.

        Only the breakers take a provider out of rotation, as `FallbackModel` asks each in
        turn: an open one is passed over, and once its cooldown is over the next request
        for it is the half-open probe, wherever it stands. Health from probes only orders
        candidates of equal rank, and a definitive state (a refused or missing credential)
        drops a candidate while any other remains (added to `passed_over`, for the error
        when every candidate tried fails).

        The rest of the chain is only worked out if the first attempt fails: most requests
        never need it, and checking each fallback costs a budget check."""
        firsts = self._deployed(model, can_serve, affinity, requested=model)
        if not firsts:
            raise _disabled(model)
        dropped = [] if passed_over is None else passed_over
        if not self.config.failover_enabled:
            return self._viable(firsts, dropped)
        return self._chain(firsts, model, can_serve, affinity, dropped)

    def counting(self, model: ModelConfig) -> tuple[ModelConfig, ModelProvider]:
        """The deployment of `model` that counts a prompt's tokens, and its provider: the
        first one enabled on an enabled provider (the 404 a request for it would get, when
        none is)."""
        for entry in self.registry.deployments(model.model_id) or [model]:
            candidate = self._candidate(entry)
            if candidate is not None:
                return candidate.model, candidate.provider
        raise _disabled(model)

    def _chain(
        self,
        firsts: list[Candidate],
        model: ModelConfig,
        can_serve: Callable[[ModelConfig], bool],
        affinity: Callable[[], str | None] | None,
        dropped: list[Candidate],
    ) -> Iterator[Candidate]:
        viable, definitive = self._split(firsts)
        yield from viable
        others = self._viable(self._others(model, can_serve, affinity), dropped)
        if viable or others:
            dropped += definitive
            yield from others
        else:
            yield from firsts

    def _viable(self, chain: list[Candidate], dropped: list[Candidate]) -> list[Candidate]:
        """`chain` without the candidates whose provider's state says any request would
        fail (a refused or missing credential), which go to `dropped`; all of it when that
        leaves none, so the client gets the provider's own answer, and a credential mended
        since is noticed at once, not at the next probe."""
        kept, definitive = self._split(chain)
        if not kept:
            return chain
        dropped += definitive
        return kept

    def _split(self, chain: list[Candidate]) -> tuple[list[Candidate], list[Candidate]]:
        """`chain` as (the candidates to try, those whose provider's state is definitive)."""
        kept: list[Candidate] = []
        definitive: list[Candidate] = []
        for candidate in chain:
            (definitive if self._definitive(candidate) else kept).append(candidate)
        return kept, definitive

    def _deployed(
        self,
        model: ModelConfig,
        can_serve: Callable[[ModelConfig], bool],
        affinity: Callable[[], str | None] | None,
        requested: ModelConfig | None = None,
        elsewhere_than: frozenset[str] = frozenset(),
    ) -> list[Candidate]:
        """The deployments of `model` that can serve (and are not on a provider of
        `elsewhere_than`), in the order to try them: priority groups, each in its strategy's
        order or by affinity."""
        entries = self.registry.deployments(model.model_id) or [model]
        if len(entries) == 1 and not elsewhere_than:  # the usual case: nothing to balance
            only = entries[0]
            candidate = self._candidate(only)
            ok = candidate is not None and (only is requested or can_serve(only))
            return [candidate] if candidate is not None and ok else []
        by_key: dict[str, Candidate] = {}
        balanced = len(entries) > 1
        for entry in entries:
            if entry.provider_id in elsewhere_than:
                continue
            candidate = self._candidate(entry, balanced)
            if candidate is not None and (entry is requested or can_serve(entry)):
                by_key[candidate.deployment.key] = candidate
        key = affinity() if affinity is not None and model.affinity == "prefix" else None
        ordered = order(
            [c.deployment for c in by_key.values()],
            self.config.strategy_for(model),
            rng=self.rng,
            now=self.clock(),
            affinity_key=key,
        )
        return [by_key[d.key] for d in ordered]

    def _others(
        self,
        model: ModelConfig,
        can_serve: Callable[[ModelConfig], bool],
        affinity: Callable[[], str | None] | None,
    ) -> list[Candidate]:
        if model.fallbacks:
            # Each named fallback is a rank of its own: the order written is the order tried.
            chain: list[Candidate] = []
            for fallback_id in model.fallbacks:
                fallback = self.registry.get(fallback_id)
                if fallback is not None:
                    chain += self._deployed(fallback, can_serve, affinity)
            return chain
        # Other models of the role on other providers than this model's: ranked as models
        # (cheapest and fastest first; within a rank, those a probe found unwell last), each
        # then tried over its deployments on those other providers.
        serving = frozenset(
            {model.provider_id, *(m.provider_id for m in self.registry.deployments(model.model_id))}
        )
        pool: dict[str, list[ModelConfig]] = {}
        for m in self.registry.configured():
            another = m.model_id != model.model_id and m.provider_id not in serving
            if another and m.role == model.role:
                pool.setdefault(m.model_id, []).append(m)
        ranked = sorted(
            enumerate(pool.values()),
            key=lambda entry: (
                _COST[entry[1][0].cost_tier],
                _LATENCY[entry[1][0].latency_tier],
                not any(self._probed_well(m) for m in entry[1]),
                entry[0],
            ),
        )
        chain = []
        for _, entries in ranked:
            chain += self._deployed(entries[0], can_serve, affinity, elsewhere_than=serving)
        return chain

    def _probed_well(self, model: ModelConfig) -> bool:
        return self.health.get(model.provider_id).probed_well

    def _definitive(self, candidate: Candidate) -> bool:
        return self.health.get(candidate.provider.provider_id).state in DEFINITIVE

    # --- checks -----------------------------------------------------------------------

    def _chat_problem(
        self, request: ChatRequest, model: ModelConfig, facts: _ChatFacts | None = None
    ) -> ContextLengthExceeded | Unsupported | None:
        facts = facts or _ChatFacts(request)
        if facts.has_images and not model.vision:
            return Unsupported(f"model {model.model_id!r} does not accept images", param="messages")
        if (request.tools or request.functions) and not model.tool_calls:
            return Unsupported(f"model {model.model_id!r} does not support tools", param="tools")
        if request.wants_json and not model.json_mode:
            return Unsupported(
                f"model {model.model_id!r} does not support JSON mode", param="response_format"
            )
        provider = self.providers.get(model.provider_id)
        if provider is None:
            return None
        budget = token_budget(self.config, model)
        allowance = request.output_limit or model.max_output_tokens
        check = check_token_budget(
            request,
            provider.kind,
            budget=budget,
            output_allowance=allowance,
            bound=facts.bound(provider.kind),
        )
        if not check.fits:
            return ContextLengthExceeded(
                f"model {model.model_id!r} has a budget of {budget} tokens; the request needs "
                f"about {check.prompt_tokens} for its prompt plus {allowance} for the answer",
                param="messages",
            )
        return None

    def _fallback(self, plan: _Plan, ticket: Ticket | None) -> FallbackModel:
        deadline = time.monotonic() + self.config.request_timeout_ms / 1000
        route = RouteInfo()
        tag = REQUEST.get()
        if tag is not None:
            tag.trying = route
        return FallbackModel(
            _allowed(plan.candidates, ticket),
            route=route,
            deadline=deadline,
            health=self.health,
            metrics=self.metrics,
            deployments=self.deployments,
            estimate=plan.estimate,
            prompt_tokens=plan.prompt,
            passed_over=plan.passed_over,
        )

    async def _serve(self, plan: _Plan, call: Callable[[Candidate], Awaitable[T]]) -> Routed[T]:
        """Admit the request (the caller's limits), walk its candidates, and account for it
        however it ends."""
        ticket = await self._admit(plan, stream=False)
        fallback = self._fallback(plan, ticket)
        try:
            with TRACING.routing():
                value = await fallback.run(call)
        except BaseException as error:
            if ticket is not None and self.accounting is not None:
                self.accounting.settle_failed(ticket, fallback.route, error)
            raise
        if ticket is not None and self.accounting is not None:
            answer = getattr(value, "content", None)
            if ticket.answer is not None and isinstance(answer, str):
                ticket.answer.append(answer)
            self.accounting.settle(ticket, fallback.route, status=200)
        return Routed(value, fallback.route)

    async def _stream(
        self, plan: _Plan, open_: Callable[[Candidate], AsyncIterator[E]]
    ) -> Routed[AsyncIterator[E]]:
        """As `_serve`, for a stream: accounted when it ends, not when it opens."""
        ticket = await self._admit(plan, stream=True)
        fallback = self._fallback(plan, ticket)
        accounting = self.accounting

        def ended(outcome: BaseException | None) -> None:
            if ticket is None or accounting is None:
                return
            if outcome is None:
                accounting.settle(ticket, fallback.route, status=200)
            else:
                accounting.settle_failed(ticket, fallback.route, outcome)

        try:
            with TRACING.routing():
                stream = await fallback.stream(
                    open_, ended, ticket.answer if ticket is not None else None
                )
        except BaseException as error:
            ended(error)
            raise
        return Routed(stream, fallback.route)

    async def _admit(self, plan: _Plan, *, stream: bool) -> Ticket | None:
        TRACING.current().request_model(plan.model.model_id)
        if self.accounting is None:
            if CALLER.get().key is not None:
                # (Never a client key's limits silently gone.)
                raise PalyraError(
                    "client keys cannot be served before the daemon has started", status=503
                )
            return None
        return await self.accounting.admit(
            plan.model, plan.estimate, stream=stream, prompt=plan.text
        )

    # --- operations -------------------------------------------------------------------

    def _unhonoured(self, request: ChatRequest, model: ModelConfig) -> Unsupported | None:
        """What the provider of `model` cannot honour in `request`, as it would be handed it."""
        provider = self.providers.get(model.provider_id)
        return None if provider is None else provider.unsupported(provider.accepts(request))

    async def _chat_candidates(self, request: ChatRequest) -> _Plan:
        """The requested model, the candidates for `request`, and how to estimate its
        tokens (for the tpm limits of deployments and keys, corrected after)."""
        model = self.registry.resolve(request.model, ProviderModelRole.CHAT)
        facts = _ChatFacts(request)

        def prompt() -> int:
            # Bytes bound tokens from above; about four to a token in the usual text.
            provider = self.providers.get(model.provider_id)
            kind = provider.kind if provider else ModelProviderKind.OPENAI_COMPATIBLE
            return -(-facts.bound(kind) // 4)

        def estimate() -> int:
            # ... and the answer as long as the client allows.
            return prompt() + min(request.output_limit or 0, model.max_output_tokens)

        if not vocabulary_loaded() and self._may_count(request, facts):
            await load_vocabulary()
        problem = self._chat_problem(request, model, facts)
        if problem is not None:
            # Capabilities are per deployment: another of the model's may take it.
            able = [
                m
                for m in self.registry.deployments(model.model_id)
                if m is not model and self._chat_problem(request, m, facts) is None
            ]
            if not able:
                # Refused before any provider was tried; the headers still name the model.
                problem.route = RouteInfo(model.model_id, model.provider_id)
                raise problem
            model = able[0]

        # What a provider cannot honour depends on the provider, not on which of its
        # models: worked out once per provider however many of its models are candidates.
        unhonoured_by: dict[str, Unsupported | None] = {}

        def unhonoured_on(candidate: ModelConfig) -> Unsupported | None:
            if candidate.provider_id not in unhonoured_by:
                unhonoured_by[candidate.provider_id] = self._unhonoured(request, candidate)
            return unhonoured_by[candidate.provider_id]

        def can_serve(other: ModelConfig) -> bool:
            return (
                self._chat_problem(request, other, facts) is None and unhonoured_on(other) is None
            )

        passed: list[Candidate] = []
        candidates = self.candidates(model, can_serve, lambda: prefix_key(request), passed)
        unhonoured = unhonoured_on(model)
        if unhonoured is None:
            return _Plan(model, candidates, estimate, prompt, lambda: _prompt_text(request), passed)
        # The requested model's provider cannot honour the request: not a fault of the
        # request, so on to the candidates that can, and a 400 naming what and who when
        # none can (never a silent drop of what it could not do).
        capable = [c for c in candidates if c.model is not model]
        if not capable:
            unhonoured.route = RouteInfo(model.model_id, model.provider_id)
            raise unhonoured
        return _Plan(model, capable, estimate, prompt, lambda: _prompt_text(request), passed)

    def _may_count(self, request: ChatRequest, facts: _ChatFacts) -> bool:
        return may_need_counts(request, self.registry.chat_rooms(), facts.bound)

    def smallest_budget(self, model: ModelConfig) -> int:
        """The smallest token budget among `model` and the fallbacks it names: an embeddings
        input with more bytes than this has its tokens counted."""
        smallest = token_budget(self.config, model)
        for fallback_id in model.fallbacks:
            fallback = self.registry.get(fallback_id)
            if fallback is not None:
                smallest = min(smallest, token_budget(self.config, fallback))
        return smallest

    async def chat(
        self, request: ChatRequest, serve: ServeChat | None = None
    ) -> Routed[ChatResult]:
        """`serve`: how a dialect has a candidate answer, when it can do better than the
        provider's `chat` (passing its own wire format through natively); by default
        `provider.chat`."""
        plan = await self._chat_candidates(request)
        answer = serve or _provider_chat
        routed = await self._serve(
            plan, lambda c: answer(c.provider, c.provider.accepts(request), c.model)
        )
        usage = routed.value.usage
        self.metrics.count_tokens(
            routed.route.provider_id,
            routed.route.model_id,
            usage.prompt_tokens,
            usage.completion_tokens,
        )
        return routed

    async def stream_chat(
        self, request: ChatRequest, serve: ServeStream | None = None
    ) -> Routed[AsyncIterator[ChatDelta]]:
        """Opens the stream up to its first content token, failing over as needed, so that
        what the client sees is either an ordinary error or a normal stream. The stream's
        token counts are metered as they pass."""
        plan = await self._chat_candidates(request)
        open_ = serve or _provider_stream
        return await self._stream(
            plan, lambda c: open_(c.provider, c.provider.accepts(request), c.model)
        )

    async def embed(self, request: EmbeddingsRequest) -> Routed[EmbeddingsResult]:
        model = self.registry.resolve(request.model, ProviderModelRole.EMBEDDINGS)
        texts = request.texts()
        budget = token_budget(self.config, model)
        # Byte counts bound token counts from above: when every input's bytes fit the
        # smallest budget in play, the exact counts could change no decision below, and the
        # tokenizer need not run (nor its vocabulary be loaded).
        smallest = self.smallest_budget(model)
        lengths = [len(item) if isinstance(item, list) else text_bound(item) for item in texts]
        if max(lengths) > smallest:
            await load_vocabulary()
            lengths = [
                len(item) if isinstance(item, list) else estimate_text_tokens(item)
                for item in texts
            ]
        for i, tokens in enumerate(lengths):
            if tokens > budget:
                error = ContextLengthExceeded(
                    f"input[{i}] has about {tokens} tokens; "
                    f"model {model.model_id!r} takes {budget}",
                    param="input",
                )
                error.route = RouteInfo(model.model_id, model.provider_id)
                raise error
        # Vectors of different models live in different spaces: an embeddings request only
        # fails over to another deployment of its model or the fallbacks it names.
        longest = max(lengths)
        passed: list[Candidate] = []
        candidates = self.candidates(
            model,
            lambda m: (
                (m.model_id == model.model_id or bool(model.fallbacks))
                and token_budget(self.config, m) >= longest
            ),
            passed_over=passed,
        )
        # Byte bounds of texts unless counted above: about four bytes to a token.
        counted = max(lengths) > smallest
        total = sum(
            n if counted or isinstance(item, list) else -(-n // 4)
            for item, n in zip(texts, lengths, strict=True)
        )
        return await self._serve(
            _Plan(model, candidates, lambda: total, passed_over=passed),
            lambda c: c.provider.embed(request, c.model),
        )

    async def transcribe(self, request: TranscriptionRequest) -> Routed[TranscriptionResult]:
        model = self.registry.resolve(request.model, ProviderModelRole.AUDIO_TRANSCRIPTION)
        passed: list[Candidate] = []
        candidates = self.candidates(model, lambda m: True, passed_over=passed)
        return await self._serve(
            _Plan(model, candidates, passed_over=passed),
            lambda c: c.provider.transcribe(request, c.model),
        )

    async def stream_transcribe(
        self, request: TranscriptionRequest
    ) -> Routed[AsyncIterator[TranscriptionDelta]]:
        """A transcription as a stream, opened up to its first event and failed over like
        chat; only candidates whose provider kind can stream one are tried."""
        model = self.registry.resolve(request.model, ProviderModelRole.AUDIO_TRANSCRIPTION)
        provider = self.providers.get(model.provider_id)
        if provider is not None and not _streams_transcription(provider):
            refused = Unsupported(
                f"stream: provider {provider.provider_id} ({provider.kind}) cannot stream a "
                f"transcription (model {model.model_id!r}); send stream=false",
                param="stream",
            )
            refused.route = RouteInfo(model.model_id, model.provider_id)
            raise refused
        passed: list[Candidate] = []
        candidates = self.candidates(
            model,
            lambda m: (
                (p := self.providers.get(m.provider_id)) is not None and _streams_transcription(p)
            ),
            passed_over=passed,
        )
        return await self._stream(
            _Plan(model, candidates, passed_over=passed),
            lambda c: c.provider.stream_transcribe(request, c.model),
        )


def _prompt_text(request: ChatRequest) -> str:
    """A chat request's messages as the ledger keeps them (`[usage] log_payloads`)."""
    messages = [m.model_dump(mode="json", exclude_none=True) for m in request.messages]
    return orjson.dumps(messages).decode()


def _allowed(candidates: Iterable[Candidate], ticket: Ticket | None) -> Iterable[Candidate]:
    """A client key limited to some models is answered by those only, fallbacks included."""
    key = ticket.caller.key if ticket is not None else None
    if key is None or not key.models:
        return candidates
    return (c for c in candidates if key.allows(c.model.model_id))


def _streams_transcription(provider: ModelProvider) -> bool:
    # The base class refuses; a kind that streams transcriptions overrides the hook.
    return type(provider).stream_transcribe is not ModelProvider.stream_transcribe
