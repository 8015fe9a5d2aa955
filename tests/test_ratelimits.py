"""Reading upstreams' rate-limit headers: real header sets, odd ones, broken ones."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import astuple
from datetime import UTC, datetime

import pytest
from multidict import CIMultiDict, CIMultiDictProxy

from palyra.ratelimits import (
    UNKNOWN_RESET_S,
    UpstreamLimits,
    from_anthropic_headers,
    from_openai_headers,
)
from tests.fakes import anthropic_wire, openai_wire
from tests.fakes.replies import RateLimits

# 2025-08-21T12:40:49Z: the resets below are counted from it.
NOW = datetime(2025, 8, 21, 12, 40, 49, tzinfo=UTC).timestamp()


def openai(**overrides: str) -> dict[str, str]:
    """A chat completion answer's headers as OpenAI sends them."""
    headers = {
        "content-type": "application/json",
        "x-request-id": "req_0123",
        "x-ratelimit-limit-requests": "5000",
        "x-ratelimit-limit-tokens": "160000",
        "x-ratelimit-remaining-requests": "4999",
        "x-ratelimit-remaining-tokens": "159976",
        "x-ratelimit-reset-requests": "12ms",
        "x-ratelimit-reset-tokens": "9ms",
    }
    headers.update(overrides)
    return headers


def anthropic(**overrides: str) -> dict[str, str]:
    """A message answer's headers as Anthropic sends them."""
    headers = {
        "content-type": "application/json",
        "request-id": "req_011CSLsW7mFqvHHnzrKdKjAE",
        "anthropic-ratelimit-requests-limit": "1000",
        "anthropic-ratelimit-requests-remaining": "999",
        "anthropic-ratelimit-requests-reset": "2025-08-21T12:40:59Z",
        "anthropic-ratelimit-tokens-limit": "96000",
        "anthropic-ratelimit-tokens-remaining": "96000",
        "anthropic-ratelimit-tokens-reset": "2025-08-21T12:41:09Z",
        "anthropic-ratelimit-input-tokens-limit": "80000",
        "anthropic-ratelimit-input-tokens-remaining": "80000",
        "anthropic-ratelimit-input-tokens-reset": "2025-08-21T12:40:59Z",
        "anthropic-ratelimit-output-tokens-limit": "16000",
        "anthropic-ratelimit-output-tokens-remaining": "16000",
        "anthropic-ratelimit-output-tokens-reset": "2025-08-21T12:41:00Z",
    }
    headers.update(overrides)
    return headers


# --- OpenAI ----------------------------------------------------------------------------------


def test_openai_answer_headers() -> None:
    limits = from_openai_headers(openai())
    assert limits is not None
    assert astuple(limits) == (4999, 159976, pytest.approx(0.012), pytest.approx(0.009))


def test_openai_headers_as_aiohttp_hands_them_over_any_case() -> None:
    raw = CIMultiDict({"X-RateLimit-Remaining-Requests": "0", "X-RateLimit-Reset-Requests": "6m0s"})
    limits = from_openai_headers(CIMultiDictProxy(raw))
    assert limits == UpstreamLimits(0, None, 360.0, None)
    assert limits.exhausted_for_s() == 360.0


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("1s", 1.0),
        ("6m0s", 360.0),
        ("20ms", 0.02),
        ("1m30.5s", 90.5),
        ("0.5s", 0.5),
        ("0s", 0.0),
        ("1h2m3s", 3723.0),
        ("1h0m0s", 3600.0),
        ("2m59.56s", 179.56),
        ("7.66s", 7.66),
        ("100us", 0.0001),
        ("250\u00b5s", 0.00025),
        ("1500ns", 0.0000015),
        (" 17ms ", 0.017),
        # Bare seconds, as some OpenAI-compatible servers send.
        ("30", 30.0),
        ("0.25", 0.25),
    ],
)
def test_openai_reset_durations(text: str, seconds: float) -> None:
    limits = from_openai_headers(openai(**{"x-ratelimit-reset-requests": text}))
    assert limits is not None
    assert limits.requests_reset_s == pytest.approx(seconds)


@pytest.mark.parametrize(
    "text",
    ["", "soon", "-1s", "1x", "s", "ms", "1.2.3s", "1s 2m", "nan", "inf", "1e999", "-5",
     "10d", "2s-", "1m30", "99999h"],
)  # fmt: skip
def test_unreadable_resets_are_ignored_and_the_rest_kept(text: str) -> None:
    limits = from_openai_headers(openai(**{"x-ratelimit-reset-tokens": text}))
    assert limits is not None
    assert astuple(limits) == (4999, 159976, pytest.approx(0.012), None)


