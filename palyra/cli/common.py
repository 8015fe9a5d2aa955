"""What every `palyra` command shares: global options, one-line failures, the daemon client,
and how tables, states and lists look in a terminal and through a pipe."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NoReturn

import typer
from rich import box
from rich.console import Console, RenderableType
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
from rich.table import Table
from rich.text import Text

from palyra.cli.client import DaemonClient, DaemonError
from palyra.config import ConfigError, LoadedConfig, PalyraConfig, load_config, salvage_config

options: dict[str, Any] = {}

# Health, circuit, job and key states as they read at a glance on a terminal. Rich drops the
# colour under NO_COLOR and when stdout is not a terminal.
GOOD = "green"
WARN = "yellow"
BAD = "red"
STATE_STYLES = {
    "ok": GOOD,
    "closed": GOOD,
    "active": GOOD,
    "enabled": GOOD,
    "succeeded": GOOD,
    "yes": GOOD,
    "valid": GOOD,
    "degraded": WARN,
    "open": WARN,
    "half_open": WARN,
    "unknown": WARN,
    "rate_limited": WARN,
    "disabled": WARN,
    "paused": WARN,
    "pending": WARN,
    "skipped": WARN,
    "refreshing": WARN,
    "expired": BAD,
    "revoked": BAD,
    "failed": BAD,
    "error": BAD,
    "no": BAD,
    "auth_failed": BAD,
    "unreachable": BAD,
    "missing_auth": BAD,
    "misconfigured": BAD,
    "down": BAD,
}


def fail(message: str, code: int = 1) -> NoReturn:
    one_line = " ".join(message.split())  # errors are one line, whatever the cause says
    print(f"palyra: error: {one_line}", file=sys.stderr)
    raise typer.Exit(code)


def fail_lines(lines: list[str], code: int = 1) -> NoReturn:
    """Exit with each line as its own `palyra: error:` line (a list of problems, one a line)."""
    for line in lines:
        print(f"palyra: error: {' '.join(line.split())}", file=sys.stderr)
    raise typer.Exit(code)


def config_problems(exc: ConfigError) -> list[str]:
    """`config: FILE: dotted.key: rule`, one a problem."""
    return [f"config: {line}" for line in exc.lines()]


def loaded_config(path: Path | None = None) -> LoadedConfig:
    try:
        return load_config(path or options.get("config_path"))
    except ConfigError as exc:
        fail_lines(config_problems(exc))


# What the daemon's client takes from the config: where the daemon listens (unless --url or
# PALYRA_URL says) and the state dir holding its admin token (unless PALYRA_ADMIN_TOKEN gives it).
_LISTENS = ("daemon.bind", "daemon.port")
_TOKEN = ("daemon.state_dir",)


def daemon(*, show_config_problems: bool = True) -> DaemonClient:
    """The daemon's client. A config with problems elsewhere (one being fixed) stops no
    command: only the keys above are taken from it, those of them that are sound; a warning
    says so. When where the daemon listens cannot be told, the problems are listed with how
    to go on. `show_config_problems=False` (config reload, where the daemon lists them): no
    warning, and a key that cannot be told is its default."""
    url = options.get("url")
    has_file = True
    try:
        loaded = load_config(options.get("config_path"))
        config, has_file = loaded.config, loaded.path is not None
    except ConfigError as exc:
        config = _config_despite(exc, url, show=show_config_problems)
    try:
        return DaemonClient.from_config(config, url, has_file=has_file)
    except DaemonError as exc:
        fail(str(exc))


def _config_despite(exc: ConfigError, url: str | None, *, show: bool) -> PalyraConfig:
    needed = [
        *(() if url or os.environ.get("PALYRA_URL") else _LISTENS),
        *(() if os.environ.get("PALYRA_ADMIN_TOKEN") else _TOKEN),
    ]
    config, unknown = salvage_config(options.get("config_path"), (*_LISTENS, *_TOKEN))
    if not needed or not show:
        return config
    if unknown & set(_LISTENS) & set(needed):
        fail_lines(
            [
                *config_problems(exc),
                "cannot tell where the daemon listens while the config has these problems: "
                "fix them, or pass --url http://HOST:PORT (or set PALYRA_URL)",
            ]
        )
    taken = " and ".join(
        what
        for keys, what in (
            (_LISTENS, "where the daemon listens"),
            (_TOKEN, "the state dir (for the admin token)"),
        )
        if set(keys) & set(needed)
    )
    source = f"{exc.source}: " if exc.source else ""
    print(
        f"palyra: warning: config: {source}{plural(len(exc.problems), 'problem')} "
        f"(`palyra config validate` lists them); only {taken} is taken from it",
        file=sys.stderr,
    )
    return config


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


def plural(n: int, one: str, many: str | None = None) -> str:
    """`1 provider`, `2 providers`, `0 providers`."""
    return f"{n} {one if n == 1 else many or one + 's'}"


def nothing_yet(items: list[Any], what: str, hint: str = "") -> bool:
    """Say `no <what> yet (<hint>)` for an empty list (an empty table tells a newcomer
    nothing); True when it was empty."""
    if items:
        return False
    print(f"no {what} yet" + (f" ({hint})" if hint else ""))
    return True


def duration(seconds: float) -> str:
    """The two largest units: `42s`, `5m 12s`, `2h 13m`, `3d 4h`."""
    s = int(abs(seconds))
    days, s = divmod(s, 86400)
    hours, s = divmod(s, 3600)
    minutes, s = divmod(s, 60)
    parts = [(days, "d"), (hours, "h"), (minutes, "m"), (s, "s")]
    while len(parts) > 1 and parts[0][0] == 0:
        parts.pop(0)
    return " ".join(f"{n}{unit}" for n, unit in parts[:2] if n or unit == parts[0][1])


def relative(seconds: float) -> str:
    """`in 2h 5m` ahead, `3m 10s ago` behind."""
    return f"in {duration(seconds)}" if seconds >= 0 else f"{duration(seconds)} ago"


def state(value: str, text: str | None = None) -> Text:
    """A state word, coloured by what it means (green good, yellow attention, red broken)."""
    return Text(value if text is None else text, style=STATE_STYLES.get(value, ""))


def on_terminal() -> bool:
    return sys.stdout.isatty()


def console() -> Console:
    # Piped output is not cut to 80 columns: ids must survive `| grep` intact.
    return Console() if on_terminal() else Console(width=1000)


def compact_table(title: str | None = None) -> Table:
    """Light rules, no outer edge, one space between columns: what fits 80 columns. Columns
    holding ids take overflow="fold" (an id wraps whole, never ends in "…")."""
    return Table(
        title=title,
        title_justify="left",
        title_style="bold",
        box=box.SIMPLE_HEAD,
        show_edge=False,
        padding=0,
    )


def _cell_width(cell: Any) -> int:
    text = cell.plain if isinstance(cell, Text) else str(cell)
    return max((len(line) for line in text.split("\n")), default=0)


def give_way(table: Table, flexible: int) -> None:
    """On a terminal too narrow for the table, column `flexible` (a name) folds to what the
    others leave, so that ids and figures stay whole. Rich would shrink every column alike."""
    if not on_terminal():
        return
    widths = [
        max(_cell_width(c) for c in (column.header, *column.cells)) for column in table.columns
    ]
    others = sum(w for i, w in enumerate(widths) if i != flexible) + len(widths) - 1
    column = table.columns[flexible]
    column.max_width = max(column.min_width or 8, console().width - others)


def print_table(table: RenderableType) -> None:
    console().print(table)


def error_notes(errors: Iterable[tuple[str, str]]) -> list[Text]:
    """`subject: error` lines for below a table: a long error in a narrow column runs down
    the screen. On a terminal each is kept to three lines; piped, it is whole."""
    # Three lines' worth, less what wrapping at word ends may leave unused on each.
    limit = console().width * 3 - 45 if on_terminal() else None
    notes = []
    for subject, error in errors:
        error = " ".join(error.split())
        # Provider errors name their provider already: "p: provider p: ..." says it twice.
        error = error.removeprefix(f"provider {subject}: ")
        line = f"{subject}: {error}"
        if limit is not None and len(line) > limit:
            line = line[: limit - 1] + "…"
        notes.append(Text(line, style=BAD))
    return notes


@contextmanager
def progress(what: str, total: int) -> Iterator[Callable[[int, str], None]]:
    """A progress bar on stderr while long work runs, on a terminal only (nothing is added to
    piped output, and it is gone when the work is); yields `update(done, label)`."""
    if total < 2 or not sys.stderr.isatty():
        yield lambda done, label: None
        return
    bar = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[label]}"),
        console=Console(stderr=True),
        transient=True,
    )
    with bar:
        task = bar.add_task(what, total=total, label="")

        def update(done: int, label: str) -> None:
            bar.update(task, completed=done, label=label)

        yield update
