"""`[daemon] workers = N`: one port served by N processes (palyra.workers, palyra.channel).

palyrad runs as a real process with two workers on the embedded store (no Redis), in front of
the fake upstream. Which worker serves a request is known from the connection: a keep-alive
connection stays with the worker that accepted it, and the admin's models status names it.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog.testing

from palyra.breaker import BreakerBoard
from palyra.budgets import BudgetBook
from palyra.channel import Channel, ChannelDecisions, ChannelRateCounter, ChannelSpend, Hub
from palyra.config import ConfigError, validate_config
from palyra.health import HealthBoard
from palyra.shared import SharedState
from palyra.workers import SPEC_ENV
from tests.fakes.replies import ChatReply
from tests.fakes.upstream import FakeUpstream
from tests.support.budgets import NOON, Key
from tests.support.daemon import PALYRAD, Daemon, free_port, running_daemon, threaded_upstream
from tests.support.redis import REDIS_URL

ADMIN = "workers-admin-token-0123456789abcdef"
UPSTREAM_KEY = "sk-fake-upstream-key"
CHAT = "/v1/chat/completions"


# --- config ---------------------------------------------------------------------------------


@pytest.mark.parametrize("value", [0, -2, "two", True, 1.5, ""])
def test_workers_must_be_a_whole_number_or_auto(value: Any) -> None:
    with pytest.raises(ConfigError) as caught:
        validate_config({"version": 1, "daemon": {"workers": value}})
    assert str(caught.value).startswith("daemon.workers: must be a whole number")


def test_workers_auto_is_one_per_core_this_process_may_use() -> None:
    config = validate_config({"version": 1, "daemon": {"workers": "auto"}})
    assert config.daemon.worker_count() == len(os.sched_getaffinity(0))
    assert validate_config({"version": 1}).daemon.worker_count() == 1
    assert validate_config({"version": 1, "daemon": {"workers": "3"}}).daemon.workers == 3


# --- the channel, in one process ------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_the_channel_holds_two_workers_to_one_rpm_and_shares_decisions_and_budgets(
    tmp_path: Path,
) -> None:
    clock = Clock()
    hub = Hub(clock=clock, wall_ms=lambda: 1_000_000)
    await hub.start(tmp_path / "c.sock")
    a, b = Channel(str(tmp_path / "c.sock")), Channel(str(tmp_path / "c.sock"))
    await a.connect()
    await b.connect()
    counters = [ChannelRateCounter(a, clock=clock), ChannelRateCounter(b, clock=clock)]
    waits = [await counters[i % 2].reserve("key:k", 10, 3, 0) for i in range(6)]
    assert [w == 0 for w in waits] == [True, True, True, False, False, False]
    assert 59 < waits[3] <= 60
    assert counters[1].used("key:k")[0] == 3  # all workers' requests, not its own one
    clock.now += 60.5
    assert await counters[1].reserve("key:k", 10, 3, 0) == 0
    # A correction is sent, not waited for; what follows it on the connection comes after.
    assert await counters[0].reserve("key:t", 50, 0, 100) == 0
    counters[0].correct_now("key:t", 30, age_s=0.1)
    await a.ping()
    assert hub.counter.used("key:t") == (1, 80)
    assert await counters[1].reserve("key:t", 30, 0, 100) > 0

    decisions_a, decisions_b = ChannelDecisions(a), ChannelDecisions(b)
    await decisions_a.exchange({"circuit:p": (5, "99", "")}, [])
    await decisions_b.exchange({"circuit:p": (4, "0", "")}, [])  # older: not taken
    assert await decisions_b.exchange({}, ["circuit:p", "health:p"]) == {"circuit:p": (5, "99", "")}

    spend_a, spend_b = ChannelSpend(a), ChannelSpend(b)
    await spend_a.exchange({"k:day": (1.5, 3600)}, [])
    assert await spend_b.exchange({"k:day": (0.5, 3600)}, ["k:day", "other"]) == {
        "k:day": 2.0,
        "other": None,
    }

    # Two workers' budget books: each one's spend is the other's within two syncs.
    books = [BudgetBook(wall_ms=lambda: NOON, spend=ChannelSpend(ch)) for ch in (a, b)]
    key = Key(budget_usd=1.0)
    for book in books:
        assert book.check(key, NOON) is None
        book.add(key.key_id, 0.6, NOON)
    for book in books * 2:
        await book.sync()
    assert [book.spent(key, NOON) for book in books] == [pytest.approx(1.2)] * 2
    assert all(book.check(key, NOON) is not None for book in books)

    await hub.aclose()
    await a.aclose()
    await a.lost.wait()
    # The master gone: this worker counts alone rather than fail the request.
    assert await ChannelRateCounter(a, clock=clock).reserve("key:k", 1, 3, 0) == 0
    await b.aclose()


async def test_while_the_master_does_not_answer_limited_requests_stop_asking_it(
    tmp_path: Path,
) -> None:
    heard: list[bytes] = []

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while line := await reader.readline():  # a master that hears and never answers
            heard.append(line)

    server = await asyncio.start_unix_server(silent, str(tmp_path / "c.sock"))
    clock = Clock()
    channel = Channel(str(tmp_path / "c.sock"))
    await channel.connect()
    counter = ChannelRateCounter(channel, clock=clock)
    started = time.monotonic()
    assert await counter.reserve("key:k", 1, 3, 0) == 0  # counted here after the timeout
    assert time.monotonic() - started < 0.5  # a quarter of a second, as Redis's
    assert not counter.reachable
    for _ in range(3):  # the next second: counted here without asking (nor waiting)
        await counter.reserve("key:k", 1, 3, 0)
    assert await counter.reserve("key:k", 1, 3, 0) > 0  # the local count holds the rpm
    await asyncio.sleep(0.01)
    assert len(heard) == 1
    clock.now += 1.0
    await counter.reserve("key:k", 1, 3, 0)  # then asked again
    await asyncio.sleep(0.01)
    assert len(heard) == 2
    await channel.aclose()
    server.close()
    await server.wait_closed()


async def test_when_the_channel_fails_the_logs_name_the_channel_not_redis(tmp_path: Path) -> None:
    hub = Hub()
    await hub.start(tmp_path / "c.sock")
    channel = Channel(str(tmp_path / "c.sock"))
    await channel.connect()
    await hub.aclose()
    await channel.aclose()
    breakers = BreakerBoard()
    shared = SharedState(
        ChannelDecisions(channel),
        breakers=breakers,
        breaker_for=lambda pid: breakers.get(pid, 2, 30_000),
        health=HealthBoard(degraded_latency_ms=2000),
        provider_ids=["p"],
        interval_s=0.01,
    )
    book = BudgetBook(spend=ChannelSpend(channel))
    book.check(Key(), NOON)
    book.add("key_a", 0.1, NOON)
    with structlog.testing.capture_logs() as logs:
        shared.start()
        await book.sync()
        await ChannelRateCounter(channel).reserve("key:k", 1, 3, 0)
        await asyncio.sleep(0.05)
        await shared.aclose()
    events = {entry["event"] for entry in logs}
    assert {
        "channel_unreachable",
        "channel_budgets_unreachable",
        "channel_rate_counter_unreachable",
    } <= events, events
    assert not any(event.startswith("redis") for event in events), events


async def test_after_a_restart_workers_spend_no_more_of_a_budget_than_one_process(
    tmp_path: Path,
) -> None:
    hub = Hub(wall_ms=lambda: NOON)  # palyrad just started: the master holds no spend
    await hub.start(tmp_path / "c.sock")
    key = Key(budget_usd=1.0)

    async def ledger(key_id: str, since_ms: int) -> float:
        return 0.9  # spent before the restart, by any worker

    channels, books = [], []
    for _ in range(2):
        channel = Channel(str(tmp_path / "c.sock"))
        await channel.connect()
        book = BudgetBook(wall_ms=lambda: NOON, spend=ChannelSpend(channel), known=lambda: [key])
        await book.load([key], ledger, now_ms=NOON)
        channels.append(channel)
        books.append(book)
    allowed = 0
    for i in range(20):  # requests of $0.05, each worker in turn, all books synced between
        book = books[i % 2]
        if book.check(key, NOON) is None:
            book.add(key.key_id, 0.05, NOON)
            allowed += 1
        for each in books * 2:
            await each.sync()
    assert allowed == 2  # as one process: 0.90 and 0.95 are under 1.00, then it is spent
    assert [each.spent(key, NOON) for each in books] == [pytest.approx(1.0)] * 2
    await hub.aclose()
    for channel in channels:
        await channel.aclose()


# --- palyrad with two workers ---------------------------------------------------------------


def fake_provider(provider_id: str, fake: FakeUpstream) -> dict[str, Any]:
    return {
        "provider_id": provider_id,
        "kind": "openai_compatible",
        "base_url": fake.openai_base_url,
        "allow_private_base_url": True,
        "api_key_env": "PALYRA_TEST_UPSTREAM_KEY",
        "discovery": False,
    }


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeUpstream]:
    with threaded_upstream(UPSTREAM_KEY) as upstream:
        yield upstream


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory, fake: FakeUpstream) -> Iterator[Daemon]:
    root = tmp_path_factory.mktemp("workers")
    (root / "agents.toml").write_text(
        'version = 1\n[[agents]]\nagent_id = "bot"\nmodel = "deterministic"\n'
    )
    config: dict[str, Any] = {
        "version": 1,
        "daemon": {"workers": 2, "shutdown_grace_ms": 5000},
        "agents": {"file": str(root / "agents.toml")},
        "model_provider": {
            "failover_enabled": False,
            "max_retries": 0,
            "retry_backoff_ms": 0,
            "circuit_breaker_failure_threshold": 1,
            "circuit_breaker_cooldown_ms": 600_000,
            "discovery_ttl_ms": 3_600_000,
            "health_ttl_ms": 3_600_000,
            "providers": [
                fake_provider("oai", fake),
                fake_provider("flaky", fake),
                {"provider_id": "det", "kind": "deterministic"},
            ],
            "models": [
                {"model_id": "gpt", "provider_id": "oai", "upstream_model": "gpt-4o-mini"},
                {"model_id": "flaky", "provider_id": "flaky", "upstream_model": "gpt-4o-mini"},
                {"model_id": "deterministic", "provider_id": "det"},
            ],
        },
    }
    env = {"PALYRA_ADMIN_TOKEN": ADMIN, "PALYRA_TEST_UPSTREAM_KEY": UPSTREAM_KEY}
    with running_daemon(root, config, env) as running:
        yield running


def call(
    conn: http.client.HTTPConnection,
    method: str,
    path: str,
    body: Any = None,
    token: str = ADMIN,
) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    conn.request(method, path, body=None if body is None else json.dumps(body), headers=headers)
    response = conn.getresponse()
    raw = response.read()
    return response.status, json.loads(raw) if raw.startswith((b"{", b"[")) else raw


def worker_of(conn: http.client.HTTPConnection) -> dict[str, int]:
    status, body = call(conn, "GET", "/console/v1/models/status")
    assert status == 200, body
    worker: dict[str, int] = body["worker"]
    return worker


def one_connection_each(
    daemon: Daemon | int, workers: int = 2
) -> dict[int, http.client.HTTPConnection]:
    """A keep-alive connection to each worker (new connections land where the kernel puts
    them; those to a worker already held are closed)."""
    port = daemon if isinstance(daemon, int) else daemon.port
    found: dict[int, http.client.HTTPConnection] = {}
    deadline = time.monotonic() + 15
    while len(found) < workers:
        assert time.monotonic() < deadline, f"only reached workers {sorted(found)}"
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        try:
            index = worker_of(conn)["index"]
        except (OSError, http.client.HTTPException):
            conn.close()
            time.sleep(0.1)
            continue
        if index in found:
            conn.close()
        else:
            found[index] = conn
    return found


def chat(model: str, text: str = "hi") -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": text}]}


def test_requests_are_served_by_both_workers_and_metrics_count_them_all(daemon: Daemon) -> None:
    conns = one_connection_each(daemon)
    events = [json.loads(line)["event"] for line in daemon.log_text().splitlines() if "{" in line]
    first_two = [i for i, e in enumerate(events) if e == "worker_ready"][:2]
    assert events.index("all_workers_ready") > first_two[1], events  # logged when both serve
    assert {w["pid"] for w in map(worker_of, conns.values())} != {daemon.process.pid}
    for conn in conns.values():
        for _ in range(3):
            status, body = call(conn, "POST", CHAT, chat("deterministic"))
            assert status == 200, body
    _, metrics = call(conns[0], "GET", "/metrics")
    served = [
        float(line.rsplit(" ", 1)[1])
        for line in metrics.decode().splitlines()
        if line.startswith("palyra_requests_total{")
        and f'route="{CHAT}"' in line
        and 'model="deterministic"' in line
        and 'status="200"' in line
    ]
    assert served == [6.0]  # three answered by each worker, counted once on either
    # The per-deployment figures are the answering worker's own, and say so: summed over the
    # workers by Prometheus, they never go backwards from one scrape to the next.
    per_deployment = [
        line for line in metrics.decode().splitlines() if line.startswith("palyra_deployment_")
    ]
    assert any('model="deterministic"' in line for line in per_deployment), per_deployment
    assert all('worker="0"' in line for line in per_deployment), per_deployment
    # ... and the ledger, written by both into one SQLite file, holds every one of them.
    deadline = time.monotonic() + 5
    while True:
        _, page = call(conns[1], "GET", "/console/v1/requests?model=deterministic&limit=100")
        if len(page["requests"]) >= 6 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert len(page["requests"]) == 6, page


def test_a_client_keys_rpm_holds_across_workers(daemon: Daemon) -> None:
    assert_rpm_holds(one_connection_each(daemon))


def assert_rpm_holds(conns: dict[int, http.client.HTTPConnection]) -> None:
    status, made = call(
        conns[0],
        "POST",
        "/console/v1/keys",
        {"name": "shared", "rpm": 3, "models": ["deterministic"]},
    )
    assert status == 201, made
    secret = made["secret"]
    # Each worker reads new keys from the store within 0.5 s; a listing counts no request.
    for conn in conns.values():
        deadline = time.monotonic() + 5
        while call(conn, "GET", "/v1/models", token=secret)[0] != 200:
            assert time.monotonic() < deadline
            time.sleep(0.05)
    statuses = [
        call(conns[i % 2], "POST", CHAT, chat("deterministic"), token=secret)[0] for i in range(8)
    ]
    assert sorted(statuses) == [200] * 3 + [429] * 5, statuses


def test_with_redis_each_worker_shares_through_redis(tmp_path: Path) -> None:
    redis = pytest.importorskip("redis")
    try:
        redis.from_url(REDIS_URL, socket_connect_timeout=1).ping()
    except (OSError, redis.RedisError) as exc:
        pytest.skip(f"Redis not reachable at {REDIS_URL}: {exc}")
    config: dict[str, Any] = {
        "version": 1,
        "daemon": {"workers": 2},
        "state": {"redis_url": REDIS_URL},
        "model_provider": {
            "providers": [{"provider_id": "det", "kind": "deterministic"}],
            "models": [{"model_id": "deterministic", "provider_id": "det"}],
        },
    }
    with running_daemon(tmp_path, config, {"PALYRA_ADMIN_TOKEN": ADMIN}) as redis_daemon:
        conns = one_connection_each(redis_daemon)
        _, health = call(conns[0], "GET", "/healthz")
        assert health["dependencies"] == {"state_store": "ok", "redis": "ok", "workers": "ok"}
        assert_rpm_holds(conns)


def test_a_breaker_opened_through_one_worker_is_honoured_by_the_other(
    daemon: Daemon, fake: FakeUpstream
) -> None:
    conns = one_connection_each(daemon)
    fake.set_down(True)
    try:
        status, body = call(conns[0], "POST", CHAT, chat("flaky"))
        assert status >= 500, body
        seen = len(fake.requests_to(CHAT))
        # "Within about a second": two syncs of 0.25 s, with room to spare.
        deadline = time.monotonic() + 1.5
        while circuit_seen_by(conns[1]) != "open":
            assert time.monotonic() < deadline, "the other worker never saw the circuit open"
            time.sleep(0.05)
        status, body = call(conns[1], "POST", CHAT, chat("flaky"))
    finally:
        fake.set_down(False)
    assert status == 503, body
    assert body["error"]["code"] == "providers_unavailable", body
    assert "cooling down" in body["error"]["message"]
    assert len(fake.requests_to(CHAT)) == seen  # the other worker sent nothing upstream


def test_each_cron_tick_runs_once(daemon: Daemon) -> None:
    conns = one_connection_each(daemon)
    job = {"name": "tick", "agent_id": "bot", "prompt": "2+2", "schedule": {"every": "1s"}}
    status, made = call(conns[0], "POST", "/console/v1/cron/jobs", job)
    assert status == 201, made
    job_id = made["job_id"]
    # The worker that made the job schedules it at once; the other finds it at its next
    # resync (a minute) or, as here, at its start: then both claim each tick, and one wins.
    restart(daemon, conns[1])
    deadline = time.monotonic() + 15
    while True:  # three ticks of one second, however long the machine takes to run them
        _, runs = call(conns[0], "GET", f"/console/v1/cron/jobs/{job_id}/runs")
        if sum(r["trigger"] == "schedule" for r in runs["runs"]) >= 3:
            break
        assert time.monotonic() < deadline, runs
        time.sleep(0.1)
    call(conns[0], "DELETE", f"/console/v1/cron/jobs/{job_id}")
    ticks = [r["scheduled_at_ms"] for r in runs["runs"] if r["trigger"] == "schedule"]
    assert len(ticks) >= 3, runs
    assert len(ticks) == len(set(ticks)), runs  # no tick claimed by both workers


def circuit_seen_by(conn: http.client.HTTPConnection, provider_id: str = "flaky") -> str:
    """The state of a provider's circuit as the worker on `conn` sees it."""
    _, status = call(conn, "GET", "/console/v1/models/status")
    (found,) = (p for p in status["providers"] if p["provider_id"] == provider_id)
    state: str = found["circuit"]["state"]
    return state


