"""The per-route limits of `palyra/limits.py`, over HTTP to the daemon's app: each is answered
400 (413 for sizes) in the OpenAI error shape, naming the limit and its value; what stays
within them is served, and the heaviest of it never holds up another request for long."""

from __future__ import annotations

import asyncio
import base64
import gc
import io
import json
import random
import string
import struct
import sys
import threading
import time
from collections.abc import AsyncIterator, Awaitable
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp.test_utils import TestServer

from palyra import limits, tokens
from palyra.daemon import tune_interpreter
from palyra.server import json_body
from tests.conftest import ADMIN_TOKEN, GatewayFactory, gateway_config
from tests.fakes.upstream import FakeUpstream

AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
JSON = {**AUTH, "Content-Type": "application/json"}


def nested(depth: int, leaf: bytes = b"1") -> bytes:
    return b'{"a":' * depth + leaf + b"}" * depth


async def post(
    server: TestServer, path: str, body: Any, headers: dict[str, str] | None = None
) -> tuple[int, Any]:
    data = body if isinstance(body, bytes) else orjson.dumps(body)
    async with (
        aiohttp.ClientSession() as http,
        # A BytesIO: aiohttp warns that sending a large bytes body might block its loop.
        http.post(
            server.make_url(path), data=io.BytesIO(data), headers=headers or JSON
        ) as response,
    ):
        raw = await response.read()
        return response.status, orjson.loads(raw) if raw[:1] in (b"{", b"[") else raw


def assert_error(status: int, body: Any, expected: int, *words: str) -> dict[str, Any]:
    assert status == expected, body
    error = body["error"]
    assert set(error) == {"message", "type", "code", "param"}
    for word in words:
        assert word in error["message"], error
    return dict(error)


def chat(content: Any = "hi", **extra: Any) -> dict[str, Any]:
    return {"model": "deterministic", "messages": [{"role": "user", "content": content}], **extra}


# --- JSON depth ---------------------------------------------------------------------------


async def test_depth_at_the_limit_is_served_and_one_past_it_refused(
    gateway: TestServer, upstream: FakeUpstream
) -> None:
    # The body's own object is level 1, metadata's value level 2: 63 more fit in 64.
    within = orjson.dumps(chat(model="gpt-4o-mini"))[:-1] + b',"metadata":' + nested(63) + b"}"
    status, body = await post(gateway, "/v1/chat/completions", within)
    assert status == 200, body
    sent = upstream.requests_to("/v1/chat/completions")[-1].json
    assert sent["metadata"] == orjson.loads(nested(63))
    past = orjson.dumps(chat(model="gpt-4o-mini"))[:-1] + b',"metadata":' + nested(64) + b"}"
    status, body = await post(gateway, "/v1/chat/completions", past)
    error = assert_error(status, body, 400, "64 levels")
    assert error["code"] == "json_too_deep"
    assert len(upstream.requests_to("/v1/chat/completions")) == 1


@pytest.mark.parametrize(
    ("slot", "depth"),
    [
        ("metadata", 300),  # orjson refused to send it upstream: a 500
        ("parameters", 990),  # RecursionError counting the tools' tokens: a 500
        ("json_schema", 990),
    ],
)
async def test_deep_values_that_used_to_fail_inside_are_refused_at_the_door(
    gateway: TestServer, upstream: FakeUpstream, slot: str, depth: int
) -> None:
    body = chat(model="gpt-4o-mini")
    raw = orjson.dumps(body)[:-1]
    if slot == "metadata":
        raw += b',"metadata":' + nested(depth) + b"}"
    elif slot == "parameters":
        raw += b',"tools":[{"type":"function","function":{"name":"f","parameters":'
        raw += nested(depth) + b"}}]}"
    else:
        raw += b',"response_format":{"type":"json_schema","json_schema":' + nested(depth) + b"}}"
    for model in ("gpt-4o-mini", "deterministic", "claude"):
        status, answer = await post(
            gateway, "/v1/chat/completions", raw.replace(b"gpt-4o-mini", model.encode())
        )
        assert_error(status, answer, 400, "nested more than 64 levels")
    assert upstream.requests_to("/v1/chat/completions") == []


