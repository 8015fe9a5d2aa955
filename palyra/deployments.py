"""Deployments: the state of each deployment of a model (one `[[model_provider.models]]` entry)
that load balancing reads, and whether a deployment may take one more request now.

A deployment may not take a request while its upstream's rate-limit headers (or a 429) say it
has nothing left, nor when its own `rpm_limit` / `tpm_limit` would be passed in the last 60 s.
The 60 s are a sliding window, not a calendar minute: a calendar counter lets 2 x rpm_limit
through around the turn of a minute, which is what an upstream's own limiter answers with 429s.

Where the counts live is a `palyra.ratecounter.RateCounter`: in this process or in Redis,
shared by all daemons. A deployment without limits never touches one, so on the common path
`admit` is a few attribute reads and never suspends.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Final

from palyra.balancing import DEFAULT_STRATEGY
from palyra.config import ModelConfig
from palyra.ratecounter import WINDOW_S, Corrections, LocalRateCounter, RateCounter
from palyra.ratelimits import UNKNOWN_RESET_S, UpstreamLimits

# Time-to-first-token average: each answer moves it 30 % of the way. High enough that a
# deployment slowing down shows within three or four answers (the latency strategy must move
# traffic off within tens of requests), low enough that one slow outlier (a cold cache, a long
# prompt) moves it less than a third of its jump.
TTFT_ALPHA: Final = 0.3
# ... and more the longer the deployment went unmeasured: an answer after a gap of t seconds
# moves it at least 1 - exp(-t / TTFT_TAU_S) of the way. A deployment the latency strategy
# only explores now and then (every ten seconds or so) is then judged by what it does now,
# so one that recovered takes traffic back at its first fast answer, not after ten of them.
TTFT_TAU_S: Final = 5.0
# The gap past which that exceeds TTFT_ALPHA (about 1.8 s); below it, as under steady traffic,
# the exponential need not be worked out.
_TTFT_GAP_S: Final = -TTFT_TAU_S * math.log1p(-TTFT_ALPHA)
_RING = 60  # one bucket per second of the share window


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a deployment cannot take a request now, and in how many seconds it could."""

    reason: str
    retry_after_s: float
    # The request can never fit here (its estimate exceeds tpm_limit): waiting `retry_after_s`
    # would not help, so a caller answers 400 rather than 429 when no other deployment takes it.
    permanent: bool = False


class _Upstream:
    """What an upstream said of one model on one provider. Shared by every deployment with that
    provider and upstream model name: they draw on one quota."""

    __slots__ = (
        "active",
        "reason",
        "remaining_requests",
        "remaining_tokens",
        "requests_reset_at",
        "rest_until",
        "seen",
        "tokens_reset_at",
    )

    def __init__(self) -> None:
        # Something may refuse a request (cleared lazily once every reset has passed), so
        # `admit` looks further only while this is set.
        self.active = False
        self.seen = False
        self.remaining_requests: int | None = None
        self.requests_reset_at = 0.0
        self.remaining_tokens: int | None = None
        self.tokens_reset_at = 0.0
        self.rest_until = 0.0
        self.reason = ""

    def observe(self, limits: UpstreamLimits, now: float) -> None:
        self.seen = self.active = True
        if limits.remaining_requests is not None:
            self.remaining_requests = limits.remaining_requests
            reset = limits.requests_reset_s
            self.requests_reset_at = now + (UNKNOWN_RESET_S if reset is None else reset)
        if limits.remaining_tokens is not None:
            self.remaining_tokens = limits.remaining_tokens
            reset = limits.tokens_reset_s
            self.tokens_reset_at = now + (UNKNOWN_RESET_S if reset is None else reset)
        rest = limits.exhausted_for_s()
        if rest is not None:
            what = "requests" if limits.remaining_requests == 0 else "tokens"
            self.rest(now + rest, f"upstream says 0 {what} remaining")

    def rest(self, until: float, reason: str) -> None:
        # Only ever longer: a later answer saying "some left" may predate the one saying none.
        self.seen = self.active = True
        if until > self.rest_until:
            self.rest_until, self.reason = until, reason

    def refusal(self, tokens: int, now: float) -> Refusal | None:
        if now < self.rest_until:
            return Refusal(self.reason, self.rest_until - now)
        requests_known = self.remaining_requests is not None and now < self.requests_reset_at
        tokens_known = self.remaining_tokens is not None and now < self.tokens_reset_at
        if not requests_known and not tokens_known:
            self.active = False
            return None
        if requests_known and self.remaining_requests is not None and self.remaining_requests <= 0:
            return Refusal(
                "upstream's remaining requests used up until its reset",
                self.requests_reset_at - now,
            )
        if tokens_known and self.remaining_tokens is not None and tokens > self.remaining_tokens:
            return Refusal(
                f"upstream says {max(self.remaining_tokens, 0)} tokens remaining; "
                f"the request needs about {tokens}",
                self.tokens_reset_at - now,
            )
        return None

    def spend(self, tokens: int, now: float) -> None:
        """Count a request sent since the last answer, so a burst sent before any answer comes
        back cannot overdraw what the headers said was left."""
        if self.remaining_requests is not None and now < self.requests_reset_at:
            self.remaining_requests -= 1
        if self.remaining_tokens is not None and now < self.tokens_reset_at:
            self.remaining_tokens -= tokens

    def row(self, now: float, epoch_ms: Callable[[float], int]) -> dict[str, Any] | None:
        """What the view shows of it (None before any answer said anything)."""
        if not self.seen:
            return None
        requests, tokens = self.remaining_requests, self.remaining_tokens
        return {
            "remaining_requests": (
                max(requests, 0) if requests is not None and now < self.requests_reset_at else None
            ),
            "remaining_tokens": (
                max(tokens, 0) if tokens is not None and now < self.tokens_reset_at else None
            ),
            "exhausted_until_ms": epoch_ms(self.rest_until) if self.rest_until > now else None,
        }


