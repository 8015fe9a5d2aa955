"""Prices per deployment (config keys, else the built-in table) and the cost of a Usage."""

from __future__ import annotations

import datetime
import math
from typing import Any

import pytest

from palyra.config import ModelConfig
from palyra.pricing import (
    CACHE_WRITE_FACTOR,
    PRICES_TAKEN,
    Price,
    builtin_price,
    cost,
    price_for,
)
from palyra.types import Usage


def deployment(upstream: str = "", model_id: str = "m", **fields: Any) -> ModelConfig:
    return ModelConfig(model_id=model_id, provider_id="p", upstream_model=upstream, **fields)


def test_prices_taken_is_a_real_date() -> None:
    assert datetime.date.fromisoformat(PRICES_TAKEN) <= datetime.date(2026, 11, 26)


@pytest.mark.parametrize(
    ("name", "base"),
    [
        ("gpt-4o-mini-2024-07-18", "gpt-4o-mini"),
        ("gpt-4o-2024-08-06", "gpt-4o"),
        ("gpt-4.1-2025-04-14", "gpt-4.1"),
        ("gpt-5-nano-2025-08-07", "gpt-5-nano"),
        ("o4-mini-2025-04-16", "o4-mini"),
        ("claude-sonnet-4-5-20250929", "claude-sonnet-4-5"),
        ("claude-sonnet-4-20250514", "claude-sonnet-4"),
        ("claude-sonnet-4-0", "claude-sonnet-4"),
        ("claude-haiku-4-5-20251001", "claude-haiku-4-5"),
        ("claude-opus-4-1-20250805", "claude-opus-4-1"),
        ("claude-3-5-haiku-latest", "claude-3-5-haiku"),
        ("GPT-4o-Mini", "gpt-4o-mini"),
    ],
)
def test_snapshots_and_aliases_map_to_their_base_entry(name: str, base: str) -> None:
    price = builtin_price(name)
    assert price is not None and price == builtin_price(base)


def test_similar_names_are_not_confused() -> None:
    # Exact names after the snapshot suffix, not prefixes: gpt-4o-mini is not gpt-4o.
    mini, full = builtin_price("gpt-4o-mini"), builtin_price("gpt-4o")
    assert mini is not None and full is not None and mini != full
    assert builtin_price("claude-sonnet-4-5") != builtin_price("claude-opus-4-1")


@pytest.mark.parametrize(
    "name",
    [
        "whisper-1",  # billed per minute of audio
        "o3",  # its cached price could not be confirmed
        "gpt-4o-2024-05-13",  # a snapshot priced apart from gpt-4o
        "gpt-4o-mini-transcribe",
        "gpt-4o-2024",  # not a snapshot suffix
        "deterministic",
        "my-local-llama",
        "",
    ],
)
def test_models_without_a_confirmed_token_price_have_none(name: str) -> None:
    assert builtin_price(name) is None


def test_every_entry_is_a_sane_price() -> None:
    from palyra.pricing import _BUILTIN

    for name, price in _BUILTIN.items():
        assert name == name.lower() and builtin_price(name) is price, name
        assert price.input > 0 and price.output >= 0, name
        assert 0 < price.cached_input <= price.input, name
        assert price.cache_write_price >= price.input, name
        assert all(math.isfinite(v) for v in (price.input, price.output, price.cached_input))


def test_a_few_published_prices() -> None:
    assert builtin_price("gpt-4o-mini") == Price(0.15, 0.60, 0.075)
    assert builtin_price("gpt-5-nano") == Price(0.05, 0.40, 0.005)
    assert builtin_price("claude-sonnet-4-5") == Price(3.0, 15.0, 0.30, 3.75)
    assert builtin_price("claude-opus-4-1") == Price(15.0, 75.0, 1.50, 18.75)


def test_price_for_uses_the_upstream_name_then_the_model_id() -> None:
    assert price_for(deployment("gpt-4o-mini-2024-07-18", model_id="cheap")) == builtin_price(
        "gpt-4o-mini"
    )
    assert price_for(deployment(model_id="claude-haiku-4-5")) == builtin_price("claude-haiku-4-5")
    assert price_for(deployment("my-local-llama")) is None


def test_config_keys_win_when_any_is_set() -> None:
    model = deployment(
        "gpt-4o",
        input_cost_per_mtok=1.0,
        output_cost_per_mtok=2.0,
        cached_input_cost_per_mtok=0.25,
    )
    assert price_for(model) == Price(1.0, 2.0, 0.25)
    # Only output set: the table is not consulted for the rest.
    assert price_for(deployment("gpt-4o", output_cost_per_mtok=3.0)) == Price(0.0, 3.0, 0.0)
    # Config keys price a model the table does not know.
    assert price_for(deployment("my-local-llama", input_cost_per_mtok=0.1)) == Price(0.1, 0.0, 0.1)


def test_a_configured_input_price_without_a_cached_one_gives_no_discount() -> None:
    price = price_for(deployment("x", input_cost_per_mtok=4.0, output_cost_per_mtok=8.0))
    assert price == Price(4.0, 8.0, 4.0)


def test_cost_bills_fresh_cached_written_and_output_tokens_apart() -> None:
    price = Price(input=2.0, output=10.0, cached_input=0.5, cache_write=3.0)
    usage = Usage(
        prompt_tokens=1_000_000,  # of which 200k read from the cache and 100k written to it
        completion_tokens=500_000,  # of which 100k reasoning, billed as output
        cached_tokens=200_000,
        cache_creation_tokens=100_000,
        reasoning_tokens=100_000,
    )
    expected = 0.7 * 2.0 + 0.2 * 0.5 + 0.1 * 3.0 + 0.5 * 10.0
    result = cost(price, usage)
    assert result is not None and math.isclose(result, expected)


def test_cache_writes_default_to_a_quarter_above_input() -> None:
    price = Price(input=4.0, output=0.0, cached_input=0.4)
    assert price.cache_write_price == 4.0 * CACHE_WRITE_FACTOR == 5.0
    result = cost(price, Usage(prompt_tokens=1_000_000, cache_creation_tokens=1_000_000))
    assert result is not None and math.isclose(result, 5.0)


def test_cost_of_a_small_openai_request() -> None:
    # 1,234 prompt tokens of which 1,024 cached, 56 out, on gpt-4o-mini.
    usage = Usage(prompt_tokens=1234, completion_tokens=56, cached_tokens=1024)
    result = cost(builtin_price("gpt-4o-mini"), usage)
    expected = (210 * 0.15 + 1024 * 0.075 + 56 * 0.60) / 1_000_000
    assert result is not None and math.isclose(result, expected)


def test_unknown_price_is_unknown_cost_not_zero() -> None:
    assert cost(None, Usage(prompt_tokens=10, completion_tokens=5)) is None
    assert cost(Price(1.0, 1.0, 1.0), Usage()) == 0.0


def test_inconsistent_usage_never_gives_a_negative_cost() -> None:
    # An upstream that reports more cached tokens than prompt tokens.
    result = cost(Price(1.0, 1.0, 0.1), Usage(prompt_tokens=10, cached_tokens=50))
    assert result is not None and result >= 0