async def test_deep_tool_call_arguments_are_refused(
    gateway: TestServer, upstream: FakeUpstream
) -> None:
    # Arguments are JSON in a string: the Anthropic translation parses and re-encodes them.
    call = {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": ""}}
    call["function"]["arguments"] = nested(300).decode()  # type: ignore[index]
    body = {
        "model": "claude",
        "messages": [
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": None, "tool_calls": [call]},
            {"role": "tool", "tool_call_id": "call_1", "content": "ok"},
        ],
        "tools": [{"type": "function", "function": {"name": "f"}}],
    }
    status, answer = await post(gateway, "/v1/chat/completions", body)
    error = assert_error(status, answer, 400, "64 levels")
    assert error["param"] == "messages.1.tool_calls.0.function.arguments"
    assert upstream.requests_to("/v1/messages") == []


async def test_a_large_deep_body_is_refused_before_it_is_parsed(gateway: TestServer) -> None:
    # Past PARSE_INLINE_BYTES the scan finds the depth, not a walk of the parsed value.
    padding = "x" * (json_body.PARSE_INLINE_BYTES + 1)
    raw = orjson.dumps(chat(padding))[:-1] + b',"metadata":' + nested(200) + b"}"
    status, body = await post(gateway, "/v1/chat/completions", raw)
    assert_error(status, body, 400, "64 levels")


async def test_too_much_structure_is_refused_before_it_is_parsed(gateway: TestServer) -> None:
    raw = orjson.dumps(chat(metadata=[[[[1]]]] * 30_000))
    status, body = await post(gateway, "/v1/chat/completions", raw)
    error = assert_error(status, body, 413, str(limits.MAX_JSON_COST))
    assert error["code"] == "request_too_large"


# --- chat -----------------------------------------------------------------------------


async def test_chat_message_and_tool_counts(gateway: TestServer) -> None:
    many = {"model": "deterministic", "messages": [{"role": "user", "content": "x"}] * 2049}
    status, body = await post(gateway, "/v1/chat/completions", many)
    assert_error(status, body, 400, "2048")
    assert body["error"]["param"] == "messages"
    many["messages"] = many["messages"][:2048]
    status, body = await post(gateway, "/v1/chat/completions", many)
    assert status == 200, body

    tool = {"type": "function", "function": {"name": "f"}}
    status, body = await post(gateway, "/v1/chat/completions", chat(tools=[tool] * 129))
    assert_error(status, body, 400, "128")
    assert body["error"]["param"] == "tools"


async def test_integers_past_64_bits_are_refused(
    gateway: TestServer, upstream: FakeUpstream
) -> None:
    raw = orjson.dumps(chat(model="gpt-4o-mini"))[:-1] + b',"seed":18446744073709551615}'
    status, body = await post(gateway, "/v1/chat/completions", raw)
    assert_error(status, body, 400, str(limits.MAX_INTEGER))
    assert body["error"]["param"] == "seed"
    status, body = await post(
        gateway, "/v1/chat/completions", chat(model="gpt-4o-mini", seed=-(2**63))
    )
    assert status == 200, body


async def test_deterministic_tool_command_with_deep_arguments(gateway: TestServer) -> None:
    tools = [{"type": "function", "function": {"name": "f"}}]
    for depth, words in ((300, "64 levels"), (2000, "not valid JSON")):
        content = "/tool f " + ("[" * depth + "]" * depth)
        status, body = await post(gateway, "/v1/chat/completions", chat(content, tools=tools))
        assert_error(status, body, 400, "/tool f", words)
    status, body = await post(
        gateway, "/v1/chat/completions", chat("/tool f " + nested(10).decode(), tools=tools)
    )
    assert status == 200, body
    call = body["choices"][0]["message"]["tool_calls"][0]["function"]
    assert json.loads(call["arguments"]) == orjson.loads(nested(10))


async def test_large_bodies_arrive_intact(gateway: TestServer, upstream: FakeUpstream) -> None:
    """The sliced parse gives exactly what orjson gives for the whole body."""
    text = ('line "one"\n\ttab \\ back ümlaut 日本 🎉 \u2028 ' * 40_000)[:1_500_000]
    body = chat(
        [{"type": "text", "text": text[:100_000]}, {"type": "text", "text": "short"}],
        model="gpt-4o-mini",
        metadata={text[:5000]: list(range(20_000)), "long": text, "k": [text[:3000]] * 3},
    )
    raw = orjson.dumps(body)
    assert len(raw) > 4 * json_body.SLICE_BYTES
    status, answer = await post(gateway, "/v1/chat/completions", raw)
    assert status == 200, answer
    sent = upstream.requests_to("/v1/chat/completions")[-1].json
    assert sent["messages"][0]["content"] == body["messages"][0]["content"]
    assert sent["metadata"] == body["metadata"]
    assert await json_body.parse_large(raw) == orjson.loads(raw)


async def test_large_invalid_bodies_are_400s(gateway: TestServer) -> None:
    good = orjson.dumps(chat("x" * 300_000))
    for bad in (good[:-10], good.replace(b'"x', b'"\\ud800x'), good[:-1] + b",}", b"[" + good):
        status, body = await post(gateway, "/v1/chat/completions", bad)
        error = assert_error(status, body, 400)
        assert error["code"] in ("invalid_json", "invalid_request"), error


async def raw_exchange(server: TestServer, head: bytes, body: bytes) -> tuple[int, bytes]:
    """Send exactly these bytes (headers no client library would send) and read the answer."""
    reader, writer = await asyncio.open_connection(server.host, server.port)
    writer.write(head + b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(body) + body)
    await writer.drain()
    answer = await reader.read()
    writer.close()
    status_line, _, rest = answer.partition(b"\r\n")
    return int(status_line.split()[1]), rest.partition(b"\r\n\r\n")[2]


@pytest.mark.parametrize("expect", [b"\xff", b"application/\xff", b"something-else"])
async def test_an_expectation_we_do_not_know_is_ignored(gateway: TestServer, expect: bytes) -> None:
    # aiohttp refused it with a 417 built from the header's text: bytes that are not UTF-8
    # made that a 500, outside every middleware.
    body = orjson.dumps(chat())
    head = (
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
        + f"Authorization: Bearer {ADMIN_TOKEN}\r\n".encode()
        + b"Content-Type: application/json\r\nExpect: "
        + expect
        + b"\r\n"
    )
    status, answer = await raw_exchange(gateway, head, body)
    assert status == 200, answer
    assert b'"hi"' in answer
    # 100-continue is still answered (curl asks for it before any body past 1 KB).
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            gateway.make_url("/v1/chat/completions"), data=body, headers=JSON, expect100=True
        ) as response,
    ):
        assert response.status == 200


