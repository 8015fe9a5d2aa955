"""The usage ledger: one record per inference request, written off the request path.

`UsageWriter.record` is what the request path calls (it never blocks and never raises);
`UsageStore` is the table and the queries the console, the CLI and budgets read.
"""

from __future__ import annotations

from palyra.usage.records import UsageRecord
from palyra.usage.store import GROUP_BY, MAX_GROUPS, MAX_REQUESTS_LIMIT, Cursor, UsageStore
from palyra.usage.writer import UsageWriter

__all__ = [
    "GROUP_BY",
    "MAX_GROUPS",
    "MAX_REQUESTS_LIMIT",
    "Cursor",
    "UsageRecord",
    "UsageStore",
    "UsageWriter",
]
