"""The estimator against an independent BPE (bpe-openai, o200k_base) on generated corpora, plus
image, tool, overhead and budget accounting."""

from __future__ import annotations

import base64
import inspect
import json
import json.decoder
import json.encoder
import random
import statistics
import struct
import textwrap
import threading
import time
import warnings
import zlib
from collections.abc import Callable
from typing import Any

import pytest

from palyra import tokens
from palyra.errors import InvalidRequest
from palyra.models.kinds import spec_for
from palyra.types import ChatRequest, ModelProviderKind

OPENAI = ModelProviderKind.OPENAI_COMPATIBLE
ANTHROPIC = ModelProviderKind.ANTHROPIC

with warnings.catch_warnings():
    # bpe-openai reads its vocabularies through a deprecated importlib.resources call.
    warnings.simplefilter("ignore", DeprecationWarning)
    import bpe_openai  # type: ignore[import-untyped]

    _REF = bpe_openai.get_encoding("o200k_base")
    _REF_CL100K = bpe_openai.get_encoding("cl100k_base")


def ref_count(text: str) -> int:
    return len(_REF.encode_ordinary(text))


# --- corpora -------------------------------------------------------------------------------

# fmt: off
_SUBJECTS = [
    "The old lighthouse keeper", "A curious child", "Our neighbour's dog", "The committee",
    "Every engineer on the night shift", "My grandmother", "The travelling musician",
    "A small team of volunteers", "The city council", "Nobody in the village",
]
_VERBS = [
    "walked slowly towards", "argued at length about", "quietly repaired", "wrote a letter to",
    "refused to believe in", "spent the afternoon studying", "painted a portrait of",
    "laughed nervously at", "carefully measured", "forgot all about",
]
_OBJECTS = [
    "the broken bridge", "a forgotten recipe for apple pie", "the river's winter flood",
    "an unusual noise in the attic", "the budget for next year", "the harbour at dawn",
    "a map drawn by hand", "the results of the experiment", "the rusty bicycle",
    "a conversation overheard on the train",
]
_TAILS = [
    "before the rain began", "although nobody had asked", "because it seemed important",
    "while the kettle boiled", "and then went home", "without saying a word",
    "as the bells rang across the valley", "despite the late hour", "for reasons unclear",
    "until the lights flickered out",
]
_ASIDES = [
    "It was, by any measure, an ordinary Tuesday.", "Nobody expected what came next.",
    "Some say it rained for three days.", "The numbers, however, told another story.",
    "Why? Nobody could quite explain.", "It cost $42.50, which seemed fair.",
]
# fmt: on


def english_prose(target: int = 20_000) -> str:
    rng = random.Random(7)
    paragraphs: list[str] = []
    size = 0
    while size < target:
        sentences = []
        for _ in range(rng.randint(4, 8)):
            if rng.random() < 0.15:
                sentences.append(rng.choice(_ASIDES))
                continue
            s = f"{rng.choice(_SUBJECTS)} {rng.choice(_VERBS)} {rng.choice(_OBJECTS)}"
            if rng.random() < 0.7:
                s += f" {rng.choice(_TAILS)}"
            if rng.random() < 0.3:
                s += f", and {rng.choice(_SUBJECTS).lower()} {rng.choice(_VERBS)} it too"
            sentences.append(s + rng.choice([".", ".", ".", "!", "?"]))
        paragraph = " ".join(sentences)
        paragraphs.append(paragraph)
        size += len(paragraph) + 2
    return "\n\n".join(paragraphs)


def python_source() -> str:
    return "\n\n".join(inspect.getsource(m) for m in (json.decoder, json.encoder, textwrap))