def restart(daemon: Daemon, conn: http.client.HTTPConnection) -> None:
    """SIGKILL the worker on `conn`; back when its replacement serves."""
    victim = worker_of(conn)
    conn.close()
    os.kill(victim["pid"], signal.SIGKILL)
    deadline = time.monotonic() + 20
    while True:
        assert time.monotonic() < deadline, daemon.log_text()[-2000:]
        conns = one_connection_each(daemon)
        replacement = worker_of(conns[victim["index"]])
        if replacement["pid"] != victim["pid"]:
            return
        time.sleep(0.2)


def test_a_killed_worker_is_restarted(daemon: Daemon) -> None:
    restart(daemon, one_connection_each(daemon)[1])
    conns = one_connection_each(daemon)
    assert call(conns[1], "POST", CHAT, chat("deterministic"))[0] == 200
    assert '"worker_exited"' in daemon.log_text()


def test_while_a_worker_is_down_new_connections_go_to_the_others(daemon: Daemon) -> None:
    conns = one_connection_each(daemon)
    victim = worker_of(conns[1])
    exits = daemon.log_text().count('"worker_exited"')
    os.kill(victim["pid"], signal.SIGKILL)
    deadline = time.monotonic() + 5
    while daemon.log_text().count('"worker_exited"') == exits:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    # Its replacement is half a second away, then as long again starting: no new connection
    # may wait in a queue left behind with nobody accepting from it.
    for _ in range(8):
        conn = http.client.HTTPConnection("127.0.0.1", daemon.port, timeout=0.3)
        try:
            assert worker_of(conn)["index"] == 0
        finally:
            conn.close()
    restarted = one_connection_each(daemon)  # the replacement serves, on a fresh socket
    assert worker_of(restarted[1])["pid"] != victim["pid"]


