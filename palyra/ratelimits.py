"""What an upstream's own rate-limit headers say: how much is left and when it comes back.

OpenAI (and the servers that copy it) send `x-ratelimit-remaining-requests` / `-tokens` with
`x-ratelimit-reset-requests` / `-tokens` as Go durations ("6m0s", "20ms", "1m30.5s");
Anthropic sends `anthropic-ratelimit-{requests,tokens,input-tokens,output-tokens}-remaining`
with `-reset` as RFC 3339 timestamps. Both are read into one `UpstreamLimits`.

These run on every upstream answer while a listener is set, so an answer without the headers
costs a lookup or two; a header that cannot be read is ignored, never an error: a quirky
upstream must not fail a request that succeeded.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

# How long a deployment rests when the upstream says nothing is left but not until when:
# short, so an upstream that never sends a reset is retried soon rather than shunned.
UNKNOWN_RESET_S = 1.0


@dataclass(frozen=True, slots=True)
class UpstreamLimits:
    """None: the upstream did not say (or said something unreadable)."""

    remaining_requests: int | None
    remaining_tokens: int | None
    # Seconds from when the answer came until the limit is back to full.
    requests_reset_s: float | None
    tokens_reset_s: float | None

    def exhausted_for_s(self) -> float | None:
        """Seconds the deployment must rest because a remaining count is 0, else None."""
        rest: float | None = None
        if self.remaining_requests == 0:
            rest = UNKNOWN_RESET_S if self.requests_reset_s is None else self.requests_reset_s
        if self.remaining_tokens == 0:
            tokens = UNKNOWN_RESET_S if self.tokens_reset_s is None else self.tokens_reset_s
            rest = tokens if rest is None else max(rest, tokens)
        return rest


# (upstream model name, what its answer's headers said)
LimitsListener = Callable[[str, UpstreamLimits], None]


def from_openai_headers(headers: Mapping[str, str]) -> UpstreamLimits | None:
    """The limits in OpenAI's `x-ratelimit-*` headers, or None when there are none."""
    requests = headers.get("x-ratelimit-remaining-requests")
    tokens = headers.get("x-ratelimit-remaining-tokens")
    if requests is None and tokens is None:
        return None
    limits = UpstreamLimits(
        remaining_requests=_count(requests),
        remaining_tokens=_count(tokens),
        requests_reset_s=_duration(headers.get("x-ratelimit-reset-requests")),
        tokens_reset_s=_duration(headers.get("x-ratelimit-reset-tokens")),
    )
    return None if _empty(limits) else limits


_ANTHROPIC_TOKEN_KINDS = ("tokens", "input-tokens", "output-tokens")


def from_anthropic_headers(
    headers: Mapping[str, str], now: float | None = None
) -> UpstreamLimits | None:
    """The limits in Anthropic's `anthropic-ratelimit-*` headers, or None when there are none.
    Tokens are the scarcest of the tokens / input-tokens / output-tokens limits, with that
    limit's reset. `now`: epoch seconds the resets are counted from (the clock by default)."""
    requests = headers.get("anthropic-ratelimit-requests-remaining")
    if requests is None and not any(
        f"anthropic-ratelimit-{kind}-remaining" in headers for kind in _ANTHROPIC_TOKEN_KINDS
    ):
        return None
    when = time.time() if now is None else now
    tokens: int | None = None
    tokens_reset: float | None = None
    for kind in _ANTHROPIC_TOKEN_KINDS:
        left = _count(headers.get(f"anthropic-ratelimit-{kind}-remaining"))
        if left is None:
            continue
        reset = _timestamp(headers.get(f"anthropic-ratelimit-{kind}-reset"), when)
        # Of equal counts, the later reset: the deployment is short until then.
        if (
            tokens is None
            or left < tokens
            or (left == tokens and reset is not None and (tokens_reset or 0.0) < reset)
        ):
            tokens, tokens_reset = left, reset
    limits = UpstreamLimits(
        remaining_requests=_count(requests),
        remaining_tokens=tokens,
        requests_reset_s=_timestamp(headers.get("anthropic-ratelimit-requests-reset"), when),
        tokens_reset_s=tokens_reset,
    )
    return None if _empty(limits) else limits


def _empty(limits: UpstreamLimits) -> bool:
    return limits.remaining_requests is None and limits.remaining_tokens is None


# Past any real limit; a larger count is nonsense and read as no count.
_MAX_COUNT = 2**53 - 1


def _count(text: str | None) -> int | None:
    if text is None:
        return None
    text = text.strip()
    if not text.isdigit() or not text.isascii() or len(text) > 16:
        return None
    value = int(text)
    return value if value <= _MAX_COUNT else None


# Go's time.Duration text: one or more number+unit parts, "1h2m3.5s", "20ms", "0s".
_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")
_DURATION = re.compile(f"(?:{_PART.pattern})+")
_UNIT_S = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,
    "μs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
}
# A reset further off than a day is not a per-minute limit's; read as no reset.
_MAX_RESET_S = 86_400.0


def _duration(text: str | None) -> float | None:
    """Seconds in a Go duration ("6m0s"), or in a bare number of seconds (as some
    OpenAI-compatible servers send); None for anything else."""
    if text is None:
        return None
    text = text.strip()
    if not text or len(text) > 64:
        return None
    if text[0].isdigit() or text[0] == ".":
        try:
            seconds = float(text)
        except ValueError:
            pass
        else:
            return seconds if math.isfinite(seconds) and seconds <= _MAX_RESET_S else None
    if not _DURATION.fullmatch(text):
        return None
    seconds = sum(float(number) * _UNIT_S[unit] for number, unit in _PART.findall(text))
    return seconds if seconds <= _MAX_RESET_S else None


def _timestamp(text: str | None, now: float) -> float | None:
    """Seconds from `now` (epoch) until an RFC 3339 time; 0 for one already past."""
    if text is None or len(text) > 64:
        return None
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        return None
    if when.tzinfo is None:
        # RFC 3339 always has an offset; one without is most likely UTC, as Anthropic's are.
        when = when.replace(tzinfo=UTC)
    seconds = when.timestamp() - now
    if not math.isfinite(seconds) or seconds > _MAX_RESET_S:
        return None
    return max(0.0, seconds)