# --- embeddings -----------------------------------------------------------------------


async def test_the_ten_kilobyte_request_that_asked_for_350_megabytes(gateway: TestServer) -> None:
    body = {"model": "deterministic-embed", "input": ["x"] * 2048, "dimensions": 8192}
    started = time.perf_counter()
    status, answer = await post(gateway, "/v1/embeddings", body)
    error = assert_error(status, answer, 400, "16777216", str(limits.MAX_EMBEDDING_VALUES))
    assert error["param"] == "dimensions"
    assert time.perf_counter() - started < 1


async def test_embeddings_counts(gateway: TestServer) -> None:
    status, body = await post(
        gateway, "/v1/embeddings", {"model": "deterministic-embed", "input": ["x"] * 2049}
    )
    assert_error(status, body, 400, "2049 inputs", "2048")
    tokens_body = {"model": "deterministic-embed", "input": [[1] * 8000] * 38}
    status, body = await post(gateway, "/v1/embeddings", tokens_body)
    assert_error(status, body, 400, "304000 token ids", "300000")
    # Within the route's limits, past the deterministic provider's own.
    body = {"model": "deterministic-embed", "input": ["x"] * 256, "dimensions": 8192}
    status, answer = await post(gateway, "/v1/embeddings", body)
    assert_error(status, answer, 400, str(limits.DETERMINISTIC_MAX_EMBEDDING_VALUES))


