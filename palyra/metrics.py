"""Prometheus metrics, in a registry of the app's own (two apps in one process stay apart).

The request path goes through the methods below rather than `.labels()`: prometheus_client
validates and locks on every `.labels()` call (about 4 µs), so each labelled child is looked
up once and kept in a plain dict.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from palyra.breaker import CircuitState

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
_CIRCUIT_VALUES = {CircuitState.CLOSED: 0, CircuitState.HALF_OPEN: 1, CircuitState.OPEN: 2}


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "palyra_requests",
            "Inference requests answered",
            ["route", "model", "status"],
            registry=r,
        )
        self.upstream_errors = Counter(
            "palyra_upstream_errors",
            "Failed upstream attempts by error class",
            ["provider", "error_class"],
            registry=r,
        )
        self.retries = Counter(
            "palyra_retries", "Retries of the same candidate", ["provider"], registry=r
        )
        self.failovers = Counter(
            "palyra_failovers",
            "Moves from a failed candidate to the next",
            ["from_provider"],
            registry=r,
        )
        self.circuit_state = Gauge(
            "palyra_circuit_state",
            "Circuit breaker state: 0 closed, 1 half_open, 2 open",
            ["provider"],
            registry=r,
        )
        self.upstream_latency = Histogram(
            "palyra_upstream_latency_seconds",
            "Upstream call latency (to the first token for streams)",
            ["provider", "model"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.tokens = Counter(
            "palyra_tokens",
            "Tokens billed upstream",
            ["provider", "model", "direction"],
            registry=r,
        )

        # (metric, label values) -> child. Label values are bounded (route templates,
        # configured and discovered models, providers, statuses), as they are in the metric.
        self._children: dict[tuple[object, tuple[str, ...]], Any] = {}
        self._circuit_now: dict[str, int] = {}

    def _child(self, metric: Any, *labels: str) -> Any:
        key = (metric, labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    def count_request(self, route: str, model_id: str, status: int) -> None:
        self._child(self.requests, route, model_id, str(status)).inc()

    def observe_upstream(self, provider_id: str, model_id: str, seconds: float) -> None:
        self._child(self.upstream_latency, provider_id, model_id).observe(seconds)

    def count_upstream_error(self, provider_id: str, error_class: str) -> None:
        self._child(self.upstream_errors, provider_id, error_class).inc()

    def count_retry(self, provider_id: str) -> None:
        self._child(self.retries, provider_id).inc()

    def count_failover(self, from_provider: str) -> None:
        self._child(self.failovers, from_provider).inc()

    def set_circuit(self, provider_id: str, state: CircuitState) -> None:
        value = _CIRCUIT_VALUES[state]
        # Called after every upstream answer; the gauge only needs touching when it moves.
        if self._circuit_now.get(provider_id) != value:
            self._child(self.circuit_state, provider_id).set(value)
            self._circuit_now[provider_id] = value

    def count_tokens(self, provider_id: str, model_id: str, prompt: int, completion: int) -> None:
        if prompt:
            self._child(self.tokens, provider_id, model_id, "in").inc(prompt)
        if completion:
            self._child(self.tokens, provider_id, model_id, "out").inc(completion)

    def render(self) -> bytes:
        return generate_latest(self.registry)
