"""Fuzzing the console's JSON API: models status/discover/test-connection, cron jobs (create,
list, read, patch, trigger, runs, delete), agents, runs (create, read, cancel)."""

from __future__ import annotations

import contextlib
from urllib.parse import quote

import orjson
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from tests.fuzz.conftest import fuzz_settings
from tests.fuzz.harness import Blob, Fuzz, build_request, send_raw
from tests.fuzz.strategies import hostile, json_text, mutated, odd_headers, odd_text, render

pytestmark = pytest.mark.timeout(600)

JSON = [("Content-Type", "application/json")]
ODD_IDS = [
    "x",
    "%C2%B2",
    "%ff",
    "%00",
    "a" * 300,
    "..",
    "%2e%2e",
    "%2F",
    "-1",
    "null",
    "default",
]


# --- models -----------------------------------------------------------------------------------

provider_body = mutated(
    st.fixed_dictionaries(
        {}, optional={"provider_id": st.sampled_from(["det", "oai", "claude", "nope", "", "²"])}
    ),
    ["provider_id"],
)


@fuzz_settings(scale=1)
@given(
    route=st.sampled_from(["discover", "test-connection"]),
    body=provider_body | st.just(Blob(b"")),
    headers=odd_headers(),
)
def test_models_routes(
    fz: Fuzz, route: str, body: Blob, headers: list[tuple[bytes, bytes]]
) -> None:
    fz.send("POST", f"/console/v1/models/{route}", [*JSON, *headers], body)
    fz.send("GET", "/console/v1/models/status", headers)


# --- cron -------------------------------------------------------------------------------------

CRON_EXPRS = [
    "0 9 * * mon-fri",
    "* * * * *",
    "*/0 * * * *",
    "99 99 99 99 99",
    "0 0 31 2 *",
    "0 0 30 2 *",
    "0 0 29 2 1",
    "@yearly",
    "@reboot",
    "0 0 * * ²",
    "0 0 * * 7",
    "* * * * * *",
    "0-59/99999999999999999999 * * * *",
    "L W # ? *",
    "",
    " ",
]
TIMEZONES = [
    "UTC",
    "Europe/Prague",
    "Nope/Zone",
    "",
    "../../etc/passwd",
    "²",
    "Etc/GMT+14",
    "UTC\x00",
]
EVERY = [
    "15m",
    "1s",
    "0s",
    "100000000d",
    "99999999999999999999d",
    "1e999s",
    "²m",
    "-1m",
    "1h30m",
    "0.5s",
    "10",
    "366d",
    "367d",
    "",
]
AT = [
    "2099-12-01T09:00:00+01:00",
    "9999-12-31T23:59:59-12:00",
    "9999-12-31T23:59:59+14:00",
    "9999-12-31T23:59:59.999999-23:59",
    "0001-01-01T00:00:00Z",
    "2099-02-30T00:00:00Z",
    "2099-12-01T09:00:00",
    "2099-12-01",
    "²",
    "+275760-09-13T00:00:00Z",
    "2099-12-01T09:00:00+99:00",
]

schedule = st.one_of(
    st.fixed_dictionaries(
        {"cron": st.sampled_from(CRON_EXPRS)},
        optional={"timezone": st.sampled_from(TIMEZONES)},
    ),
    st.fixed_dictionaries({"every": st.sampled_from(EVERY)}),
    st.fixed_dictionaries({"at": st.sampled_from(AT)}),
)
job_template = st.fixed_dictionaries(
    {
        "name": st.sampled_from(["fuzz", "²", "x" * 201]) | odd_text,
        "agent_id": st.sampled_from(["default", "tools", "nope", ""]),
        "prompt": st.sampled_from(["say hi", "/tool calculator {}"]) | odd_text,
        "schedule": hostile(schedule),
    },
    optional={
        "enabled": st.sampled_from([True, False, False, 0, "true"]),
        "misfire": st.sampled_from(["catch_up", "skip", "", None]),
        "concurrency": st.sampled_from(["forbid", "queue_one", "replace", "x"]),
        "retry": st.fixed_dictionaries(
            {},
            optional={
                "max_attempts": st.sampled_from([1, 16, 17, 0, -1, 2**63, 1.0, True]),
                "backoff_ms": st.sampled_from([0, 3_600_000, 3_600_001, -1, 1e999]),
            },
        ),
        "auth_profile_id": st.sampled_from([None, "", "p", "²", "a" * 129]),
    },
)
JOB_FIELDS = [
    "name",
    "agent_id",
    "prompt",
    "schedule",
    "enabled",
    "misfire",
    "concurrency",
    "retry",
    "auth_profile_id",
]
LIMITS = ["", "?limit=1", "?limit=1000", "?limit=1001", "?limit=0", "?limit=-1", "?limit=%C2%B2"]
LIMITS += ["?limit=%D9%A3", "?limit=1e3", "?limit=" + "9" * 400, "?limit=%ff", "?limit=1&limit=2"]


def _delete_quietly(fz: Fuzz, job_id: str) -> None:
    request = build_request(fz.port, "DELETE", f"/console/v1/cron/jobs/{quote(job_id)}", fz.auth())
    with contextlib.suppress(Exception):
        send_raw(fz.port, request)


def _job_id(response_body: bytes) -> str | None:
    try:
        body = orjson.loads(response_body)
    except orjson.JSONDecodeError:
        return None
    job_id = body.get("job_id") if isinstance(body, dict) else None
    return job_id if isinstance(job_id, str) else None


