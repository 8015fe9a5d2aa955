"""Prometheus metrics, in a registry of the app's own (two apps in one process stay apart)."""

from __future__ import annotations

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

    def set_circuit(self, provider_id: str, state: CircuitState) -> None:
        self.circuit_state.labels(provider_id).set(_CIRCUIT_VALUES[state])

    def count_tokens(self, provider_id: str, model_id: str, prompt: int, completion: int) -> None:
        if prompt:
            self.tokens.labels(provider_id, model_id, "in").inc(prompt)
        if completion:
            self.tokens.labels(provider_id, model_id, "out").inc(completion)

    def render(self) -> bytes:
        return generate_latest(self.registry)
