"""What a caller may spend before a request is routed, and what it spent once it is over.

`admit` runs after the model is known and before anything goes upstream: a client key's
models (403), budget (429 `budget_exceeded`) and rpm/tpm (429 `rate_limit_exceeded`), all in
memory (or one Redis round trip with `redis_url` and per-key limits). `settle` runs once per
admitted request when it is over, whole, streamed, failed or cancelled: it prices the usage,
adds the cost to the key's budget, corrects the key's token count to what was used, and
queues one ledger record. Requests refused before they were admitted (a bad body, an unknown
model, a key's own limit) are recorded by the request middleware through `record_refused`.

The router calls both, so agent and cron runs, which call the router directly, are accounted
as HTTP requests are.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass

from palyra.budgets import BudgetBook
from palyra.callers import CALLER, Caller
from palyra.config import ModelConfig
from palyra.errors import PalyraError
from palyra.keylimits import KeyLimits, check_model, limit_error
from palyra.pricing import cost, price_for
from palyra.types import RouteInfo
from palyra.usage.records import UsageRecord
from palyra.usage.writer import UsageWriter

__all__ = ["REQUEST", "Accounting", "RequestTag", "Ticket"]

# nginx's "client closed request": a client that left before its answer.
CLIENT_CLOSED = 499


@dataclass(slots=True)
class RequestTag:
    """The HTTP request a routed call belongs to (set by the request middleware); agent and
    cron runs have none, and are recorded under the route `agent`."""

    request_id: str = ""
    route: str = "agent"
    at_ms: int = 0
    started: float = 0.0
    # Set once the router has admitted the request: it records it, the middleware does not.
    admitted: bool = False
    # The route being tried, set by the router as it starts on it: what the middleware names
    # (model, provider) for a request cut short before its handler had the answer.
    trying: RouteInfo | None = None


REQUEST: ContextVar[RequestTag | None] = ContextVar("palyra_request", default=None)


@dataclass(slots=True)
class Ticket:
    """One admitted request, until `settle`."""

    caller: Caller
    model: ModelConfig
    tag: RequestTag
    stream: bool
    estimate: int = 0  # tokens counted against the key's tpm when admitted
    settled: bool = False
    # With `[usage] log_payloads`: the prompt as recorded, and the answer's text.
    prompt: Callable[[], str] | None = None
    answer: list[str] | None = None


class Accounting:
    def __init__(
        self,
        *,
        find_model: Callable[[str, str], ModelConfig | None],
        limits: KeyLimits,
        budgets: BudgetBook,
        usage: UsageWriter,
        log_payloads: bool = False,
        wall_ms: Callable[[], int] = lambda: int(time.time() * 1000),
    ) -> None:
        """`find_model(model_id, provider_id)`: the deployment that served, for its price.
        `log_payloads`: records keep the prompt and the answer's text."""
        self._find_model = find_model
        self.log_payloads = log_payloads
        self.limits = limits
        self.budgets = budgets
        self.usage = usage
        self._wall_ms = wall_ms

    async def admit(
        self,
        model: ModelConfig,
        estimate: Callable[[], int],
        *,
        stream: bool = False,
        prompt: Callable[[], str] | None = None,
    ) -> Ticket:
        """Check the caller may send this request now, and open its ticket; raises the
        refusal (403, 429, or 400 when the request alone is past the key's tpm)."""
        caller = CALLER.get()
        tag = REQUEST.get()
        if tag is None:  # an agent run's call: recorded under the run's id
            now_ms = self._wall_ms()
            tag = RequestTag(caller.run_id or "", at_ms=now_ms, started=time.perf_counter())
        ticket = Ticket(caller, model, tag, stream)
        if self.log_payloads and prompt is not None:
            ticket.prompt, ticket.answer = prompt, []
        key = caller.key
        if key is None:
            tag.admitted = True
            return ticket  # the admin token and agent runs: nothing to hold them to
        refused: PalyraError | None = check_model(key, model.model_id)
        if refused is None:
            refused = self.budgets.check(key, self._wall_ms())
        if refused is None and (key.rpm or key.tpm):
            ticket.estimate = estimate() if key.tpm else 0
            refusal = await self.limits.check(key, ticket.estimate)
            if refusal is not None:
                refused = limit_error(refusal)
        if refused is not None:
            # Not routed: the middleware records it as refused.
            refused.route = RouteInfo(model.model_id, model.provider_id)
            raise refused
        # (Only now: a request cancelled while its key's counts were checked is the
        # middleware's to record.)
        tag.admitted = True
        return ticket

    def settle(
        self, ticket: Ticket, route: RouteInfo, *, status: int, error: str | None = None
    ) -> None:
        """The request is over: price it, charge the key, and record it. Once per ticket."""
        if ticket.settled:
            return
        ticket.settled = True
        caller, tag = ticket.caller, ticket.tag
        served = self._find_model(route.model_id, route.provider_id) if route.provider_id else None
        usage = route.usage
        spent = cost(price_for(served), usage) if served is not None and usage else None
        key = caller.key
        if key is not None:
            if spent:
                self.budgets.add(key.key_id, spent, tag.at_ms)
            if key.tpm and usage is not None:
                age_s = time.perf_counter() - tag.started
                self.limits.correct(key, usage.total_tokens - ticket.estimate, age_s=age_s)
        self.usage.record(
            _record(
                tag,
                caller,
                route,
                model=route.model_id or ticket.model.model_id,
                status=status,
                error=error,
                spent=spent,
                stream=ticket.stream,
                prompt=ticket.prompt() if ticket.prompt is not None else None,
                answer="".join(ticket.answer) if ticket.answer else None,
            )
        )

    def settle_failed(self, ticket: Ticket, route: RouteInfo, error: BaseException) -> None:
        if isinstance(error, PalyraError):
            self.settle(ticket, route, status=error.status, error=error.message)
        elif isinstance(error, asyncio.CancelledError | GeneratorExit):
            # The client went away (or the daemon is stopping).
            self.settle(ticket, route, status=CLIENT_CLOSED, error="client closed request")
        else:  # a bug of ours: the client got a 500
            self.settle(ticket, route, status=500, error=f"internal error ({type(error).__name__})")

    def record_refused(
        self,
        tag: RequestTag,
        route: RouteInfo | None,
        caller: Caller,
        *,
        status: int,
        error: str | None,
    ) -> None:
        """A request that never reached the router's admission: refused on its way in (a
        bad body, an unknown model, a key's own limit), or one the router did not take."""
        self.usage.record(
            _record(
                tag,
                caller,
                route or RouteInfo(),
                model=route.model_id if route else "",
                status=status,
                error=error,
            )
        )


