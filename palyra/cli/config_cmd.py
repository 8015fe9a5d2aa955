"""`palyra config validate | show`: local files only, no daemon needed."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from palyra.cli.common import loaded_config
from palyra.config import config_for_display

app = typer.Typer(no_args_is_help=True, help="Check and show configuration.")


@app.command("validate")
def config_validate(
    path: Annotated[
        Path | None, typer.Argument(help="config file (default: the one in use)")
    ] = None,
) -> None:
    """Check a config file; print what is wrong, naming each key."""
    loaded = loaded_config(path)
    mp = loaded.config.model_provider
    where = str(loaded.path) if loaded.path else "built-in defaults (no config file)"
    print(f"ok: {where}: {len(mp.providers)} providers, {len(mp.models)} models")


@app.command("show")
def config_show(
    show_secrets: Annotated[
        bool, typer.Option("--show-secrets", help="show passwords in URLs")
    ] = False,
) -> None:
    """Print the effective config (file, env and defaults merged)."""
    loaded = loaded_config()
    print(json.dumps(config_for_display(loaded.config, show_secrets=show_secrets), indent=2))