async def test_large_embeddings_answers_are_the_same_sent_in_slices(gateway: TestServer) -> None:
    inputs = [f"input {i}" for i in range(2048)]
    for encoding in ("float", "base64"):
        body = {
            "model": "deterministic-embed",
            "input": inputs,
            "dimensions": 512,
            "encoding_format": encoding,
        }
        status, answer = await post(gateway, "/v1/embeddings", body)
        assert status == 200
        assert [row["index"] for row in answer["data"]] == list(range(2048))
        assert answer["model"] == "deterministic-embed"
        assert answer["usage"]["prompt_tokens"] == answer["usage"]["total_tokens"] > 2048
        for index in (0, 1000, 2047):
            small = {**body, "input": inputs[index]}
            status, one = await post(gateway, "/v1/embeddings", small)
            assert answer["data"][index]["embedding"] == one["data"][0]["embedding"]
        if encoding == "base64":
            packed = base64.b64decode(answer["data"][5]["embedding"])
            assert len(struct.unpack(f"<{len(packed) // 4}f", packed)) == 512


# --- multipart ------------------------------------------------------------------------


def form(*parts: tuple[str, bytes, dict[str, str]], boundary: str = "XyZ") -> bytes:
    out = b""
    for name, payload, headers in parts:
        out += f"--{boundary}\r\n".encode()
        disposition = f'form-data; name="{name}"'
        if name == "file":
            disposition += '; filename="a.wav"'
        out += f"Content-Disposition: {disposition}\r\n".encode()
        for key, value in headers.items():
            out += f"{key}: {value}\r\n".encode()
        out += b"\r\n" + payload + b"\r\n"
    return out + f"--{boundary}--\r\n".encode()


def multipart_headers(content_type: str = "multipart/form-data; boundary=XyZ") -> dict[str, str]:
    return {**AUTH, "Content-Type": content_type}


FILE = ("file", b"RIFF-not-really-audio", {})
MODEL = ("model", b"deterministic-transcribe", {})


@pytest.mark.parametrize(
    ("content_type", "body", "words"),
    [
        ("multipart/form-data", form(FILE, MODEL), "boundary"),
        ("multipart/form-data; boundary=XyZ", form(FILE, MODEL)[:-30], "cut short"),
        ("multipart/form-data; boundary=XyZ", form(FILE, MODEL)[:40], "Content-Disposition"),
        (
            "multipart/form-data; boundary=XyZ",
            form(
                FILE, ("model", b"deterministic-transcribe", {"Content-Transfer-Encoding": "gzip"})
            ),
            "Content-Transfer-Encoding 'gzip' is not supported",
        ),
        (
            "multipart/form-data; boundary=XyZ",
            form(("file", b"abc", {"Content-Encoding": "gzip"}), MODEL),
            "Content-Encoding 'gzip' is not supported",
        ),
        ("multipart/form-data; boundary=" + "b" * 71, form(FILE, MODEL, boundary="b" * 71), "70"),
        (
            "multipart/form-data; boundary=XyZ",
            form(*[("extra", b"x", {})] * (limits.MAX_FORM_PARTS + 1), FILE, MODEL),
            f"more than {limits.MAX_FORM_PARTS} parts",
        ),
    ],
)
async def test_bad_multipart_is_a_clear_400(
    gateway: TestServer, content_type: str, body: bytes, words: str
) -> None:
    status, answer = await post(
        gateway, "/v1/audio/transcriptions", body, multipart_headers(content_type)
    )
    assert_error(status, answer, 400, words)
    # And a good one still goes through.
    status, answer = await post(
        gateway, "/v1/audio/transcriptions", form(FILE, MODEL), multipart_headers()
    )
    assert status == 200, answer