class Deployment:
    """One model on one provider: its settings, what is in flight, how it has been doing.
    Satisfies `palyra.balancing.Balanceable`. The board changes it through `count`, `recount`,
    `finish`, `rest` and `configure` (and notes `last_skip`), never its parts."""

    __slots__ = (
        "_counter",
        "_ring",
        "_upstream",
        "dispatched",
        "in_flight",
        "key",
        "last_skip",
        "last_used",
        "limited",
        "model",
        "priority",
        "provider_id",
        "rpm_limit",
        "tpm_limit",
        "ttft_at",
        "ttft_s",
        "weight",
    )

    def __init__(self, model: ModelConfig, counter: RateCounter, upstream: _Upstream) -> None:
        self.key = f"{model.model_id}@{model.provider_id}"
        self.provider_id = model.provider_id
        self._counter = counter
        self.in_flight = 0
        self.ttft_s: float | None = None
        self.ttft_at = 0.0  # clock time of the last measurement
        self.last_used = 0.0
        self.dispatched = 0
        self.last_skip: tuple[str, float] | None = None  # (reason, clock time)
        # This daemon's [second, dispatches, tokens] per second over the last minute (the
        # share, and the counts of a deployment without limits): bounded whatever the rate.
        self._ring = [[-1, 0, 0] for _ in range(_RING)]
        self.configure(model, upstream)

    def configure(self, model: ModelConfig, upstream: _Upstream) -> None:
        """Take the settings of `model` (its configuration entry, perhaps changed by a reload)
        and the upstream quota it draws on; the counts carry over."""
        self.model = model
        self.weight = float(model.weight)
        self.priority = model.priority
        self.rpm_limit = model.rpm_limit
        self.tpm_limit = model.tpm_limit
        # Whether admitting needs the rate counter: never touched without limits.
        self.limited = bool(self.rpm_limit or self.tpm_limit)
        self._upstream = upstream

    @property
    def counts_tokens(self) -> bool:
        """Whether admitting a request here needs its token estimate (a tpm_limit, or what
        the upstream said is left); otherwise the estimate need not be worked out."""
        return self.tpm_limit > 0 or self._upstream.active

    def usage_share(self) -> float:
        """The larger of requests / rpm_limit and tokens / tpm_limit over the last 60 s
        (0.0 without limits)."""
        if not self.limited:
            return 0.0
        requests, tokens = self._counter.used(self.key)
        share = requests / self.rpm_limit if self.rpm_limit else 0.0
        if self.tpm_limit:
            share = max(share, tokens / self.tpm_limit)
        return share

    def refusal(self, tokens: int, now: float) -> Refusal | None:
        """Why the upstream would not take a request of about `tokens` now, if it said so."""
        upstream = self._upstream
        return upstream.refusal(tokens, now) if upstream.active else None

    def count(self, now: float, tokens: int) -> None:
        """A request of about `tokens` dispatched at `now`: in flight, and counted in this
        daemon's last minute and against what the upstream said was left."""
        self.in_flight += 1
        self.dispatched += 1
        self.last_used = now
        sec = int(now)
        bucket = self._ring[sec % _RING]
        if bucket[0] == sec:
            bucket[1] += 1
            bucket[2] += tokens
        else:
            bucket[:] = (sec, 1, tokens)
        upstream = self._upstream
        if upstream.active:
            upstream.spend(tokens, now)

    def recount(self, at: float, delta: int) -> None:
        """The request counted at `at` used `delta` tokens more (or fewer) than estimated;
        nothing once its second has left the ring."""
        sec = int(at)
        bucket = self._ring[sec % _RING]
        if bucket[0] == sec:
            bucket[2] += delta

    def finish(self, now: float, ttft_s: float | None) -> None:
        """A request ended at `now`: out of flight, and its time to first token (when
        measured) into the average."""
        if self.in_flight > 0:
            self.in_flight -= 1
        if ttft_s is None or not ttft_s >= 0:  # (NaN fails the comparison)
            return
        average = self.ttft_s
        if average is None:
            self.ttft_s = ttft_s
        else:
            gap = now - self.ttft_at
            alpha = (
                max(TTFT_ALPHA, -math.expm1(-gap / TTFT_TAU_S)) if gap > _TTFT_GAP_S else TTFT_ALPHA
            )
            self.ttft_s = average + alpha * (ttft_s - average)
        self.ttft_at = now

    def rest(self, until: float, reason: str) -> None:
        """Take no request before `until` (nor do those sharing its upstream quota)."""
        self._upstream.rest(until, reason)

    def recent(self, now: float) -> tuple[int, int]:
        """(requests, tokens) this daemon sent in about the last minute (whole seconds)."""
        oldest = int(now) - _RING
        requests = tokens = 0
        for sec, sent, used in self._ring:
            if sec > oldest:
                requests += sent
                tokens += used
        return requests, max(tokens, 0)

    def upstream_row(self, now: float, epoch_ms: Callable[[float], int]) -> dict[str, Any] | None:
        """What the upstream last said of its quota, for the view."""
        return self._upstream.row(now, epoch_ms)

    def __repr__(self) -> str:
        return f"Deployment({self.key!r}, in_flight={self.in_flight})"


