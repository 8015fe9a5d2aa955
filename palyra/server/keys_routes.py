"""Console API for client keys (admin only: a client key never opens these routes).

- `GET|POST /console/v1/keys`: list (revoked and expired ones included, with their status);
  create, answered 201 with the new key's secret
- `GET|PATCH|DELETE /console/v1/keys/{key_id}`: show, change, revoke
- `POST /console/v1/keys/{key_id}/rotate`: a new secret, the same settings

No answer holds a secret or its hash, except the one that made it (create, rotate): that is
the only time it is shown. Bodies are validated whole, and a 400 names the first field wrong.
"""

from __future__ import annotations

from typing import Any, Literal

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from palyra.errors import InvalidRequest, NotFound
from palyra.keyring import KeyRing
from palyra.keys import ClientKey, parse_duration
from palyra.server.json_body import validate
from palyra.server.keys import RUNTIME
from palyra.server.runs_routes import json_response, path_id, read_object

MAX_NAME_CHARS = 100
MAX_MODELS = 100
MAX_ID_CHARS = 128
# Past it a limit means nothing but an overflow somewhere downstream.
MAX_LIMIT = 10**12
MAX_BUDGET_USD = 1e9
ONCE = "store it now: it is shown this once and never again"


def _text(value: str, limit: int) -> str:
    value = value.strip()
    if not value:
        raise ValueError("must not be empty")
    if len(value) > limit:
        raise ValueError(f"must be at most {limit} characters")
    # PostgreSQL text cannot hold NUL; nor should a name anyone reads.
    if any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise ValueError("must not contain control characters")
    return value


