"""What every `palyra` command shares: global options, one-line failures, the daemon client."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, NoReturn

import typer
from rich.console import Console, RenderableType

from palyra.cli.client import DaemonClient, DaemonError
from palyra.config import ConfigError, LoadedConfig, load_config

options: dict[str, Any] = {}


def fail(message: str, code: int = 1) -> NoReturn:
    one_line = " ".join(message.split())  # errors are one line, whatever the cause says
    print(f"palyra: error: {one_line}", file=sys.stderr)
    raise typer.Exit(code)


def loaded_config(path: Path | None = None) -> LoadedConfig:
    try:
        return load_config(path or options.get("config_path"))
    except ConfigError as exc:
        fail(f"config: {exc}")


def daemon() -> DaemonClient:
    try:
        return DaemonClient.from_config(loaded_config().config, options.get("url"))
    except DaemonError as exc:
        fail(str(exc))


def call(method: str, path: str, body: Any = None) -> Any:
    """One request to the daemon; a failure ends the command with exit 1."""
    client = daemon()
    if body is None and method in ("POST", "PATCH"):
        body = {}
    try:
        return client.request(method, path, body)
    except DaemonError as exc:
        fail(str(exc))


def print_json(data: Any) -> None:
    print(json.dumps(data, indent=2))


def print_table(table: RenderableType) -> None:
    # Piped output is not cut to 80 columns: ids must survive `| grep` intact.
    console = Console() if sys.stdout.isatty() else Console(width=1000)
    console.print(table)