def test_a_restarted_worker_serves_the_config_palyrad_started_with(daemon: Daemon) -> None:
    path = daemon.log.parent / "config.toml"
    started_with = path.read_text()
    assert 'model_id = "gpt"' in started_with
    path.write_text(started_with.replace('model_id = "gpt"', 'model_id = "renamed"'))
    try:
        restart(daemon, one_connection_each(daemon)[1])
        conns = one_connection_each(daemon)
        for conn in conns.values():  # the same models on both, the replacement's too
            _, models = call(conn, "GET", "/v1/models")
            assert "gpt" in {m["id"] for m in models["data"]}, models
    finally:
        path.write_text(started_with)


def served_models(conn: http.client.HTTPConnection) -> set[str]:
    status, models = call(conn, "GET", "/v1/models")
    assert status == 200, models
    return {m["id"] for m in models["data"]}


def wait_until_every_worker_serves(daemon: Daemon, model: str, present: bool = True) -> None:
    deadline = time.monotonic() + 15
    while True:
        conns = one_connection_each(daemon)
        seen = {index: model in served_models(conn) for index, conn in conns.items()}
        for conn in conns.values():
            conn.close()
        if all(found == present for found in seen.values()):
            return
        assert time.monotonic() < deadline, f"{model} served by workers: {seen}"
        time.sleep(0.05)