def json_document() -> dict[str, Any]:
    rng = random.Random(11)
    words = ["alpha", "beta", "gamma", "delta", "omega", "north", "south", "red", "blue"]
    return {
        "version": 3,
        "generated_at": "2026-11-25T10:00:00Z",
        "orders": [
            {
                "id": f"ord_{rng.getrandbits(48):012x}",
                "customer": {
                    "name": f"{rng.choice(words).title()} {rng.choice(words).title()}",
                    "email": f"{rng.choice(words)}{i}@example.com",
                    "vip": rng.random() < 0.2,
                },
                "lines": [
                    {
                        "sku": f"SKU-{rng.randint(1000, 9999)}",
                        "qty": rng.randint(1, 5),
                        "unit_price": round(rng.uniform(1, 500), 2),
                        "tags": rng.sample(words, 2),
                    }
                    for _ in range(rng.randint(1, 4))
                ],
                "note": None if rng.random() < 0.5 else f"leave at {rng.choice(words)} door",
            }
            for i in range(60)
        ],
    }


CORPORA: dict[str, Callable[[], str]] = {
    "prose": english_prose,
    "python": python_source,
    "json_indented": lambda: json.dumps(json_document(), indent=2),
    "json_compact": lambda: json.dumps(json_document(), separators=(",", ":")),
}


def user(content: Any, **extra: Any) -> dict[str, Any]:
    return {"role": "user", "content": content, **extra}


def request(*messages: dict[str, Any], **fields: Any) -> ChatRequest:
    return ChatRequest.model_validate({"messages": list(messages), **fields})


def reference_one_user_message(text: str) -> int:
    # OpenAI's published accounting around an independent BPE count of the text.
    return ref_count(text) + ref_count("user") + 3 + 3


def within_tolerance(estimate: int, reference: int) -> bool:
    return abs(estimate - reference) <= 0.15 * reference and estimate >= 0.9 * reference


# --- text accuracy -------------------------------------------------------------------------


@pytest.mark.parametrize("corpus", sorted(CORPORA))
def test_estimate_is_close_to_reference_bpe(corpus: str) -> None:
    text = CORPORA[corpus]()
    assert len(text) > 15_000
    estimate = tokens.estimate_token_count(request(user(text)))
    reference = reference_one_user_message(text)
    assert within_tolerance(estimate, reference), (corpus, estimate, reference)


def test_corpora_reject_a_chars_over_four_estimator() -> None:
    # The tolerance must have teeth: a length heuristic fails it on these corpora.
    failures = [
        name
        for name, make in CORPORA.items()
        if not within_tolerance(len(make()) // 4 + 7, reference_one_user_message(make()))
    ]
    assert len(failures) >= 2, failures


def test_anthropic_scales_text_up() -> None:
    text = english_prose(5_000)
    openai = tokens.estimate_token_count(request(user(text)), OPENAI)
    anthropic = tokens.estimate_token_count(request(user(text)), ANTHROPIC)
    assert 1.08 * openai <= anthropic <= 1.12 * openai


def test_deterministic_counts_like_openai() -> None:
    req = request(user("hello there, how are you?"))
    assert tokens.estimate_token_count(
        req, ModelProviderKind.DETERMINISTIC
    ) == tokens.estimate_token_count(req)


def test_estimate_text_tokens() -> None:
    text = python_source()
    assert tokens.estimate_text_tokens(text) == ref_count(text)
    assert tokens.estimate_text_tokens("") == 0
    assert tokens.estimate_text_tokens("日本語のテキスト", encoding="cl100k_base") == len(
        _REF_CL100K.encode_ordinary("日本語のテキスト")
    )


def test_lone_surrogate_does_not_crash() -> None:
    body = json.loads('{"messages": [{"role": "user", "content": "a\\ud800b"}]}')
    req = ChatRequest.model_validate(body)
    assert tokens.estimate_token_count(req) > 6


def test_100kb_prompt_is_fast() -> None:
    text = (english_prose() + python_source() + CORPORA["json_indented"]())[:100_000]
    req = request(user(text))
    tokens.estimate_token_count(req)
    runs = []
    for _ in range(20):
        start = time.perf_counter()
        tokens.estimate_token_count(req)
        runs.append(time.perf_counter() - start)
    assert statistics.median(runs) < 0.010


# --- message overhead, tools ---------------------------------------------------------------


def test_each_message_adds_framing() -> None:
    one = tokens.estimate_token_count(request(user("hi")))
    assert one == ref_count("user") + ref_count("hi") + 3 + 3
    two = tokens.estimate_token_count(request(user("hi"), {"role": "assistant", "content": "hi"}))
    assert two - one == 3 + ref_count("assistant") + ref_count("hi")
    named = tokens.estimate_token_count(request(user("hi", name="alice")))
    assert named - one == 1 + ref_count("alice")


def test_tool_calls_in_history_are_counted() -> None:
    args = json.dumps({"city": "Paris", "units": "metric"})
    call = {"id": "call_1", "type": "function", "function": {"name": "weather", "arguments": args}}
    with_call = request(
        user("weather?"),
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "call_1", "content": "18C, cloudy"},
    )
    without = request(user("weather?"))
    added = tokens.estimate_token_count(with_call) - tokens.estimate_token_count(without)
    assert added >= ref_count(args) + ref_count("weather") + ref_count("18C, cloudy") + 6


