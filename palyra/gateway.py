"""The model-provider service: providers, the router, and the background work that keeps
the router's view fresh (discovery, health probes). The HTTP layer talks to this."""

from __future__ import annotations

import asyncio
import functools
from typing import Any

from palyra.breaker import BreakerBoard, CircuitBreaker, CircuitState
from palyra.channel import Channel, ChannelDecisions, ChannelRateCounter
from palyra.config import ModelProviderConfig
from palyra.deployments import DeploymentBoard
from palyra.discovery import Discovery
from palyra.errors import NotFound
from palyra.health import DEFINITIVE, HealthBoard, ProviderHealth, probe, probe_all
from palyra.metrics import Metrics
from palyra.models import ProviderSessions, build_providers
from palyra.models.base import CredentialSource, ModelProvider
from palyra.models.kinds import spec_for
from palyra.ratecounter import RedisRateCounter
from palyra.routing import ModelRegistry, Router
from palyra.shared import SharedState
from palyra.state.db import Database
from palyra.tasks import cancel_and_wait, run_periodically
from palyra.tokens import load_vocabulary

PROBE_TIMEOUT_S = 10.0


class Gateway:
    def __init__(
        self,
        config: ModelProviderConfig,
        *,
        credentials: CredentialSource,
        metrics: Metrics | None = None,
        redis_url: str = "",
        channel: Channel | None = None,
    ) -> None:
        """`channel`: to the other workers of this daemon ([daemon] workers > 1); without
        `redis_url`, breakers, health and rate counts are shared through it."""
        self.config = config
        self._redis_url = redis_url
        self._channel = None if redis_url else channel
        self.shared: SharedState | None = None
        self.metrics = metrics or Metrics()
        self._credentials = credentials
        self._sessions = ProviderSessions()
        # Filled by start(): the pooled HTTP sessions need a running event loop.
        self.providers: dict[str, ModelProvider] = {}
        self.registry = ModelRegistry(config)
        self.health = HealthBoard(config.health_degraded_latency_ms)
        self.breakers = BreakerBoard()
        # With Redis, a deployment's rpm/tpm counts are one for every daemon sharing it.
        self.rate_counter: RedisRateCounter | ChannelRateCounter | None = None
        if redis_url:
            self.rate_counter = RedisRateCounter(redis_url)
        elif self._channel is not None:
            # ... and with workers, one for every worker.
            self.rate_counter = ChannelRateCounter(self._channel)
        self.deployments = DeploymentBoard(
            counter=self.rate_counter, default_strategy=config.load_balancing
        )
        self.metrics.watch_deployments(self.deployments.view)
        self.discovery = Discovery(timeout_s=PROBE_TIMEOUT_S)
        self.router = Router(
            config,
            self.registry,
            self.providers,
            breakers=self.breakers,
            health=self.health,
            metrics=self.metrics,
            deployments=self.deployments,
        )
        self._tasks: list[asyncio.Task[None]] = []
        self._periodic: list[asyncio.Task[None]] = []
        # Shared state syncs the decisions of these providers: the list is kept, its contents
        # replaced on reload.
        self._provider_ids: list[str] = []
        # Providers of configs replaced by a reload: closed with the gateway, since a request
        # that began before the reload may still be using one.
        self._retired: list[ModelProvider] = []

    async def start(self, db: Database | None = None) -> None:
        """Open the HTTP pool, build the providers, and start discovery and health probes
        in the background; neither blocks a request. With a state store, the models found
        by the last run are routable at once."""
        if db is not None:
            await self.discovery.load(db)
        self.providers.update(self._build_providers(self.config))
        for model in self.config.models:
            self.deployments.deployment(model)  # listed in the status before any traffic
        self.registry.set_discovered(self.discovery.models(list(self.providers.values())))
        self._load_vocabulary_if_offline()
        self._provider_ids[:] = list(self.providers)
        store = ChannelDecisions(self._channel) if self._channel else self._redis_url
        if store:
            self.shared = SharedState(
                store,
                breakers=self.breakers,
                breaker_for=self.breaker,
                health=self.health,
                provider_ids=self._provider_ids,
            )
            self.shared.start()
        self._start_periodic()

    def _build_providers(self, config: ModelProviderConfig) -> dict[str, ModelProvider]:
        providers = build_providers(config, sessions=self._sessions, credentials=self._credentials)
        for provider in providers.values():
            provider.limits_listener = functools.partial(
                self.deployments.observe_limits, provider.provider_id
            )
        return providers

    def _load_vocabulary_if_offline(self) -> None:
        if any(spec_for(p.kind).offline for p in self.providers.values()):
            # An offline provider counts the usage it reports on every answer itself:
            # load the vocabulary now, in the background, not in its first request.
            self._tasks.append(asyncio.create_task(load_vocabulary()))

    def _start_periodic(self) -> None:
        self._periodic = [
            asyncio.create_task(
                run_periodically(self.config.discovery_ttl_ms / 1000, self.discover, "discovery")
            ),
            asyncio.create_task(
                run_periodically(self.config.health_ttl_ms / 1000, self.test_connection, "health")
            ),
        ]

    async def reload(self, config: ModelProviderConfig) -> None:
        """Serve `config` from now on. A request already routed keeps the router, registry
        and providers it started with until it ends (it holds them); the next request finds
        the new ones. Breakers, health, deployments' counts and discovered models carry over
        for providers and deployments that stay."""
        providers = self._build_providers(config)
        registry = ModelRegistry(config)
        for model in config.models:
            self.deployments.deployment(model)
        registry.set_discovered(self.discovery.models(list(providers.values())))
        router = Router(
            config,
            registry,
            providers,
            breakers=self.breakers,
            health=self.health,
            metrics=self.metrics,
            deployments=self.deployments,
        )
        router.accounting = self.router.accounting
        self._retired += self.providers.values()
        # One assignment after another, with no await between: no request sees a mix.
        self.config, self.registry, self.providers, self.router = (
            config,
            registry,
            providers,
            router,
        )
        self.deployments.default_strategy = config.load_balancing
        for provider_config in config.providers:
            # A breaker is made once per provider: its settings follow the config here.
            breaker = self.breakers.peek(provider_config.provider_id)
            if breaker is not None:
                settings = config.settings_for(provider_config)
                breaker.failure_threshold = settings.circuit_breaker_failure_threshold
                breaker.cooldown_s = settings.circuit_breaker_cooldown_ms / 1000
        self.deployments.retain(config.models)
        self.health.degraded_latency_ms = config.health_degraded_latency_ms
        self._provider_ids[:] = list(providers)
        self._load_vocabulary_if_offline()
        # Periods may have changed; and providers new to this config are discovered and
        # probed now rather than at the next period.
        await cancel_and_wait(*self._periodic)
        self._start_periodic()

    def breaker(self, provider_id: str) -> CircuitBreaker:
        provider = self.config.provider(provider_id)
        settings = self.config.settings_for(provider) if provider else None
        return self.breakers.get(
            provider_id,
            settings.circuit_breaker_failure_threshold if settings else 3,
            settings.circuit_breaker_cooldown_ms if settings else 30000,
        )

    async def aclose(self) -> None:
        if self.shared is not None:
            await self.shared.aclose()
        await self.deployments.drain()
        if isinstance(self.rate_counter, RedisRateCounter):
            await self.rate_counter.aclose()
        await cancel_and_wait(*self._tasks, *self._periodic)
        for provider in [*self._retired, *self.providers.values()]:
            await provider.aclose()
        await self._sessions.close()

    def _selected(self, provider_id: str | None) -> list[ModelProvider]:
        if provider_id is None:
            return list(self.providers.values())
        provider = self.providers.get(provider_id)
        if provider is None:
            raise NotFound(f"no provider {provider_id!r} is configured", param="provider_id")
        return [provider]

    async def discover(self, provider_id: str | None = None) -> dict[str, Any]:
        targets = [
            p
            for p in self._selected(provider_id)
            if p.config.enabled and p.config.discovery and not spec_for(p.kind).offline
        ]
        await asyncio.gather(*(self.discovery.discover(p) for p in targets))
        self.registry.set_discovered(self.discovery.models(list(self.providers.values())))
        return {p.provider_id: self._discovery_view(p.provider_id) for p in targets}

    async def test_connection(self, provider_id: str | None = None) -> dict[str, Any]:
        targets = self._selected(provider_id)
        if provider_id is not None:
            await probe(targets[0], self.health, PROBE_TIMEOUT_S)
        else:
            await probe_all(targets, self.health, PROBE_TIMEOUT_S)
        return {p.provider_id: self._health_view(self.health.get(p.provider_id)) for p in targets}

    # --- status -----------------------------------------------------------------------

    def _discovery_view(self, provider_id: str) -> dict[str, Any]:
        state = self.discovery.state(provider_id)
        return {
            "model_ids": state.model_ids,
            "last_success_at_ms": state.last_success_at_ms,
            "last_attempt_at_ms": state.last_attempt_at_ms,
            "last_error": state.last_error,
        }

    @staticmethod
    def _health_view(health: ProviderHealth) -> dict[str, Any]:
        return {
            "state": health.state.value,
            "last_probe_at_ms": health.last_probe_at_ms,
            "last_probe_latency_ms": health.last_probe_latency_ms,
            "last_error": health.last_error,
            "last_error_at_ms": health.last_error_at_ms,
        }

    def _circuit_view(self, provider_id: str) -> dict[str, Any]:
        breaker = self.breakers.peek(provider_id)
        if breaker is None:
            return {"state": CircuitState.CLOSED.value, "retry_after_ms": 0, "failures": 0}
        return {
            "state": breaker.state.value,
            "retry_after_ms": round(breaker.retry_after_s() * 1000),
            "failures": breaker.failures,
        }

    def status(self) -> dict[str, Any]:
        providers = []
        for provider in self.providers.values():
            pid = provider.provider_id
            providers.append(
                {
                    "provider_id": pid,
                    "kind": provider.kind.value,
                    "enabled": provider.config.enabled,
                    "base_url": provider.config.base_url or None,
                    "health": self._health_view(self.health.get(pid)),
                    "circuit": self._circuit_view(pid),
                    "discovery": self._discovery_view(pid) if provider.config.discovery else None,
                    "configured_models": [
                        m.model_id for m in self.registry.configured() if m.provider_id == pid
                    ],
                }
            )
        models = [
            {
                "model_id": model.model_id,
                "provider_id": model.provider_id,
                "role": model.role.value,
                "source": "discovered" if model.discovered else "configured",
                **self._availability(model.model_id, model.provider_id, model.enabled),
            }
            for model in self.registry.models()
        ]
        return {
            "providers": providers,
            "models": models,
            "deployments": self.deployments.view(),
        }

    def _availability(self, model_id: str, provider_id: str, enabled: bool) -> dict[str, Any]:
        provider = self.providers.get(provider_id)
        if not enabled:
            return {"available": False, "reason": "model disabled in config"}
        if provider is None or not provider.config.enabled:
            return {"available": False, "reason": f"provider {provider_id} disabled"}
        circuit = self._circuit_view(provider_id)
        if circuit["state"] == CircuitState.OPEN.value:
            seconds = circuit["retry_after_ms"] / 1000
            return {"available": False, "reason": f"circuit open; retry in {seconds:.1f} s"}
        health = self.health.get(provider_id)
        if health.state in DEFINITIVE:
            return {"available": False, "reason": f"provider {health.state.value}"}
        if circuit["state"] == CircuitState.HALF_OPEN.value:
            return {"available": True, "reason": "circuit half-open: next request probes"}
        return {"available": True, "reason": f"provider {health.state.value}"}
