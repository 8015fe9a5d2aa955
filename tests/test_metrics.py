"""Per-deployment metrics: read from the board's view at scrape time, by model and provider."""

from __future__ import annotations

from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from palyra.config import ModelConfig
from palyra.deployments import Admission, DeploymentBoard
from palyra.metrics import FLUSH_OBSERVATIONS, Metrics
from tests.support.deployments import deployment_row as row

NOW_S = 1_800_000_000.0
NOW_MS = int(NOW_S * 1000)


def samples(metrics: Metrics) -> dict[tuple[str, str, str], float]:
    """(sample name, model, provider) -> value, for the palyra_deployment_* samples."""
    found: dict[tuple[str, str, str], float] = {}
    for family in text_string_to_metric_families(metrics.render().decode()):
        for sample in family.samples:
            if sample.name.startswith("palyra_deployment_"):
                key = (sample.name, sample.labels["model"], sample.labels["provider"])
                found[key] = sample.value
    return found


def test_each_deployment_is_reported_with_its_figures() -> None:
    rows = [
        row(
            "gpt-4o",
            "openai",
            in_flight=3,
            requests_last_minute=12,
            tokens_last_minute=3400,
            rpm_limit=60,
            tpm_limit=100_000,
            ttft_ms=250.0,
            share=0.75,
            dispatched=1234,
            upstream={
                "remaining_requests": 0,
                "remaining_tokens": 5000,
                "exhausted_until_ms": NOW_MS + 20_000,
            },
        ),
        row(
            "gpt-4o",
            "azure",
            in_flight=1,
            requests_last_minute=4,
            share=0.25,
            dispatched=400,
            # Exhausted once, but the reset has passed.
            upstream={
                "remaining_requests": 0,
                "remaining_tokens": None,
                "exhausted_until_ms": NOW_MS - 1,
            },
        ),
    ]
    metrics = Metrics()
    metrics.watch_deployments(lambda: rows, now=lambda: NOW_S)
    got = samples(metrics)
    openai = {name: value for (name, _, provider), value in got.items() if provider == "openai"}
    assert openai == {
        "palyra_deployment_in_flight": 3,
        "palyra_deployment_requests_last_minute": 12,
        "palyra_deployment_tokens_last_minute": 3400,
        "palyra_deployment_rpm_limit": 60,
        "palyra_deployment_tpm_limit": 100_000,
        "palyra_deployment_ttft_seconds": 0.25,
        "palyra_deployment_traffic_share": 0.75,
        "palyra_deployment_dispatched_total": 1234,
        "palyra_deployment_exhausted": 1,
    }
    azure = {name: value for (name, _, provider), value in got.items() if provider == "azure"}
    assert azure["palyra_deployment_exhausted"] == 0
    assert azure["palyra_deployment_dispatched_total"] == 400
    # Never measured: no TTFT sample rather than a made-up 0.
    assert "palyra_deployment_ttft_seconds" not in azure
    assert {model for (_, model, _) in got} == {"gpt-4o"}


def test_the_view_is_read_at_each_scrape_not_before() -> None:
    calls: list[int] = []
    current = [row("m", "p", in_flight=1)]

    def view() -> list[dict[str, Any]]:
        calls.append(1)
        return current

    metrics = Metrics()
    metrics.count_request("/v1/chat/completions", "m", 200)  # the hot path: no view call
    metrics.watch_deployments(view, now=lambda: NOW_S)
    assert calls == []
    assert samples(metrics)[("palyra_deployment_in_flight", "m", "p")] == 1
    current[0] = row("m", "p", in_flight=7, upstream=None)
    assert samples(metrics)[("palyra_deployment_in_flight", "m", "p")] == 7
    assert samples(metrics)[("palyra_deployment_exhausted", "m", "p")] == 0
    assert len(calls) == 3


def test_without_a_view_there_are_no_deployment_samples() -> None:
    metrics = Metrics()
    text = metrics.render().decode()
    assert samples(metrics) == {}
    # The families are declared all the same, so dashboards see the names.
    assert "# TYPE palyra_deployment_in_flight gauge" in text
    assert "# TYPE palyra_deployment_dispatched_total counter" in text


def test_a_failing_view_leaves_the_other_metrics_intact() -> None:
    def broken() -> list[dict[str, Any]]:
        raise RuntimeError("board gone")

    metrics = Metrics()
    metrics.count_request("/v1/chat/completions", "m", 200)
    metrics.watch_deployments(broken)
    text = metrics.render().decode()
    assert 'palyra_requests_total{model="m",route="/v1/chat/completions",status="200"} 1.0' in text
    assert samples(metrics) == {}


