"""`palyra runs list | show RUN_ID`: agent runs from every source (CLI, cron, console)."""

from __future__ import annotations

import datetime as dt
import time
from typing import Annotated, Any
from urllib.parse import quote, urlencode

import typer
from rich.console import Group
from rich.text import Text

from palyra.cli.agents import TOOL_RESULT_CHARS
from palyra.cli.common import (
    call,
    compact_table,
    duration,
    error_notes,
    fail,
    nothing_yet,
    plural,
    print_json,
    print_table,
    relative,
    state,
)

app = typer.Typer(no_args_is_help=True, help="Agent runs: history and one run in full.")

JsonOption = Annotated[bool, typer.Option("--json", help="print JSON")]
SOURCES = ("cli", "cron", "console")
STATUSES = ("running", "succeeded", "failed", "cancelled")


def _when(ms: int | None, now_s: float) -> str:
    if ms is None:
        return "-"
    at = dt.datetime.fromtimestamp(ms / 1000, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return f"{at} ({relative(ms / 1000 - now_s)})"


@app.command("list")
def runs_list(
    agent: Annotated[str | None, typer.Option("--agent", help="only this agent's runs")] = None,
    source: Annotated[
        str | None, typer.Option("--source", help="only runs from cli | cron | console")
    ] = None,
    status: Annotated[
        str | None,
        typer.Option("--status", help="only running | succeeded | failed | cancelled runs"),
    ] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, help="how many, newest first")] = 20,
    as_json: JsonOption = False,
) -> None:
    """Recent agent runs, newest first."""
    if source is not None and source not in SOURCES:
        fail(f"--source must be one of {', '.join(SOURCES)}, not {source!r}", 2)
    if status is not None and status not in STATUSES:
        fail(f"--status must be one of {', '.join(STATUSES)}, not {status!r}", 2)
    query = {"limit": str(limit)}
    for name, value in (("agent_id", agent), ("source", source), ("status", status)):
        if value:
            query[name] = value
    runs = call("GET", f"/console/v1/runs?{urlencode(query)}")["runs"]
    if as_json:
        print_json(runs)
        return
    if nothing_yet(runs, "agent runs", "start one with `palyra run TEXT`"):
        return
    now_s = time.time()
    table = compact_table()
    # The input under the run's id: the id alone takes half of 80 columns.
    table.add_column("run\ninput", overflow="fold")
    table.add_column("agent", overflow="fold")
    table.add_column("source", no_wrap=True)
    table.add_column("status", no_wrap=True)
    table.add_column("tokens", justify="right", no_wrap=True)
    table.add_column("started", justify="right", no_wrap=True)
    errors = []
    for run in runs:
        cell = Text(run["run_id"])
        excerpt = " ".join((run.get("input_excerpt") or "").split())
        if excerpt:
            cell.append("\n" + (excerpt if len(excerpt) <= 60 else excerpt[:59] + "…"), "dim")
        table.add_row(
            cell,
            run["agent_id"],
            run["source"],
            state(run["status"]),
            str(run["usage"]["total_tokens"]),
            relative(run["started_at_ms"] / 1000 - now_s),
        )
        if run["error_kind"] or run["error_message"]:
            error = ": ".join(e for e in (run["error_kind"], run["error_message"]) if e)
            errors.append((run["run_id"], error))
    print_table(Group(table, *error_notes(errors)))


def _event_line(event: dict[str, Any]) -> str | None:
    kind = event["type"]
    if kind == "tool_call":
        return f"[tool call] {event['name']} {event['arguments']}"
    if kind == "tool_result":
        content = " ".join(str(event["content"]).split())
        if len(content) > TOOL_RESULT_CHARS:
            content = content[: TOOL_RESULT_CHARS - 1] + "…"
        return f"[tool result] {event['name']}: {content}"
    if kind == "model_text":
        return f"[model] {event['text']}"
    return None  # started and finished: the fields above say it


@app.command("show")
def runs_show(
    run_id: Annotated[str, typer.Argument(help="run id (see `palyra runs list`)")],
    as_json: JsonOption = False,
) -> None:
    """One run: who ran it, its status, usage, events and output."""
    run = call("GET", f"/console/v1/runs/{quote(run_id, safe='')}")
    if as_json:
        print_json(run)
        return
    now_s = time.time()
    source = run["source"]
    if run.get("cron_job_id"):
        source += f" (job {run['cron_job_id']})"
    finished = run["finished_at_ms"]
    took = "still running"
    if finished is not None:
        ms = finished - run["started_at_ms"]
        took = f"{ms} ms" if ms < 1000 else duration(ms / 1000)
    # The model asked for, else the one that answered (the run's last event names it).
    events = run.get("events") or []
    model = run["model"] or next((e["model"] for e in reversed(events) if e.get("model")), "-")
    usage = run["usage"]
    rows = [
        ("run", run["run_id"]),
        ("agent", run["agent_id"]),
        ("source", source),
        ("status", run["status"]),
        ("model", model),
        ("started", _when(run["started_at_ms"], now_s)),
        ("took", took),
        (
            "usage",
            f"{plural(usage['total_tokens'], 'token')} ({usage['prompt_tokens']} in, "
            f"{usage['completion_tokens']} out), {plural(run['tool_calls'], 'tool call')}, "
            f"{plural(run['turns'], 'turn')}",
        ),
    ]
    if run["error_kind"] or run["error_message"]:
        rows.append(("error", ": ".join(e for e in (run["error_kind"], run["error_message"]) if e)))
    rows.append(("input", " ".join(str(run["input"]).split())))
    width = max(len(k) for k, _ in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value}")
    lines = [line for line in map(_event_line, events) if line]
    if lines:
        print("events:")
        for line in lines:
            print(f"  {line}")
    print("output:" if run["output"] else "output: none")
    if run["output"]:
        print(run["output"])
