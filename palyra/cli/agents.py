"""`palyra agents list | show ID` and `palyra run --agent A TEXT`."""

from __future__ import annotations

import json
import sys
from typing import Annotated, Any
from urllib.parse import quote

import typer

from palyra.cli.client import DaemonError
from palyra.cli.common import (
    call,
    compact_table,
    daemon,
    fail,
    nothing_yet,
    plural,
    print_json,
    print_table,
)

app = typer.Typer(no_args_is_help=True, help="Agents the daemon can run (from agents.toml).")

JsonOption = Annotated[bool, typer.Option("--json", help="print JSON")]
TOOL_RESULT_CHARS = 300


@app.command("list")
def agents_list(as_json: JsonOption = False) -> None:
    """Every agent, `default` included."""
    agents = call("GET", "/console/v1/agents")["agents"]
    if as_json:
        print_json(agents)
        return
    if nothing_yet(agents, "agents"):
        return
    table = compact_table()
    for header in ("agent", "name", "model", "tools"):
        table.add_column(header, overflow="fold")
    for header in ("max\nturns", "max tool\ncalls", "timeout"):
        table.add_column(header, justify="right", no_wrap=True)
    for agent in agents:
        table.add_row(
            agent["agent_id"],
            agent["display_name"],
            agent["model"] or "(default)",
            ", ".join(agent["tools"]) or "-",
            str(agent["max_turns"]),
            str(agent["max_tool_calls"]),
            f"{agent['timeout_s']:g}s",
        )
    print_table(table)


@app.command("show")
def agents_show(
    agent_id: Annotated[str, typer.Argument(help="agent id")], as_json: JsonOption = False
) -> None:
    """One agent's definition."""
    agent = call("GET", f"/console/v1/agents/{quote(agent_id, safe='')}")
    if as_json:
        print_json(agent)
        return
    for key in (
        "agent_id",
        "display_name",
        "model",
        "tools",
        "allowed_hosts",
        "auth_profile_id",
        "max_turns",
        "max_tool_calls",
        "timeout_s",
        "system_prompt",
    ):
        value = agent[key]
        if isinstance(value, list):
            value = ", ".join(value) or "-"
        print(f"{key:<16} {value if value not in (None, '') else '-'}")


def _show(event: dict[str, Any]) -> None:
    kind = event["type"]
    if kind == "run_started":
        print(f"[run {event['run_id']}] agent {event['agent_id']}", file=sys.stderr)
    elif kind == "model_text":
        print(event["text"])
    elif kind == "tool_call":
        print(f"[tool call] {event['name']} {event['arguments']}")
    elif kind == "tool_result":
        content = " ".join(str(event["content"]).split())
        if len(content) > TOOL_RESULT_CHARS:
            content = content[: TOOL_RESULT_CHARS - 1] + "…"
        print(f"[tool result] {event['name']}: {content}")
    sys.stdout.flush()


def run_command(
    text: Annotated[str, typer.Argument(help="the input; - reads it from stdin")],
    agent: Annotated[str, typer.Option("--agent", "-a", help="agent id")] = "default",
    as_json: Annotated[bool, typer.Option("--json", help="print the events as JSON lines")] = False,
) -> None:
    """Run an agent once and show its events as they happen."""
    if text == "-":
        text = sys.stdin.read().rstrip("\r\n")
    if not text.strip():
        fail("nothing to send: the input is empty", 2)
    client = daemon()
    body = {"agent_id": agent, "input": text, "stream": True, "origin": "cli"}
    finished: dict[str, Any] | None = None
    try:
        for event in client.stream("/console/v1/runs", body):
            if as_json:
                print(json.dumps(event), flush=True)
            else:
                _show(event)
            if event.get("type") == "run_finished":
                finished = event
    except DaemonError as exc:
        fail(str(exc))
    except KeyboardInterrupt:
        # Closing the stream cancels the run on the daemon.
        fail("interrupted; the run was cancelled", 1)
    if finished is None:
        fail("the daemon ended the run's stream without a result")
    usage = finished["usage"]
    summary = (
        f"[{finished['status']}] {plural(usage['total_tokens'], 'token')}, "
        f"{plural(finished['tool_calls'], 'tool call')}, {plural(finished['turns'], 'turn')}"
    )
    if not as_json:
        print(summary, file=sys.stderr)
    if finished["status"] != "succeeded":
        fail(f"run {finished['status']}: {finished['error_kind']}: {finished['error_message']}")
