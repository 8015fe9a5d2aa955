"""Load balancing: the order in which a model's deployments are tried for one request.

Pure and in memory: a strategy sees each deployment's weight, priority, requests in flight,
time-to-first-token average, last dispatch and share of its rate limits (what
`palyra.deployments` keeps), and returns the whole try order; the caller admits the first
that can take the request and falls over to the next. Randomness and the clock come in as
arguments, so every choice is reproducible in tests.

Priorities are groups, lower first: a later group is reached only when every deployment of
the earlier ones was passed over. Within a group the strategy orders, or, when the request
has an affinity key, weighted rendezvous hashing does (the same key always lands on the same
deployment, on every daemon, and losing a deployment moves only the keys that were on it).
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping, Sequence
from hashlib import blake2b
from itertools import groupby
from typing import Final, Protocol, TypeVar

from palyra.types import ChatRequest, FilePart, ImagePart, InputAudioPart, Message, TextPart

# latency: a deployment passed over this long goes first once, so that one that recovered (its
# average still remembers it slow) is measured again even where EPSILON's tries are rare.
EXPLORE_AFTER_S: Final = 10.0
# latency: ... and passed over for this many of the gaps between requests (time since the
# fastest one's last dispatch): where requests come seldom (one a minute from someone typing),
# a pause of EXPLORE_AFTER_S is no sign of anything, and each of those requests would go to
# the slow deployment in turn. Timed exploration is so held to about one request in ten.
EXPLORE_GAPS: Final = 10.0
# latency: the share of requests that try a random other deployment first, so averages stay
# current under steady traffic. Five per cent costs the fastest deployment a twentieth of its
# traffic and, with the timed tries, brings a recovered deployment's average back within a
# minute at a request a second or more.
EPSILON: Final = 0.05

DEFAULT_STRATEGY: Final = "weighted"


class Balanceable(Protocol):
    """What a strategy reads of a deployment (`palyra.deployments.Deployment` has it)."""

    @property
    def key(self) -> str: ...  # "model_id@provider_id"

    @property
    def weight(self) -> float: ...

    @property
    def priority(self) -> int: ...

    @property
    def in_flight(self) -> int: ...

    @property
    def ttft_s(self) -> float | None: ...  # moving average of time to first token; None: never

    @property
    def last_used(self) -> float: ...  # clock seconds of the last dispatch; 0.0: never

    def usage_share(self) -> float: ...  # of rpm/tpm limits used in the last minute; 0.0: none


B = TypeVar("B", bound=Balanceable)


class Strategy(Protocol):
    """Orders one priority group (two or more deployments), best first."""

    def __call__(self, group: Sequence[B], rng: random.Random, now: float, /) -> list[B]: ...


def _lottery(weight: float, rng: random.Random) -> float:
    # Efraimidis-Spirakis: sorting by u ** (1 / w), highest first, is weighted sampling
    # without replacement. In logs (ln u / w, same order) it cannot underflow for small
    # weights; 1 - random() is in (0, 1], so the log is defined.
    if weight <= 0:
        return -math.inf  # (config forbids it; such a deployment would be tried last)
    return math.log(1.0 - rng.random()) / weight


def weighted(group: Sequence[B], rng: random.Random, now: float, /) -> list[B]:
    """Random by weight: the first pick is each deployment's share of the group's weight, the
    rest the failover order (drawn the same way from what remains)."""
    first = group[0].weight
    if all(d.weight == first for d in group):
        shuffled = list(group)
        rng.shuffle(shuffled)
        return shuffled
    return sorted(group, key=lambda d: _lottery(d.weight, rng), reverse=True)


def least_busy(group: Sequence[B], rng: random.Random, now: float, /) -> list[B]:
    """Fewest requests in flight first; equals by weight, at random."""
    return sorted(group, key=lambda d: (d.in_flight, -_lottery(d.weight, rng)))


def usage(group: Sequence[B], rng: random.Random, now: float, /) -> list[B]:
    """Lowest share of its rate limits used this minute first; equals by weight, at random."""
    return sorted(group, key=lambda d: (d.usage_share(), -_lottery(d.weight, rng)))


def latency(group: Sequence[B], rng: random.Random, now: float, /) -> list[B]:
    """Lowest time-to-first-token average first (unmeasured ones, waiting for their first
    answer, after the measured), with exploration.

    One deployment may be put first to be measured: one never dispatched, or one passed over
    for EXPLORE_AFTER_S and EXPLORE_GAPS gaps between requests (the stalest of them, an
    unmeasured one before a measured one). Its dispatch marks it used, so the next request goes
    back to the fastest: one exploring try at a time. Otherwise EPSILON of requests put a
    random other deployment first.
    """
    measured = [d for d in group if d.ttft_s is not None]
    if len(measured) < len(group):
        waiting = [d for d in group if d.ttft_s is None]
        ranked = sorted(measured, key=_ttft) + (
            weighted(waiting, rng, now) if len(waiting) > 1 else waiting
        )
    else:
        ranked = sorted(measured, key=_ttft)
    idle_after = max(EXPLORE_AFTER_S, EXPLORE_GAPS * (now - ranked[0].last_used))
    explore = -1
    for i, d in enumerate(ranked):
        last = d.last_used
        if (last == 0.0 or now - last >= idle_after) and (
            explore < 0 or _staler(d, ranked[explore])
        ):
            explore = i
    if explore > 0:
        ranked.insert(0, ranked.pop(explore))
    elif explore < 0 and rng.random() < EPSILON:
        ranked.insert(0, ranked.pop(1 + rng.randrange(len(ranked) - 1)))
    return ranked


def _ttft(d: Balanceable) -> float:
    return d.ttft_s if d.ttft_s is not None else math.inf


def _staler(a: Balanceable, b: Balanceable) -> bool:
    # Unmeasured before measured, then the one idle the longest.
    return (a.ttft_s is not None, a.last_used) < (b.ttft_s is not None, b.last_used)


STRATEGIES: Final[Mapping[str, Strategy]] = {
    "weighted": weighted,
    "least_busy": least_busy,
    "latency": latency,
    "usage": usage,
}


def _priority(d: Balanceable) -> int:
    return d.priority


def order(
    deployments: Sequence[B],
    strategy: str,
    *,
    rng: random.Random,
    now: float,
    affinity_key: str | None = None,
) -> list[B]:
    """The whole try order of `deployments`: priority groups ascending (lower first), each
    ordered by `strategy` (a name in STRATEGIES), or by the rendezvous hash of `affinity_key`
    when one is given. One deployment: [it], at no cost."""
    arrange = STRATEGIES.get(strategy)
    if arrange is None:
        raise ValueError(
            f"unknown load_balancing strategy {strategy!r}; known: {', '.join(STRATEGIES)}"
        )
    if len(deployments) < 2:
        return list(deployments)
    first = deployments[0].priority
    if all(d.priority == first for d in deployments):
        return _arrange(deployments, arrange, rng, now, affinity_key)
    tried: list[B] = []
    for _, group in groupby(sorted(deployments, key=_priority), key=_priority):
        tried += _arrange(list(group), arrange, rng, now, affinity_key)
    return tried


def _arrange(
    group: Sequence[B],
    arrange: Strategy,
    rng: random.Random,
    now: float,
    affinity_key: str | None,
) -> list[B]:
    if len(group) < 2:
        return list(group)
    if affinity_key is not None:
        return rendezvous(group, affinity_key)
    return arrange(group, rng, now)


_HASH_SCALE: Final = 2.0**-52


def rendezvous(group: Sequence[B], affinity_key: str) -> list[B]:
    """Weighted rendezvous (highest random weight) order of `group` for `affinity_key`.

    Each deployment scores -weight / ln(u), u a hash of (key, deployment key) in (0, 1): the
    highest wins with probability weight / total over keys, and a deployment's removal moves
    only the keys it won. The hash is blake2b, not hash(), which is salted per process:
    every daemon must reach the same order.
    """
    salt = affinity_key.encode("utf-8", "surrogatepass") + b"\x00"

    def score(d: Balanceable) -> float:
        digest = blake2b(salt + d.key.encode("utf-8", "surrogatepass"), digest_size=8).digest()
        # The top 52 bits plus a half: strictly inside (0, 1), so the log is below zero.
        u = ((int.from_bytes(digest, "big") >> 12) + 0.5) * _HASH_SCALE
        weight = d.weight
        if weight <= 0:
            return -math.inf
        return -weight / math.log(u)

    return sorted(group, key=score, reverse=True)


# Of a long text, prefix_key hashes the head, the tail and the length: two prompts that differ
# only in between share a key (and a deployment, which is harmless), and a megabyte of image
# data costs no more than a short one.
_SAMPLE: Final = 4096


def _feed(h: blake2b, text: str) -> None:
    if len(text) > 2 * _SAMPLE:
        text = f"{text[:_SAMPLE]}\x00{len(text)}\x00{text[-_SAMPLE:]}"
    data = text.encode("utf-8", "surrogatepass")
    h.update(len(data).to_bytes(8, "big"))
    h.update(data)


def _feed_message(h: blake2b, message: Message) -> None:
    _feed(h, message.role)
    _feed(h, message.name or "")
    content = message.content
    if content is None:
        _feed(h, "")
    elif isinstance(content, str):
        _feed(h, content)
    else:
        # A text part as text alone: "hi" and [{"type": "text", "text": "hi"}] are one prompt.
        for part in content:
            if isinstance(part, TextPart):
                _feed(h, part.text)
                continue
            _feed(h, part.type)
            if isinstance(part, ImagePart):
                _feed(h, part.image_url.url)
            elif isinstance(part, InputAudioPart):
                _feed(h, part.input_audio.data)
            elif isinstance(part, FilePart):
                f = part.file
                _feed(h, f.file_id or f.file_data or f.filename or "")
            else:
                _feed(h, part.refusal)


def prefix_key(request: ChatRequest) -> str | None:
    """A short hex hash of the conversation's leading part: every message up to and including
    the first user message (system and developer prompts, mostly). It stays the same as the
    history grows, so a conversation keeps one key. None without a user message."""
    h = blake2b(digest_size=8)
    for message in request.messages:
        _feed_message(h, message)
        if message.role == "user":
            return h.hexdigest()
    return None