@pytest.mark.parametrize(
    "text", ["", "-1", "abc", "1.5", "1e3", "0x10", "\u0663", "12 34", "99999999999999999999"]
)
def test_unreadable_counts_are_ignored_and_the_rest_kept(text: str) -> None:
    limits = from_openai_headers(openai(**{"x-ratelimit-remaining-requests": text}))
    assert limits is not None
    assert limits.remaining_requests is None
    assert limits.remaining_tokens == 159976
    assert limits.exhausted_for_s() is None


def test_headers_saying_nothing_readable_are_no_limits() -> None:
    broken = {
        "x-ratelimit-remaining-requests": "lots",
        "x-ratelimit-remaining-tokens": "",
        "x-ratelimit-reset-requests": "1s",
    }
    assert from_openai_headers(broken) is None


def test_tokens_alone_are_read() -> None:
    headers = {"x-ratelimit-remaining-tokens": "0", "x-ratelimit-reset-tokens": "1m0s"}
    limits = from_openai_headers(headers)
    assert limits == UpstreamLimits(None, 0, None, 60.0)
    assert limits.exhausted_for_s() == 60.0


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"content-type": "application/json", "x-request-id": "req_1"},
        # Another family's, and the draft standard's: not OpenAI's headers.
        {"anthropic-ratelimit-requests-remaining": "5"},
        {"ratelimit-remaining": "5", "x-ratelimit-remaining": "5"},
    ],
)
def test_no_openai_headers_no_limits(headers: dict[str, str]) -> None:
    assert from_openai_headers(headers) is None


class Counting(Mapping[str, str]):
    """Headers that count how often they are looked into."""

    def __init__(self, headers: dict[str, str]) -> None:
        self._headers = headers
        self.lookups = 0

    def __getitem__(self, key: str) -> str:
        self.lookups += 1
        return self._headers[key]

    def __contains__(self, key: object) -> bool:
        self.lookups += 1
        return key in self._headers

    def __iter__(self) -> Iterator[str]:
        raise AssertionError("the parser walked every header")

    def __len__(self) -> int:
        return len(self._headers)


def test_an_answer_without_the_headers_costs_a_few_lookups() -> None:
    plain = {f"h{n}": "v" for n in range(30)}
    headers = Counting(plain)
    assert from_openai_headers(headers) is None
    assert headers.lookups <= 2
    headers = Counting(plain)
    assert from_anthropic_headers(headers) is None
    assert headers.lookups <= 4


# --- Anthropic -------------------------------------------------------------------------------


def test_anthropic_answer_headers() -> None:
    # Tokens are the scarcest of tokens / input / output: output's 16000, resetting at :00.
    assert from_anthropic_headers(anthropic(), now=NOW) == UpstreamLimits(
        remaining_requests=999, remaining_tokens=16000, requests_reset_s=10.0, tokens_reset_s=11.0
    )


def test_anthropic_exhausted_input_tokens_rest_until_their_reset() -> None:
    headers = anthropic(
        **{
            "anthropic-ratelimit-input-tokens-remaining": "0",
            "anthropic-ratelimit-input-tokens-reset": "2025-08-21T12:41:19Z",
        }
    )
    limits = from_anthropic_headers(headers, now=NOW)
    assert limits is not None
    assert (limits.remaining_tokens, limits.tokens_reset_s) == (0, 30.0)
    assert limits.exhausted_for_s() == 30.0


def test_anthropic_equal_counts_take_the_later_reset() -> None:
    headers = {
        "anthropic-ratelimit-tokens-remaining": "0",
        "anthropic-ratelimit-tokens-reset": "2025-08-21T12:40:50Z",
        "anthropic-ratelimit-output-tokens-remaining": "0",
        "anthropic-ratelimit-output-tokens-reset": "2025-08-21T12:41:49Z",
    }
    assert from_anthropic_headers(headers, now=NOW) == UpstreamLimits(None, 0, None, 60.0)


def test_anthropic_429_says_no_requests_left() -> None:
    headers = anthropic(**{"anthropic-ratelimit-requests-remaining": "0", "retry-after": "10"})
    limits = from_anthropic_headers(headers, now=NOW)
    assert limits is not None
    assert limits.exhausted_for_s() == 10.0


@pytest.mark.parametrize(
    ("stamp", "seconds"),
    [
        ("2025-08-21T12:40:59Z", 10.0),
        ("2025-08-21T12:40:59.5Z", 10.5),
        ("2025-08-21T13:40:59+01:00", 10.0),
        ("2025-08-21T12:40:59+00:00", 10.0),
        ("2025-08-21T12:40:59", 10.0),  # no offset: read as UTC
        ("2025-08-21T12:40:00Z", 0.0),  # already past
    ],
)
def test_anthropic_reset_timestamps(stamp: str, seconds: float) -> None:
    headers = anthropic(**{"anthropic-ratelimit-requests-reset": stamp})
    limits = from_anthropic_headers(headers, now=NOW)
    assert limits is not None
    assert limits.requests_reset_s == pytest.approx(seconds)


