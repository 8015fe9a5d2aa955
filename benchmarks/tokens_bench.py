"""Time the prompt token estimator on a 100 KB mixed prompt and compare it with an independent
BPE (bpe-openai, o200k_base).

    .venv/bin/python benchmarks/tokens_bench.py [--runs 200]
"""

from __future__ import annotations

import argparse
import functools
import inspect
import json
import json.decoder
import json.encoder
import random
import statistics
import textwrap
import time
import warnings
from collections.abc import Callable

from palyra import tokens
from palyra.types import ChatRequest, ModelProviderKind

TARGET_CHARS = 100_000


def _prose(rng: random.Random, size: int) -> str:
    subjects = ["The engineer", "A visitor", "The committee", "My neighbour", "The old map"]
    verbs = ["described", "questioned", "repaired", "ignored", "celebrated"]
    objects = ["the bridge", "a long report", "the harbour at dawn", "an odd noise", "the plan"]
    out: list[str] = []
    while sum(map(len, out)) < size:
        sentence = f"{rng.choice(subjects)} {rng.choice(verbs)} {rng.choice(objects)}"
        out.append(sentence + rng.choice([". ", "! ", "? ", ".\n\n"]))
    return "".join(out)[:size]


def _json(rng: random.Random, size: int) -> str:
    rows = [
        {
            "id": i,
            "sku": f"SKU-{rng.randint(1000, 9999)}",
            "price": round(rng.uniform(1, 99), 2),
            "tags": rng.sample(["red", "blue", "new", "sale", "bulk"], 2),
            "ok": rng.random() < 0.5,
        }
        for i in range(size // 40)
    ]
    return json.dumps({"rows": rows}, indent=2)[:size]


def mixed_prompt() -> str:
    rng = random.Random(5)
    third = TARGET_CHARS // 3
    code = "\n".join(inspect.getsource(m) for m in (json.decoder, json.encoder, textwrap))
    text = _prose(rng, third) + "\n```python\n" + code[:third] + "\n```\n" + _json(rng, third)
    return text[:TARGET_CHARS]


def _timings(fn: Callable[[], object], runs: int) -> list[float]:
    """Sorted wall times in ms, after one untimed call."""
    fn()
    out = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        out.append((time.perf_counter() - start) * 1000)
    return sorted(out)


def _p99(sorted_ms: list[float]) -> float:
    return sorted_ms[min(len(sorted_ms) - 1, int(len(sorted_ms) * 0.99))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=200)
    args = parser.parse_args()

    text = mixed_prompt()
    request = ChatRequest.model_validate({"messages": [{"role": "user", "content": text}]})

    start = time.perf_counter()
    tokens.warm_up()
    print(f"vocabulary load: {(time.perf_counter() - start) * 1000:.0f} ms (once per process)")

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import bpe_openai  # type: ignore[import-untyped]

        reference_enc = bpe_openai.get_encoding("o200k_base")
    reference = (
        len(reference_enc.encode_ordinary(text))
        + len(reference_enc.encode_ordinary("user"))
        + tokens.TOKENS_PER_MESSAGE
        + tokens.REPLY_PRIMING
    )

    kinds = (ModelProviderKind.OPENAI_COMPATIBLE, ModelProviderKind.ANTHROPIC)
    print(f"prompt: {len(text):,} chars, {len(text.encode()):,} UTF-8 bytes")
    for kind in kinds:
        estimate = tokens.estimate_token_count(request, kind)
        runs = _timings(functools.partial(tokens.estimate_token_count, request, kind), args.runs)
        print(
            f"{kind.value:18s} estimate {estimate:>7,}  reference {reference:>7,}  "
            f"({(estimate - reference) / reference:+.1%})  "
            f"median {statistics.median(runs):.3f} ms  p99 {_p99(runs):.3f} ms"
        )
        assert estimate >= 0.9 * reference

    small = ChatRequest.model_validate({"messages": [{"role": "user", "content": text[:2000]}]})
    runs = _timings(
        lambda: tokens.check_token_budget(small, budget=128_000, output_allowance=16_384),
        args.runs,
    )
    check = tokens.check_token_budget(small, budget=128_000, output_allowance=16_384)
    print(
        f"budget check, 2 KB prompt vs 128k: counted={check.counted}  "
        f"median {statistics.median(runs) * 1000:.1f} µs  p99 {_p99(runs) * 1000:.1f} µs"
    )


if __name__ == "__main__":
    main()
