"""A few seconds of the benchmark harness, so it cannot silently break: tiny runs of the
main scenarios through a real `palyrad`, with the Python load generator (no wrk needed) and
without the LiteLLM peer. No speed thresholds: speed is read from `benchmarks/run.py`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCENARIOS = ["chat-c16", "stream-c1", "failover-c16", "embeddings-c16", "streams-1000"]


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
            ",".join(SCENARIOS),
            "--json",
            str(raw),
            "--output",
            str(table),
        ],
        capture_output=True,
        text=True,
        timeout=50,
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
    assert figures["results"]["stream-c1"]["palyra"]["ttfc_ms"]["p50"] is not None
    assert not isinstance(figures["tokens"]["palyra"], str), figures["tokens"]
    text = table.read_text()
    assert "| chat, 16 concurrent | palyra |" in text
    assert "| chat, 16 concurrent | floor |" in text
    assert "## Palyra vs the floor" in text
    assert "## Targets" in text