async def test_a_field_past_its_limit_is_413(gateway: TestServer) -> None:
    prompt = ("prompt", b"p" * (limits.MAX_FORM_FIELD_BYTES + 1), {})
    status, answer = await post(
        gateway, "/v1/audio/transcriptions", form(FILE, MODEL, prompt), multipart_headers()
    )
    error = assert_error(status, answer, 413, "prompt", str(limits.MAX_FORM_FIELD_BYTES))
    assert error["param"] == "prompt"


@pytest.fixture
async def small_gateway(
    upstream: FakeUpstream, tmp_path: Path, start_gateway: GatewayFactory
) -> TestServer:
    config = gateway_config(upstream, tmp_path / "state", failover_enabled=False)
    config.daemon.max_request_bytes = 1024 * 1024
    return await start_gateway(config)


async def test_the_whole_multipart_body_counts_toward_max_request_bytes(
    small_gateway: TestServer,
) -> None:
    # Each part is under the 1 MiB limit, all three together are not: aiohttp checks each
    # part against client_max_size, never the body.
    third = ("x", b"x" * (400 * 1024), {})
    body = form(FILE, MODEL, ("timestamp_granularities[]", b"word", {}), third, third, third)
    status, answer = await post(
        small_gateway, "/v1/audio/transcriptions", body, multipart_headers()
    )
    error = assert_error(status, answer, 413, "1048576")
    assert error["code"] == "request_too_large"

    # Sent chunked, without a Content-Length to refuse it by: counted as it arrives.
    async def chunks() -> AsyncIterator[bytes]:
        for start in range(0, len(body), 64 * 1024):
            yield body[start : start + 64 * 1024]

    async with (
        aiohttp.ClientSession() as http,
        http.post(
            small_gateway.make_url("/v1/audio/transcriptions"),
            data=chunks(),
            headers=multipart_headers(),
        ) as response,
    ):
        assert response.status == 413
        assert (await response.json())["error"]["code"] == "request_too_large"


# --- the event loop stays free ----------------------------------------------------------

LOOP_BUDGET_S = 0.050
PAUSE_S = 0.002

# The heavy request is sent from another process, so that what the timings show is the
# daemon's event loop alone, not this test's client building and reading megabytes on it.
_CLIENT = """
import sys, urllib.error, urllib.request
url, path, token = sys.argv[1:4]
headers = {"Authorization": "Bearer " + token, "Content-Type": "application/json"}
request = urllib.request.Request(url, data=open(path, "rb").read(), headers=headers)
try:
    with urllib.request.urlopen(request, timeout=300) as response:
        status, body = response.status, response.read()
except urllib.error.HTTPError as error:
    status, body = error.code, error.read()
open(path + ".answer", "wb").write(body)
print(status)
"""


async def send_from_another_process(server: TestServer, path: str, body: Path) -> int:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        _CLIENT,
        str(server.make_url(path)),
        str(body),
        ADMIN_TOKEN,
        stdout=asyncio.subprocess.PIPE,
    )
    out, _ = await process.communicate()
    return int(out)


# The probes run in processes of their own too: a probe in this process shares the event
# loop with the daemon, and its own reading of an answer waits behind whatever the loop does
# next, which is not a delay of the answer. Each probe times GET /healthz from before the
# request is written to the end of the answer, on one keep-alive connection.
_PROBE = """
import http.client, json, os, sys, time
host, port, stop, pause = sys.argv[1], int(sys.argv[2]), sys.argv[3], float(sys.argv[4])
connection = http.client.HTTPConnection(host, port, timeout=30)
connection.request("GET", "/healthz")
connection.getresponse().read()
print("ready", flush=True)
delays = []
while not os.path.exists(stop):
    time.sleep(pause)
    began = time.perf_counter()
    connection.request("GET", "/healthz")
    response = connection.getresponse()
    response.read()
    assert response.status == 200, response.status
    delays.append(time.perf_counter() - began)
print(json.dumps(delays), flush=True)
"""


