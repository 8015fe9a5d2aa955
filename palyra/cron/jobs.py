"""Cron jobs as the API takes and shows them: validation of new jobs and of PATCHes.

A job body (POST; a PATCH sends any subset):

```json
{"name": "morning digest", "agent_id": "default", "prompt": "Summarise ...",
 "schedule": {"cron": "0 9 * * mon-fri", "timezone": "Europe/Prague"},
 "enabled": true, "misfire": "catch_up", "concurrency": "forbid",
 "retry": {"max_attempts": 3, "backoff_ms": 10000}, "auth_profile_id": null}
```
`schedule` is one of `{"cron": EXPR, "timezone"?: ZONE}`, `{"every": "15m"}`,
`{"at": "2026-12-01T09:00:00+01:00"}`. Every error names its field (`schedule.cron`,
`retry.max_attempts`), so a form can show it beside the field.
"""

from __future__ import annotations

import dataclasses
import re
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from palyra.cron.schedule import (
    MAX_ZONE_CHARS,
    Schedule,
    ScheduleError,
    build_schedule,
    format_duration,
    iso,
    representable,
    shown,
    zone,
)

Misfire = Literal["catch_up", "skip"]
Concurrency = Literal["forbid", "queue_one", "replace"]
MISFIRE_POLICIES: tuple[Misfire, ...] = ("catch_up", "skip")
CONCURRENCY_POLICIES: tuple[Concurrency, ...] = ("forbid", "queue_one", "replace")
MAX_ATTEMPTS = 16
DEFAULT_BACKOFF_MS = 10_000
MAX_BACKOFF_MS = 3_600_000
MAX_PROMPT_CHARS = 32_000
MAX_NAME_CHARS = 200
MAX_AGENT_ID_CHARS = 64  # the agents.toml rule for an agent id
# Used with fullmatch: `$` alone would let "main\n" through.
_PROFILE_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
_FIELDS = {
    "name",
    "agent_id",
    "prompt",
    "schedule",
    "enabled",
    "misfire",
    "concurrency",
    "retry",
    "auth_profile_id",
}


class JobError(ValueError):
    """A bad field: `field` is its dotted name."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


@dataclass(frozen=True, slots=True)
class Job:
    job_id: str
    name: str
    agent_id: str
    prompt: str
    schedule: Schedule
    enabled: bool = True
    misfire: Misfire = "catch_up"
    concurrency: Concurrency = "forbid"
    max_attempts: int = 1
    backoff_ms: int = DEFAULT_BACKOFF_MS
    auth_profile_id: str | None = None
    created_at: int = 0
    updated_at: int = 0
    next_fire_at: int | None = None
    queued_fire_at: int | None = None

    @property
    def done(self) -> bool:
        """A one-shot `at` job that has fired (or was missed) has nothing left to do."""
        return self.schedule.kind == "at" and self.next_fire_at is None

    @property
    def state(self) -> str:
        if self.done:
            return "done"
        return "enabled" if self.enabled else "disabled"

    def backoff_for(self, attempt: int) -> int:
        """Delay before attempt `attempt + 1`: doubles each time, capped at an hour."""
        return int(min(MAX_BACKOFF_MS, self.backoff_ms * 2 ** (attempt - 1)))


def _key(unknown: set[str]) -> str:
    """The first unknown key, cut short: it becomes the error's `param` and message."""
    key = sorted(unknown)[0]
    return key if len(key) <= 64 else key[:63] + "…"


def _text(body: Mapping[str, Any], key: str, limit: int) -> str:
    value = body[key]
    if not isinstance(value, str) or not value.strip():
        raise JobError(key, "must be a non-empty string")
    if len(value) > limit:
        raise JobError(key, f"must be at most {limit} characters")
    if "\x00" in value:
        # PostgreSQL text cannot hold NUL: refused here, not as a failed INSERT.
        raise JobError(key, "must not contain NUL (\\u0000) characters")
    return value.strip() if key != "prompt" else value