def test_sighup_reloads_every_worker_without_restarting_any(daemon: Daemon) -> None:
    path = daemon.log.parent / "config.toml"
    started_with = path.read_text()
    before = {w["pid"] for w in map(worker_of, one_connection_each(daemon).values())}
    path.write_text(started_with.replace('model_id = "flaky"', 'model_id = "reloaded"'))
    try:
        daemon.process.send_signal(signal.SIGHUP)
        wait_until_every_worker_serves(daemon, "reloaded")
        after = {w["pid"] for w in map(worker_of, one_connection_each(daemon).values())}
        assert after == before  # reloaded in place: no worker was restarted
        assert daemon.process.poll() is None
        assert '"config_reload_forwarded"' in daemon.log_text()
        # A worker started after the reload serves the reloaded config, not the first one.
        restart(daemon, one_connection_each(daemon)[1])
        wait_until_every_worker_serves(daemon, "reloaded")
    finally:
        path.write_text(started_with)
        daemon.process.send_signal(signal.SIGHUP)
        wait_until_every_worker_serves(daemon, "reloaded", present=False)


def test_a_reload_asked_of_one_worker_reaches_all_and_a_bad_one_none(daemon: Daemon) -> None:
    path = daemon.log.parent / "config.toml"
    started_with = path.read_text()
    try:
        path.write_text(started_with.replace('model_id = "flaky"', 'model_id = "via-http"'))
        conns = one_connection_each(daemon)
        status, answer = call(conns[0], "POST", "/console/v1/config/reload", {})
        assert status == 200, answer
        assert answer["workers"] == 2
        wait_until_every_worker_serves(daemon, "via-http")
        # A config with a problem: refused by the worker asked, and no worker changes.
        path.write_text(started_with + "[usage]\nretention = 3\n")
        conns = one_connection_each(daemon)
        status, answer = call(conns[1], "POST", "/console/v1/config/reload", {})
        assert status == 400, answer
        assert answer["error"]["problems"] == ["usage.retention: unknown key"]
        # ... nor does SIGHUP to the master (it logs the problems instead).
        refusals = daemon.log_text().count('"config_reload_refused"')
        daemon.process.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        while daemon.log_text().count('"config_reload_refused"') == refusals:
            assert time.monotonic() < deadline, daemon.log_text()[-2000:]
            time.sleep(0.02)
        wait_until_every_worker_serves(daemon, "via-http")
    finally:
        path.write_text(started_with)
        daemon.process.send_signal(signal.SIGHUP)
        wait_until_every_worker_serves(daemon, "via-http", present=False)


