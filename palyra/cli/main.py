"""`palyra`: live operations talk to the daemon; config operations read local files.

Exit codes: 0 success, 1 the operation failed, 2 usage error. Errors: one line on stderr.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.table import Table

from palyra.cli.client import DaemonClient, DaemonError
from palyra.config import ConfigError, LoadedConfig, config_for_display, load_config

app = typer.Typer(
    add_completion=False, no_args_is_help=True, help="Palyra: one door to LLM providers."
)
models_app = typer.Typer(no_args_is_help=True, help="Models the daemon routes to.")
config_app = typer.Typer(no_args_is_help=True, help="Check and show configuration.")
app.add_typer(models_app, name="models")
app.add_typer(config_app, name="config")

_state: dict[str, Any] = {}


def fail(message: str, code: int = 1) -> NoReturn:
    one_line = " ".join(message.split())  # errors are one line, whatever the cause says
    print(f"palyra: error: {one_line}", file=sys.stderr)
    raise typer.Exit(code)


@app.callback()
def _options(
    config: Annotated[Path | None, typer.Option("--config", help="config.toml to use")] = None,
    url: Annotated[
        str | None, typer.Option("--url", help="daemon URL (else $PALYRA_URL, else config)")
    ] = None,
) -> None:
    _state["config_path"] = config
    _state["url"] = url


def _loaded(path: Path | None = None) -> LoadedConfig:
    try:
        return load_config(path or _state.get("config_path"))
    except ConfigError as exc:
        fail(f"config: {exc}")


def _client() -> DaemonClient:
    try:
        return DaemonClient.from_config(_loaded().config, _state.get("url"))
    except DaemonError as exc:
        fail(str(exc))


@app.command()
def chat(
    text: Annotated[str, typer.Argument(help="the message; - reads it from stdin")],
    model: Annotated[
        str | None, typer.Option("--model", "-m", help="model id (default: the daemon's)")
    ] = None,
    no_stream: Annotated[
        bool, typer.Option("--no-stream", help="wait for the whole answer")
    ] = False,
) -> None:
    """Send one message and print the answer as it arrives."""
    if text == "-":
        # `echo hi | palyra chat -`: the newline ends the input, it is not part of the message.
        text = sys.stdin.read().rstrip("\r\n")
    if not text.strip():
        fail("nothing to send: the message is empty", 2)
    body: dict[str, Any] = {"messages": [{"role": "user", "content": text}]}
    if model:
        body["model"] = model
    client = _client()
    try:
        if no_stream:
            answer = client.post("/v1/chat/completions", body)
            message = answer["choices"][0]["message"]
            if message.get("content"):
                print(message["content"])
            for call in message.get("tool_calls") or ():
                print(f"[tool call] {call['function']['name']} {call['function']['arguments']}")
            return
        body["stream"] = True
        calls: dict[int, list[str]] = {}
        for chunk in client.stream("/v1/chat/completions", body):
            for choice in chunk.get("choices") or ():
                delta = choice.get("delta") or {}
                if delta.get("content"):
                    sys.stdout.write(delta["content"])
                    sys.stdout.flush()
                for call in delta.get("tool_calls") or ():
                    entry = calls.setdefault(call["index"], ["", ""])
                    entry[0] += (call.get("function") or {}).get("name") or ""
                    entry[1] += (call.get("function") or {}).get("arguments") or ""
        for name, arguments in calls.values():
            sys.stdout.write(f"\n[tool call] {name} {arguments}")
        sys.stdout.write("\n")
    except DaemonError as exc:
        fail(str(exc))


@models_app.command("list")
def models_list(
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """List configured and discovered models."""
    try:
        data = _client().get("/v1/models")["data"]
    except DaemonError as exc:
        fail(str(exc))
    if as_json:
        print(json.dumps(data, indent=2))
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
    # Piped output is not cut to 80 columns: ids must survive `| grep` intact.
    console = Console() if sys.stdout.isatty() else Console(width=1000)
    console.print(table)


@config_app.command("validate")
def config_validate(
    path: Annotated[
        Path | None, typer.Argument(help="config file (default: the one in use)")
    ] = None,
) -> None:
    """Check a config file; print what is wrong, naming each key."""
    loaded = _loaded(path)
    mp = loaded.config.model_provider
    where = str(loaded.path) if loaded.path else "built-in defaults (no config file)"
    print(f"ok: {where}: {len(mp.providers)} providers, {len(mp.models)} models")


@config_app.command("show")
def config_show(
    show_secrets: Annotated[
        bool, typer.Option("--show-secrets", help="show passwords in URLs")
    ] = False,
) -> None:
    """Print the effective config (file, env and defaults merged)."""
    loaded = _loaded()
    print(json.dumps(config_for_display(loaded.config, show_secrets=show_secrets), indent=2))
