"""Usage-ledger test parts: a record with every field set, and waiting on a condition."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from palyra.usage.records import UsageRecord

T0 = int(datetime(2027, 1, 15, tzinfo=UTC).timestamp() * 1000)
HOUR = 3_600_000
DAY = 86_400_000


def usage_record(**overrides: Any) -> UsageRecord:
    fields: dict[str, Any] = {
        "at_ms": T0,
        "request_id": "req_1",
        "key_id": None,
        "key_name": None,
        "agent_id": None,
        "route": "/v1/chat/completions",
        "model": "gpt-4o",
        "provider": "openai",
        "deployment": "gpt-4o@openai",
        "status": 200,
        "input_tokens": 100,
        "output_tokens": 50,
        "cached_tokens": 0,
        "reasoning_tokens": 0,
        "cost_usd": 0.01,
        "cost_estimated": False,
        "latency_ms": 120.5,
        "ttft_ms": None,
        "retries": 0,
        "failovers": 0,
        "error": None,
        "stream": False,
    }
    fields.update(overrides)
    return UsageRecord(**fields)


async def until(condition: Callable[[], bool], timeout_s: float = 5) -> None:
    """Return once `condition()` holds; fail after `timeout_s`."""
    async with asyncio.timeout(timeout_s):
        while not condition():
            await asyncio.sleep(0.001)