def test_sigterm_drains_every_worker_and_the_master_exits_0(
    daemon: Daemon, fake: FakeUpstream
) -> None:
    conns = one_connection_each(daemon)
    pids = [worker_of(conn)["pid"] for conn in conns.values()]
    delay_s = 1.0
    fake.script(CHAT, ChatReply(delay_s=delay_s))
    conn = conns[0]
    asked = len(fake.requests_to(CHAT))
    conn.request(
        "POST", CHAT, body=json.dumps(chat("gpt")), headers={"Authorization": f"Bearer {ADMIN}"}
    )
    deadline = time.monotonic() + 10
    while len(fake.requests_to(CHAT)) == asked:  # until the request is with the upstream
        assert time.monotonic() < deadline, daemon.log_text()[-2000:]
        time.sleep(0.005)
    daemon.process.send_signal(signal.SIGTERM)
    stopping = time.monotonic()
    # New connections are refused at once while that request drains, not queued in a socket
    # nobody accepts from any more (the master's copies, or a worker's).
    while not refused(daemon.port):
        assert time.monotonic() - stopping < 1.5, "new connections still accepted while stopping"
        time.sleep(0.02)
    # ... while it drains, not after: its answer has not come yet.
    assert select.select([conn.sock], [], [], 0)[0] == [], "answered before refusing"
    response = conn.getresponse()
    assert response.status == 200, response.read()
    assert time.monotonic() - stopping > delay_s / 2  # it was drained, not cut
    assert daemon.process.wait(timeout=15) == 0
    for pid in pids:
        assert not alive(pid)


