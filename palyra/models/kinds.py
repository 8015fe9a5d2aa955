"""Provider kinds: one spec each, in one registry.

What differs from one kind to the next is written here once: the provider class, the base URL
of the public API, what a discovered model is assumed to handle, how a prompt is billed around
its text (applied by `palyra/tokens.py`), and how an API key is tried before it is stored
(`palyra/auth/api_key.py`). Code that needs any of it asks `spec_for(kind)`; a kind without a
spec is an error that names it and the kinds there are, never the OpenAI provider by default.

Adding a kind: a `ModelProviderKind` member, a provider module in this folder, one
`ProviderSpec` in `KINDS` below.

This module imports nothing of Palyra but the types and `palyra.ratelimits` (which imports
nothing of Palyra): `palyra.config` and `palyra.tokens` read it (config when it checks a
provider, not at import), and the provider modules import both, so a provider class is named
by a function that imports it when it is first built.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, Protocol

from palyra.ratelimits import UpstreamLimits, from_anthropic_headers, from_openai_headers
from palyra.types import ModelProviderKind

if TYPE_CHECKING:
    import aiohttp

    from palyra.config import ProviderConfig, ProviderSettings
    from palyra.models.base import CredentialSource, ModelProvider


class ProviderClass(Protocol):
    """What every kind's provider class is built with (one call for all kinds)."""

    kind: ModelProviderKind

    def __call__(
        self,
        config: ProviderConfig,
        *,
        session: aiohttp.ClientSession,
        settings: ProviderSettings,
        credentials: CredentialSource,
    ) -> ModelProvider: ...


@dataclass(frozen=True, slots=True)
class DiscoveryDefaults:
    """What a discovered chat model of this kind is assumed to handle (config can say more)."""

    max_context_tokens: int
    max_output_tokens: int


@dataclass(frozen=True, slots=True)
class TokenRules:
    """How a provider of this kind bills a prompt around its text, as `palyra/tokens.py`
    estimates it (text itself is counted with o200k_base for every kind)."""

    # The o200k count of the text is multiplied by num/den: a correction where o200k only
    # stands in for the kind's own tokenizer.
    text_scale: tuple[int, int] = (1, 1)
    # A system prompt the provider adds whenever a request has tools.
    tools_prompt: int = 0
    # Whose published image accounting applies: OpenAI's 512px tiles (with `detail`), or
    # Anthropic's pixels / 750 after resizing.
    images: Literal["openai_tiles", "anthropic_pixels"] = "openai_tiles"


@dataclass(frozen=True, slots=True)
class CredentialCheck:
    """How an API key for this kind is tried before it is stored: GET `models_path` under
    the provider's base URL with `headers(key)` (cheap, and any key that can do anything can
    list models). The key is stored under the auth profile `profile_id` unless the client
    names another."""

    profile_id: str
    models_path: str
    headers: Callable[[str], dict[str, str]]


# An answer's headers -> what they say of the upstream's rate limits, None when nothing.
RateLimitParser = Callable[[Mapping[str, str]], UpstreamLimits | None]


@dataclass(frozen=True, slots=True)
class ProviderSpec:
    kind: ModelProviderKind
    # Imports and returns the provider class (see the module docstring for why a function).
    provider: Callable[[], ProviderClass]
    # None: the kind talks to no upstream, so it takes no base_url, no key and no pool.
    default_base_url: str | None
    discovery: DiscoveryDefaults
    tokens: TokenRules
    # None: the kind takes no credential.
    credential: CredentialCheck | None
    # Reads the upstream's rate-limit headers off an answer; None: the kind's upstream sends
    # none (or it has no upstream).
    rate_limits: RateLimitParser | None = None

    @property
    def offline(self) -> bool:
        return self.default_base_url is None


class UnknownProviderKind(ValueError):
    """A kind the registry has no spec for (a ValueError, so config validation reports it as
    a problem with the key that named it)."""


class ProviderKinds:
    """The registry: one spec per kind."""

    def __init__(self, *specs: ProviderSpec) -> None:
        self._specs: dict[ModelProviderKind, ProviderSpec] = {}
        for spec in specs:
            if spec.kind in self._specs:
                raise ValueError(f"provider kind {spec.kind.value!r} has two specs")
            self._specs[spec.kind] = spec

    def spec(self, kind: ModelProviderKind) -> ProviderSpec:
        found = self._specs.get(kind)
        if found is None:
            known = ", ".join(k.value for k in self._specs)
            raise UnknownProviderKind(
                f"provider kind {getattr(kind, 'value', kind)!r} has no spec in "
                f"palyra/models/kinds.py; known kinds: {known}"
            )
        return found

    def __contains__(self, kind: object) -> bool:
        return kind in self._specs

    def __iter__(self) -> Iterator[ProviderSpec]:
        return iter(self._specs.values())


# --- the kinds -------------------------------------------------------------------------------


def _openai_provider() -> ProviderClass:
    from palyra.models.openai import OpenAIProvider

    return OpenAIProvider


def _anthropic_provider() -> ProviderClass:
    from palyra.models.anthropic import AnthropicProvider

    return AnthropicProvider


def _deterministic_provider() -> ProviderClass:
    from palyra.models.deterministic import DeterministicProvider

    return DeterministicProvider


def _bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def _anthropic_key(key: str) -> dict[str, str]:
    from palyra.models.anthropic import ANTHROPIC_VERSION

    return {"x-api-key": key, "anthropic-version": ANTHROPIC_VERSION}


KINDS = ProviderKinds(
    ProviderSpec(
        kind=ModelProviderKind.OPENAI_COMPATIBLE,
        provider=_openai_provider,
        default_base_url="https://api.openai.com/v1",
        discovery=DiscoveryDefaults(max_context_tokens=128000, max_output_tokens=16384),
        # OpenAI's published accounting is what tokens.py does by default.
        tokens=TokenRules(),
        credential=CredentialCheck("openai-api-key", "/models", _bearer),
        rate_limits=from_openai_headers,
    ),
    ProviderSpec(
        kind=ModelProviderKind.ANTHROPIC,
        provider=_anthropic_provider,
        default_base_url="https://api.anthropic.com",
        discovery=DiscoveryDefaults(max_context_tokens=200000, max_output_tokens=8192),
        tokens=TokenRules(
            # Claude's tokenizer is not published, so o200k stands in for it. Claude's
            # vocabulary is smaller, so the same text splits into more pieces than o200k
            # makes; scaling by 1.1 moves the estimate towards the real count without refusing
            # prompts that would fit. A judgement, not a measurement: near the limit the
            # upstream still has the final say.
            text_scale=(11, 10),
            # Anthropic's documentation gives 346 tokens (tool_choice auto/none), the larger
            # of its two figures.
            tools_prompt=346,
            images="anthropic_pixels",
        ),
        credential=CredentialCheck("anthropic-api-key", "/v1/models", _anthropic_key),
        rate_limits=from_anthropic_headers,
    ),
    ProviderSpec(
        kind=ModelProviderKind.DETERMINISTIC,
        provider=_deterministic_provider,
        default_base_url=None,
        discovery=DiscoveryDefaults(max_context_tokens=128000, max_output_tokens=16384),
        # It reports usage as an OpenAI model would bill it.
        tokens=TokenRules(),
        credential=None,
    ),
)


# The public API of each kind that has one.
DEFAULT_BASE_URLS = {s.kind: s.default_base_url for s in KINDS if s.default_base_url is not None}


def spec_for(kind: ModelProviderKind) -> ProviderSpec:
    """The spec of `kind`; `UnknownProviderKind` naming it and the known kinds if none."""
    return KINDS.spec(kind)
