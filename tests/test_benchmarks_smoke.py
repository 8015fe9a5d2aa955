"""A few seconds of the benchmark harness, so it cannot silently break: tiny runs of the
main scenarios through a real `palyrad`, with the Python load generator (no wrk needed) and
without the LiteLLM peer. No speed thresholds: speed is read from `benchmarks/run.py`.

The mock upstream's Responses and Messages wire formats are checked with the official SDKs
as its clients, as tests/fakes/test_upstream.py checks the fake upstream's."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import openai
import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

from processes import (  # noqa: E402  (benchmark scripts, not a package)
    CLIENT_KEY_NAME,
    DEPLOYED_MODEL,
    DEPLOYMENT_PROVIDERS,
    EXTRA_MODELS,
    daemon_config,
    dispatched_counts,
    metric_value,
    start_mock,
    stop,
)

from palyra.config import validate_config  # noqa: E402
from palyra.metrics import Metrics  # noqa: E402

SCENARIOS = [
    "chat-c16",
    "stream-c1",
    "failover-c16",
    "embeddings-c16",
    "streams-1000",
    "streams-5000",
    "responses-c1",
    "responses-stream-c16",
    "responses-passthrough-c1",
    "responses-passthrough-stream-c1",
    "messages-c16",
    "messages-stream-c1",
    "messages-translated-c1",
    "messages-translated-stream-c1",
]
# Served by palyrad alone (deploy-*: a second daemon with the deployed model; key-*: the
# usual daemon, with a client key the harness makes), beside the mock.
CLIENT_KEY_SCENARIOS = ["key-c1", "key-c16"]
WORKER_SCENARIOS = ["workers-1-c64", "workers-2-c64"]
PALYRA_ONLY = ["deploy-c1", "deploy-c16", *CLIENT_KEY_SCENARIOS, *WORKER_SCENARIOS]
DIALECT_TARGETS = [
    "responses-c1: added p50",
    "responses-stream-c1: added TTFC p50",
    "messages-c1: added p50",
    "messages-stream-c1: added TTFC p50",
]


def test_harness_runs_and_reports(tmp_path: Path) -> None:
    raw, table = tmp_path / "raw.json", tmp_path / "results.md"
    run = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "run.py"),
            "--quick",
            "--no-peer",
            "--no-wrk",
            "--only",
            ",".join([*SCENARIOS, *PALYRA_ONLY, "responses-stream-c1", "messages-c1"]),
            "--json",
            str(raw),
            "--output",
            str(table),
        ],
        capture_output=True,
        text=True,
        timeout=150,
        cwd=ROOT,
    )
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    figures = json.loads(raw.read_text())
    for key in SCENARIOS:
        for target in ("direct", "floor", "palyra"):
            result = figures["results"][key][target]
            assert "error" not in result, (key, target, result)
            assert result["requests"] > 0 and result["errors"] == 0, (key, target, result)
            assert result["latency_ms"]["p50"] is not None
        assert figures["results"][key]["palyra"]["peak_rss_mb"] > 0
    for key in PALYRA_ONLY:
        assert set(figures["results"][key]) == {"direct", "palyra"}, key
        result = figures["results"][key]["palyra"]
        assert "error" not in result, (key, result)
        assert result["requests"] > 0 and result["errors"] == 0, (key, result)
    for key in ("stream-c1", "responses-stream-c16", "messages-stream-c1", "streams-5000"):
        assert figures["results"][key]["palyra"]["ttfc_ms"]["p50"] is not None
    # Each worker of palyrad's master spent CPU on the load (the kernel spread the
    # connections over them); the master's own share comes first.
    spent = figures["results"]["workers-2-c64"]["palyra"]["cpu_s_by_process"]
    assert len(spent) == 3, spent
    assert not isinstance(figures["tokens"]["palyra"], str), figures["tokens"]
    text = table.read_text()
    assert "| chat, 16 concurrent | palyra |" in text
    assert "| chat, 16 concurrent | floor |" in text
    assert "| messages (Anthropic pass-through), whole, 16 concurrent | palyra |" in text
    assert "| responses (translated to chat), stream 50 deltas, 16 concurrent | palyra |" in text
    assert "## Palyra vs the floor" in text
    targets = text.split("## Targets", 1)[1]
    for label in DIALECT_TARGETS:
        # Measured, whatever the verdict (quick runs are too short to judge speed by).
        assert f"S {label}: " in targets or f"L {label}: " in targets, (label, targets)
    for label in (
        "deploy-c1 (3 deployments, +100 models): added p50 ",
        "deploy-c16 (3 deployments, +100 models): ",
        "key-c1 (client key, ledger on): added p50 ",
        "key-c16 (client key, ledger on): ",
    ):
        # Measured, whatever the verdict: "PASS label" or "FAIL label".
        assert f"S {label}" in targets or f"L {label}" in targets, (label, targets)
    assert targets.count("chat-c16's ") == 2, targets  # deploy-c16's and key-c16's
    for label in (
        "30 open streams, one worker: errors",
        "30 open streams, one worker: added TTFC p99",
        "chat-c16: palyrad CPU per request ",
        "stream-c1: palyrad CPU per request ",
        "embeddings-c16: palyrad CPU per request ",
        "workers = 2 against workers = 1, 64 concurrent: ",
    ):
        assert f"S {label}" in targets or f"L {label}" in targets, (label, targets)
    # PASS or FAIL, or "not shown" when some streams ended before the last began.
    assert "30 open streams, one worker: peak RSS" in targets, targets
    assert "30 open streams, one worker: at most " in targets, targets
    assert "req/s vs Portkey: not measured (peer not run)" in targets
    assert "## Side by side: palyrad, the floor, LiteLLM and Portkey" in text
    assert "workers-2-c64: CPU seconds over its " in text
    assert f"{DEPLOYED_MODEL} (3 deployments, weighted) and 100 more models" in text
    # The ledger was on, and the key-* requests were the key's, not the admin token's: the
    # key's records cover every answer the load generator counted (and its warm-ups).
    ledger = figures["meta"]["ledger"]
    per_key = {g["key_name"]: g for g in ledger["groups"]}
    assert set(per_key) == {"admin", CLIENT_KEY_NAME}, per_key
    answered = sum(figures["results"][k]["palyra"]["requests"] for k in CLIENT_KEY_SCENARIOS)
    assert per_key[CLIENT_KEY_NAME]["requests"] >= answered > 0, (per_key, answered)
    assert per_key[CLIENT_KEY_NAME]["errors"] == 0, per_key
    assert per_key["admin"]["requests"] > 0
    assert ledger["total"]["requests"] == sum(g["requests"] for g in ledger["groups"])
    assert ledger["dropped"] == 0
    assert f"ledger on: palyrad wrote {ledger['total']['requests']:,} usage records" in text
    assert f"with a client key ({CLIENT_KEY_NAME}: models bench-chat, rpm 10,000,000" in text


def test_ab_compares_trees_in_alternating_rounds() -> None:
    run = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "ab.py"),
            "head,head:ledger-off",
            "--only",
            "stream-c1",
            "--rounds",
            "2",
            "--seconds",
            "0.3",
            "--warm-up",
            "0.2",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    lines = [line.split() for line in run.stdout.splitlines() if line.startswith("stream-c1")]
    assert [line[1] for line in lines] == ["head", "head:ledger-off"], run.stdout
    assert lines[0][4] == "x1.000", run.stdout  # the first target is the baseline
    for line in lines:
        assert float(line[2]) > 0, run.stdout  # CPU ms a request, median of the rounds
        assert len(" ".join(line[5:]).split(",")) == 2, run.stdout  # one figure a round


def test_deployed_config_is_one_model_on_three_providers_among_a_hundred_more() -> None:
    raw = tomllib.loads(daemon_config("http://127.0.0.1:9", dialects=False, deployments=True))
    config = validate_config(raw).model_provider
    deployed = config.deployments_of(DEPLOYED_MODEL)
    assert [d.provider_id for d in deployed] == list(DEPLOYMENT_PROVIDERS)
    assert {config.strategy_for(d) for d in deployed} == {"weighted"}
    assert {d.weight for d in deployed} == {1.0}
    extras = {m.model_id for m in config.models if m.model_id.startswith("bench-extra-")}
    assert len(extras) == EXTRA_MODELS == 100
    # The usual six models are there too, on providers other than the deployments'.
    assert config.deployments_of("bench-chat")[0].provider_id == "mock-fast"
    assert len({m.provider_id for m in config.models}) == 8


def test_dispatched_counts_read_the_daemons_per_deployment_metrics() -> None:
    rows = [
        {
            "model_id": model,
            "provider_id": provider,
            "weight": 1.0,
            "priority": 0,
            "strategy": "weighted",
            "in_flight": 0,
            "requests_last_minute": n,
            "tokens_last_minute": 0,
            "rpm_limit": 0,
            "tpm_limit": 0,
            "ttft_ms": None,
            "share": 0.0,
            "dispatched": n,
            "skipped": None,
            "upstream": None,
        }
        for model, provider, n in [
            (DEPLOYED_MODEL, "mock-deploy-a", 1200),
            (DEPLOYED_MODEL, "mock-deploy-b", 7),
            ("bench-chat", "mock-fast", 50),
        ]
    ]
    metrics = Metrics()
    metrics.watch_deployments(lambda: rows)
    text = metrics.render().decode()
    assert dispatched_counts(text, DEPLOYED_MODEL) == {"mock-deploy-a": 1200, "mock-deploy-b": 7}
    assert dispatched_counts(text, "bench-embed") is None


def test_metric_value_reads_an_unlabelled_counter() -> None:
    metrics = Metrics()
    metrics.count_usage_dropped(3)
    text = metrics.render().decode()
    assert metric_value(text, "palyra_usage_records_dropped_total") == 3
    assert metric_value(text, "palyra_no_such_metric_total") is None


@pytest.fixture(scope="module")
def mock(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    process, url = start_mock(tmp_path_factory.mktemp("mock"), 5)
    try:
        yield url
    finally:
        stop(process)


def test_mock_speaks_anthropic_messages(mock: str) -> None:
    client = anthropic.Anthropic(base_url=f"{mock}/fast", api_key="sk-mock", max_retries=0)
    message = client.messages.create(
        model="claude-bench", max_tokens=64, messages=[{"role": "user", "content": "hi"}]
    )
    assert message.content[0].type == "text" and message.content[0].text
    assert message.usage.input_tokens == 21 and message.stop_reason == "end_turn"
    with client.messages.stream(
        model="claude-bench", max_tokens=64, messages=[{"role": "user", "content": "hi"}]
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == "".join(f"tok{i} " for i in range(50))
    assert final.usage.output_tokens == 50 and final.stop_reason == "end_turn"


def test_mock_speaks_openai_responses(mock: str) -> None:
    client = openai.OpenAI(base_url=f"{mock}/fast/v1", api_key="sk-mock", max_retries=0)
    response = client.responses.create(model="gpt-4o-mini", input="hi")
    assert response.output_text and response.usage is not None
    with client.responses.stream(model="gpt-4o-mini", input="hi") as stream:
        events = list(stream)
        final = stream.get_final_response()
    kinds = [e.type for e in events]
    assert kinds[:4] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
    ]
    assert kinds.count("response.output_text.delta") == 50
    assert kinds[-1] == "response.completed"
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert final.output_text == "".join(f"tok{i} " for i in range(50))


def _figures(rps: float, cpu: float, ttfc: float | None = None, errors: int = 0) -> dict[str, Any]:
    return {
        "requests": 1000,
        "errors": errors,
        "rps": rps,
        "latency_ms": {"p50": 1.0, "p90": 2.0, "p99": 3.0, "max": 4.0},
        "ttfc_ms": None if ttfc is None else {"p50": ttfc, "p90": ttfc, "p99": ttfc, "max": ttfc},
        "peak_rss_mb": 80.0,
        "cpu_ms_per_req": cpu,
    }


def test_report_puts_the_peers_beside_palyrad_and_checks_issue_17s_ratios() -> None:
    from report import report
    from scenarios import scenarios

    chosen = [s for s in scenarios(quick=True) if s.key in ("chat-c16", "stream-c16")]
    results = {
        "chat-c16": {
            "direct": _figures(50_000, 0.0),
            "floor": _figures(5_000, 0.20),
            "palyra": _figures(3_000, 0.29),
            "litellm": _figures(90, 9.0),
            "portkey": _figures(900, 1.1),
        },
        "stream-c16": {
            "direct": _figures(4_000, 0.0, ttfc=0.5),
            "floor": _figures(1_500, 0.50, ttfc=1.0),
            "palyra": _figures(700, 1.00, ttfc=2.0),
            "portkey": _figures(500, 3.0, ttfc=30.0),
        },
    }
    meta = {"when": "now", "machine": "test", "loadgen": "loadgen.py", "quick": True}
    text = report(results, {}, meta, chosen)
    side = text.split("## Side by side", 1)[1].split("##", 1)[0]
    # floor, palyra, litellm, portkey req/s; palyra over each peer; CPU per request of each.
    assert (
        "| chat, 16 concurrent | 5,000 | 3,000 | 90 | 900 | 33.3× | 3.3× | 0.200 | 0.290 |" in side
    )
    assert "| – | 500 | – | 1.4× |" in side  # stream-c16: no LiteLLM figure
    targets = text.split("## Targets", 1)[1]
    assert "PASS chat-c16: palyrad CPU per request 1.45× the floor's" in targets
    assert "FAIL stream-c16: palyrad CPU per request 2.00× the floor's" in targets
    assert "PASS req/s at 16 concurrent vs Portkey: 3.33×" in targets
    assert "PASS stream-c16 vs Portkey: 1.40× its req/s" in targets
    assert "PASS req/s at 16 concurrent vs LiteLLM" in targets


def test_cpu_lists_and_portkeys_fallback_config() -> None:
    import portkey_peer
    from processes import parse_cpus

    cpu = min(os.sched_getaffinity(0))
    assert parse_cpus(f"{cpu}") == {cpu}
    assert parse_cpus(f"{cpu}-{cpu}") == {cpu}
    with pytest.raises(ValueError, match="not a CPU list"):
        parse_cpus("zero")
    with pytest.raises(ValueError, match="not usable here"):
        parse_cpus("4095")
    config = json.loads(
        portkey_peer.fallback_config("http://a/v1", "http://b/v1")["x-portkey-config"]
    )
    assert config["strategy"] == {"mode": "fallback"}
    assert [t["custom_host"] for t in config["targets"]] == ["http://a/v1", "http://b/v1"]
