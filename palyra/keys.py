"""Client keys: what a team, an app or an agent calls the inference routes with, instead of the
admin token. Each has its own models, rate limits, budget and expiry, and can be revoked or
rotated without touching the others.

A key is `pk-` and 43 characters of `secrets.token_urlsafe(32)`: 256 random bits. Only its
SHA-256 is stored (and its first characters, to tell keys apart in a list). A fast hash is the
right one here: slow hashes (bcrypt, scrypt) exist to make guessing a *low-entropy* password
from its hash expensive, and nobody guesses 256 random bits however fast the hash; while a
slow hash would cost every request milliseconds of CPU.

`KeyStore` holds the keys in the state store (SQLite or PostgreSQL). Every change takes the
next number of a counter (one row, updated in the change's own transaction, so changes commit
in the order of their numbers), which is how `palyra.keyring.KeyRing`, the view requests see,
keeps in step.
"""

from __future__ import annotations

import builtins
import calendar
import datetime as dt
import hashlib
import re
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any, Final, Literal, cast, get_args

import orjson
import structlog

from palyra.errors import InvalidRequest, NotFound
from palyra.state.db import Database, Row

log = structlog.get_logger("palyra.keys")

BudgetPeriod = Literal["day", "week", "month", "total"]
BUDGET_PERIODS: Final = frozenset(get_args(BudgetPeriod))
SECRET_PREFIX: Final = "pk-"
PREFIX_CHARS: Final = 8  # "pk-" and five random characters: shown in lists, never enough to use
# token_urlsafe(32) gives 43 characters; anything much longer presented as a key is not ours
# and is not hashed.
MAX_SECRET_CHARS: Final = 128
REFRESH_S: Final = 0.5
# The reset of a "total" budget: never (a time past any other, still a BIGINT in ms).
NEVER_MS: Final = 2**62
DAY_MS: Final = 86_400_000

MIGRATIONS = [
    """
    CREATE TABLE client_keys (
        key_id TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        prefix TEXT NOT NULL,
        secret_hash TEXT NOT NULL,
        models TEXT NOT NULL,
        rpm BIGINT NOT NULL,
        tpm BIGINT NOT NULL,
        budget_usd DOUBLE PRECISION,
        budget_period TEXT NOT NULL,
        expires_at_ms BIGINT,
        agent_id TEXT,
        created_at_ms BIGINT NOT NULL,
        updated_at_ms BIGINT NOT NULL,
        revoked_at_ms BIGINT,
        version BIGINT NOT NULL
    );
    CREATE UNIQUE INDEX client_keys_secret_hash ON client_keys (secret_hash);
    CREATE INDEX client_keys_version ON client_keys (version);
    CREATE TABLE client_key_changes (id BIGINT PRIMARY KEY, version BIGINT NOT NULL);
    INSERT INTO client_key_changes (id, version) VALUES (1, 0)
    """
]

_COLUMNS = (
    "key_id, name, prefix, models, rpm, tpm, budget_usd, budget_period, expires_at_ms,"
    " agent_id, created_at_ms, updated_at_ms, revoked_at_ms, version"
)
# What `update` may change (column names are only ever taken from here).
UPDATABLE: Final = frozenset(
    {"name", "models", "rpm", "tpm", "budget_usd", "budget_period", "expires_at_ms", "agent_id"}
)
_DURATION = re.compile(r"(\d{1,9})([smhdw])")
_UNIT_MS: Final = {"s": 1000, "m": 60_000, "h": 3_600_000, "d": DAY_MS, "w": 7 * DAY_MS}

Clock = Callable[[], float]  # seconds since the epoch, like time.time


def hash_secret(secret: str) -> str:
    # surrogatepass: a header's undecodable bytes arrive as lone surrogates; any text hashes.
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).hexdigest()


def new_secret() -> str:
    return SECRET_PREFIX + secrets.token_urlsafe(32)


