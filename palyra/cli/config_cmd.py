"""`palyra config validate | show` read local files, no daemon needed; `palyra config reload`
asks the running daemon to re-read its own."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from palyra.cli.client import DaemonError
from palyra.cli.common import (
    config_problems,
    daemon,
    fail_lines,
    loaded_config,
    options,
    plural,
)
from palyra.config import ConfigError, config_for_display, load_config

app = typer.Typer(no_args_is_help=True, help="Check, show and reload configuration.")


@app.command("validate")
def config_validate(
    path: Annotated[
        Path | None, typer.Argument(help="config file (default: the one in use)")
    ] = None,
    config: Annotated[
        Path | None, typer.Option("--config", help="config file (same as the PATH argument)")
    ] = None,
) -> None:
    """Check a config file; print every problem found, one a line, each naming its key."""
    if path is not None and config is not None and path != config:
        print("palyra: error: give the file once: PATH or --config, not both", file=sys.stderr)
        raise typer.Exit(2)
    try:
        loaded = load_config(path or config or options.get("config_path"))
    except ConfigError as exc:
        fail_lines(config_problems(exc))
    mp = loaded.config.model_provider
    where = str(loaded.path) if loaded.path else "built-in defaults (no config file)"
    counts = f"{plural(len(mp.providers), 'provider')}, {plural(len(mp.models), 'model')}"
    print(f"ok: {where}: {counts}")


@app.command("show")
def config_show(
    show_secrets: Annotated[
        bool, typer.Option("--show-secrets", help="show passwords in URLs")
    ] = False,
) -> None:
    """Print the effective config (file, env and defaults merged)."""
    loaded = loaded_config()
    print(json.dumps(config_for_display(loaded.config, show_secrets=show_secrets), indent=2))


@app.command("reload")
def config_reload(
    as_json: Annotated[bool, typer.Option("--json", help="print the daemon's answer")] = False,
) -> None:
    """Make the running daemon re-read config.toml and agents.toml (as SIGHUP does).

    Requests in flight finish on the old config. A config with problems is refused, each
    problem printed, and the old one keeps serving. Settings that need a restart (port,
    workers, state store, ...) are named."""
    # The config being reloaded may have problems: the daemon is the one to list them.
    client = daemon(show_config_problems=False)
    try:
        answer = client.request("POST", "/console/v1/config/reload", {})
    except DaemonError as exc:
        fail_lines(str(exc).splitlines())
    if as_json:
        print(json.dumps(answer, indent=2))
        return
    source = answer.get("source") or "built-in defaults (no config file)"
    workers = answer.get("workers", 1)
    print(f"reloaded: {source}" + (f" ({workers} workers)" if workers > 1 else ""))
    pending = answer.get("restart_required") or []
    if pending:
        print(
            "palyra: warning: these settings changed but keep their old values until palyrad "
            f"restarts: {', '.join(pending)}",
            file=sys.stderr,
        )
