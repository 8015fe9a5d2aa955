"""`palyra usage` as a user runs it: a real palyrad whose ledger holds records, the CLI on an
80-column pseudo-terminal, --json, and bad options."""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from palyra.cli.usage import compact, money
from palyra.fs import ensure_private_dir
from palyra.state.db import SqliteDatabase
from palyra.usage.records import row
from palyra.usage.store import UsageStore
from tests.support.cli import PALYRA, PALYRAD, in_terminal, isolated_env, palyra, stop
from tests.support.daemon import free_port, wait_healthy
from tests.usage.conftest import usage_record

LONG_MODEL = "claude-sonnet-4-5-20250929-with-a-rather-long-suffix"


async def seed(state_dir: Path) -> None:
    ensure_private_dir(state_dir)
    db = await SqliteDatabase.open(state_dir / "palyra.db")
    store = UsageStore(db)
    await store.migrate()
    now = int(time.time() * 1000)
    records = [
        usage_record(
            at_ms=now - 60_000,
            input_tokens=1_234_567,
            output_tokens=45_000,
            cached_tokens=999,
            reasoning_tokens=12_000,
            cost_usd=12.345678,
        ),
        usage_record(
            at_ms=now - 120_000,
            model=LONG_MODEL,
            provider="anthropic",
            key_id="key_a",
            key_name="alpha",
            cost_usd=0.000123456,
        ),
        usage_record(
            at_ms=now - 180_000, model="llama", provider="local", cost_usd=None, status=500
        ),
    ]
    await store.insert_many([row(f"u{i}", r) for i, r in enumerate(records)])
    await db.close()


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    root = tmp_path_factory.mktemp("usage")
    state_dir = root / "palyra-state"
    asyncio.run(seed(state_dir))
    port = free_port()
    env = isolated_env(root, PALYRA_STATE_DIR=str(state_dir))
    log = root / "palyrad.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [PALYRAD, "--port", str(port)], env=env, stdout=out, stderr=subprocess.STDOUT
        )
    try:
        wait_healthy(process, port, log)
        yield {**env, "PALYRA_DAEMON_PORT": str(port)}
    finally:
        stop(process)


def test_the_table_fits_80_columns(env: dict[str, str]) -> None:
    shown = in_terminal([PALYRA, "usage", "--by", "model"], {**env, "TERM": "xterm"})
    lines = [line.rstrip() for line in shown.splitlines()]
    assert max(len(line) for line in lines) <= 80, shown
    assert lines[0].startswith("usage by model, ")
    rows = [line.split() for line in lines if line.startswith(("gpt-4o ", "llama "))]
    assert rows == [
        ["gpt-4o", "1", "0", "1.2M", "45k", "999", "12k", "$12.35"],
        ["llama", "1", "1", "100", "50", "0", "0", "—"],
    ]
    # A long name folds onto the lines below its figures rather than ending in "…".
    first = next(i for i, line in enumerate(lines) if line.startswith("claude"))
    after = next(i for i, line in enumerate(lines) if line.startswith("gpt-4o "))
    name = lines[first].split()[0] + "".join(line.strip() for line in lines[first + 1 : after])
    assert name == LONG_MODEL and "…" not in shown
    assert lines[first].split()[1:] == ["1", "0", "100", "50", "0", "0", "$0.0001235"]
    total = next(line.split() for line in lines if line.startswith("total"))
    assert total == ["total", "3", "1", "1.2M", "45k", "999", "12k", "$12.35"]
    assert "1 of 3 requests have no known price" in " ".join(shown.split())


def test_by_key_and_json(env: dict[str, str]) -> None:
    result = palyra("usage", "--by", "key", "--since", "1d", "--json", env=env)
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout)
    assert answer["group_by"] == "key"
    assert [(g["key_name"], g["requests"]) for g in answer["groups"]] == [
        ("admin", 2),
        ("alpha", 1),
    ]
    piped = palyra("usage", "--by", "key", env=env)
    assert piped.returncode == 0, piped.stderr
    assert any(line.split()[:2] == ["alpha", "1"] for line in piped.stdout.splitlines())


def test_bad_options_fail_in_one_line(env: dict[str, str]) -> None:
    result = palyra("usage", "--by", "colour", env=env)
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "palyra: error: --by must be one of key, model, provider, agent, day, hour, not 'colour'"
    )
    result = palyra("usage", "--since", "yesterday", env=env)
    assert result.returncode == 1
    (line,) = result.stderr.splitlines()
    assert "since: 'yesterday' must be an ISO 8601 time" in line


def test_figures() -> None:
    assert [compact(n) for n in (0, 999, 1000, 1234, 9_960, 12_345, 999_999, 45_000_000)] == [
        "0",
        "999",
        "1k",
        "1.2k",
        "10k",
        "12k",
        "1M",
        "45M",
    ]
    assert [money(v) for v in (None, 0.0, 12.345678, 0.000123456, 9.99996, 12345.6)] == [
        "—",
        "$0",
        "$12.35",
        "$0.0001235",
        "$10.00",
        "$12,350",
    ]
