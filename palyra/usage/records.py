"""One inference request as the ledger keeps it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# Prompt and answer text (only with `[usage] log_payloads = true`) is kept up to this many
# characters each: the queue is bounded by count, so one record must not be unbounded.
MAX_PAYLOAD_CHARS = 32_768
# What a short text column keeps (route, model, ids); error messages keep a little more.
MAX_NAME_CHARS = 256
MAX_ERROR_CHARS = 2_000


@dataclass(slots=True)
class UsageRecord:
    at_ms: int  # wall-clock epoch ms when the request arrived
    request_id: str
    key_id: str | None  # the client key; None for the admin token and for agent runs
    key_name: str | None
    agent_id: str | None
    route: str  # the route template, e.g. /v1/chat/completions
    model: str
    provider: str
    deployment: str
    status: int  # HTTP status answered; 499 for a client that went away
    input_tokens: int
    output_tokens: int
    cached_tokens: int
    reasoning_tokens: int
    cost_usd: float | None  # None: no price known
    cost_estimated: bool  # the tokens were Palyra's count, not the upstream's
    latency_ms: float
    ttft_ms: float | None
    retries: int
    failovers: int
    error: str | None
    stream: bool
    prompt: str | None = None
    answer: str | None = None


# The table's columns after usage_id, in the order `row` gives them.
COLUMNS = (
    "at_ms",
    "request_id",
    "key_id",
    "key_name",
    "agent_id",
    "route",
    "model",
    "provider",
    "deployment",
    "status",
    "input_tokens",
    "output_tokens",
    "cached_tokens",
    "reasoning_tokens",
    "cost_usd",
    "cost_estimated",
    "latency_ms",
    "ttft_ms",
    "retries",
    "failovers",
    "error",
    "stream",
    "prompt",
    "answer",
)


def _text(value: str | None, limit: int) -> str | None:
    if value is None:
        return None
    # PostgreSQL text cannot hold NUL; a request id or an error may carry one from a client.
    value = str(value)
    if "\x00" in value:
        value = value.replace("\x00", "\ufffd")
    return value if len(value) <= limit else value[:limit]


def _count(value: Any) -> int:
    # asyncpg checks types strictly: BIGINT columns get ints, never None or floats.
    return max(int(value or 0), 0)


def row(usage_id: str, r: UsageRecord) -> tuple[Any, ...]:
    """The record as the table's parameters, `usage_id` first; text bounded and NUL-free,
    counts non-negative ints. The usual record needs no mending, which one pass over its
    names and counts finds: a record a request, so this runs at every request."""
    names: tuple[str | None, ...] = (
        r.request_id,
        r.key_id,
        r.key_name,
        r.agent_id,
        r.route,
        r.model,
        r.provider,
        r.deployment,
    )
    for name in names:
        if name is not None and (
            name.__class__ is not str or len(name) > MAX_NAME_CHARS or "\x00" in name
        ):
            names = tuple(_text(value, MAX_NAME_CHARS) for value in names)
            break
    counts: tuple[Any, ...] = (
        r.input_tokens,
        r.output_tokens,
        r.cached_tokens,
        r.reasoning_tokens,
        r.retries,
        r.failovers,
    )
    for count in counts:
        if count.__class__ is not int or count < 0:
            counts = tuple(_count(value) for value in counts)
            break
    request_id, key_id, key_name, agent_id, route, model, provider, deployment = names
    cost_usd, ttft_ms = r.cost_usd, r.ttft_ms
    return (
        usage_id,
        int(r.at_ms),
        request_id or "",
        key_id,
        key_name,
        agent_id,
        route or "",
        model or "",
        provider or "",
        deployment or "",
        int(r.status),
        counts[0],
        counts[1],
        counts[2],
        counts[3],
        None if cost_usd is None else float(cost_usd),
        1 if r.cost_estimated else 0,
        float(r.latency_ms),
        None if ttft_ms is None else float(ttft_ms),
        counts[4],
        counts[5],
        None if r.error is None else _text(r.error, MAX_ERROR_CHARS),
        1 if r.stream else 0,
        None if r.prompt is None else _text(r.prompt, MAX_PAYLOAD_CHARS),
        None if r.answer is None else _text(r.answer, MAX_PAYLOAD_CHARS),
    )