@pytest.mark.parametrize(
    "stamp", ["", "soon", "10", "2025-13-45T99:99:99Z", "Thu, 21 Aug 2025 12:40:59 GMT",
              "2030-01-01T00:00:00Z", "9999-12-31T23:59:59Z" * 4],
)  # fmt: skip
def test_anthropic_unreadable_resets_are_ignored(stamp: str) -> None:
    headers = anthropic(**{"anthropic-ratelimit-requests-reset": stamp})
    limits = from_anthropic_headers(headers, now=NOW)
    assert limits is not None
    assert (limits.remaining_requests, limits.requests_reset_s) == (999, None)
    assert limits.remaining_tokens == 16000


def test_anthropic_unreadable_counts_are_ignored() -> None:
    headers = anthropic(
        **{
            "anthropic-ratelimit-requests-remaining": "n/a",
            "anthropic-ratelimit-output-tokens-remaining": "-3",
        }
    )
    limits = from_anthropic_headers(headers, now=NOW)
    # Output's count unread, tokens are the lesser of tokens and input: input's 80000.
    assert limits == UpstreamLimits(None, 80000, 10.0, 10.0)


def test_anthropic_input_and_output_alone_are_read() -> None:
    headers = {
        "anthropic-ratelimit-output-tokens-remaining": "12",
        "anthropic-ratelimit-output-tokens-reset": "2025-08-21T12:40:51Z",
    }
    assert from_anthropic_headers(headers, now=NOW) == UpstreamLimits(None, 12, None, 2.0)


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"request-id": "req_1", "retry-after": "3"},
        {"x-ratelimit-remaining-requests": "5"},
        {"anthropic-ratelimit-requests-remaining": "soon"},
        # The unified (subscription) family says nothing per model.
        {"anthropic-ratelimit-unified-status": "allowed", "anthropic-ratelimit-unified-reset": "1"},
    ],
)
def test_no_anthropic_headers_no_limits(headers: dict[str, str]) -> None:
    assert from_anthropic_headers(headers, now=NOW) is None


def test_anthropic_resets_are_counted_from_the_clock_by_default() -> None:
    headers = {
        "anthropic-ratelimit-requests-remaining": "0",
        "anthropic-ratelimit-requests-reset": "2000-01-01T00:00:00Z",
    }
    limits = from_anthropic_headers(headers)
    assert limits == UpstreamLimits(0, None, 0.0, None)


# --- exhaustion ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("limits", "rest"),
    [
        (UpstreamLimits(5, 100, 1.0, 2.0), None),
        (UpstreamLimits(None, None, 1.0, 2.0), None),
        (UpstreamLimits(0, 100, 1.5, 2.0), 1.5),
        (UpstreamLimits(5, 0, 1.5, 2.0), 2.0),
        (UpstreamLimits(0, 0, 7.0, 2.0), 7.0),
        (UpstreamLimits(0, None, None, None), UNKNOWN_RESET_S),
        (UpstreamLimits(0, 0, None, 30.0), 30.0),
        (UpstreamLimits(0, None, 0.0, None), 0.0),
    ],
)
def test_exhausted_for(limits: UpstreamLimits, rest: float | None) -> None:
    assert limits.exhausted_for_s() == rest


# --- what the fake upstreams send --------------------------------------------------------


@pytest.mark.parametrize("reset_s", [0.02, 0.12, 1.0, 7.66, 90.5, 360.0, 3723.25, 0.00025])
def test_the_fake_openai_headers_read_back(reset_s: float) -> None:
    state = RateLimits(requests_remaining=3, tokens_remaining=0, tokens_reset_s=reset_s)
    limits = from_openai_headers(openai_wire.rate_limit_headers(state))
    assert limits is not None
    assert astuple(limits) == (3, 0, pytest.approx(0.12), pytest.approx(reset_s))


def test_the_fake_go_durations_are_gos() -> None:
    got = [openai_wire.go_duration(s) for s in (0, 0.02, 1, 90.5, 360, 3600, 0.00025)]
    assert got == ["0s", "20ms", "1s", "1m30.5s", "6m0s", "1h0m0s", "250\u00b5s"]


def test_the_fake_anthropic_headers_read_back() -> None:
    state = RateLimits(
        requests_remaining=0,
        requests_reset_s=10,
        tokens_remaining=500,
        output_tokens_remaining=20,
        output_tokens_reset_s=4.2,
        clock=lambda: NOW,
    )
    headers = anthropic_wire.rate_limit_headers(state)
    assert headers["anthropic-ratelimit-requests-reset"] == "2025-08-21T12:40:59Z"
    # Whole seconds, rounded up: 4.2 s is announced as 5.
    assert from_anthropic_headers(headers, now=NOW) == UpstreamLimits(0, 20, 10.0, 5.0)