TOOL = {
    "type": "function",
    "function": {
        "name": "search_orders",
        "description": "Find a customer's orders by status and date range.",
        "parameters": {
            "type": "object",
            "properties": {
                "status": {"type": "string", "enum": ["open", "shipped", "cancelled"]},
                "since": {"type": "string", "description": "ISO date"},
            },
            "required": ["status"],
        },
    },
}


def test_tools_add_at_least_their_schema() -> None:
    plain = request(user("find my orders"))
    with_tools = request(user("find my orders"), tools=[TOOL])
    schema = json.dumps(TOOL["function"], separators=(",", ":"))
    added = tokens.estimate_token_count(with_tools) - tokens.estimate_token_count(plain)
    assert ref_count(schema) <= added <= ref_count(schema) + 30
    anthropic_added = tokens.estimate_token_count(with_tools, ANTHROPIC) - (
        tokens.estimate_token_count(plain, ANTHROPIC)
    )
    assert anthropic_added >= added + spec_for(ANTHROPIC).tokens.tools_prompt


# --- images --------------------------------------------------------------------------------


def png(width: int, height: int, trailing: bytes = b"") -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + data))
        return struct.pack(">I", len(data)) + kind + data + crc

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\x00" * (width + 1) * min(height, 4))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat + trailing)


def jpeg_with_late_size(width: int, height: int, exif_bytes: int) -> bytes:
    app1 = b"Exif\x00\x00" + bytes(exif_bytes)
    sof = struct.pack(">BHHB", 8, height, width, 3) + bytes([1, 0x11, 0, 2, 0x11, 1, 3, 0x11, 1])
    return (
        b"\xff\xd8"
        + b"\xff\xe1"
        + struct.pack(">H", len(app1) + 2)
        + app1
        + b"\xff\xc0"
        + struct.pack(">H", len(sof) + 2)
        + sof
        + b"\xff\xd9"
    )


