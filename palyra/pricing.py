"""What a request cost: a model's price per million tokens, and the cost of a Usage at it.

A deployment's own `input_cost_per_mtok` / `output_cost_per_mtok` / `cached_input_cost_per_mtok`
win; with none set, the built-in table below is looked up by the upstream model name. With
neither, the cost is unknown (None), never a guessed 0.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from palyra.config import ModelConfig
    from palyra.types import Usage

# Anthropic bills a write to the prompt cache (5-minute lifetime, the default) at 1.25 x the
# input price; a 1-hour write costs 2 x, but the usage does not say which lifetime was used, so
# a 1-hour write is costed low.
CACHE_WRITE_FACTOR: Final = 1.25


@dataclass(frozen=True, slots=True)
class Price:
    """USD per million tokens."""

    input: float
    output: float
    cached_input: float  # input read from the provider's prompt cache
    # Input written to the prompt cache; None: CACHE_WRITE_FACTOR x input.
    cache_write: float | None = None

    @property
    def cache_write_price(self) -> float:
        return self.input * CACHE_WRITE_FACTOR if self.cache_write is None else self.cache_write


# The date the built-in prices were read. Prices change: a deployment's config keys override.
PRICES_TAKEN: Final = "2026-11-26"

# Standard (not Batch, Flex or Priority) prices, USD per million tokens.
#
# OpenAI: developers.openai.com/api/docs/models/<model> (gpt-5-mini, gpt-5-nano; the GPT-5
# row of the gpt-5-codex page) and developers.openai.com/api/docs/pricing as quoted, with the
# same figures, by several independent price lists read 2026-11-26 (gpt-4o, gpt-4o-mini,
# gpt-4.1 family, o4-mini, embeddings). Cached input is 50 % of input for gpt-4o and o4-mini,
# 25 % for the gpt-4.1 family, 10 % for the gpt-5 family.
# Left out: o3 (cached-input price found two ways: 0.50 and 1.00), the gpt-4o-2024-05-13
# snapshot (priced apart from gpt-4o), and whisper-1, which is billed per minute of audio,
# not per token, so no token price fits it.
#
# Anthropic: platform.claude.com/docs/en/about-claude/pricing ("Model pricing": base input,
# 5m cache writes, cache hits, output) for Opus 4.1, Sonnet 4 and Haiku 3.5; the model pages
# platform.claude.com/docs/*/models/{sonnet-4-5,haiku-4-5}/overview for those two, with the
# cache multipliers of the same pricing page (hits 0.1 x input, 5m writes 1.25 x input).
# Not modelled: Sonnet 4's long-context rate (over 200K input tokens, with the 1M beta).
_BUILTIN: Final[dict[str, Price]] = {
    # OpenAI
    "gpt-4o": Price(input=2.50, output=10.00, cached_input=1.25),
    "gpt-4o-mini": Price(input=0.15, output=0.60, cached_input=0.075),
    "gpt-4.1": Price(input=2.00, output=8.00, cached_input=0.50),
    "gpt-4.1-mini": Price(input=0.40, output=1.60, cached_input=0.10),
    "gpt-4.1-nano": Price(input=0.10, output=0.40, cached_input=0.025),
    "o4-mini": Price(input=1.10, output=4.40, cached_input=0.275),
    "gpt-5": Price(input=1.25, output=10.00, cached_input=0.125),
    "gpt-5-mini": Price(input=0.25, output=2.00, cached_input=0.025),
    "gpt-5-nano": Price(input=0.05, output=0.40, cached_input=0.005),
    # Embeddings: input only, no prompt cache.
    "text-embedding-3-small": Price(input=0.02, output=0.0, cached_input=0.02),
    "text-embedding-3-large": Price(input=0.13, output=0.0, cached_input=0.13),
    # Anthropic
    "claude-opus-4-1": Price(input=15.00, output=75.00, cached_input=1.50, cache_write=18.75),
    "claude-sonnet-4-5": Price(input=3.00, output=15.00, cached_input=0.30, cache_write=3.75),
    "claude-sonnet-4": Price(input=3.00, output=15.00, cached_input=0.30, cache_write=3.75),
    "claude-haiku-4-5": Price(input=1.00, output=5.00, cached_input=0.10, cache_write=1.25),
    "claude-3-5-haiku": Price(input=0.80, output=4.00, cached_input=0.08, cache_write=1.00),
}

# Other names the providers publish for a table entry.
_ALIASES: Final[dict[str, str]] = {"claude-sonnet-4-0": "claude-sonnet-4"}

# Snapshots whose price differs from their base model's: never mapped to it.
_PRICED_APART: Final = frozenset({"gpt-4o-2024-05-13"})

# A snapshot's suffix: OpenAI's -2024-07-18, Anthropic's -20250929, and -latest.
_SNAPSHOT = re.compile(r"-(?:\d{4}-\d{2}-\d{2}|\d{8}|latest)$")


# Asked at every request's settling, for a handful of names: the answer is kept (the table
# never changes while the daemon runs).
@lru_cache(maxsize=1024)
def builtin_price(upstream_model: str) -> Price | None:
    """The built-in price of an upstream model name, its snapshots mapped to their base entry
    ("gpt-4o-mini-2024-07-18" -> "gpt-4o-mini"); None when the table has no such model."""
    name = upstream_model.strip().lower()
    if name in _PRICED_APART:
        return None
    for candidate in (name, _SNAPSHOT.sub("", name)):
        candidate = _ALIASES.get(candidate, candidate)
        price = _BUILTIN.get(candidate)
        if price is not None:
            return price
    return None


def price_for(model: ModelConfig) -> Price | None:
    """The deployment's price: its config keys when any is non-zero, else the built-in table's
    by upstream model name, else None (unknown).

    A configured input price without a cached one bills cached input at the input price: no
    discount is assumed that the config did not state.
    """
    if model.input_cost_per_mtok or model.output_cost_per_mtok or model.cached_input_cost_per_mtok:
        return Price(
            input=model.input_cost_per_mtok,
            output=model.output_cost_per_mtok,
            cached_input=model.cached_input_cost_per_mtok or model.input_cost_per_mtok,
        )
    return builtin_price(model.upstream_name)


def cost(price: Price | None, usage: Usage) -> float | None:
    """USD for `usage` at `price`; None when the price is unknown.

    prompt_tokens include the cached reads (billed at cached_input) and the cache writes
    (billed at cache_write_price); the rest of the prompt at input. completion_tokens include
    the reasoning tokens, all billed at output.
    """
    if price is None:
        return None
    cached = max(usage.cached_tokens, 0)
    written = max(usage.cache_creation_tokens, 0)
    fresh = max(usage.prompt_tokens - cached - written, 0)
    total = (
        fresh * price.input
        + cached * price.cached_input
        + written * price.cache_write_price
        + max(usage.completion_tokens, 0) * price.output
    )
    return total / 1_000_000
