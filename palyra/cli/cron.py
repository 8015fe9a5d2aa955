"""`palyra cron add | list | show | runs | trigger | enable | disable | rm`."""

from __future__ import annotations

import datetime as dt
import time
from typing import Annotated, Any
from urllib.parse import quote

import typer
from rich.console import Group
from rich.text import Text

from palyra.cli.common import (
    call,
    compact_table,
    error_notes,
    fail,
    nothing_yet,
    plural,
    print_json,
    print_table,
    relative,
    state,
)

app = typer.Typer(no_args_is_help=True, help="Scheduled agent runs.")

JsonOption = Annotated[bool, typer.Option("--json", help="print JSON")]
JobArgument = Annotated[str, typer.Argument(help="job id or name (see `palyra cron list`)")]
BASE = "/console/v1/cron/jobs"


def _job_path(job: str, tail: str = "") -> str:
    """The route of a job given by id or by name."""
    return f"{BASE}/{quote(resolve(job), safe='')}{tail}"


def _when(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).strftime("%Y-%m-%d %H:%M")


def _print_job(job: dict[str, Any]) -> None:
    retry = job["retry"]
    rows = [
        ("job", job["job_id"]),
        ("name", job["name"]),
        ("agent", job["agent_id"]),
        ("schedule", job["schedule"]["description"]),
        ("state", job["state"]),
        ("misfire", job["misfire"]),
        ("concurrency", job["concurrency"]),
        ("retry", f"{plural(retry['max_attempts'], 'attempt')}, backoff {retry['backoff_ms']} ms"),
        ("auth profile", job["auth_profile_id"] or "-"),
        ("prompt", job["prompt"]),
    ]
    if job.get("problem"):
        rows.append(("problem", job["problem"]))
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"{key:<{width}}  {value}")
    times = job.get("next_fire_times") or []
    print("next fire times:" if times else "next fire times: none")
    for when in times:
        print(f"  {when}")


@app.command("add")
def cron_add(
    name: Annotated[str, typer.Option("--name", help="a name for people")],
    agent: Annotated[str, typer.Option("--agent", help="agent id (see `palyra agents list`)")],
    prompt: Annotated[str, typer.Option("--prompt", help="what the agent is asked each time")],
    cron: Annotated[
        str | None, typer.Option("--cron", help='five-field cron expression, e.g. "0 9 * * 1-5"')
    ] = None,
    tz: Annotated[
        str | None, typer.Option("--tz", help="IANA zone for --cron (default: cron.timezone)")
    ] = None,
    every: Annotated[
        str | None, typer.Option("--every", help="fixed interval, e.g. 30s, 15m, 1h30m")
    ] = None,
    at: Annotated[
        str | None, typer.Option("--at", help="one instant, e.g. 2026-12-01T09:00:00+01:00")
    ] = None,
    misfire: Annotated[
        str | None, typer.Option("--misfire", help="catch_up (default) | skip")
    ] = None,
    concurrency: Annotated[
        str | None,
        typer.Option("--concurrency", help="forbid (default) | queue_one | replace"),
    ] = None,
    max_attempts: Annotated[
        int | None, typer.Option("--max-attempts", help="attempts per tick, 1-16 (default 1)")
    ] = None,
    auth_profile: Annotated[
        str | None, typer.Option("--auth-profile", help="auth profile for provider calls")
    ] = None,
    disabled: Annotated[bool, typer.Option("--disabled", help="create it switched off")] = False,
    as_json: JsonOption = False,
) -> None:
    """Schedule an agent run: exactly one of --cron, --every, --at."""
    given = [flag for flag, value in (("--cron", cron), ("--every", every), ("--at", at)) if value]
    if len(given) != 1:
        fail("give exactly one of --cron, --every, --at", 2)
    if tz and not cron:
        fail("--tz goes with --cron", 2)
    if misfire is not None and misfire not in ("catch_up", "skip"):
        fail("--misfire must be catch_up or skip", 2)
    if concurrency is not None and concurrency not in ("forbid", "queue_one", "replace"):
        fail("--concurrency must be forbid, queue_one or replace", 2)
    schedule: dict[str, str] = (
        {"cron": cron, **({"timezone": tz} if tz else {})}
        if cron
        else {"every": every}
        if every
        else {"at": at or ""}
    )
    body: dict[str, Any] = {
        "name": name,
        "agent_id": agent,
        "prompt": prompt,
        "schedule": schedule,
        "enabled": not disabled,
    }
    if misfire:
        body["misfire"] = misfire
    if concurrency:
        body["concurrency"] = concurrency
    if max_attempts is not None:
        body["retry"] = {"max_attempts": max_attempts}
    if auth_profile:
        body["auth_profile_id"] = auth_profile
    job = call("POST", BASE, body)
    if as_json:
        print_json(job)
        return
    print(f"added {job['job_id']}")
    _print_job(job)