def _record(
    tag: RequestTag,
    caller: Caller,
    route: RouteInfo,
    *,
    model: str,
    status: int,
    error: str | None,
    spent: float | None = None,
    stream: bool = False,
    prompt: str | None = None,
    answer: str | None = None,
) -> UsageRecord:
    usage = route.usage
    # (A deployment only once something was sent upstream.)
    dispatched = usage is not None or route.retries > 0 or route.upstream_s > 0
    return UsageRecord(
        at_ms=tag.at_ms,
        request_id=tag.request_id,
        key_id=caller.key_id,
        key_name=caller.key_name,
        agent_id=caller.agent_id,
        route=tag.route,
        model=model,
        provider=route.provider_id,
        deployment=f"{route.model_id}@{route.provider_id}" if dispatched else "",
        status=status,
        input_tokens=usage.prompt_tokens if usage else 0,
        output_tokens=usage.completion_tokens if usage else 0,
        cached_tokens=usage.cached_tokens if usage else 0,
        reasoning_tokens=usage.reasoning_tokens if usage else 0,
        cost_usd=spent,
        cost_estimated=route.usage_estimated,
        latency_ms=round((time.perf_counter() - tag.started) * 1000, 3),
        ttft_ms=(
            round((route.first_token_at - tag.started) * 1000, 3)
            if route.first_token_at is not None
            else None
        ),
        retries=route.retries,
        failovers=route.failovers,
        error=error,
        stream=stream,
        prompt=prompt,
        answer=answer,
    )
