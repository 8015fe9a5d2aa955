"""A deployment's status row as `DeploymentBoard.view()` gives it (gateway status, the CLI,
the console and /metrics read these), for tests that feed one in."""

from __future__ import annotations

from typing import Any


def deployment_row(model_id: str, provider_id: str, **overrides: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "model_id": model_id,
        "provider_id": provider_id,
        "weight": 1,
        "priority": 0,
        "strategy": "weighted",
        "in_flight": 0,
        "requests_last_minute": 0,
        "tokens_last_minute": 0,
        "rpm_limit": 0,
        "tpm_limit": 0,
        "ttft_ms": None,
        "share": 0.0,
        "dispatched": 0,
        "skipped": None,
        "upstream": None,
    }
    return {**row, **overrides}