def _schedule(raw: Any, default_tz: str, anchor_ms: int, now_ms: int) -> Schedule:
    if not isinstance(raw, Mapping):
        raise JobError(
            "schedule", 'must be an object: {"cron": ...}, {"every": ...} or {"at": ...}'
        )
    kinds = [k for k in ("cron", "every", "at") if k in raw]
    unknown = set(raw) - {"cron", "every", "at", "timezone", "kind"}
    if unknown:
        raise JobError(f"schedule.{_key(unknown)}", "unknown key")
    if len(kinds) != 1:
        raise JobError("schedule", "give exactly one of cron, every, at")
    kind = kinds[0]
    if "kind" in raw and raw["kind"] != kind:
        raise JobError("schedule.kind", f"says {shown(raw['kind'])} but the schedule is {kind}")
    if "timezone" in raw and kind != "cron":
        raise JobError("schedule.timezone", "only a cron schedule takes a time zone")
    value = raw[kind]
    if not isinstance(value, str) or not value.strip():
        raise JobError(f"schedule.{kind}", "must be a non-empty string")
    # Absent, null or "": the default zone. Any other value must be a zone name (`or` alone
    # would take 0, false or [] for "absent" too).
    timezone = raw.get("timezone")
    if timezone is None or timezone == "":
        timezone = default_tz
    if not isinstance(timezone, str):
        raise JobError("schedule.timezone", "must be an IANA zone name such as Europe/Prague")
    if len(timezone) > MAX_ZONE_CHARS:
        raise JobError("schedule.timezone", f"must be at most {MAX_ZONE_CHARS} characters")
    try:
        schedule = build_schedule(
            kind, expr=value, timezone=timezone, every=value, at=value, anchor_ms=anchor_ms
        )
    except ScheduleError as exc:
        text = str(exc)
        field = "schedule.timezone" if text.startswith("unknown IANA") else f"schedule.{kind}"
        raise JobError(field, text.split(": ", 1)[-1] if ": " in text else text) from None
    if kind == "at" and schedule.at_ms <= now_ms:
        raise JobError("schedule.at", f"{value} is not in the future")
    # A schedule is stored only with a next fire time: one that cannot be worked out (a cron
    # expression matching nothing for 50 years) would be a job that silently never runs.
    if schedule.next_after(now_ms) is None:
        raise JobError(f"schedule.{kind}", f"{shown(value)} has no fire time after now")
    return schedule


def _retry(raw: Any, job: Job) -> tuple[int, int]:
    if not isinstance(raw, Mapping):
        raise JobError("retry", 'must be an object: {"max_attempts": 1-16, "backoff_ms": N}')
    unknown = set(raw) - {"max_attempts", "backoff_ms"}
    if unknown:
        raise JobError(f"retry.{_key(unknown)}", "unknown key")
    attempts = raw.get("max_attempts", job.max_attempts)
    if type(attempts) is not int or not 1 <= attempts <= MAX_ATTEMPTS:
        raise JobError("retry.max_attempts", f"must be an integer from 1 to {MAX_ATTEMPTS}")
    backoff = raw.get("backoff_ms", job.backoff_ms)
    if type(backoff) is not int or not 0 <= backoff <= MAX_BACKOFF_MS:
        raise JobError("retry.backoff_ms", f"must be an integer from 0 to {MAX_BACKOFF_MS}")
    return attempts, backoff


