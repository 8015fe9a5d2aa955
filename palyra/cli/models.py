"""`palyra models list | status | discover | test-connection`."""

from __future__ import annotations

import sys
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from typing import Annotated, Any

import typer
from rich import box
from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from palyra.cli.common import (
    call,
    compact_table,
    console,
    error_notes,
    nothing_yet,
    print_json,
    print_table,
    progress,
    state,
)

app = typer.Typer(no_args_is_help=True, help="Models the daemon routes to, and their providers.")

# Providers probed or listed at once when each gets its own call (for the progress bar).
PARALLEL_CALLS = 8
JsonOption = Annotated[bool, typer.Option("--json", help="print JSON")]
ProviderOption = Annotated[
    str | None, typer.Option("--provider", help="only this provider (default: all)")
]


@app.command("list")
def models_list(as_json: JsonOption = False) -> None:
    """List configured and discovered models."""
    data = call("GET", "/v1/models")["data"]
    if as_json:
        print_json(data)
        return
    if nothing_yet(data, "models"):
        return
    table = compact_table()
    table.add_column("model", overflow="fold")
    table.add_column("role", overflow="fold")
    table.add_column("provider", overflow="fold")
    # Whether it is on shares the source's column: five columns did not fit 80.
    table.add_column("source", overflow="fold")
    for row in data:
        extra = row.get("palyra") or {}
        source = Text(extra.get("source", ""))
        if not extra.get("enabled", True):
            source.append(", ")
            source.append_text(state("disabled"))
        table.add_row(
            row["id"],
            extra.get("role", ""),
            extra.get("provider_id", row.get("owned_by", "")),
            source,
        )
    print_table(table)


def _ago(ms: int | None) -> str:
    if ms is None:
        return "never"
    seconds = max(0.0, time.time() - ms / 1000)
    return f"{seconds:.0f}s ago" if seconds < 120 else f"{seconds / 60:.0f}m ago"


def _circuit(circuit: dict[str, Any]) -> str:
    if circuit["state"] == "open":
        return f"open ({circuit['retry_after_ms'] / 1000:.1f}s)"
    return str(circuit["state"])


def _count(n: int) -> str:
    # Token counts run to six digits and more: kept short so the table fits 80 columns.
    if n < 10_000:
        return str(n)
    if n < 1_000_000:
        return f"{n / 1000:.0f}k"
    return f"{n / 1_000_000:.1f}M".replace(".0M", "M")


def _against(used: int, limit: int) -> str:
    return f"{_count(used)}/{_count(limit)}" if limit else _count(used)


def _seconds(s: float) -> str:
    return f"{s:.0f}s" if s < 120 else f"{s / 60:.0f}m"


def _deployment_notes(row: dict[str, Any], now_ms: float) -> list[str]:
    """Why the deployment was last passed over, and whether its upstream says it is spent."""
    key = f"{row['model_id']}@{row['provider_id']}"
    notes = []
    upstream = row.get("upstream") or {}
    until = upstream.get("exhausted_until_ms")
    if until is not None and until > now_ms:
        left = [
            f"{upstream[field]} {what} left"
            for field, what in (("remaining_requests", "requests"), ("remaining_tokens", "tokens"))
            if upstream.get(field) is not None
        ]
        notes.append(
            f"{key}: upstream exhausted for {_seconds((until - now_ms) / 1000)} more"
            + (f" ({', '.join(left)})" if left else "")
        )
    skipped = row.get("skipped")
    if skipped:
        ago = _seconds(max(0.0, now_ms - skipped["at_ms"]) / 1000)
        notes.append(f"{key}: skipped {ago} ago: {skipped['reason']}")
    return notes


def deployments_view(rows: list[dict[str, Any]], now_ms: float) -> RenderableType:
    """The Deployments table, then one line per deployment that was skipped or is exhausted
    (the reasons are long: in a column they would squeeze the table past 80 columns)."""
    # Light rules, no outer edge, one space between columns, the strategy under the model
    # rather than in a column of its own: all this has to fit 80 terminal columns. Figures
    # never wrap; ids fold rather than end in "…".
    table = Table(
        title="Deployments",
        title_justify="left",
        box=box.SIMPLE_HEAD,
        show_edge=False,
        padding=0,
    )
    table.add_column("model\n(strategy)", overflow="fold")
    table.add_column("provider", overflow="fold")
    table.add_column("wt/\nprio", justify="right", no_wrap=True)
    for header in ("in\nflight", "req\n/min", "tok\n/min", "TTFT", "share"):
        table.add_column(header, justify="right", no_wrap=True)
    by_model: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        by_model.setdefault(row["model_id"], []).append(row)
    notes: list[str] = []
    for model_id, group in by_model.items():
        for i, row in enumerate(group):
            model = Text(model_id)
            # One deployment has no choice to make: its strategy would say nothing.
            if i == 0 and len(group) > 1:
                model.append(f"\n({row['strategy']})", style="dim")
            ttft = row.get("ttft_ms")
            table.add_row(
                model,
                row["provider_id"],
                f"{row['weight']:g}/{row['priority']}",
                str(row["in_flight"]),
                _against(row["requests_last_minute"], row["rpm_limit"]),
                _against(row["tokens_last_minute"], row["tpm_limit"]),
                "-" if ttft is None else f"{ttft:.0f}ms",
                f"{row['share'] * 100:.0f}%",
            )
            notes.extend(_deployment_notes(row, now_ms))
    if not notes:
        return table
    return Group(table, *(Text(note) for note in notes))