def test_workers_whose_master_is_killed_drain_and_exit(tmp_path: Path) -> None:
    config = {"version": 1, "daemon": {"workers": 2}}
    with running_daemon(tmp_path, config, {"PALYRA_ADMIN_TOKEN": ADMIN}) as orphaned:
        pids = [worker_of(conn)["pid"] for conn in one_connection_each(orphaned).values()]
        environ = Path(f"/proc/{pids[0]}/environ").read_bytes().split(b"\0")
        spec = next(v for v in environ if v.startswith(SPEC_ENV.encode() + b"="))
        run_dir = Path(json.loads(spec.partition(b"=")[2])["channel"]).parent
        orphaned.process.kill()
        orphaned.process.wait()
        deadline = time.monotonic() + 10
        while any(map(alive, pids)):
            assert time.monotonic() < deadline, orphaned.log_text()[-2000:]
            time.sleep(0.05)
    assert orphaned.log_text().count('"master_gone"') == 2
    # What a killed master leaves behind (palyrad removes it when it exits otherwise).
    assert run_dir.name.startswith("palyrad-")
    shutil.rmtree(run_dir)


def refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except ConnectionRefusedError:
        return True
    return False


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split()[2]
    except FileNotFoundError:
        return False
    return state != "Z"  # a zombie has exited; only its parent's reaping is left


