"""Live model discovery: what each provider offers now, merged with what config declares.

A configured entry always wins over a discovered one with the same id; a discovered model
gets the default capabilities of its provider's kind (its spec in palyra/models/kinds.py). A
failed discovery keeps the last good list.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field

import structlog

from palyra.config import ModelConfig
from palyra.errors import PalyraError
from palyra.models.base import ModelProvider
from palyra.models.kinds import spec_for
from palyra.redact import redact_secrets
from palyra.state.db import Database
from palyra.types import ProviderModelRole

log = structlog.get_logger("palyra.discovery")


def guess_role(model_id: str) -> ProviderModelRole:
    lowered = model_id.lower()
    if "embed" in lowered:
        return ProviderModelRole.EMBEDDINGS
    if "whisper" in lowered or "transcribe" in lowered:
        return ProviderModelRole.AUDIO_TRANSCRIPTION
    return ProviderModelRole.CHAT


def discovered_model(model_id: str, provider: ModelProvider) -> ModelConfig:
    role = guess_role(model_id)
    if role is ProviderModelRole.CHAT:
        # What a chat model of the provider's kind is assumed to handle (its spec says).
        defaults = spec_for(provider.kind).discovery
        context, output = defaults.max_context_tokens, defaults.max_output_tokens
    else:
        context, output = 8192, 1
    return ModelConfig(
        model_id=model_id,
        provider_id=provider.provider_id,
        role=role,
        discovered=True,
        max_context_tokens=context,
        max_output_tokens=output,
    )


@dataclass(slots=True)
class DiscoveryState:
    model_ids: list[str] = field(default_factory=list)
    last_success_at_ms: int | None = None
    last_attempt_at_ms: int | None = None
    last_error: str | None = None


MIGRATIONS = [
    """
    CREATE TABLE discovered_models (
        provider_id TEXT PRIMARY KEY,
        model_ids TEXT NOT NULL,
        discovered_at_ms BIGINT NOT NULL
    )
    """,
]


class Discovery:
    """Runs discovery and keeps each provider's last good list, in memory for routing and
    in the state store so a restart starts from it."""

    def __init__(self, timeout_s: float) -> None:
        self.states: dict[str, DiscoveryState] = {}
        self._timeout_s = timeout_s
        self._db: Database | None = None

    async def load(self, db: Database) -> None:
        """Take the lists kept by the last run; discovery then refreshes them."""
        self._db = db
        await db.migrate("discovery", MIGRATIONS)
        for row in await db.fetch_all(
            "SELECT provider_id, model_ids, discovered_at_ms FROM discovered_models"
        ):
            state = self.state(str(row["provider_id"]))
            state.model_ids = list(json.loads(row["model_ids"]))
            state.last_success_at_ms = int(row["discovered_at_ms"])

    async def _save(self, provider_id: str, state: DiscoveryState) -> None:
        if self._db is None:
            return
        try:
            await self._db.execute(
                "INSERT INTO discovered_models (provider_id, model_ids, discovered_at_ms)"
                " VALUES (?, ?, ?) ON CONFLICT (provider_id) DO UPDATE SET"
                " model_ids = excluded.model_ids, discovered_at_ms = excluded.discovered_at_ms",
                provider_id,
                json.dumps(state.model_ids),
                state.last_success_at_ms or 0,
            )
        except Exception as exc:  # the store being down must not stop routing
            log.warning("discovery_not_saved", provider=provider_id, error=str(exc)[:200])

    def state(self, provider_id: str) -> DiscoveryState:
        return self.states.setdefault(provider_id, DiscoveryState())

    async def discover(self, provider: ModelProvider) -> DiscoveryState:
        state = self.state(provider.provider_id)
        state.last_attempt_at_ms = int(time.time() * 1000)
        try:
            ids = await asyncio.wait_for(provider.list_models(), self._timeout_s)
        except (PalyraError, TimeoutError) as exc:
            message = exc.message if isinstance(exc, PalyraError) else "timed out"
            state.last_error = redact_secrets(message)
            log.warning("discovery_failed", provider=provider.provider_id, error=state.last_error)
            return state
        state.model_ids = sorted(set(ids))
        state.last_success_at_ms = state.last_attempt_at_ms
        state.last_error = None
        await self._save(provider.provider_id, state)
        return state

    def models(self, providers: list[ModelProvider]) -> list[ModelConfig]:
        """Every discovered model, in provider order, as registry entries."""
        found: list[ModelConfig] = []
        for provider in providers:
            state = self.states.get(provider.provider_id)
            if state is None or not provider.config.discovery:
                continue
            found.extend(discovered_model(mid, provider) for mid in state.model_ids)
        return found
