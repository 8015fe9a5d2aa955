"""A few seconds of the benchmark harness, so it cannot silently break: tiny runs of the
main scenarios through a real `palyrad`, with the Python load generator (no wrk needed) and
without the LiteLLM peer. No speed thresholds: speed is read from `benchmarks/run.py`.

The mock upstream's Responses and Messages wire formats are checked with the official SDKs
as its clients, as tests/fakes/test_upstream.py checks the fake upstream's."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import anthropic
import openai
import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

from processes import start_mock, stop  # noqa: E402  (benchmark scripts, not a package)

SCENARIOS = [
    "chat-c16",
    "stream-c1",
    "failover-c16",
    "embeddings-c16",
    "streams-1000",
    "responses-c1",
    "responses-stream-c16",
    "responses-passthrough-c1",
    "responses-passthrough-stream-c1",
    "messages-c16",
    "messages-stream-c1",
    "messages-translated-c1",
    "messages-translated-stream-c1",
]
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
            ",".join([*SCENARIOS, "responses-stream-c1", "messages-c1"]),
            "--json",
            str(raw),
            "--output",
            str(table),
        ],
        capture_output=True,
        text=True,
        timeout=120,
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
    for key in ("stream-c1", "responses-stream-c16", "messages-stream-c1"):
        assert figures["results"][key]["palyra"]["ttfc_ms"]["p50"] is not None
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