# --- not starting ---------------------------------------------------------------------------


def start(root: Path, config: str, port: int) -> subprocess.CompletedProcess[str]:
    root.mkdir(parents=True, exist_ok=True)
    (root / "config.toml").write_text(config)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PALYRA_", "XDG_"))}
    return subprocess.run(
        [PALYRAD, "--config", str(root / "config.toml"), "--port", str(port)],
        env={**env, "HOME": str(root), "PALYRA_STATE_DIR": str(root / "state")},
        capture_output=True,
        text=True,
        timeout=30,
    )


# The master, with process creation failing as fork() does at a pids limit (EAGAIN) for the
# calls numbered in FAILING ("all": every one); its log goes to stdout.
SPAWN_FAILS = """
import asyncio, os, sys
from pathlib import Path
from palyra.logs import configure_logging
from palyra import workers

configure_logging("info")
real, calls, failing = asyncio.create_subprocess_exec, [0], sys.argv[3]
async def flaky(*args, **kwargs):
    calls[0] += 1
    if failing == "all" or str(calls[0]) in failing.split(","):
        raise BlockingIOError(11, "Resource temporarily unavailable")
    return await real(*args, **kwargs)
asyncio.create_subprocess_exec = flaky
sys.exit(workers.run_master(
    "127.0.0.1", int(sys.argv[2]), 2, state_dir=Path(sys.argv[1]) / "state",
    config_path=Path(sys.argv[1]) / "config.toml", overrides={}, grace_s=1.0, env=os.environ,
))
"""


