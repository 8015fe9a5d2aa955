"""What the budget tests share: a fixed noon to spend at and a client key as the budget book
sees one."""

from __future__ import annotations

from dataclasses import dataclass

DAY_MS = 86_400_000
# 2026-11-26 12:00 UTC, a Thursday.
NOON = 1_795_694_400_000


@dataclass(frozen=True)
class Key:
    """A client key as palyra.keys.ClientKey has it: UTC days, weeks from Monday."""

    key_id: str = "key_a"
    name: str = "ci-bot"
    budget_usd: float | None = 1.0
    budget_period: str = "day"

    def budget_window(self, now_ms: int) -> tuple[int, int]:
        day = now_ms // DAY_MS
        if self.budget_period == "day":
            return day * DAY_MS, (day + 1) * DAY_MS
        if self.budget_period == "week":
            monday = day - (day + 3) % 7
            return monday * DAY_MS, (monday + 7) * DAY_MS
        assert self.budget_period == "total"
        return 0, 2**62
