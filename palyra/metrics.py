"""Prometheus metrics, in a registry of the app's own (two apps in one process stay apart).

The request path goes through the methods below rather than `.labels()`: prometheus_client
validates and locks on every `.labels()` call, so each labelled child is looked
up once and kept in a plain dict. What every request counts (its status, tokens, cost and
upstream latency) is added up in plain dicts and handed to prometheus_client when /metrics
is read: one `inc` is five calls and a lock, and a request made seven of them. With several
workers each adds at once instead, to its file that the others' scrapes read.

Per-deployment figures are read at scrape time from the deployment board's view (a custom
collector), so the request path pays nothing for them.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import structlog
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from palyra.breaker import CircuitState

if TYPE_CHECKING:
    from palyra.usage.records import UsageRecord

# Observations the request path keeps before handing them over unasked.
FLUSH_OBSERVATIONS = 1024
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
_CIRCUIT_VALUES = {CircuitState.CLOSED: 0, CircuitState.HALF_OPEN: 1, CircuitState.OPEN: 2}

log = structlog.get_logger("palyra.metrics")

# Set by palyra.workers for each worker process (before prometheus_client is imported, which
# then keeps every value in a file there): /metrics adds up all the workers'.
_MULTIPROCESS_DIR = os.environ.get("PROMETHEUS_MULTIPROC_DIR", "")

DeploymentView = Callable[[], list[dict[str, Any]]]

# (metric name, help, row field): gauges read straight from a view() row.
_DEPLOYMENT_GAUGES = (
    ("palyra_deployment_in_flight", "Requests in flight to the deployment", "in_flight"),
    (
        "palyra_deployment_requests_last_minute",
        "Requests dispatched to the deployment in the last 60 s",
        "requests_last_minute",
    ),
    (
        "palyra_deployment_tokens_last_minute",
        "Tokens used by the deployment in the last 60 s",
        "tokens_last_minute",
    ),
    ("palyra_deployment_rpm_limit", "Requests per minute allowed (0: no limit)", "rpm_limit"),
    ("palyra_deployment_tpm_limit", "Tokens per minute allowed (0: no limit)", "tpm_limit"),
    (
        "palyra_deployment_traffic_share",
        "Fraction of its model's dispatches in the last minute that went to the deployment",
        "share",
    ),
)
_DEPLOYMENT_LABELS = ("model", "provider")
_WORKER_LABELS = ("model", "provider", "worker")


class DeploymentCollector(Collector):
    """The deployment board's view() as metrics, read when Prometheus scrapes."""

    def __init__(self) -> None:
        self.view: DeploymentView | None = None
        self.now: Callable[[], float] = time.time
        # One of several workers: its index, a label of every sample. Each scrape lands on
        # some worker; labelled, Prometheus sums the workers and sees no counter go backwards.
        self.worker: str | None = None

    def describe(self) -> Iterator[Metric]:
        # Registration asks for the names: answer without calling the view.
        gauges, ttft, dispatched, exhausted = self._families(self.worker is not None)
        return iter([*gauges, ttft, dispatched, exhausted])

    def collect(self) -> Iterator[Metric]:
        rows: list[dict[str, Any]] = []
        if self.view is not None:
            try:
                rows = self.view()
            except Exception:
                # A broken view must not take the rest of /metrics down with it.
                log.exception("deployment view failed; per-deployment metrics left out")
        gauges, ttft, dispatched, exhausted = self._families(self.worker is not None)
        now_ms = self.now() * 1000
        for row in rows:
            labels = [str(row["model_id"]), str(row["provider_id"])]
            if self.worker is not None:
                labels.append(self.worker)
            for family, (_, _, field) in zip(gauges, _DEPLOYMENT_GAUGES, strict=True):
                family.add_metric(labels, float(row[field]))
            if row.get("ttft_ms") is not None:
                ttft.add_metric(labels, float(row["ttft_ms"]) / 1000)
            dispatched.add_metric(labels, float(row["dispatched"]))
            until = (row.get("upstream") or {}).get("exhausted_until_ms")
            exhausted.add_metric(labels, 1.0 if until is not None and until > now_ms else 0.0)
        return iter([*gauges, ttft, dispatched, exhausted])

    @staticmethod
    def _families(
        by_worker: bool = False,
    ) -> tuple[list[GaugeMetricFamily], GaugeMetricFamily, CounterMetricFamily, GaugeMetricFamily]:
        labels = _WORKER_LABELS if by_worker else _DEPLOYMENT_LABELS
        gauges = [
            GaugeMetricFamily(name, doc, labels=labels) for name, doc, _ in _DEPLOYMENT_GAUGES
        ]
        ttft = GaugeMetricFamily(
            "palyra_deployment_ttft_seconds",
            "Moving average of the deployment's time to first token",
            labels=labels,
        )
        dispatched = CounterMetricFamily(
            "palyra_deployment_dispatched",
            "Requests dispatched to the deployment since the daemon started",
            labels=labels,
        )
        exhausted = GaugeMetricFamily(
            "palyra_deployment_exhausted",
            "1 while the upstream's rate-limit headers say the deployment has nothing left",
            labels=labels,
        )
        return gauges, ttft, dispatched, exhausted


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
            # With several workers: the latest value any live one set (they share circuits).
            multiprocess_mode="livemostrecent",
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

        self.usage_tokens = Counter(
            "palyra_usage_tokens",
            "Tokens in the usage ledger, by client key (or admin) and model",
            ["key", "model", "kind"],
            registry=r,
        )
        self.usage_cost = Counter(
            "palyra_usage_cost_usd",
            "Cost in USD in the usage ledger, by client key (or admin) and model",
            ["key", "model"],
            registry=r,
        )
        self.usage_dropped = Counter(
            "palyra_usage_records_dropped",
            "Usage records not written to the ledger (queue full, or lost at shutdown)",
            registry=r,
        )
        # (metric, label values) -> child. Label values are bounded (route templates,
        # configured and discovered models, providers, statuses), as they are in the metric.
        self._children: dict[tuple[object, tuple[str, ...]], Any] = {}
        # What the request path counted since the last flush: (counter, labels) -> amount to
        # add, (histogram, labels) -> observations (flushed past FLUSH_OBSERVATIONS too, so
        # memory stays bounded however rarely /metrics is read).
        self._deferred = not _MULTIPROCESS_DIR
        self._pending: dict[tuple[object, tuple[str, ...]], float] = {}
        self._observed: dict[tuple[object, tuple[str, ...]], list[float]] = {}
        self._observations = 0
        self._circuit_now: dict[str, int] = {}
        self._deployments = DeploymentCollector()
        r.register(self._deployments)

    def watch_deployments(
        self, view: DeploymentView, *, now: Callable[[], float] = time.time
    ) -> None:
        """Report `view()` rows (the deployment board's) at every scrape; `now` is wall-clock
        seconds, against which the rows' epoch-ms exhaustion times are read."""
        self._deployments.view = view
        self._deployments.now = now

    def _child(self, metric: Any, *labels: str) -> Any:
        key = (metric, labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    def _add(self, metric: object, labels: tuple[str, ...], amount: float) -> None:
        if self._deferred:
            key = (metric, labels)
            pending = self._pending
            pending[key] = pending.get(key, 0) + amount
        else:
            self._child(metric, *labels).inc(amount)

    def count_request(self, route: str, model_id: str, status: int) -> None:
        self._add(self.requests, (route, model_id, str(status)), 1)

    def observe_upstream(self, provider_id: str, model_id: str, seconds: float) -> None:
        if not self._deferred:
            self._child(self.upstream_latency, provider_id, model_id).observe(seconds)
            return
        key = (self.upstream_latency, (provider_id, model_id))
        observed = self._observed.get(key)
        if observed is None:
            observed = self._observed[key] = []
        observed.append(seconds)
        self._observations += 1
        if self._observations >= FLUSH_OBSERVATIONS:
            self.flush()

    def flush(self) -> None:
        """Hand what the request path counted to prometheus_client."""
        pending, self._pending = self._pending, {}
        for (metric, labels), amount in pending.items():
            self._child(metric, *labels).inc(amount)
        observed, self._observed = self._observed, {}
        self._observations = 0
        for (metric, labels), values in observed.items():
            child = self._child(metric, *labels)
            for seconds in values:
                child.observe(seconds)

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
            self._add(self.tokens, (provider_id, model_id, "in"), prompt)
        if completion:
            self._add(self.tokens, (provider_id, model_id, "out"), completion)

    def count_usage(self, record: UsageRecord) -> None:
        """A ledger record's tokens and cost. A record with nothing to count creates no
        series: a refused request's model name is the client's to invent."""
        r = record
        if not (
            r.input_tokens > 0
            or r.output_tokens > 0
            or r.cached_tokens > 0
            or r.reasoning_tokens > 0
            or (r.cost_usd is not None and r.cost_usd > 0)
        ):
            return
        key, model = r.key_name or "admin", r.model
        if r.input_tokens > 0:
            self._add(self.usage_tokens, (key, model, "input"), r.input_tokens)
        if r.output_tokens > 0:
            self._add(self.usage_tokens, (key, model, "output"), r.output_tokens)
        if r.cached_tokens > 0:
            self._add(self.usage_tokens, (key, model, "cached"), r.cached_tokens)
        if r.reasoning_tokens > 0:
            self._add(self.usage_tokens, (key, model, "reasoning"), r.reasoning_tokens)
        if r.cost_usd is not None and r.cost_usd > 0:
            self._add(self.usage_cost, (key, model), r.cost_usd)

    def count_usage_dropped(self, records: int = 1) -> None:
        self.usage_dropped.inc(records)

    def render(self) -> bytes:
        self.flush()
        if _MULTIPROCESS_DIR:
            # One of several workers (palyra.workers): every worker's counters, gauges and
            # histograms from their files; the per-deployment view is this worker's own, and
            # says so in a `worker` label.
            if self._deployments.worker is None:
                self._deployments.worker = _worker_index()
            registry = CollectorRegistry()
            MultiProcessCollector(registry, path=_MULTIPROCESS_DIR)  # type: ignore[no-untyped-call]
            registry.register(self._deployments)
            return generate_latest(registry)
        return generate_latest(self.registry)


def _worker_index() -> str:
    """This worker's index, from the spec palyra.workers gives it (PALYRA_WORKER_SPEC)."""
    import json

    try:
        return str(json.loads(os.environ["PALYRA_WORKER_SPEC"])["index"])
    except (KeyError, ValueError, TypeError):
        return str(os.getpid())
