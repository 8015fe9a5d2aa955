"""A clock the test moves: cooldowns, windows and resets without sleeping."""

from __future__ import annotations


class FakeClock:
    """Monotonic time that moves only when told."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now