def test_two_apps_keep_their_deployments_apart() -> None:
    first, second = Metrics(), Metrics()
    first.watch_deployments(lambda: [row("a", "p")])
    second.watch_deployments(lambda: [row("b", "p")])
    assert {model for (_, model, _) in samples(first)} == {"a"}
    assert {model for (_, model, _) in samples(second)} == {"b"}


async def test_a_deployment_boards_view_reads_as_metrics() -> None:
    # The real board's rows, not a copy of their shape: the two must keep agreeing.
    now = [1000.0]
    board = DeploymentBoard(clock=lambda: now[0], wall_clock=lambda: NOW_S + now[0])
    fast = board.deployment(ModelConfig(model_id="m", provider_id="a", rpm_limit=60))
    slow = board.deployment(ModelConfig(model_id="m", provider_id="b"))
    for _ in range(3):
        admission = await board.admit(fast, 100)
        assert isinstance(admission, Admission)
        board.settle(admission, ttft_s=0.2, tokens=100)
    held = await board.admit(slow, 10)
    assert isinstance(held, Admission)
    board.exhaust(slow, 30.0, "upstream answered 429")

    metrics = Metrics()
    metrics.watch_deployments(board.view, now=lambda: NOW_S + now[0])
    got = samples(metrics)
    assert got[("palyra_deployment_dispatched_total", "m", "a")] == 3
    assert got[("palyra_deployment_requests_last_minute", "m", "a")] == 3
    assert got[("palyra_deployment_rpm_limit", "m", "a")] == 60
    assert got[("palyra_deployment_ttft_seconds", "m", "a")] == pytest.approx(0.2)
    assert got[("palyra_deployment_traffic_share", "m", "a")] == pytest.approx(0.75)
    assert got[("palyra_deployment_in_flight", "m", "b")] == 1
    assert got[("palyra_deployment_exhausted", "m", "b")] == 1
    assert got[("palyra_deployment_exhausted", "m", "a")] == 0
    now[0] += 31  # past the rest
    assert samples(metrics)[("palyra_deployment_exhausted", "m", "b")] == 0


def values(metrics: Metrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """(sample name, sorted labels) -> value, for every sample /metrics shows."""
    found: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(metrics.render().decode()):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def test_what_requests_count_is_shown_at_the_next_scrape() -> None:
    metrics = Metrics()
    for status in (200, 200, 429):
        metrics.count_request("/v1/chat/completions", "gpt-4o", status)
    metrics.count_tokens("openai", "gpt-4o", 120, 30)
    metrics.count_tokens("openai", "gpt-4o", 5, 0)
    for seconds in (0.004, 0.2, 3.0):
        metrics.observe_upstream("openai", "gpt-4o", seconds)
    shown = values(metrics)
    route = ("route", "/v1/chat/completions")
    assert shown[("palyra_requests_total", (("model", "gpt-4o"), route, ("status", "200")))] == 2
    assert shown[("palyra_requests_total", (("model", "gpt-4o"), route, ("status", "429")))] == 1
    tokens = (
        "palyra_tokens_total",
        (("direction", "in"), ("model", "gpt-4o"), ("provider", "openai")),
    )
    assert shown[tokens] == 125
    latency = (("model", "gpt-4o"), ("provider", "openai"))
    assert shown[("palyra_upstream_latency_seconds_count", latency)] == 3
    assert shown[("palyra_upstream_latency_seconds_bucket", (("le", "0.005"), *latency))] == 1
    assert shown[("palyra_upstream_latency_seconds_sum", latency)] == pytest.approx(3.204)
    # Counted once: a second scrape shows the same.
    assert values(metrics)[tokens] == 125


def test_observations_are_handed_over_unasked_past_a_bound() -> None:
    metrics = Metrics()
    for _ in range(FLUSH_OBSERVATIONS + 5):
        metrics.observe_upstream("openai", "gpt-4o", 0.01)
    assert metrics._observations == 5  # the rest went to prometheus_client already
    latency = (("model", "gpt-4o"), ("provider", "openai"))
    assert values(metrics)[("palyra_upstream_latency_seconds_count", latency)] == (
        FLUSH_OBSERVATIONS + 5
    )
