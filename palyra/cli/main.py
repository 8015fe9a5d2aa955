"""`palyra`: live operations talk to the daemon; config operations read local files.

Exit codes: 0 success, 1 the operation failed, 2 usage error. Errors: one line on stderr.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer

import palyra
from palyra.cli import agents, auth, config_cmd, cron, keys, models, runs, status, usage, vault
from palyra.cli.client import DaemonError
from palyra.cli.common import daemon, fail, options

# add_completion: `palyra --install-completion` / `--show-completion` for bash, zsh, fish.
app = typer.Typer(no_args_is_help=True, help="Palyra: one door to LLM providers.")
app.add_typer(models.app, name="models")
app.add_typer(config_cmd.app, name="config")
app.add_typer(auth.app, name="auth")
app.add_typer(vault.app, name="vault")
app.add_typer(cron.app, name="cron")
app.add_typer(agents.app, name="agents")
app.add_typer(keys.app, name="keys")
app.add_typer(runs.app, name="runs")
app.command("run")(agents.run_command)
app.command("usage")(usage.usage_command)
app.command("status")(status.status_command)


def _print_version(value: bool) -> None:
    if value:
        print(f"palyra {palyra.__version__}")
        raise typer.Exit(0)


@app.callback()
def _options(
    config: Annotated[Path | None, typer.Option("--config", help="config.toml to use")] = None,
    url: Annotated[
        str | None, typer.Option("--url", help="daemon URL (else $PALYRA_URL, else config)")
    ] = None,
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_print_version, is_eager=True, help="print the version and exit"
        ),
    ] = False,
) -> None:
    options["config_path"] = config
    options["url"] = url


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
    client = daemon()
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
