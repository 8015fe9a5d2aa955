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
    """The record as the table's parameters, `usage_id` first; text bounded and NUL-free."""
    name = MAX_NAME_CHARS
    return (
        usage_id,
        int(r.at_ms),
        _text(r.request_id, name) or "",
        _text(r.key_id, name),
        _text(r.key_name, name),
        _text(r.agent_id, name),
        _text(r.route, name) or "",
        _text(r.model, name) or "",
        _text(r.provider, name) or "",
        _text(r.deployment, name) or "",
        int(r.status),
        _count(r.input_tokens),
        _count(r.output_tokens),
        _count(r.cached_tokens),
        _count(r.reasoning_tokens),
        None if r.cost_usd is None else float(r.cost_usd),
        1 if r.cost_estimated else 0,
        float(r.latency_ms),
        None if r.ttft_ms is None else float(r.ttft_ms),
        _count(r.retries),
        _count(r.failovers),
        _text(r.error, MAX_ERROR_CHARS),
        1 if r.stream else 0,
        _text(r.prompt, MAX_PAYLOAD_CHARS),
        _text(r.answer, MAX_PAYLOAD_CHARS),
    )