def apply_fields(
    job: Job,
    body: Mapping[str, Any],
    *,
    default_tz: str,
    now_ms: int,
    agent_exists: Callable[[str], bool],
) -> Job:
    """`job` with the fields of `body` applied and checked (a new job starts from a blank)."""
    if not isinstance(body, Mapping):
        raise JobError("body", "must be a JSON object")
    unknown = set(body) - _FIELDS
    if unknown:
        raise JobError(_key(unknown), "unknown field")
    changes: dict[str, Any] = {}
    if "name" in body:
        changes["name"] = _text(body, "name", MAX_NAME_CHARS)
    if "prompt" in body:
        changes["prompt"] = _text(body, "prompt", MAX_PROMPT_CHARS)
    if "agent_id" in body:
        agent_id = _text(body, "agent_id", MAX_AGENT_ID_CHARS)
        if not agent_exists(agent_id):
            raise JobError("agent_id", f"no agent {agent_id!r} is defined")
        changes["agent_id"] = agent_id
    if "schedule" in body:
        changes["schedule"] = _schedule(body["schedule"], default_tz, job.created_at, now_ms)
    if "enabled" in body:
        if not isinstance(body["enabled"], bool):
            raise JobError("enabled", "must be true or false")
        changes["enabled"] = body["enabled"]
    if "misfire" in body:
        if body["misfire"] not in MISFIRE_POLICIES:
            raise JobError("misfire", "must be catch_up or skip")
        changes["misfire"] = body["misfire"]
    if "concurrency" in body:
        if body["concurrency"] not in CONCURRENCY_POLICIES:
            raise JobError("concurrency", "must be forbid, queue_one or replace")
        changes["concurrency"] = body["concurrency"]
    if "retry" in body:
        changes["max_attempts"], changes["backoff_ms"] = _retry(body["retry"], job)
    if "auth_profile_id" in body:
        profile = body["auth_profile_id"]
        if profile in (None, ""):
            changes["auth_profile_id"] = None
        elif not isinstance(profile, str) or not _PROFILE_ID.fullmatch(profile):
            raise JobError("auth_profile_id", "must be a profile id ([A-Za-z0-9._:-], <= 128)")
        else:
            changes["auth_profile_id"] = profile
    return dataclasses.replace(job, **changes, updated_at=now_ms)


def new_job(
    body: Mapping[str, Any],
    *,
    default_tz: str,
    now_ms: int,
    agent_exists: Callable[[str], bool],
) -> Job:
    if not isinstance(body, Mapping):
        raise JobError("body", "must be a JSON object")
    for key in ("name", "agent_id", "prompt", "schedule"):
        if key not in body:
            raise JobError(key, "required")
    blank = Job(
        job_id="job_" + uuid.uuid4().hex[:20],
        name="",
        agent_id="",
        prompt="",
        schedule=Schedule("every", every_ms=60_000),
        created_at=now_ms,
    )
    job = apply_fields(blank, body, default_tz=default_tz, now_ms=now_ms, agent_exists=agent_exists)
    return dataclasses.replace(job, next_fire_at=job.schedule.next_after(now_ms))


def schedule_view(schedule: Schedule) -> dict[str, Any]:
    if schedule.kind == "cron":
        return {"kind": "cron", "cron": schedule.expr, "timezone": schedule.timezone}
    if schedule.kind == "every":
        return {"kind": "every", "every": format_duration(schedule.every_ms)}
    if schedule.kind == "at":
        return {"kind": "at", "at": iso(schedule.at_ms) if representable(schedule.at_ms) else None}
    return {"kind": schedule.kind}


def job_view(job: Job, upcoming: list[int] | None = None) -> dict[str, Any]:
    """The job as the API shows it. Never raises for what is stored: a job an older version
    stored with an unusable schedule is shown with no next fire time and its `problem` named,
    so that it can still be listed, read, fixed with a PATCH and deleted."""
    problem = job.schedule.problem()
    try:
        tz = job.schedule.tz
    except ScheduleError:
        tz = zone("UTC")
    next_fire = job.next_fire_at if job.enabled and problem is None else None
    if next_fire is not None and not representable(next_fire):
        next_fire = None
        problem = problem or "next_fire_at: out of range; send a new schedule or delete the job"
    view: dict[str, Any] = {
        "job_id": job.job_id,
        "name": job.name,
        "agent_id": job.agent_id,
        "prompt": job.prompt,
        "schedule": {**schedule_view(job.schedule), "description": job.schedule.describe()},
        "enabled": job.enabled,
        "state": job.state,
        "misfire": job.misfire,
        "concurrency": job.concurrency,
        "retry": {"max_attempts": job.max_attempts, "backoff_ms": job.backoff_ms},
        "auth_profile_id": job.auth_profile_id,
        "next_fire_at_ms": next_fire,
        "next_fire_at": iso(next_fire, tz) if next_fire is not None else None,
        "queued_fire_at_ms": job.queued_fire_at,
        "created_at_ms": job.created_at,
        "updated_at_ms": job.updated_at,
        "problem": problem,
    }
    if upcoming is not None:
        view["next_fire_times"] = [iso(t, tz) for t in upcoming if representable(t)]
    return view
