"""Hostile input to cron, over HTTP against the daemon app and on the schedule code itself:
far-future schedules, numbers that are not plain ASCII decimals, absurd sizes, NUL bytes
(which PostgreSQL refuses), and jobs an older version stored with a schedule this one
cannot use. Each is a 400 naming the field and the rule (or a 404 for an impossible id),
never a 500, and a refused request stores nothing."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import structlog
from aiohttp.test_utils import TestServer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from palyra.agents.registry import AgentRegistry
from palyra.agents.service import AgentService
from palyra.config import PalyraConfig
from palyra.cron.clock import ManualClock
from palyra.cron.jobs import Job, JobError, job_view, new_job
from palyra.cron.schedule import (
    MAX_EVERY_MS,
    MAX_INSTANT_MS,
    MIN_INSTANT_MS,
    Schedule,
    ScheduleError,
    build_schedule,
    iso,
    parse_duration,
    parse_instant,
    zone,
)
from palyra.cron.service import CronService
from palyra.errors import InvalidRequest
from palyra.routing import Routed
from palyra.server.keys import RUNTIME
from palyra.state.db import Database
from palyra.types import ChatRequest, ChatResult
from tests.conftest import ADMIN_TOKEN, GatewayFactory, gateway_config
from tests.cron.conftest import (
    HOUR,
    MINUTE,
    T0,
    GateRunner,
    backend_config,
    job_body,
    runs_of,
    start_cron,
)

__all__ = ["backend_config"]  # the fixture, run once per backend

AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
JOBS = "/console/v1/cron/jobs"
DAY = 24 * HOUR
# Zones at both ends of the offsets in use: +14:00 and -12:00.
EXTREME_ZONES = ("Pacific/Kiritimati", "Etc/GMT+12")


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(headers=AUTH) as session:
        yield session


async def call(
    http: aiohttp.ClientSession, server: TestServer, method: str, path: str, body: Any = None
) -> tuple[int, Any]:
    async with http.request(method, server.make_url(path), json=body) as response:
        return response.status, await response.json()


def job(**extra: Any) -> dict[str, Any]:
    return {"name": "digest", "agent_id": "default", "prompt": "hello", **extra}


# --- far-future schedules -----------------------------------------------------------------

FAR_FUTURE = [
    ({"every": "100000000d"}, "schedule.every", "maximum of 366 days"),
    ({"every": "99999999999999999d"}, "schedule.every", "maximum of 366 days"),
    ({"every": "367d"}, "schedule.every", "maximum of 366 days"),
    ({"every": "8785h"}, "schedule.every", "maximum of 366 days"),
    ({"every": "1" * 5000 + "s"}, "schedule.every", "longer than 64 characters"),
    ({"at": "9999-12-31T23:59:59-12:00"}, "schedule.at", "outside the supported range"),
    ({"at": "9999-12-31T00:00:00+14:00"}, "schedule.at", "outside the supported range"),
    ({"at": "9999-12-30T00:00:01Z"}, "schedule.at", "outside the supported range"),
    ({"at": "2030-01-01T00:00:00Z" + " " * 100}, "schedule.at", "longer than 64 characters"),
]


async def test_a_far_future_schedule_is_a_400_and_stores_nothing(
    tmp_path: Path, start_gateway: GatewayFactory, http: aiohttp.ClientSession
) -> None:
    server = await start_gateway(gateway_config(None, tmp_path / "state"))
    for schedule, param, words in FAR_FUTURE:
        status, answer = await call(http, server, "POST", JOBS, job(schedule=schedule))
        assert status == 400, (schedule, answer)
        assert answer["error"]["param"] == param, answer
        assert answer["error"]["message"].startswith(f"{param}: "), answer
        assert words in answer["error"]["message"], answer
    status, listed = await call(http, server, "GET", JOBS)
    assert status == 200 and listed["jobs"] == []
    # A PATCH is checked the same way, and a refused one changes nothing.
    status, created = await call(http, server, "POST", JOBS, job(schedule={"every": "1h"}))
    assert status == 201
    path = f"{JOBS}/{created['job_id']}"
    for schedule, param, _ in FAR_FUTURE:
        status, answer = await call(
            http, server, "PATCH", path, {"schedule": schedule, "name": "renamed"}
        )
        assert status == 400 and answer["error"]["param"] == param, (schedule, answer)
    status, shown = await call(http, server, "GET", path)
    assert status == 200 and shown["name"] == "digest"
    assert shown["schedule"]["every"] == "1h" and len(shown["next_fire_times"]) == 5
    status, listed = await call(http, server, "GET", JOBS)
    assert status == 200 and [j["job_id"] for j in listed["jobs"]] == [created["job_id"]]
    # The bounds themselves are accepted, and shown in the zones furthest from UTC.
    for schedule in ({"every": "366d"}, {"at": "9999-12-29T11:00:00-12:00"}):
        status, answer = await call(http, server, "POST", JOBS, job(schedule=schedule))
        assert status == 201, answer
        assert answer["problem"] is None and answer["next_fire_at"] is not None
    for name in EXTREME_ZONES:
        iso(MAX_INSTANT_MS, zone(name))
        iso(MIN_INSTANT_MS, zone(name))


def legacy(job_id: str, schedule: Schedule, next_fire_at: int | None) -> Job:
    """A job as an older version stored it, with no checks on its schedule."""
    created = int(datetime(2026, 1, 5, tzinfo=UTC).timestamp() * 1000)
    return Job(
        job_id=job_id,
        name=job_id,
        agent_id="default",
        prompt="p",
        schedule=dataclasses.replace(schedule, anchor_ms=created),
        created_at=created,
        updated_at=created,
        next_fire_at=next_fire_at,
    )


async def test_a_job_stored_with_an_unusable_schedule_lists_and_deletes(
    tmp_path: Path, start_gateway: GatewayFactory, http: aiohttp.ClientSession
) -> None:
    server = await start_gateway(gateway_config(None, tmp_path / "state"))
    store = server.app[RUNTIME].cron.store
    huge_every = legacy(
        "job_every", Schedule("every", every_ms=100_000_000 * DAY), 8_641_767_571_200_000
    )
    year_10000 = legacy("job_at", Schedule("at", at_ms=253_402_343_999_000), 253_402_343_999_000)
    no_zone = legacy(
        "job_zone", Schedule("cron", expr="0 9 * * *", timezone="Mars/Olympus_Mons"), T0 + DAY
    )
    for poisoned in (huge_every, year_10000, no_zone):
        await store.insert_job(poisoned)
    status, fine = await call(http, server, "POST", JOBS, job(schedule={"every": "1h"}))
    assert status == 201

    status, listed = await call(http, server, "GET", JOBS)
    assert status == 200, listed
    views = {j["job_id"]: j for j in listed["jobs"]}
    assert views[fine["job_id"]]["problem"] is None
    assert views[fine["job_id"]]["next_fire_at"] is not None
    for poisoned, words in (
        (huge_every, "every: 100000000d has no tick in the supported range"),
        (year_10000, "at: 253402343999000 ms is outside the supported range"),
        (no_zone, "unknown IANA time zone 'Mars/Olympus_Mons'"),
    ):
        view = views[poisoned.job_id]
        assert view["next_fire_at"] is None and view["next_fire_at_ms"] is None, view
        assert words in view["problem"], view
        status, shown = await call(http, server, "GET", f"{JOBS}/{poisoned.job_id}")
        assert status == 200 and shown["next_fire_times"] == [] and shown["problem"], shown
    assert views["job_at"]["schedule"] == {
        "kind": "at",
        "at": None,
        "description": "at 253402343999000 ms (out of range)",
    }

    # Switched off and on again, the stored schedule is refused rather than left to never
    # fire; a new schedule mends the job.
    path = f"{JOBS}/job_every"
    status, patched = await call(http, server, "PATCH", path, {"enabled": False})
    assert status == 200 and patched["state"] == "disabled"
    status, answer = await call(http, server, "PATCH", path, {"enabled": True})
    assert status == 400 and answer["error"]["param"] == "schedule", answer
    assert "stored schedule cannot be used" in answer["error"]["message"]
    status, patched = await call(
        http, server, "PATCH", path, {"enabled": True, "schedule": {"every": "1d"}}
    )
    assert status == 200 and patched["problem"] is None and len(patched["next_fire_times"]) == 5
    for job_id in ("job_at", "job_zone"):
        status, answer = await call(http, server, "DELETE", f"{JOBS}/{job_id}")
        assert status == 200 and answer == {"job_id": job_id, "deleted": True}
    status, listed = await call(http, server, "GET", JOBS)
    assert sorted(j["job_id"] for j in listed["jobs"]) == sorted(["job_every", fine["job_id"]])


# --- query integers -----------------------------------------------------------------------


async def test_limit_must_be_a_plain_ascii_decimal_in_range(
    tmp_path: Path, start_gateway: GatewayFactory, http: aiohttp.ClientSession
) -> None:
    server = await start_gateway(gateway_config(None, tmp_path / "state"))
    _, created = await call(http, server, "POST", JOBS, job(schedule={"every": "1h"}))
    runs = f"{JOBS}/{created['job_id']}/runs"
    for query in (
        "%C2%B2",  # "²": str.isdigit() says yes, int() says no
        "%D9%A1%D9%A0",  # Arabic-Indic "10": int() would read it
        "%EF%BC%95",  # a full-width 5
        "0",
        "1001",
        "-1",
        "+5",
        "%205",
        "1e3",
        "0x10",
        "1_0",
        "99999999999999999999999999",
        "",
        "ten",
        "%00",
        "%FF",
        "5&limit=6",
    ):
        async with http.get(server.make_url(f"{runs}?limit={query}")) as response:
            answer = await response.json()
            assert response.status == 400, (query, answer)
        assert answer["error"]["param"] == "limit", answer
        assert "limit: must be a decimal integer from 1 to 1000" in answer["error"]["message"]
    for query in ("1", "05", "1000"):
        async with http.get(server.make_url(f"{runs}?limit={query}")) as response:
            assert response.status == 200, query


# --- sizes and NUL, on both backends --------------------------------------------------------


async def test_sizes_and_nul_bytes_are_400s_on_every_backend(
    backend_config: PalyraConfig, start_gateway: GatewayFactory, http: aiohttp.ClientSession
) -> None:
    server = await start_gateway(backend_config)
    cases = [
        (job(name="a\x00b", schedule={"every": "1h"}), "name", "NUL"),
        (job(prompt="p\x00", schedule={"every": "1h"}), "prompt", "NUL"),
        (job(name="n" * 201, schedule={"every": "1h"}), "name", "at most 200 characters"),
        (job(prompt="p" * 32_001, schedule={"every": "1h"}), "prompt", "32000 characters"),
        (job(agent_id="a" * 65, schedule={"every": "1h"}), "agent_id", "64 characters"),
        (
            job(schedule={"cron": "0 9 * * *", "timezone": "Europe/" + "x" * 5000}),
            "schedule.timezone",
            "at most 64 characters",
        ),
        (
            job(schedule={"cron": "0 9 * * *", "timezone": "Europe/Prague\x00"}),
            "schedule.timezone",
            "unknown IANA time zone",
        ),
        (
            job(schedule={"cron": ",".join(["0"] * 5000) + " * * * *"}),
            "schedule.cron",
            "longer than 512 characters",
        ),
        (job(schedule={"cron": "0 9 * * *", "timezone": 0}), "schedule.timezone", "IANA"),
        (job(schedule={"cron": "0 9 * * *", "timezone": []}), "schedule.timezone", "IANA"),
        (job(schedule={"cron": "0 9 * * *\x00"}), "schedule.cron", "bad day-of-week"),
        (job(schedule={"every": "1\x00s"}), "schedule.every", "cannot read"),
        (job(schedule={"every": "\u0661\u0660s"}), "schedule.every", "cannot read"),
        # datetime.fromisoformat() would read this, taking the NUL for any separator.
        (job(schedule={"at": "2030-01-01\x0000:00:00Z"}), "schedule.at", "not an ISO 8601"),
        (job(schedule={"at": "\uff12030-01-01T00:00:00Z"}), "schedule.at", "not an ISO 8601"),
        (job(schedule={"every": "1h", "kind": "x" * 10_000}), "schedule.kind", "…"),
        (job(schedule={"every": "1h"}, auth_profile_id="main\n"), "auth_profile_id", "<= 128"),
        (job(schedule={"every": "1h"}, **{"x" * 10_000: 1}), "x" * 63 + "…", "unknown field"),
        (
            job(schedule={"every": "1h"}, retry={"max_attempts": 1e300}),
            "retry.max_attempts",
            "1 to 16",
        ),
        (
            job(schedule={"every": "1h"}, retry={"backoff_ms": 10**30}),
            "retry.backoff_ms",
            "0 to 3600000",
        ),
    ]
    for body, param, words in cases:
        status, answer = await call(http, server, "POST", JOBS, body)
        assert status == 400, (param, answer)
        assert answer["error"]["param"] == param, answer
        assert words in answer["error"]["message"], answer
        assert len(answer["error"]["message"]) < 300, answer  # input is echoed cut short
    for raw in (b'{"name": NaN}', b'{"retry": {"max_attempts": Infinity}}', b'{"a": 1e400}'):
        async with http.post(server.make_url(JOBS), data=raw) as response:
            assert response.status == 400 and (await response.json())["error"]["code"] == (
                "invalid_json"
            )
    # An id no job can have is not looked up: NUL is an error in PostgreSQL, not a miss.
    for method, body in (("GET", None), ("PATCH", {"name": "x"}), ("DELETE", None)):
        status, answer = await call(http, server, method, f"{JOBS}/job%00x", body)
        assert status == 404 and answer["error"]["param"] == "job_id", answer
    for tail in ("/trigger", "/runs"):
        method = "POST" if tail == "/trigger" else "GET"
        status, answer = await call(http, server, method, f"{JOBS}/job%00x{tail}")
        assert status == 404, answer
    status, answer = await call(http, server, "GET", f"{JOBS}/{'j' * 129}")
    assert status == 404 and len(answer["error"]["message"]) < 100
    status, listed = await call(http, server, "GET", JOBS)
    assert status == 200 and listed["jobs"] == []


# --- the schedule code ----------------------------------------------------------------------


def test_durations_are_ascii_decimal_and_bounded() -> None:
    assert parse_duration("366d") == MAX_EVERY_MS == parse_duration("8784h")
    assert parse_duration("1h30m") == 90 * MINUTE
    for text, words in (
        ("\u0661\u0660s", "cannot read"),  # int() reads Arabic-Indic digits as 10
        ("\uff11\uff10s", "cannot read"),  # full-width 10
        ("\u00b2s", "cannot read"),
        ("\u00b2", "cannot read"),
        ("367d", "maximum of 366 days (366d)"),
        ("366d1ms", "maximum of 366 days"),
        ("9" * 60 + "d", "maximum of 366 days"),
        ("9" * 65 + "d", "longer than 64 characters"),
    ):
        with pytest.raises(ScheduleError, match=r"^every: ") as raised:
            parse_duration(text)
        assert words in str(raised.value), text


def test_instants_must_be_representable_in_every_zone() -> None:
    assert parse_instant("9999-12-30T00:00:00Z") == MAX_INSTANT_MS
    assert parse_instant("9999-12-30T11:59:59+12:00") < MAX_INSTANT_MS
    for text in (
        "9999-12-31T23:59:59-12:00",  # year 10000 in UTC
        "9999-12-30T00:00:00.001Z",
        "0001-01-01T00:00:00+14:00",  # year 0 in UTC
    ):
        with pytest.raises(ScheduleError, match="outside the supported range"):
            parse_instant(text)
    for name in EXTREME_ZONES:
        assert iso(MAX_INSTANT_MS, zone(name)).startswith("99")
        assert iso(MIN_INSTANT_MS, zone(name)).startswith("000")
    with pytest.raises(ScheduleError, match="outside the times a schedule can hold"):
        iso(MAX_INSTANT_MS + 1)


def test_next_fire_times_never_leave_the_representable_range() -> None:
    near_end = MAX_INSTANT_MS
    assert Schedule("every", every_ms=DAY, anchor_ms=T0).next_after(near_end) is None
    assert Schedule("every", every_ms=100_000_000 * DAY, anchor_ms=T0).next_after(T0) is None
    assert Schedule("every", every_ms=0, anchor_ms=T0).next_after(T0) is None
    assert Schedule("at", at_ms=MAX_INSTANT_MS + 1).next_after(T0) is None
    assert Schedule("cron", expr="0 0 1 1 *", timezone="Etc/GMT-14").next_after(near_end) is None
    with pytest.raises(ScheduleError, match="unknown IANA time zone"):
        Schedule("cron", expr="0 9 * * *", timezone="Nowhere/Land").next_after(T0)
    with pytest.raises(ScheduleError, match="unknown schedule kind"):
        Schedule("sometimes").next_after(T0)  # type: ignore[arg-type]


def test_a_schedule_with_no_next_tick_is_refused_not_stored_silent() -> None:
    near_end = MAX_INSTANT_MS
    for schedule, param in (
        ({"cron": "0 0 1 1 *", "timezone": "Pacific/Kiritimati"}, "schedule.cron"),
        ({"every": "1d"}, "schedule.every"),
    ):
        body = {"name": "n", "agent_id": "a", "prompt": "p", "schedule": schedule}
        with pytest.raises(JobError) as raised:
            new_job(body, default_tz="UTC", now_ms=near_end, agent_exists=lambda _: True)
        assert raised.value.field == param
        assert "has no fire time after now" in raised.value.message


_DURATIONISH = st.from_regex(r"\A[0-9\u00b2\u0660-\u0669 ]{0,70}(ms|d|h|m|s)?\Z")
_ISOISH = st.builds(
    lambda year, rest, offset: f"{year:04d}{rest}{offset}",
    st.integers(0, 10_000),
    st.sampled_from(["-12-31T23:59:59", "-01-01T00:00:00", "-06-15T12:00:00.5"]),
    st.sampled_from(["Z", "+14:00", "-12:00", "+23:59", "", "+24:00"]),
)


@settings(
    max_examples=300,
    deadline=None,
    database=None,  # no .hypothesis directory in the working tree
    suppress_health_check=[HealthCheck.too_slow],
)
@given(
    kind=st.sampled_from(["every", "at", "cron"]),
    text=st.one_of(st.text(max_size=80), _DURATIONISH, _ISOISH),
    timezone=st.one_of(st.sampled_from(["UTC", *EXTREME_ZONES]), st.text(max_size=20)),
)
def test_any_schedule_text_is_refused_cleanly_or_shown_anywhere(
    kind: str, text: str, timezone: str
) -> None:
    """Whatever the text: a ScheduleError, or a schedule whose next time is representable
    and whose job can be shown."""
    try:
        schedule = build_schedule(
            kind, expr=text, timezone=timezone, every=text, at=text, anchor_ms=T0
        )
    except ScheduleError:
        return
    nxt = schedule.next_after(T0)
    assert nxt is None or MIN_INSTANT_MS <= nxt <= MAX_INSTANT_MS
    view = job_view(legacy("job_x", schedule, nxt))
    assert view["problem"] is None


# --- the scheduler ----------------------------------------------------------------------------


async def test_a_due_job_whose_stored_zone_no_longer_loads_stops_without_blocking_others(
    db: Database, clock: ManualClock
) -> None:
    runner = GateRunner()
    cron: CronService = await start_cron(db, runner, clock)
    good = await cron.create(job_body({"every": "1m"}))
    # As if tzdata lost the zone after an older version stored the job.
    broken = legacy(
        "job_lost_zone",
        Schedule("cron", expr="* * * * *", timezone="Atlantis/Capital"),
        T0 + MINUTE,
    )
    await cron.store.insert_job(broken)
    cron.scheduler.notify(broken.job_id, broken.next_fire_at)
    with structlog.testing.capture_logs() as logs:
        await clock.advance(MINUTE)
        await cron.scheduler.settle()
        await cron.scheduler.wait_runs()
    assert [r["status"] for r in await runs_of(cron.store, good.job_id)] == ["succeeded"]
    (missed,) = await runs_of(cron.store, broken.job_id)
    assert missed["status"] == "missed" and missed["scheduled_at"] == T0 + MINUTE
    assert "the schedule cannot be used: unknown IANA time zone" in missed["reason"]
    stored = await cron.store.get_job(broken.job_id)
    assert stored is not None and stored.next_fire_at is None
    assert not [e for e in logs if e["log_level"] in ("error", "critical")], logs
    assert [e["event"] for e in logs if e["log_level"] == "warning"] == ["cron_schedule_unusable"]
    await cron.update(broken.job_id, {"enabled": False})
    with pytest.raises(InvalidRequest, match="stored schedule cannot be used"):
        await cron.update(broken.job_id, {"enabled": True})
    await cron.aclose()


async def test_a_retention_longer_than_history_purges_nothing_instead_of_overflowing(
    db: Database, clock: ManualClock
) -> None:
    """A cutoff before 1970 purges nothing. (`history_retention_days` of 10**15 once
    overflowed SQLite's INTEGER and stopped the scheduler and the agent service starting; the
    config now bounds it at 100 years, still longer than the time since 1970.)"""
    cron = await start_cron(db, GateRunner(), clock, history_retention_days=36_500)
    created = await cron.create(job_body({"every": "1m"}))
    await cron.trigger(created.job_id)
    await cron.scheduler.wait_runs()
    assert await cron.scheduler.purge() == 0
    assert len(await runs_of(cron.store, created.job_id)) == 1
    await cron.aclose()
    agents = AgentService(
        AgentRegistry({}), _no_chat, node_id="node-a", retention_days=36_500, now_ms=clock.now_ms
    )
    await agents.start(db, heartbeat=False)
    assert await agents.store.purge(-(10**30)) == 0
    await agents.aclose()


async def _no_chat(request: ChatRequest) -> Routed[ChatResult]:
    raise AssertionError("no chat is expected")