@fuzz_settings(scale=4)
@given(
    body=mutated(job_template, JOB_FIELDS),
    patch=mutated(job_template, JOB_FIELDS),
    limit=st.sampled_from(LIMITS),
    trigger=st.booleans(),
)
@example(
    body=render(
        {"name": "n", "agent_id": "default", "prompt": "p", "schedule": {"every": "100000000d"}}
    ),
    patch=Blob(b"{}"),
    limit="",
    trigger=False,
)
@example(
    body=render(
        {
            "name": "n",
            "agent_id": "default",
            "prompt": "p",
            "schedule": {"at": "9999-12-31T23:59:59-12:00"},
        }
    ),
    patch=Blob(b"{}"),
    limit="",
    trigger=False,
)
def test_cron_jobs(fz: Fuzz, body: Blob, patch: Blob, limit: str, trigger: bool) -> None:
    """Create, then list, read, patch, maybe trigger, read the runs, delete: every step is
    checked, and the job is deleted at the end whatever happened."""
    created = fz.send("POST", "/console/v1/cron/jobs", JSON, body)
    job_id = _job_id(created.body) if created.status == 201 else None
    try:
        fz.send("GET", "/console/v1/cron/jobs")
        if job_id is None:
            return
        path = f"/console/v1/cron/jobs/{quote(job_id)}"
        fz.send("GET", path)
        fz.send("PATCH", path, JSON, patch)
        fz.send("GET", "/console/v1/cron/jobs")
        if trigger:
            fz.send("POST", path + "/trigger")
        fz.send("GET", path + "/runs" + limit)
        fz.send("DELETE", path)
    finally:
        if job_id is not None:
            _delete_quietly(fz, job_id)


@fuzz_settings(scale=2)
@given(
    job_id=st.sampled_from(ODD_IDS) | odd_text.map(lambda t: quote(t, safe="")),
    limit=st.sampled_from(LIMITS),
    method=st.sampled_from(["GET", "PATCH", "DELETE", "POST", "PUT"]),
    suffix=st.sampled_from(["", "/runs", "/trigger", "/x"]),
)
@example(job_id="x", limit="?limit=%C2%B2", method="GET", suffix="/runs")
def test_cron_odd_ids_and_queries(
    fz: Fuzz, job_id: str, limit: str, method: str, suffix: str
) -> None:
    fz.send(method, f"/console/v1/cron/jobs/{job_id}{suffix}{limit}", JSON, b"{}")


@fuzz_settings(scale=1)
@given(limit=st.sampled_from(LIMITS))
def test_cron_runs_of_a_real_job(fz: Fuzz, limit: str) -> None:
    body = render(
        {
            "name": "n",
            "agent_id": "default",
            "prompt": "p",
            "schedule": {"every": "1h"},
            "enabled": False,
        }
    )
    created = fz.send("POST", "/console/v1/cron/jobs", JSON, body)
    job_id = _job_id(created.body)
    assert job_id is not None, created.body
    try:
        fz.send("GET", f"/console/v1/cron/jobs/{job_id}/runs{limit}")
    finally:
        _delete_quietly(fz, job_id)


# --- agents and runs --------------------------------------------------------------------------

run_template = st.fixed_dictionaries(
    {
        "input": st.sampled_from(
            ["hi", '/tool calculator {"expression": "2**99999999"}', "/tool current_time {}"]
        )
        | st.builds(lambda args: "/tool calculator " + args.decode("utf-8", "replace"), json_text)
        | odd_text,
    },
    optional={
        "agent_id": st.sampled_from(["default", "tools", "nope", "", "²"]),
        "stream": st.booleans(),
        "origin": st.sampled_from(["api", "cli", "cron", ""]),
        "session_id": st.sampled_from(["s", "", "a" * 129]),
    },
)

CALCULATOR = [
    "2**99999999",
    "9**9**9",
    "1/0",
    "1e308*10",
    "(" * 500 + "1" + ")" * 500,
    "-" * 10000 + "1",
    "²",
    "__import__('os')",
    "1" * 5000,
    "10**10**10",
    "factorial(100000)",
]


@fuzz_settings(scale=3)
@given(body=mutated(run_template, ["agent_id", "input", "stream", "origin", "session_id"]))
def test_runs(fz: Fuzz, body: Blob) -> None:
    created = fz.send("POST", "/console/v1/runs", JSON, body, stream=b'"stream":true' in body)
    parsed = created.json()
    run_id = parsed.get("run_id") if isinstance(parsed, dict) else None
    run_id = run_id or created.header("x-palyra-run-id")
    if isinstance(run_id, str):
        fz.send("GET", f"/console/v1/runs/{quote(run_id)}")
        fz.send("POST", f"/console/v1/runs/{quote(run_id)}/cancel")


@fuzz_settings(scale=1)
@given(expression=st.sampled_from(CALCULATOR))
def test_runs_calculator(fz: Fuzz, expression: str) -> None:
    """The tools agent's calculator, asked through the deterministic model's /tool command."""
    args = orjson.dumps({"expression": expression}).decode()
    body = render({"agent_id": "tools", "input": f"/tool calculator {args}"})
    fz.send("POST", "/console/v1/runs", JSON, body)


@fuzz_settings(scale=1)
@given(
    run_id=st.sampled_from(ODD_IDS) | odd_text.map(lambda t: quote(t, safe="")),
    agent_id=st.sampled_from(ODD_IDS) | odd_text.map(lambda t: quote(t, safe="")),
    suffix=st.sampled_from(["", "/cancel"]),
)
def test_agents_and_runs_odd_ids(fz: Fuzz, run_id: str, agent_id: str, suffix: str) -> None:
    fz.send("GET", "/console/v1/agents")
    fz.send("GET", f"/console/v1/agents/{agent_id}")
    fz.send("POST" if suffix else "GET", f"/console/v1/runs/{run_id}{suffix}")