class _KeyFields(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    @model_validator(mode="before")
    @classmethod
    def _lenient_numbers(cls, data: Any) -> Any:
        # Strict mode keeps "5" from passing as 5; a budget of 5 (an int) is still 5.0.
        if isinstance(data, dict) and type(data.get("budget_usd")) is int:
            data = {**data, "budget_usd": float(data["budget_usd"])}
        return data

    @field_validator("name", check_fields=False)
    @classmethod
    def _name(cls, value: str | None) -> str | None:
        return None if value is None else _text(value, MAX_NAME_CHARS)

    @field_validator("models", check_fields=False)
    @classmethod
    def _models(cls, value: list[str] | None) -> list[str] | None:
        if value is None:
            return None
        return list(dict.fromkeys(_text(m, MAX_ID_CHARS) for m in value))

    @field_validator("agent_id", check_fields=False)
    @classmethod
    def _agent(cls, value: str | None) -> str | None:
        return None if value is None else _text(value, MAX_ID_CHARS)

    @field_validator("expires_in", check_fields=False)
    @classmethod
    def _expires_in(cls, value: str | None) -> str | None:
        if value is not None:
            parse_duration(value)  # its ValueError says what is wrong
        return value


class KeyCreate(_KeyFields):
    name: str
    models: list[str] = Field(default_factory=list, max_length=MAX_MODELS)
    rpm: int = Field(0, ge=0, le=MAX_LIMIT)
    tpm: int = Field(0, ge=0, le=MAX_LIMIT)
    budget_usd: float | None = Field(None, gt=0, le=MAX_BUDGET_USD)
    budget_period: Literal["day", "week", "month", "total"] = "month"
    expires_in: str | None = None  # "30d": from now, on the daemon's clock
    expires_at_ms: int | None = Field(None, gt=0, le=2**53)
    agent_id: str | None = None

    @model_validator(mode="after")
    def _one_expiry(self) -> KeyCreate:
        if self.expires_in is not None and self.expires_at_ms is not None:
            raise ValueError("give expires_in or expires_at_ms, not both")
        return self


class KeyPatch(_KeyFields):
    """Only what is given changes; null clears budget_usd, expiry and agent_id."""

    name: str | None = None
    models: list[str] | None = Field(None, max_length=MAX_MODELS)
    rpm: int | None = Field(None, ge=0, le=MAX_LIMIT)
    tpm: int | None = Field(None, ge=0, le=MAX_LIMIT)
    budget_usd: float | None = Field(None, gt=0, le=MAX_BUDGET_USD)
    budget_period: Literal["day", "week", "month", "total"] | None = None
    expires_in: str | None = None
    expires_at_ms: int | None = Field(None, gt=0, le=2**53)
    agent_id: str | None = None

    @model_validator(mode="after")
    def _meaningful(self) -> KeyPatch:
        given = self.model_fields_set
        if not given:
            raise ValueError("nothing to change: give at least one field")
        if "expires_in" in given and "expires_at_ms" in given:
            raise ValueError("give expires_in or expires_at_ms, not both")
        for field in ("name", "models", "rpm", "tpm", "budget_period", "expires_in"):
            if field in given and getattr(self, field) is None:
                raise ValueError(f"{field}: must not be null")
        return self


def _ring(request: web.Request) -> KeyRing:
    return request.app[RUNTIME].keys


def _key_id(request: web.Request) -> str:
    return path_id(request, "key_id", "client key")


def _view(ring: KeyRing, key: ClientKey) -> dict[str, Any]:
    return key.view(ring.now_ms())


def _expiry(ring: KeyRing, expires_in: str | None, expires_at_ms: int | None) -> int | None:
    if expires_in is not None:
        return ring.now_ms() + parse_duration(expires_in)
    if expires_at_ms is not None and expires_at_ms <= ring.now_ms():
        raise InvalidRequest("expires_at_ms: must be in the future", param="expires_at_ms")
    return expires_at_ms


def _check_agent(request: web.Request, agent_id: str | None) -> None:
    if agent_id is None:
        return
    try:
        agents = request.app[RUNTIME].agents
    except RuntimeError:
        return  # no agents set up (a bare app in tests): nothing to check against
    try:
        agents.agent(agent_id)
    except NotFound as exc:  # it names the agents there are
        raise InvalidRequest(f"agent_id: {exc.message}", param="agent_id") from None


async def list_keys(request: web.Request) -> web.Response:
    ring = _ring(request)
    keys = await ring.store.list()
    return json_response({"keys": [_view(ring, key) for key in keys]})


async def create_key(request: web.Request) -> web.Response:
    ring = _ring(request)
    body = validate(await read_object(request), KeyCreate)
    _check_agent(request, body.agent_id)
    key, secret = await ring.create(
        name=body.name,
        models=body.models,
        rpm=body.rpm,
        tpm=body.tpm,
        budget_usd=body.budget_usd,
        budget_period=body.budget_period,
        expires_at_ms=_expiry(ring, body.expires_in, body.expires_at_ms),
        agent_id=body.agent_id,
    )
    return json_response({"key": _view(ring, key), "secret": secret, "note": ONCE}, status=201)


async def get_key(request: web.Request) -> web.Response:
    ring = _ring(request)
    return json_response({"key": _view(ring, await ring.store.get(_key_id(request)))})


async def patch_key(request: web.Request) -> web.Response:
    ring = _ring(request)
    key_id = _key_id(request)
    body = validate(await read_object(request), KeyPatch)
    given = body.model_fields_set
    changes: dict[str, Any] = {
        field: getattr(body, field)
        for field in ("name", "models", "rpm", "tpm", "budget_usd", "budget_period", "agent_id")
        if field in given
    }
    if "expires_in" in given or "expires_at_ms" in given:
        changes["expires_at_ms"] = _expiry(ring, body.expires_in, body.expires_at_ms)
    if "agent_id" in changes:
        _check_agent(request, changes["agent_id"])
    key = await ring.update(key_id, **changes)
    return json_response({"key": _view(ring, key)})


async def revoke_key(request: web.Request) -> web.Response:
    ring = _ring(request)
    key = await ring.revoke(_key_id(request))
    return json_response({"key": _view(ring, key)})


async def rotate_key(request: web.Request) -> web.Response:
    ring = _ring(request)
    key, secret = await ring.rotate(_key_id(request))
    return json_response({"key": _view(ring, key), "secret": secret, "note": ONCE})


def add_routes(app: web.Application) -> None:
    app.router.add_get("/console/v1/keys", list_keys)
    app.router.add_post("/console/v1/keys", create_key)
    app.router.add_get("/console/v1/keys/{key_id}", get_key)
    app.router.add_patch("/console/v1/keys/{key_id}", patch_key)
    app.router.add_delete("/console/v1/keys/{key_id}", revoke_key)
    app.router.add_post("/console/v1/keys/{key_id}/rotate", rotate_key)