@app.command("list")
def cron_list(as_json: JsonOption = False) -> None:
    """All jobs with their schedule and next fire time."""
    jobs = call("GET", BASE)["jobs"]
    if as_json:
        print_json(jobs)
        return
    if nothing_yet(jobs, "cron jobs", "add one with `palyra cron add`"):
        return
    now_s = time.time()
    table = compact_table()
    table.add_column("job", overflow="fold")
    # The schedule under the name: side by side, six columns did not fit 80.
    table.add_column("name\nschedule", overflow="fold")
    table.add_column("agent", overflow="fold")
    table.add_column("state", overflow="fold")
    table.add_column("next fire", no_wrap=True)
    problems = []
    for job in jobs:
        name = Text(job["name"])
        name.append(f"\n{job['schedule']['description']}", style="dim")
        table.add_row(
            job["job_id"],
            name,
            job["agent_id"],
            state(job["state"]),
            _next_fire(job, now_s),
        )
        # A job whose stored schedule cannot be used is listed all the same, saying why.
        if job.get("problem"):
            problems.append((job["job_id"], job["problem"]))
    print_table(Group(table, *error_notes(problems)))


def _next_fire(job: dict[str, Any], now_s: float) -> str:
    if job.get("problem"):
        return "none"
    at_ms = job.get("next_fire_at_ms")
    if at_ms is None:
        return "-"
    return relative(max(0.0, at_ms / 1000 - now_s))


def resolve(job: str) -> str:
    """A job's id from its id or its name (names are for people: `cron show nightly`)."""
    jobs = call("GET", BASE)["jobs"]
    if any(j["job_id"] == job for j in jobs):
        return job
    named = [j["job_id"] for j in jobs if j["name"] == job]
    if len(named) == 1:
        return str(named[0])
    if named:
        fail(f"{len(named)} cron jobs are named {job!r} ({', '.join(named)}): give the job id")
    fail(f"no cron job with id or name {job!r} (see `palyra cron list`)")


@app.command("show")
def cron_show(job: JobArgument, as_json: JsonOption = False) -> None:
    """One job, with its next five fire times."""
    found = call("GET", _job_path(job))
    if as_json:
        print_json(found)
        return
    _print_job(found)


@app.command("runs")
def cron_runs(
    job_id: JobArgument,
    limit: Annotated[int, typer.Option("--limit", help="how many, newest first")] = 20,
    as_json: JsonOption = False,
) -> None:
    """The job's run history: one line per attempt, skipped and missed ticks included."""
    runs = call("GET", _job_path(job_id, f"/runs?limit={limit}"))["runs"]
    if as_json:
        print_json(runs)
        return
    if nothing_yet(runs, "runs of this job"):
        return
    table = compact_table()
    table.add_column("scheduled\n(UTC)", no_wrap=True)
    table.add_column("trigger", overflow="fold")
    table.add_column("try", justify="right", no_wrap=True)
    table.add_column("status", overflow="fold")
    table.add_column("tokens", justify="right", no_wrap=True)
    table.add_column("tools", justify="right", no_wrap=True)
    table.add_column("output / reason", overflow="fold")
    errors = []
    for run in runs:
        scheduled = _when(run["scheduled_at_ms"])
        table.add_row(
            scheduled,
            run["trigger"],
            str(run["attempt"]),
            state(run["status"]),
            str(run["usage"]["total_tokens"]),
            str(run["tool_calls"]),
            _excerpt(run["output_excerpt"] or run["reason"] or ""),
        )
        if run["error_kind"] or run["error_message"]:
            error = ": ".join(e for e in (run["error_kind"], run["error_message"]) if e)
            errors.append((f"{scheduled} try {run['attempt']}", error))
    print_table(Group(table, *error_notes(errors)))


def _excerpt(text: str, limit: int = 80) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


@app.command("trigger")
def cron_trigger(job_id: JobArgument, as_json: JsonOption = False) -> None:
    """Run the job now, as a `manual` run."""
    result = call("POST", _job_path(job_id, "/trigger"), {})
    if as_json:
        print_json(result)
        return
    run = result["run"]
    if result["outcome"] == "started":
        print(f"started {run['cron_run_id']} (see `palyra cron runs {job_id}`)")
    elif result["outcome"] == "skipped":
        print(f"skipped: {run['reason']}")
    else:
        print("queued: it runs when the current run ends")


def _set_enabled(job_id: str, enabled: bool) -> None:
    job = call("PATCH", _job_path(job_id), {"enabled": enabled})
    print(f"{job['job_id']}: {job['state']}" + (f", next {job['next_fire_at']}" if enabled else ""))


@app.command("enable")
def cron_enable(job_id: JobArgument) -> None:
    """Switch the job on; it next fires at its next tick from now."""
    _set_enabled(job_id, True)


@app.command("disable")
def cron_disable(job_id: JobArgument) -> None:
    """Switch the job off; ticks while off are skipped on purpose, not recorded as missed."""
    _set_enabled(job_id, False)


@app.command("rm")
def cron_rm(job_id: JobArgument) -> None:
    """Delete the job and its history."""
    job = resolve(job_id)
    call("DELETE", _job_path(job))
    print(f"removed {job}")