def parse_duration(text: str) -> int:
    """`30d`, `12h`, `90m`, `1w`, `45s`, or several together (`1d12h`): milliseconds. A clear
    ValueError naming the text otherwise."""
    cleaned = text.strip().lower()
    pos, total = 0, 0
    for match in _DURATION.finditer(cleaned):
        if match.start() != pos:
            break
        total += int(match.group(1)) * _UNIT_MS[match.group(2)]
        pos = match.end()
    if not cleaned or pos != len(cleaned):
        raise ValueError(
            f"{text!r} is not a duration: write a number and a unit, s m h d or w "
            "(e.g. 30d, 12h, 90m, 1w)"
        )
    if total <= 0:
        raise ValueError(f"{text!r}: a duration must be longer than zero")
    return total


@dataclass(frozen=True, slots=True)
class ClientKey:
    key_id: str
    name: str
    prefix: str  # the secret's first characters, to tell keys apart
    models: tuple[str, ...]  # the models it may call; empty: every model
    rpm: int  # requests per minute; 0: no limit
    tpm: int  # tokens per minute; 0: no limit
    budget_usd: float | None  # spend per budget period; None: no budget
    budget_period: BudgetPeriod
    expires_at_ms: int | None
    agent_id: str | None  # usage made with this key is the agent's
    created_at_ms: int
    revoked_at_ms: int | None
    updated_at_ms: int = 0
    version: int = 0  # the change that made this state (see KeyRing)

    def allows(self, model_id: str) -> bool:
        return not self.models or model_id in self.models

    def problem(self, now_ms: int) -> str | None:
        """Why the key cannot be used now ("revoked" or "expired"), or None."""
        if self.revoked_at_ms is not None:
            return "revoked"
        if self.expires_at_ms is not None and now_ms >= self.expires_at_ms:
            return "expired"
        return None

    def budget_window(self, now_ms: int) -> tuple[int, int]:
        """(start, reset) of the budget period `now_ms` falls in, in ms, on UTC calendar
        days; weeks start on Monday. A "total" budget starts at 0 and resets at NEVER_MS."""
        if self.budget_period == "total":
            return 0, NEVER_MS
        day = now_ms // DAY_MS
        if self.budget_period == "day":
            return day * DAY_MS, (day + 1) * DAY_MS
        if self.budget_period == "week":
            monday = day - (day + 3) % 7  # day 0, 1970-01-01, was a Thursday
            return monday * DAY_MS, (monday + 7) * DAY_MS
        date = dt.date(1970, 1, 1) + dt.timedelta(days=day)
        start = dt.date(date.year, date.month, 1)
        end = dt.date(date.year + date.month // 12, date.month % 12 + 1, 1)
        return _date_ms(start), _date_ms(end)

    def view(self, now_ms: int) -> dict[str, Any]:
        """What the admin API shows: everything but the secret and its hash."""
        problem = self.problem(now_ms)
        return {
            "key_id": self.key_id,
            "name": self.name,
            "prefix": self.prefix,
            "models": list(self.models),
            "rpm": self.rpm,
            "tpm": self.tpm,
            "budget_usd": self.budget_usd,
            "budget_period": self.budget_period,
            "expires_at_ms": self.expires_at_ms,
            "agent_id": self.agent_id,
            "created_at_ms": self.created_at_ms,
            "updated_at_ms": self.updated_at_ms,
            "revoked_at_ms": self.revoked_at_ms,
            "status": problem or "active",
        }


def _date_ms(date: dt.date) -> int:
    return calendar.timegm(date.timetuple()) * 1000


def _key(row: Row) -> ClientKey:
    budget = row["budget_usd"]
    period = str(row["budget_period"])  # one of BUDGET_PERIODS: `_check` saw to it
    return ClientKey(
        key_id=str(row["key_id"]),
        name=str(row["name"]),
        prefix=str(row["prefix"]),
        models=tuple(orjson.loads(row["models"])),
        rpm=int(row["rpm"]),
        tpm=int(row["tpm"]),
        budget_usd=None if budget is None else float(budget),
        budget_period=cast(BudgetPeriod, period),
        expires_at_ms=_opt_int(row["expires_at_ms"]),
        agent_id=None if row["agent_id"] is None else str(row["agent_id"]),
        created_at_ms=int(row["created_at_ms"]),
        revoked_at_ms=_opt_int(row["revoked_at_ms"]),
        updated_at_ms=int(row["updated_at_ms"]),
        version=int(row["version"]),
    )


def _opt_int(value: Any) -> int | None:
    return None if value is None else int(value)


def _check(fields: dict[str, Any]) -> None:
    """The store's own floor under what the routes validate in detail: nothing it holds can
    break a request's checks."""
    if "name" in fields and (not isinstance(fields["name"], str) or not fields["name"].strip()):
        raise InvalidRequest("name: must be a non-empty string", param="name")
    for field in ("rpm", "tpm"):
        if field in fields and (type(fields[field]) is not int or fields[field] < 0):
            raise InvalidRequest(f"{field}: must be an integer, 0 or more", param=field)
    budget = fields.get("budget_usd")
    if budget is not None and not budget > 0:
        raise InvalidRequest("budget_usd: must be more than 0", param="budget_usd")
    if "budget_period" in fields and fields["budget_period"] not in BUDGET_PERIODS:
        raise InvalidRequest(
            "budget_period: must be day, week, month or total", param="budget_period"
        )


def _column_value(field: str, value: Any) -> Any:
    if field == "models":
        return orjson.dumps(list(value)).decode()
    if field == "budget_usd":
        return None if value is None else float(value)
    return value


async def _next_version(tx: Database) -> int:
    # The counter's row stays locked until this transaction ends, so the next change waits
    # for this one to commit: changes become visible in the order of their numbers, and a
    # daemon that has seen change n has seen every change before it.
    row = await tx.fetch_one(
        "UPDATE client_key_changes SET version = version + 1 WHERE id = 1 RETURNING version"
    )
    if row is None:
        raise RuntimeError("client_key_changes has no counter row (migration not applied?)")
    return int(row["version"])


class KeyStore:
    """Client keys in the state store. Reads and writes are the admin's (routes, CLI) and the
    key ring's refresh; no request waits on them."""

    def __init__(self, db: Database, *, clock: Clock = time.time) -> None:
        self.db = db
        self.clock = clock

    def _now_ms(self) -> int:
        return int(self.clock() * 1000)

    async def migrate(self) -> None:
        await self.db.migrate("client_keys", MIGRATIONS)

    async def create(
        self,
        *,
        name: str,
        models: Sequence[str] = (),
        rpm: int = 0,
        tpm: int = 0,
        budget_usd: float | None = None,
        budget_period: BudgetPeriod = "month",
        expires_at_ms: int | None = None,
        agent_id: str | None = None,
    ) -> tuple[ClientKey, str]:
        """A new key and its secret: the one time the secret exists outside the client."""
        fields = {
            "name": name,
            "rpm": rpm,
            "tpm": tpm,
            "budget_usd": budget_usd,
            "budget_period": budget_period,
        }
        _check(fields)
        secret = new_secret()
        now = self._now_ms()
        key = ClientKey(
            key_id="key_" + secrets.token_hex(6),
            name=name.strip(),
            prefix=secret[:PREFIX_CHARS],
            models=tuple(dict.fromkeys(models)),
            rpm=rpm,
            tpm=tpm,
            budget_usd=None if budget_usd is None else float(budget_usd),
            budget_period=budget_period,
            expires_at_ms=expires_at_ms,
            agent_id=agent_id,
            created_at_ms=now,
            revoked_at_ms=None,
            updated_at_ms=now,
        )
        async with self.db.transaction() as tx:
            version = await _next_version(tx)
            await tx.execute(
                f"INSERT INTO client_keys ({_COLUMNS}, secret_hash)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                key.key_id,
                key.name,
                key.prefix,
                _column_value("models", key.models),
                key.rpm,
                key.tpm,
                key.budget_usd,
                key.budget_period,
                key.expires_at_ms,
                key.agent_id,
                key.created_at_ms,
                key.updated_at_ms,
                None,
                version,
                hash_secret(secret),
            )
        return replace(key, version=version), secret

    async def list(self) -> list[ClientKey]:
        rows = await self.db.fetch_all(
            f"SELECT {_COLUMNS} FROM client_keys ORDER BY created_at_ms, key_id"
        )
        return [_key(row) for row in rows]

    async def get(self, key_id: str) -> ClientKey:
        return _key(await self._row(self.db, key_id))

    async def _row(self, db: Database, key_id: str) -> Row:
        row = await db.fetch_one(f"SELECT {_COLUMNS} FROM client_keys WHERE key_id = ?", key_id)
        if row is None:
            raise NotFound(f"no client key {key_id!r} (see `palyra keys list`)", param="key_id")
        return row

    async def update(self, key_id: str, **fields: Any) -> ClientKey:
        """Change any of UPDATABLE (None clears budget_usd, expires_at_ms and agent_id)."""
        unknown = set(fields) - UPDATABLE
        if unknown:
            field = sorted(unknown)[0]
            raise InvalidRequest(f"{field}: not a client key field that can change", param=field)
        if not fields:
            raise InvalidRequest("nothing to change: give at least one field")
        _check(fields)
        if "name" in fields:
            fields["name"] = fields["name"].strip()
        if "models" in fields:
            fields["models"] = tuple(dict.fromkeys(fields["models"]))
        if fields.get("budget_usd") is not None:
            fields["budget_usd"] = float(fields["budget_usd"])
        async with self.db.transaction() as tx:
            current = _key(await self._row(tx, key_id))
            _refuse_revoked(current)
            version = await _next_version(tx)
            now = self._now_ms()
            names = sorted(fields)
            await tx.execute(
                "UPDATE client_keys SET "
                + "".join(f"{name} = ?, " for name in names)
                + "updated_at_ms = ?, version = ? WHERE key_id = ?",
                *(_column_value(name, fields[name]) for name in names),
                now,
                version,
                key_id,
            )
        return replace(current, **fields, updated_at_ms=now, version=version)

    async def revoke(self, key_id: str) -> ClientKey:
        """Revoked for good; revoking a revoked key changes nothing."""
        async with self.db.transaction() as tx:
            current = _key(await self._row(tx, key_id))
            if current.revoked_at_ms is not None:
                return current
            version = await _next_version(tx)
            now = self._now_ms()
            await tx.execute(
                "UPDATE client_keys SET revoked_at_ms = ?, updated_at_ms = ?, version = ?"
                " WHERE key_id = ?",
                now,
                now,
                version,
                key_id,
            )
        return replace(current, revoked_at_ms=now, updated_at_ms=now, version=version)

    async def rotate(self, key_id: str) -> tuple[ClientKey, str]:
        """A new secret for the key, settings kept; the old secret stops working."""
        secret = new_secret()
        async with self.db.transaction() as tx:
            current = _key(await self._row(tx, key_id))
            _refuse_revoked(current)
            version = await _next_version(tx)
            now = self._now_ms()
            prefix = secret[:PREFIX_CHARS]
            await tx.execute(
                "UPDATE client_keys SET prefix = ?, secret_hash = ?, updated_at_ms = ?,"
                " version = ? WHERE key_id = ?",
                prefix,
                hash_secret(secret),
                now,
                version,
                key_id,
            )
        return replace(current, prefix=prefix, updated_at_ms=now, version=version), secret

    async def changes(self, after_version: int) -> builtins.list[tuple[ClientKey, str]]:
        """Keys changed after `after_version`, oldest change first, each with its hash."""
        rows = await self.db.fetch_all(
            f"SELECT {_COLUMNS}, secret_hash FROM client_keys WHERE version > ? ORDER BY version",
            after_version,
        )
        return [(_key(row), str(row["secret_hash"])) for row in rows]


def _refuse_revoked(key: ClientKey) -> None:
    if key.revoked_at_ms is not None:
        raise InvalidRequest(
            f"client key {key.key_id} ({key.name}) is revoked: create a new one",
            status=409,
            code="key_revoked",
        )
