"""`palyra models list | status | discover | test-connection`."""

from __future__ import annotations

import time
from typing import Annotated, Any

import typer
from rich.table import Table

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
