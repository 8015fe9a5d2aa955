"""Who owns a running run, and for how long: the node id and the lease timings.

A node is one daemon's state (its id is kept in the state dir, so a restarted daemon knows
the runs it left behind are its own and dead). While a run is running its owner renews the
run's lease; another daemon sharing the store treats a run whose lease ran out as orphaned.
"""

from __future__ import annotations

import secrets
from pathlib import Path

from palyra.fs import atomic_write

NODE_FILE = "node.id"
LEASE_MS = 60_000
RENEW_EVERY_S = 20.0


def load_node_id(state_dir: Path) -> str:
    path = state_dir / NODE_FILE
    try:
        node = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        node = ""
    if not node:
        node = "node-" + secrets.token_hex(8)
        atomic_write(path, (node + "\n").encode(), mode=0o600)
    return node