def _runnable_waiting_s() -> float:
    """How long this thread has stood runnable without a CPU (Linux's schedstat, in seconds;
    0 where there is none): the share of a gap that was the machine's doing, not ours."""
    try:
        with open(f"/proc/self/task/{threading.get_native_id()}/schedstat", "rb") as stats:
            return int(stats.read().split()[1]) / 1e9
    except (OSError, IndexError, ValueError):
        return 0.0


class LoopWatch:
    """The longest the event loop kept a task waking every millisecond from running, less the
    time the loop's thread stood runnable without a CPU meanwhile: what the loop's own work
    and waits cost (a parse, a blocking call, a GIL a worker thread kept), not what other
    processes on a loaded machine did. The probes' wall times below include the latter."""

    def __init__(self) -> None:
        self.longest = 0.0
        self._task: asyncio.Task[None] | None = None

    async def _tick(self) -> None:
        last, waited = time.perf_counter(), _runnable_waiting_s()
        while True:
            await asyncio.sleep(0.001)
            now, now_waited = time.perf_counter(), _runnable_waiting_s()
            self.longest = max(self.longest, (now - last) - (now_waited - waited))
            last, waited = now, now_waited

    def __enter__(self) -> LoopWatch:
        self._task = asyncio.get_running_loop().create_task(self._tick())
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._task is not None:
            self._task.cancel()


async def test_the_loop_watch_sees_a_blocked_loop() -> None:
    with LoopWatch() as watch:
        await asyncio.sleep(0.01)
        time.sleep(0.08)  # the loop's thread blocked: no tick meanwhile
        await asyncio.sleep(0.01)
    assert 0.08 <= watch.longest < 0.5


async def health_delays_during(
    server: TestServer, work: Awaitable[int], stop: Path
) -> tuple[int, list[float]]:
    """What `work` gave, and how long each `GET /healthz` took, sent by two probes (each in a
    process of its own, a pause of PAUSE_S between its requests) for as long as `work` ran."""
    probes = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            _PROBE,
            str(server.host),
            str(server.port),
            str(stop),
            str(PAUSE_S),
            stdout=asyncio.subprocess.PIPE,
        )
        for _ in range(2)
    ]
    for probe in probes:
        assert probe.stdout is not None
        assert (await probe.stdout.readline()).strip() == b"ready"
    try:
        result = await work
    finally:
        await asyncio.to_thread(stop.touch)
    delays: list[float] = []
    for probe in probes:
        out, _ = await probe.communicate()
        delays += orjson.loads(out)
    return result, delays