def data_url(data: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


def image_request(url: str, detail: str | None = None) -> ChatRequest:
    image: dict[str, Any] = {"url": url}
    if detail:
        image["detail"] = detail
    parts = [{"type": "text", "text": "what is this?"}, {"type": "image_url", "image_url": image}]
    return request(user(parts))


def image_cost(url: str, kind: ModelProviderKind = OPENAI, detail: str | None = None) -> int:
    text_only = request(user([{"type": "text", "text": "what is this?"}]))
    return tokens.estimate_token_count(image_request(url, detail), kind) - (
        tokens.estimate_token_count(text_only, kind)
    )


def test_openai_image_tokens_from_png_data_url() -> None:
    url = data_url(png(1024, 1024))
    assert image_cost(url, detail="high") == 765
    assert image_cost(url, detail="auto") == 765
    assert image_cost(url) == 765
    assert image_cost(url, detail="low") == 85
    assert image_cost(data_url(png(768, 2048))) == tokens.OPENAI_HIGH_DETAIL_MAX == 1445
    assert image_cost(data_url(png(300, 200))) == 255


def test_openai_image_tiles_match_the_documented_examples() -> None:
    assert tokens.openai_image_tokens(4096, 8192) == 1105
    assert tokens.openai_image_tokens(2048, 4096) == 1105
    assert tokens.openai_image_tokens(3000, 1000) == 170 * 4 * 2 + 85
    assert (
        max(
            tokens.openai_image_tokens(w, h)
            for w in range(64, 9000, 97)
            for h in range(64, 9000, 131)
        )
        == tokens.OPENAI_HIGH_DETAIL_MAX
    )


def test_anthropic_image_tokens() -> None:
    assert image_cost(data_url(png(1000, 1000)), ANTHROPIC) == 1334
    assert image_cost(data_url(png(200, 200)), ANTHROPIC) == 54
    assert tokens.anthropic_image_tokens(1092, 1092) == 1590
    assert tokens.anthropic_image_tokens(4000, 3000) == tokens.ANTHROPIC_IMAGE_MAX


def test_unreadable_images_cost_the_worst_case() -> None:
    for url in (
        "https://example.com/cat.png",
        "data:image/png;base64,!!!notbase64!!!",
        "data:image/png;base64,aGVsbG8gd29ybGQ=",
        "data:image/svg+xml,<svg/>",
    ):
        assert image_cost(url) == 1445, url
        assert image_cost(url, detail="low") == 85, url
        assert image_cost(url, ANTHROPIC) == 1600, url


def test_only_a_prefix_of_a_large_data_url_is_decoded(monkeypatch: pytest.MonkeyPatch) -> None:
    url = data_url(png(1024, 1024, trailing=random.Random(3).randbytes(3_000_000)))
    decoded: list[int] = []
    real = base64.b64decode

    def spy(data: Any, *args: Any, **kwargs: Any) -> bytes:
        decoded.append(len(data))
        return real(data, *args, **kwargs)

    monkeypatch.setattr(base64, "b64decode", spy)
    assert image_cost(url) == 765
    assert decoded and max(decoded) <= 4096


def test_jpeg_size_behind_a_large_exif_block_is_found() -> None:
    url = data_url(jpeg_with_late_size(2048, 1024, exif_bytes=20_000), "image/jpeg")
    assert tokens.image_size(url) == (2048, 1024)
    assert image_cost(url) == 170 * 6 + 85


# --- budget --------------------------------------------------------------------------------


def test_budget_shortcut_skips_counting_when_far_below_the_budget() -> None:
    req = request(user(english_prose(2_000)))
    check = tokens.check_token_budget(req, budget=128_000, output_allowance=16_384)
    assert check.fits and not check.counted
    assert check.prompt_tokens >= tokens.estimate_token_count(req)


@pytest.mark.parametrize("kind", [OPENAI, ANTHROPIC])
def test_budget_verdict_at_the_edge(kind: ModelProviderKind) -> None:
    req = request(user(english_prose(3_000)), {"role": "assistant", "content": "ok"})
    estimate = tokens.estimate_token_count(req, kind)
    edge = estimate + 100
    under = tokens.check_token_budget(req, kind, budget=edge, output_allowance=100)
    over = tokens.check_token_budget(req, kind, budget=edge - 1, output_allowance=100)
    assert under == (True, estimate, True)
    assert over == (False, estimate, True)


def test_budget_with_an_unsized_image_still_counts_exactly() -> None:
    req = image_request("https://example.com/cat.png")
    estimate = tokens.estimate_token_count(req)
    assert tokens.check_token_budget(req, budget=estimate, output_allowance=0).fits
    assert not tokens.check_token_budget(req, budget=estimate - 1, output_allowance=0).fits


@pytest.mark.parametrize("kind", list(ModelProviderKind))
def test_byte_bound_never_falls_below_the_estimate(kind: ModelProviderKind) -> None:
    texts = [make() for make in CORPORA.values()] + ["日本語のテキスト 🎉 ümlaut " * 200]
    for text in texts:
        req = request(
            {"role": "system", "content": "be brief"},
            user(
                [
                    {"type": "text", "text": text},
                    {"type": "image_url", "image_url": {"url": data_url(png(64, 64))}},
                ],
                name="bob",
            ),
            tools=[TOOL],
        )
        estimate = tokens.estimate_token_count(req, kind)
        bound = tokens.check_token_budget(req, kind, budget=10**9, output_allowance=0)
        assert not bound.counted and bound.prompt_tokens >= estimate


# --- robustness and large requests ----------------------------------------------------------


def nested_dict(depth: int) -> dict[str, Any]:
    value: dict[str, Any] = {}
    for _ in range(depth):
        value = {"a": value}
    return value


def test_a_schema_too_deep_to_encode_is_a_clear_error_not_a_crash() -> None:
    # Requests over HTTP are refused past MAX_JSON_DEPTH when parsed; one built in code could
    # still carry a deeper schema, and counting it must not raise RecursionError (a 500).
    deep = nested_dict(5000)
    with_tools = request(
        user("hi"), tools=[{"type": "function", "function": {"name": "f", "parameters": deep}}]
    )
    with pytest.raises(InvalidRequest, match="tools: nested too deep"):
        tokens.estimate_token_count(with_tools)
    with_schema = request(user("hi"), response_format={"type": "json_schema", "json_schema": deep})
    with pytest.raises(InvalidRequest, match="json_schema: nested too deep"):
        tokens.prompt_bound(with_schema)


def test_long_texts_are_counted_in_slices_that_add_up_to_the_whole() -> None:
    text = english_prose(3 * tokens._TOKENIZE_SLICE)
    assert len(text) > 2 * tokens._TOKENIZE_SLICE
    whole = tokens._tokenize_slice(text, tokens.DEFAULT_ENCODING)  # the tokenizer, in one go
    assert tokens.estimate_text_tokens(text) == whole


def counting_calls(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, str]]:
    """(thread id, text) of every call into the tokenizer from now on."""
    calls: list[tuple[int, str]] = []
    real_slice, real_plain = tokens._tokenize_slice, tokens._plain_count

    def spy_slice(text: str, encoding: str) -> int:
        calls.append((threading.get_ident(), text))
        return real_slice(text, encoding)

    def spy_plain(text: str) -> int:
        calls.append((threading.get_ident(), text))
        return real_plain(text)

    monkeypatch.setattr(tokens, "_tokenize_slice", spy_slice)
    monkeypatch.setattr(tokens, "_plain_count", spy_plain)
    return calls


