"""`palyra usage [--by key|model|provider|agent|day] [--since DURATION] [--json]`: who used
what and what it cost, from the daemon's usage ledger."""

from __future__ import annotations

import datetime as dt
import math
from typing import Annotated, Any
from urllib.parse import urlencode

import typer
from rich import box
from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from palyra.cli.common import call, fail, plural, print_json, print_table

BY = ("key", "model", "provider", "agent", "day", "hour")
UNKNOWN = "—"
_FIGURES = (
    ("requests", "requests"),
    ("errors", "errors"),
    ("input", "input_tokens"),
    ("output", "output_tokens"),
    ("cached", "cached_tokens"),
    ("reason-\ning", "reasoning_tokens"),
)


def compact(n: int) -> str:
    """1234 -> 1.2k, 45_000_000 -> 45M: a figure in at most five characters."""
    units = ((10**3, "k"), (10**6, "M"), (10**9, "B"), (10**12, "T"))
    for i, (limit, suffix) in enumerate(units):
        if abs(n) < limit * 1000 or i == len(units) - 1:
            if abs(n) < limit:
                return str(n)
            value = n / limit
            text = f"{value:.1f}" if abs(value) < 9.95 else f"{value:.0f}"
            if text == "1000" and i < len(units) - 1:  # 999,999 is 1M, not 1000k
                return f"1{units[i + 1][1]}"
            return text.removesuffix(".0") + suffix
    return str(n)


def money(usd: float | None) -> str:
    """Dollars to four significant digits, never in exponent form; "—" when unknown."""
    if usd is None:
        return UNKNOWN
    if usd == 0:
        return "$0"
    magnitude = math.floor(math.log10(abs(usd)))
    places = 3 - magnitude
    if abs(round(usd, places)) >= 10 ** (magnitude + 1):  # 9.99996 rounds to 10.00
        places -= 1
    if places <= 0:
        return f"${round(usd, places):,.0f}"
    return f"${usd:.{places}f}"


def _day(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).strftime("%Y-%m-%d %H:%M")


def _label(by: str, group: dict[str, Any]) -> str:
    if by == "key":
        return str(group.get("key_name") or group.get("group") or "admin")
    value = group.get("group")
    return UNKNOWN if value in (None, "") else str(value)


def usage_view(answer: dict[str, Any]) -> RenderableType:
    """The summary as a table that fits 80 columns: light rules, one space between columns,
    figures that never wrap, the group's name folding rather than ending in "…"."""
    by = str(answer["group_by"])
    title = f"usage by {by}, {_day(answer['since_ms'])} to {_day(answer['until_ms'])} UTC"
    table = Table(
        title=title,
        title_justify="left",
        box=box.SIMPLE_HEAD,
        show_edge=False,
        show_footer=True,
        padding=0,
    )
    total = answer["total"]
    table.add_column(by, "total", overflow="fold", min_width=8)
    for header, field in _FIGURES:
        table.add_column(header, compact(int(total[field])), justify="right", no_wrap=True)
    table.add_column("cost", money(total["cost_usd"]), justify="right", no_wrap=True)
    for group in answer["groups"]:
        table.add_row(
            _label(by, group),
            *(compact(int(group[field])) for _, field in _FIGURES),
            money(group["cost_usd"]),
        )
    notes: list[RenderableType] = []
    if answer.get("truncated"):
        notes.append(Text(f"Only the first {plural(len(answer['groups']), 'group')} are shown."))
    unpriced = int(total.get("unpriced_requests") or 0)
    if unpriced and total["requests"]:
        notes.append(
            Text(
                f"{unpriced} of {plural(total['requests'], 'request')} "
                f"{'has' if total['requests'] == 1 else 'have'} no known price; "
                f"costs shown are for the rest ({UNKNOWN}: none known)."
            )
        )
    estimated = int(total.get("estimated_requests") or 0)
    if estimated:
        costed = "is" if estimated == 1 else "are"
        notes.append(
            Text(f"{plural(estimated, 'request')} {costed} costed from Palyra's own token count.")
        )
    return Group(table, *notes) if notes else table


def usage_command(
    by: Annotated[
        str, typer.Option("--by", help="group by key | model | provider | agent | day | hour")
    ] = "model",
    since: Annotated[
        str | None,
        typer.Option("--since", help="how far back: 7d, 12h, 30m, 2w or an ISO date (30d)"),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """Requests, tokens and cost from the usage ledger, grouped."""
    if by not in BY:
        fail(f"--by must be one of {', '.join(BY)}, not {by!r}", 2)
    query: dict[str, str] = {"group_by": by}
    if since:
        query["since"] = since
    answer = call("GET", f"/console/v1/usage?{urlencode(query)}")
    if as_json:
        print_json(answer)
        return
    if not answer["groups"] and not answer["total"]["requests"]:
        print(f"no usage yet since {_day(answer['since_ms'])} UTC")
        return
    print_table(usage_view(answer))