def words(size: int) -> str:
    """`size` bytes of text from a vocabulary of 5,000 made-up words: the tokenizer's speed
    on it is that on real prose, not on one phrase repeated."""
    rng = random.Random(12)
    vocabulary = [
        "".join(rng.choices(string.ascii_lowercase, k=rng.randint(2, 10))) for _ in range(5000)
    ]
    text = " ".join(rng.choices(vocabulary, k=size // 6 + 1))
    return text[:size]


HEAVIEST = {
    # 2,048 inputs at the deterministic provider's limit: 1M numbers hashed, a 20 MB answer.
    "deterministic embeddings": lambda: {
        "model": "deterministic-embed",
        "input": [f"text number {i}" for i in range(2048)],
        "dimensions": limits.DETERMINISTIC_MAX_EMBEDDING_VALUES // 2048,
    },
    # 300,000 token ids in 2,048 arrays: the most the OpenAI API takes.
    "token-array embeddings": lambda: {
        "model": "deterministic-embed",
        "input": [
            [(i * 7919 + j) % 199_000 for j in range(limits.MAX_EMBEDDING_TOKEN_IDS // 2048)]
            for i in range(2048)
        ],
    },
    # 2,048 inputs of 12 KB, 24 MB of long strings: each is cut out and decoded apart, and
    # all are counted (in a worker thread): each has more bytes than the model's 8192 tokens.
    "many long inputs": lambda: {
        "model": "deterministic-embed",
        "input": [text[i : i + 12_000] for text in [words(14_048)] for i in range(2048)],
    },
    # A prompt as large as max_request_bytes allows (32 MiB): parsed, then counted (it is
    # past every model's budget in bytes) before it is refused as too long.
    "largest prompt": lambda: chat(words(32 * 1024 * 1024 - len(orjson.dumps(chat(""))))),
    # 2,048 messages: a body dense with structure.
    "most messages": lambda: {
        "model": "deterministic",
        "messages": [{"role": "user", "content": f"message {i} " * 10} for i in range(2048)],
    },
}


@pytest.mark.parametrize(
    ("name", "path", "expected"),
    [
        ("deterministic embeddings", "/v1/embeddings", 200),
        ("token-array embeddings", "/v1/embeddings", 200),
        ("many long inputs", "/v1/embeddings", 200),
        ("largest prompt", "/v1/chat/completions", 400),
        ("most messages", "/v1/chat/completions", 200),
    ],
)
async def test_the_heaviest_requests_leave_the_event_loop_free(
    gateway: TestServer, tmp_path: Path, name: str, path: str, expected: int
) -> None:
    body = tmp_path / "body.json"
    body.write_bytes(orjson.dumps(HEAVIEST[name]()))
    assert body.stat().st_size <= 32 * 1024 * 1024
    await tokens.load_vocabulary()  # as in a daemon that has counted before
    # The test process holds far more objects than a daemon (pytest, the SDKs, fixtures):
    # a full collection among them takes 100-200 ms whatever the request. Frozen, they are
    # left out of it, as a daemon's start-up objects can be (gc.freeze after start).
    gc.collect()
    gc.freeze()
    switch_interval, threshold = sys.getswitchinterval(), gc.get_threshold()
    tune_interpreter()  # as palyrad does when it starts serving
    try:
        with LoopWatch() as watch:
            status, delays = await health_delays_during(
                gateway, send_from_another_process(gateway, path, body), tmp_path / "stop"
            )
    finally:
        gc.unfreeze()
        sys.setswitchinterval(switch_interval)
        gc.set_threshold(*threshold)
    answer = orjson.loads((tmp_path / "body.json.answer").read_bytes())
    assert status == expected, answer
    if path == "/v1/embeddings":
        assert len(answer["data"]) == 2048
    # Health checks were answered throughout (their wall times are the machine's too: on a
    # loaded host a probe process waits for a CPU of its own); the loop itself was never
    # held for longer than the budget.
    assert len(delays) >= 5, delays
    assert watch.longest < LOOP_BUDGET_S, (name, watch.longest, sorted(delays)[-5:])


async def test_small_chats_do_not_hop_to_a_thread(
    gateway: TestServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    hops: list[object] = []
    real = asyncio.to_thread

    async def counting(func: Any, /, *args: Any, **kwargs: Any) -> Any:
        hops.append(func)
        return await real(func, *args, **kwargs)

    monkeypatch.setattr(asyncio, "to_thread", counting)
    await tokens.load_vocabulary()
    for model in ("deterministic", "gpt-4o-mini"):
        status, body = await post(
            gateway, "/v1/chat/completions", chat("hello " * 1000, model=model)
        )
        assert status == 200, body
        status, body = await post(
            gateway, "/v1/embeddings", {"model": "deterministic-embed", "input": ["a", "b"]}
        )
        assert status == 200, body
    assert hops == []
