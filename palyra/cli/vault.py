"""`palyra vault set | get | list | delete | rotate-key`.

These work on the state store directly (not through the daemon), so a key can be stored
before the first start and the vault stays usable while the daemon is down. The daemon
shares the store (SQLite in WAL mode allows it) and sees a change within a few seconds.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Annotated, Any, TypeVar

import typer

from palyra.cli.common import (
    compact_table,
    fail,
    loaded_config,
    nothing_yet,
    plural,
    print_json,
    print_table,
    progress,
)
from palyra.config import resolve_state_dir
from palyra.fs import ensure_private_dir
from palyra.state import open_database
from palyra.state.db import Database
from palyra.vault import MAX_SECRET_BYTES, Vault, VaultError, VaultRefError, open_vault
from palyra.vault.store import ROTATE_BATCH

app = typer.Typer(
    no_args_is_help=True,
    help="Encrypted secrets (refs are <scope>/<key>: global, agent:<id>, profile:<id>).",
)

T = TypeVar("T")
PROGRESS_BATCH = 20
RefArgument = Annotated[str, typer.Argument(help="<scope>/<key>, e.g. global/openai_api_key")]


def _with_vault(job: Callable[[Vault], Awaitable[T]]) -> T:
    return _with_store(lambda _db, vault: job(vault))


def _with_store(job: Callable[[Database, Vault], Awaitable[T]]) -> T:
    config = loaded_config().config
    state_dir = resolve_state_dir(config)

    async def run() -> T:
        ensure_private_dir(state_dir)
        db = await open_database(config.state, state_dir)
        try:
            return await job(db, await open_vault(db, state_dir, os.environ))
        finally:
            await db.close()

    try:
        return asyncio.run(run())
    except (VaultError, VaultRefError) as exc:
        fail(str(exc))
    except OSError as exc:
        fail(f"cannot open the state store in {state_dir}: {exc.strerror or exc}")


def _when(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%SZ")


@app.command("set")
def vault_set(
    ref: RefArgument,
    value_stdin: Annotated[
        bool, typer.Option("--value-stdin", help="read the value from stdin (the only way)")
    ] = False,
) -> None:
    """Store a secret read from stdin (one trailing newline is dropped)."""
    if not value_stdin:
        # A value on the command line would land in shell history and `ps`.
        fail("the value is read from stdin only: pass --value-stdin and pipe it in", 2)
    data = sys.stdin.buffer.read(MAX_SECRET_BYTES + 3)
    if data.endswith(b"\r\n"):
        data = data[:-2]
    elif data.endswith(b"\n"):
        data = data[:-1]
    if not data:
        fail("nothing on stdin: the secret would be empty", 2)
    meta = _with_vault(lambda vault: vault.put(ref, data))
    print(f"stored {meta.ref} ({plural(meta.size, 'byte')})")


@app.command("get")
def vault_get(
    ref: RefArgument,
    reveal: Annotated[bool, typer.Option("--reveal", help="print the value itself")] = False,
) -> None:
    """Check a secret exists; print it only with --reveal."""
    value = _with_vault(lambda vault: vault.get(ref))
    if not reveal:
        print("<redacted>")
        return
    sys.stdout.buffer.write(value + (b"" if value.endswith(b"\n") else b"\n"))


@app.command("list")
def vault_list(
    scope: Annotated[str, typer.Argument(help="global, agent:<id> or profile:<id>")],
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """The secrets of one scope: refs, sizes and times, never values."""
    metas = _with_vault(lambda vault: vault.list(scope))
    if as_json:
        print_json([m.as_dict() for m in metas])
        return
    if nothing_yet(metas, f"secrets in {scope.strip().lower()}"):
        return
    table = compact_table()
    table.add_column("ref", overflow="fold")
    for header in ("bytes", "created", "updated"):
        table.add_column(header, justify="right" if header == "bytes" else "left", no_wrap=True)
    for meta in metas:
        created, updated = _when(meta.created_at_ms), _when(meta.updated_at_ms)
        table.add_row(meta.ref, str(meta.size), created, updated)
    print_table(table)


@app.command("delete")
def vault_delete(ref: RefArgument) -> None:
    """Delete a secret."""
    if not _with_vault(lambda vault: vault.delete(ref)):
        fail(f"no secret {ref.strip().lower()} in the vault")
    print(f"deleted {ref.strip().lower()}")


@app.command("rotate-key")
def vault_rotate_key() -> None:
    """Re-encrypt every secret under a new master key. Safe to interrupt and run again."""

    async def rotate(db: Database, vault: Vault) -> Any:
        row = await db.fetch_one("SELECT COUNT(*) AS n FROM vault_secrets")
        total = int(row["n"]) if row else 0
        with progress("re-encrypting", total) as update:

            async def after_batch(done: int) -> None:
                update(done, "secrets")

            # Small batches on a terminal, so the bar moves; each batch is one transaction.
            batch = ROTATE_BATCH if total < 2 or not sys.stderr.isatty() else PROGRESS_BATCH
            return await vault.rotate_key(batch=batch, after_batch=after_batch)

    report = _with_store(rotate)
    print(f"re-encrypted {plural(report.resealed, 'secret')} under master key {report.new_key_id}")
    if report.todo:
        print(f"now {report.todo}")