class Admission:
    """A granted request: counted in flight, its `tokens` estimate reserved. Hand it back to
    `DeploymentBoard.settle` when the attempt ends."""

    __slots__ = ("_counted", "_settled", "admitted_at", "deployment", "tokens")

    def __init__(self, deployment: Deployment, tokens: int, at: float, counted: bool) -> None:
        self.deployment = deployment
        self.tokens = tokens
        self.admitted_at = at
        self._counted = counted  # reserved in the rate counter (the deployment has limits)
        self._settled = False

    @property
    def settled(self) -> bool:
        return self._settled


class DeploymentBoard:
    """Every deployment this daemon has routed to, made on first use."""

    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.monotonic,
        counter: RateCounter | None = None,
        default_strategy: str = DEFAULT_STRATEGY,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._clock = clock
        self._wall_clock = wall_clock
        self.counter: RateCounter = LocalRateCounter(clock=clock) if counter is None else counter
        # `[model_provider] load_balancing`, shown for models without their own.
        self.default_strategy = default_strategy
        self._deployments: dict[str, Deployment] = {}
        self._by_config: dict[int, Deployment] = {}
        self._upstreams: dict[tuple[str, str], _Upstream] = {}
        self._corrections = Corrections()

    def deployment(self, model: ModelConfig) -> Deployment:
        """The deployment of `model` (an entry of the configuration); the same object for as
        long as the key stays, its settings refreshed when the entry changed."""
        found = self._by_config.get(id(model))
        if found is not None and found.model is model:
            return found
        key = f"{model.model_id}@{model.provider_id}"
        upstream = self._upstream_of(model)
        deployment = self._deployments.get(key)
        if deployment is None:
            deployment = self._deployments[key] = Deployment(model, self.counter, upstream)
        else:
            self._by_config.pop(id(deployment.model), None)
            deployment.configure(model, upstream)
        self._by_config[id(model)] = deployment
        return deployment

    def _upstream_of(self, model: ModelConfig) -> _Upstream:
        name = (model.provider_id, model.upstream_name)
        upstream = self._upstreams.get(name)
        if upstream is None:
            upstream = self._upstreams[name] = _Upstream()
        return upstream

    def retain(self, models: Iterable[ModelConfig]) -> None:
        """Forget deployments no longer configured (after a reload), so `view` drops them."""
        keep = {f"{m.model_id}@{m.provider_id}" for m in models}
        for key in [key for key in self._deployments if key not in keep]:
            gone = self._deployments.pop(key)
            self._by_config.pop(id(gone.model), None)
        used = {(d.provider_id, d.model.upstream_name) for d in self._deployments.values()}
        for name in [name for name in self._upstreams if name not in used]:
            del self._upstreams[name]

    async def admit(self, deployment: Deployment, tokens: int) -> Admission | Refusal:
        """Admit one request of about `tokens` (the estimate made before dispatch), or say why
        not: the upstream said it has nothing left, or rpm_limit / tpm_limit would be passed
        in the last 60 s. Admitted: in flight, reserved, counted as dispatched."""
        now = self._clock()
        refusal = deployment.refusal(tokens, now)
        counted = deployment.limited
        if refusal is None and counted:
            refusal = await self._reserve(deployment, tokens)
            now = self._clock()
        if refusal is not None:
            deployment.last_skip = (refusal.reason, now)
            return refusal
        deployment.count(now, tokens)
        return Admission(deployment, tokens, now, counted)

    async def _reserve(self, deployment: Deployment, tokens: int) -> Refusal | None:
        rpm_limit, tpm_limit = deployment.rpm_limit, deployment.tpm_limit
        if tpm_limit and tokens > tpm_limit:
            return Refusal(
                f"the request's estimated {tokens} tokens exceed tpm_limit {tpm_limit}",
                WINDOW_S,
                permanent=True,
            )
        wait = await self.counter.reserve(deployment.key, tokens, rpm_limit, tpm_limit)
        if wait <= 0:
            return None
        requests, _ = self.counter.used(deployment.key)
        if rpm_limit and requests >= rpm_limit:
            return Refusal(f"rpm_limit {rpm_limit} reached", wait)
        return Refusal(f"tpm_limit {tpm_limit} reached", wait)

    def settle(self, admission: Admission, *, ttft_s: float | None, tokens: int | None) -> None:
        """The attempt ended: out of flight, `ttft_s` (when measured) into the average, and the
        reservation corrected to the answer's `tokens` (when known). A second call does nothing."""
        if admission._settled:
            return
        admission._settled = True
        deployment = admission.deployment
        now = self._clock()
        deployment.finish(now, ttft_s)
        if tokens is None or tokens == admission.tokens:
            return
        delta = max(tokens, 0) - admission.tokens
        deployment.recount(admission.admitted_at, delta)
        if admission._counted:
            age_s = now - admission.admitted_at
            if age_s < WINDOW_S:
                self._correct(deployment.key, delta, age_s)

    def _correct(self, key: str, delta: int, age_s: float) -> None:
        self._corrections.send(self.counter, key, delta, age_s=age_s)

    async def drain(self) -> None:
        """Wait for corrections still on their way to the counter (before shutdown)."""
        await self._corrections.drain()

    def observe_limits(self, provider_id: str, upstream_model: str, limits: UpstreamLimits) -> None:
        """What an answer's rate-limit headers said, for every deployment with that provider
        and upstream model name: nothing left means exhausted until the reset."""
        upstream = self._upstreams.get((provider_id, upstream_model))
        if upstream is not None:
            upstream.observe(limits, self._clock())

    def skipped(self, deployment: Deployment, reason: str) -> None:
        """The router passed `deployment` over for a reason of its own (an open circuit)."""
        deployment.last_skip = (reason, self._clock())

    def exhaust(self, deployment: Deployment, retry_after_s: float, reason: str) -> None:
        """Rest the deployment (and those sharing its upstream quota) `retry_after_s`, e.g.
        after an upstream 429."""
        deployment.rest(self._clock() + max(retry_after_s, 0.0), reason)

    def view(self) -> list[dict[str, Any]]:
        """One row per deployment, by model and priority (see design: gateway status, the CLI,
        the console and /metrics read these)."""
        now = self._clock()
        wall_ms = self._wall_clock() * 1000

        def epoch_ms(at: float) -> int:
            return round(wall_ms - (now - at) * 1000)

        deployments = sorted(
            self._deployments.values(),
            key=lambda d: (d.model.model_id, d.priority, d.provider_id),
        )
        recent = {d.key: d.recent(now) for d in deployments}
        model_total: dict[str, int] = {}
        for d in deployments:
            model_total[d.model.model_id] = model_total.get(d.model.model_id, 0) + recent[d.key][0]
        rows: list[dict[str, Any]] = []
        for d in deployments:
            mine = recent[d.key][0]
            total = model_total[d.model.model_id]
            requests, tokens = self.counter.used(d.key) if d.limited else recent[d.key]
            rows.append(
                {
                    "model_id": d.model.model_id,
                    "provider_id": d.provider_id,
                    "weight": d.weight,
                    "priority": d.priority,
                    "strategy": d.model.strategy(self.default_strategy),
                    "in_flight": d.in_flight,
                    "requests_last_minute": requests,
                    "tokens_last_minute": tokens,
                    "rpm_limit": d.rpm_limit,
                    "tpm_limit": d.tpm_limit,
                    "ttft_ms": None if d.ttft_s is None else d.ttft_s * 1000,
                    "share": mine / total if total else 0.0,
                    "dispatched": d.dispatched,
                    "skipped": (
                        None
                        if d.last_skip is None
                        else {"reason": d.last_skip[0], "at_ms": epoch_ms(d.last_skip[1])}
                    ),
                    "upstream": d.upstream_row(now, epoch_ms),
                }
            )
        return rows
