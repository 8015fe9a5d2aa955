"""`palyra models list | status | discover | test-connection`."""

from __future__ import annotations

import time
from typing import Annotated, Any

import typer
from rich import box
from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from palyra.cli.common import call, print_json, print_table

app = typer.Typer(no_args_is_help=True, help="Models the daemon routes to, and their providers.")

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
    table = Table("model", "role", "provider", "source", "enabled")
    for row in data:
        extra = row.get("palyra") or {}
        table.add_row(
            row["id"],
            extra.get("role", ""),
            extra.get("provider_id", row.get("owned_by", "")),
            extra.get("source", ""),
            "yes" if extra.get("enabled", True) else "no",
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
    table.add_column("weight\n/prio", justify="right", no_wrap=True)
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


@app.command("status")
def models_status(as_json: JsonOption = False) -> None:
    """Health, circuit state, last probe and discovered models per provider; availability
    per model."""
    status = call("GET", "/console/v1/models/status")
    if as_json:
        print_json(status)
        return
    providers = Table(
        "provider", "kind", "health", "circuit", "last probe", "latency", "discovered", "last error"
    )
    for p in status["providers"]:
        health = p["health"]
        latency = health["last_probe_latency_ms"]
        discovered = p["discovery"]["model_ids"] if p["discovery"] else []
        providers.add_row(
            p["provider_id"],
            p["kind"],
            health["state"] if p["enabled"] else "disabled",
            _circuit(p["circuit"]),
            _ago(health["last_probe_at_ms"]),
            "" if latency is None else f"{latency:.0f} ms",
            str(len(discovered)),
            health["last_error"] or "",
        )
    print_table(providers)
    models = Table("model", "provider", "role", "source", "available", "why")
    for m in status["models"]:
        models.add_row(
            m["model_id"],
            m["provider_id"],
            m["role"],
            m["source"],
            "yes" if m["available"] else "no",
            m["reason"],
        )
    print_table(models)
    # An older daemon's status has no "deployments": nothing more to show then.
    if status.get("deployments"):
        print_table(deployments_view(status["deployments"], time.time() * 1000))


@app.command("discover")
def models_discover(provider: ProviderOption = None, as_json: JsonOption = False) -> None:
    """List each provider's models now and merge them into the routable set."""
    result = call("POST", "/console/v1/models/discover", {"provider_id": provider})["providers"]
    if as_json:
        print_json(result)
        return
    table = Table("provider", "models", "error")
    for pid, state in result.items():
        table.add_row(pid, ", ".join(state["model_ids"]), state["last_error"] or "")
    print_table(table)


@app.command("test-connection")
def models_test_connection(provider: ProviderOption = None, as_json: JsonOption = False) -> None:
    """Probe providers now (a models list, never a completion). Exit 1 when any is unhealthy."""
    result = call("POST", "/console/v1/models/test-connection", {"provider_id": provider})[
        "providers"
    ]
    if as_json:
        print_json(result)
    else:
        table = Table("provider", "health", "latency", "error")
        for pid, health in result.items():
            latency = health["last_probe_latency_ms"]
            table.add_row(
                pid,
                health["state"],
                "" if latency is None else f"{latency:.0f} ms",
                health["last_error"] or "",
            )
        print_table(table)
    if any(h["state"] not in ("ok", "degraded") for h in result.values()):
        raise typer.Exit(1)