async def test_a_large_prompt_is_counted_once_in_a_worker_thread(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    req = request({"role": "system", "content": "be brief"}, user(english_prose(200_000)))
    rooms = {OPENAI: (8192, 4096), ANTHROPIC: (200_000, 190_000)}
    calls = counting_calls(monkeypatch)
    with tokens.remembering():
        await tokens.prepare_chat(req, rooms)
        assert calls and all(ident != threading.get_ident() for ident, _ in calls)
        counted = len(calls)
        # What the router and the provider ask next is known already: nothing is counted
        # again, on the event loop or anywhere.
        for kind in (OPENAI, ANTHROPIC):
            check = tokens.check_token_budget(req, kind, budget=8192, output_allowance=100)
            assert check.counted and not check.fits
            assert check.prompt_tokens == tokens.estimate_token_count(req, kind)
        assert len(calls) == counted
        estimate = tokens.estimate_token_count(req, OPENAI)
    # Outside the block nothing is kept: the same estimate is worked out afresh.
    assert tokens.estimate_token_count(req, OPENAI) == estimate
    assert len(calls) > counted


async def test_a_prompt_that_fits_every_room_by_its_bytes_is_not_counted(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    req = request(user(english_prose(20_000)))
    calls = counting_calls(monkeypatch)
    with tokens.remembering():
        await tokens.prepare_chat(req, {OPENAI: (128_000, 111_616)})
    assert calls == []


async def test_embeddings_inputs_are_counted_off_the_loop_only_when_some_may_not_fit(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    texts: list[str | list[int]] = [english_prose(3000), "short", [1, 2, 3]]
    calls = counting_calls(monkeypatch)
    with tokens.remembering():
        await tokens.prepare_texts(texts, budget=10_000)
        assert calls == []  # every input's bytes fit the smallest budget: no counting at all
        await tokens.prepare_texts(texts, budget=1000)
        assert {text for _, text in calls} == {texts[0], texts[1]}
        assert all(ident != threading.get_ident() for ident, _ in calls)
        counted = len(calls)
        assert tokens.estimate_text_tokens(texts[0]) == ref_count(texts[0])  # type: ignore[arg-type]
        assert len(calls) == counted
