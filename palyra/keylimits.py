"""What a client key may do, checked on the request's way in: its models (`check_model`) and
its requests and tokens per minute (`KeyLimits`).

Per-key counts live in the gateway's rate counter (`gateway.deployments.counter`), under
`key:{key_id}`: in this process by default, in Redis with `redis_url`, so three daemons
together hold a key to its rpm. A key without rpm or tpm never touches the counter.
"""

from __future__ import annotations

import math
from typing import Final

from palyra.callers import CALLER
from palyra.deployments import Refusal
from palyra.errors import InvalidRequest, ModelNotAllowed, PalyraError, RateLimitExceeded
from palyra.keys import ClientKey
from palyra.ratecounter import WINDOW_S, Corrections, LocalRateCounter, RateCounter

KEY_PREFIX: Final = "key:"  # deployments count under "model@provider": no clash


def counter_key(key: ClientKey) -> str:
    return KEY_PREFIX + key.key_id


def check_model(key: ClientKey, model_id: str) -> PalyraError | None:
    """A 403 `model_not_allowed` naming the model and the key when the key may not call it."""
    if key.allows(model_id):
        return None
    allowed = ", ".join(key.models)
    return ModelNotAllowed(
        f"client key {key.name!r} may not call model {model_id!r} (its models: {allowed})",
        param="model",
    )


def require_model(model_id: str) -> None:
    """Raise `check_model`'s 403 when the calling client key (palyra.callers.CALLER) may not
    call `model_id`; for the routes that answer about a model without routing to it."""
    key = CALLER.get().key
    refused = None if key is None else check_model(key, model_id)
    if refused is not None:
        raise refused


class KeyLimits:
    """Holds each key to its rpm and tpm, over a sliding 60 s window (see palyra.ratecounter)."""

    def __init__(self, counter: RateCounter) -> None:
        self.counter = counter
        self._corrections = Corrections()

    async def check(self, key: ClientKey, tokens: int) -> Refusal | None:
        """Count one request of `tokens` (the estimate) against the key if it fits: None.
        Else nothing is counted, and the Refusal says which limit and when it would fit
        (`permanent` when the request alone exceeds the key's tpm)."""
        rpm, tpm = key.rpm, key.tpm
        if not rpm and not tpm:
            return None
        if tpm and tokens > tpm:
            return Refusal(
                f"the request's estimated {tokens} tokens exceed the tpm limit {tpm} of "
                f"client key {key.name!r}",
                WINDOW_S,
                permanent=True,
            )
        name = counter_key(key)
        counter = self.counter
        if isinstance(counter, LocalRateCounter):
            wait = counter.reserve_now(name, tokens, rpm, tpm)
        else:
            wait = await counter.reserve(name, tokens, rpm, tpm)
        if wait <= 0:
            return None
        requests, _ = counter.used(name)
        if rpm and requests >= rpm:
            return Refusal(f"client key {key.name!r} reached its rpm limit {rpm}", wait)
        return Refusal(f"client key {key.name!r} reached its tpm limit {tpm}", wait)

    def correct(self, key: ClientKey, delta_tokens: int, *, age_s: float = 0.0) -> None:
        """The answer's tokens less the estimate `check` counted `age_s` seconds ago. Never
        waits: with Redis the correction is sent in the background (`drain` waits for it)."""
        if not delta_tokens or not key.tpm or age_s >= WINDOW_S:
            return
        self._corrections.send(self.counter, counter_key(key), delta_tokens, age_s=age_s)

    async def drain(self) -> None:
        """Wait for corrections still on their way to the counter (before shutdown)."""
        await self._corrections.drain()


def limit_error(refusal: Refusal) -> PalyraError:
    """What the client is told of a key's refusal: 429 `rate_limit_exceeded` with Retry-After,
    or a 400 when no wait can help (the request alone is past the key's tpm)."""
    if refusal.permanent:
        return InvalidRequest(
            f"{refusal.reason}: ask for fewer tokens (max_tokens) or a key with a higher tpm",
            code="exceeds_tpm_limit",
        )
    wait = max(1, math.ceil(refusal.retry_after_s))
    return RateLimitExceeded(
        f"{refusal.reason}; retry in {wait} s", headers={"Retry-After": str(wait)}
    )
