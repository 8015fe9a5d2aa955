"""`palyra config validate | show` read local files, no daemon needed; `palyra config reload`
asks the running daemon to re-read its own."""

from __future__ import annotations

import json
import os
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
from palyra.config import (
    ConfigError,
    PalyraConfig,
    config_for_display,
    find_config_path,
    load_config,
    salvage_config,
)

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
    """Check a config file and the agents.toml that goes with it (as palyrad finds it); print
    every problem found in either, one a line, each naming its file and key."""
    if path is not None and config is not None and path != config:
        print("palyra: error: give the file once: PATH or --config, not both", file=sys.stderr)
        raise typer.Exit(2)
    chosen = path or config or options.get("config_path")
    problems: list[str] = []
    oks: list[str] = []
    try:
        loaded = load_config(chosen)
    except ConfigError as exc:
        problems += config_problems(exc)
        settings, unknown = salvage_config(chosen, ("agents.file",))
        config_path = find_config_path(chosen, os.environ)
        if unknown:
            # Where agents.toml is cannot be known (the config cannot be read, or its
            # `[agents] file` is wrong): it is checked once that is fixed.
            fail_lines(problems)
    else:
        settings = loaded.config
        config_path = loaded.path or find_config_path(None, os.environ)
        mp = settings.model_provider
        where = str(loaded.path) if loaded.path else "built-in defaults (no config file)"
        counts = f"{plural(len(mp.providers), 'provider')}, {plural(len(mp.models), 'model')}"
        oks.append(f"ok: {where}: {counts}")
    agents_problems, agents_ok = _check_agents(settings, config_path)
    if problems or agents_problems:
        fail_lines(problems + agents_problems)
    print("\n".join([*oks, agents_ok]))


def _check_agents(config: PalyraConfig, config_path: Path | None) -> tuple[list[str], str]:
    """agents.toml checked as palyrad reads it: its problems, else none and the `ok:` line."""
    # Imported here: the agents' tools bring aiohttp, which no other command of this group needs.
    from palyra.agents.registry import find_agents_file, load_agents

    try:
        registry = load_agents(config, config_path, os.environ)
    except ConfigError as exc:
        return config_problems(exc), ""
    count = plural(len(registry.agents), "agent")
    if registry.source is not None:
        return [], f"ok: {registry.source}: {count}"
    looked_for, _ = find_agents_file(config, config_path, os.environ)
    return [], f"ok: built-in agents (no {looked_for}): {count}"


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