def spawn_failing(root: Path, port: int, failing: str) -> subprocess.Popen[str]:
    (root / "config.toml").write_text("version = 1\n[daemon]\nworkers = 2\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PALYRA_", "XDG_"))}
    return subprocess.Popen(
        [sys.executable, "-c", SPAWN_FAILS, str(root), str(port), failing],
        env={**env, "HOME": str(root), "PALYRA_ADMIN_TOKEN": ADMIN},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def test_a_worker_that_cannot_be_spawned_is_retried(tmp_path: Path) -> None:
    port = free_port()
    master = spawn_failing(tmp_path, port, "2")  # worker 1's first start
    try:
        conns = one_connection_each(port)  # both workers serve: worker 1 was retried
        assert sorted(conns) == [0, 1]
    finally:
        master.send_signal(signal.SIGTERM)
        out, _ = master.communicate(timeout=30)
    assert master.returncode == 0, out
    assert '"worker_spawn_failed"' in out and "Resource temporarily unavailable" in out, out


def test_when_no_worker_can_be_spawned_palyrad_exits_1(tmp_path: Path) -> None:
    master = spawn_failing(tmp_path, free_port(), "all")
    try:
        out, _ = master.communicate(timeout=30)
    finally:
        master.kill()
    assert master.returncode == 1, out
    assert "could not be started: [Errno 11] Resource temporarily unavailable" in out, out


def test_a_taken_port_is_one_clear_error_before_any_worker(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = start(tmp_path, "version = 1\n[daemon]\nworkers = 2\n", port)
    assert result.returncode == 1
    # The same words as with one worker (tests/test_daemon.py), not the bare errno.
    assert result.stderr.strip().splitlines() == [
        f"palyrad: cannot start: cannot listen on 127.0.0.1:{port}: the address is already in "
        "use (another palyrad?); stop it, or choose another port with --port or [daemon] port"
    ]
    assert "worker_started" not in result.stdout + result.stderr


def test_workers_that_cannot_start_stop_palyrad_with_the_reason(tmp_path: Path) -> None:
    (tmp_path / "agents.toml").write_text("version = 1\n[[agents]]\nnot toml")
    config = f'version = 1\n[daemon]\nworkers = 2\n[agents]\nfile = "{tmp_path}/agents.toml"\n'
    result = start(tmp_path, config, free_port())
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert any(line.startswith("palyrad: config error:") for line in lines), lines
    assert "before any worker served" in lines[-1]


if sys.platform != "linux":  # SO_REUSEPORT and /proc
    pytestmark = pytest.mark.skip("workers are tested on Linux")