def dependencies_notes(status: dict[str, Any]) -> list[Text]:
    """`degraded: redis not answering: <why>` per dependency that does not answer (what
    `/healthz` says, with the reason only the admin may see)."""
    if not status.get("degraded"):
        return []
    notes = []
    for name, info in (status.get("dependencies") or {}).items():
        if not info.get("ok", True):
            note = Text("degraded", style="bold yellow")
            note.append(f": {name} not answering: {info.get('error') or 'no answer'}")
            notes.append(note)
    # An older daemon without per-dependency detail still says it is degraded.
    return notes or [Text("degraded: a state dependency does not answer", style="bold yellow")]


def providers_view(providers: list[dict[str, Any]]) -> RenderableType:
    """One row per provider; their errors below the table (one long error in a column ran
    fourteen lines down an 80-column terminal)."""
    table = compact_table("Providers")
    table.add_column("provider", overflow="fold")
    table.add_column("health", overflow="fold")
    table.add_column("circuit", no_wrap=True)
    table.add_column("last\nprobe", justify="right", no_wrap=True)
    table.add_column("latency", justify="right", no_wrap=True)
    table.add_column("models\nfound", justify="right", no_wrap=True)
    errors = []
    for p in providers:
        health = p["health"]
        latency = health["last_probe_latency_ms"]
        discovered = p["discovery"]["model_ids"] if p["discovery"] else []
        circuit = p["circuit"]
        table.add_row(
            p["provider_id"],
            state(health["state"] if p["enabled"] else "disabled"),
            state(circuit["state"], _circuit(circuit)),
            _ago(health["last_probe_at_ms"]),
            "-" if latency is None else f"{latency:.0f}ms",
            str(len(discovered)) if p["discovery"] else "-",
        )
        if health["last_error"]:
            errors.append((p["provider_id"], health["last_error"]))
    notes = error_notes(errors)
    return Group(table, *notes) if notes else table


def models_view(models: list[dict[str, Any]]) -> Table:
    table = compact_table("Models")
    table.add_column("model", overflow="fold")
    table.add_column("provider", overflow="fold")
    table.add_column("role", overflow="fold")
    table.add_column("available", overflow="fold")
    for m in models:
        available = state("yes")
        if not m["available"]:
            available = Text.assemble(state("no"), f": {m['reason']}")
        table.add_row(m["model_id"], m["provider_id"], m["role"], available)
    return table


@app.command("status")
def models_status(as_json: JsonOption = False) -> None:
    """Health, circuit state, last probe and discovered models per provider; availability
    per model; `degraded` when the state store or Redis does not answer."""
    status = call("GET", "/console/v1/models/status")
    if as_json:
        print_json(status)
        return
    out = console()
    for note in dependencies_notes(status):
        out.print(note)
    out.print(providers_view(status["providers"]))
    out.print()
    out.print(models_view(status["models"]))
    # An older daemon's status has no "deployments": nothing more to show then.
    if status.get("deployments"):
        out.print()
        out.print(deployments_view(status["deployments"], time.time() * 1000))


def _providers_to_do(provider: str | None) -> list[str | None]:
    """Every provider, one call each (so progress can be shown), or the one asked for."""
    if provider is not None or not sys.stderr.isatty():
        return [provider]
    ids = [p["provider_id"] for p in call("GET", "/console/v1/models/status")["providers"]]
    return list(ids) or [None]


def _each_provider(what: str, path: str, provider: str | None) -> dict[str, Any]:
    """POST `path` for each provider, a few at a time, with a progress bar on a terminal
    when there are several; the providers' answers merged, in the daemon's order."""
    todo = _providers_to_do(provider)
    answers: dict[str | None, dict[str, Any]] = {}
    with progress(what, len(todo)) as update, ThreadPoolExecutor(PARALLEL_CALLS) as pool:
        futures = {pool.submit(call, "POST", path, {"provider_id": pid}): pid for pid in todo}
        for future in as_completed(futures):
            pid = futures[future]
            answers[pid] = future.result()["providers"]
            update(len(answers), pid or "")
    return {k: v for pid in todo for k, v in answers[pid].items()}


@app.command("discover")
def models_discover(provider: ProviderOption = None, as_json: JsonOption = False) -> None:
    """List each provider's models now and merge them into the routable set."""
    result = _each_provider("discovering", "/console/v1/models/discover", provider)
    if as_json:
        print_json(result)
        return
    if nothing_yet(list(result), "providers with discovery on"):
        return
    table = compact_table()
    table.add_column("provider", overflow="fold")
    table.add_column("models", overflow="fold")
    errors = []
    for pid, found in result.items():
        table.add_row(pid, ", ".join(found["model_ids"]) or "-")
        if found["last_error"]:
            errors.append((pid, found["last_error"]))
    print_table(Group(table, *error_notes(errors)))


@app.command("test-connection")
def models_test_connection(provider: ProviderOption = None, as_json: JsonOption = False) -> None:
    """Probe providers now (a models list, never a completion). Exit 1 when any is unhealthy."""
    result = _each_provider("probing", "/console/v1/models/test-connection", provider)
    if as_json:
        print_json(result)
    elif not nothing_yet(list(result), "providers"):
        table = compact_table()
        table.add_column("provider", overflow="fold")
        table.add_column("health", overflow="fold")
        table.add_column("latency", justify="right", no_wrap=True)
        errors = []
        for pid, health in result.items():
            latency = health["last_probe_latency_ms"]
            table.add_row(
                pid,
                state(health["state"]),
                "-" if latency is None else f"{latency:.0f}ms",
            )
            if health["last_error"]:
                errors.append((pid, health["last_error"]))
        print_table(Group(table, *error_notes(errors)))
    if any(h["state"] not in ("ok", "degraded") for h in result.values()):
        raise typer.Exit(1)
