"""The fuzz suite's machinery: `palyrad` as a real process, a raw-socket fake upstream whose
answers the tests choose byte for byte, a raw HTTP/1.1 client that sends exactly the bytes it
is given (no client library in the way), and the checks every answer must pass.

The checks (`Fuzz.send`):

- no 500, ever; no other 5xx unless the upstream is at fault (then 502/504, and 503 only for
  "every candidate cooling down" or an upstream that said 503/529 itself);
- an answer within `PALYRA_FUZZ_TIMEOUT_S` (a request that blocks the event loop is a defect);
- a streamed 200 ends cleanly: `data: [DONE]` last, and no `server_error` event unless the
  upstream is at fault;
- after every request the daemon answers `GET /healthz` with 200, and the log lines written up
  to that health check hold no traceback, no `unhandled_error`, no `exception` field and no
  line that is not JSON (aiohttp's and asyncio's own tracebacks come out as plain text).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import itertools
import json
import os
import re
import shutil
import signal
import socket
import socketserver
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from tests.fakes import anthropic_wire, openai_wire
from tests.fakes.replies import ChatReply

PALYRAD = str(Path(sys.executable).with_name("palyrad"))
ADMIN_TOKEN = "fuzz-admin-token-0123456789abcdef"
UPSTREAM_KEY = "sk-fuzz-upstream-key"
UPSTREAM_KEY_ENV = "PALYRA_FUZZ_UPSTREAM_KEY"
TIMEOUT_S = float(os.environ.get("PALYRA_FUZZ_TIMEOUT_S", "10"))
# A directory holding another `palyra` package to run the daemon from (an exported older
# tree, say): how to check that the suite finds defects that have since been fixed.
PACKAGE_ROOT = os.environ.get("PALYRA_FUZZ_PACKAGE_ROOT", "")
# While a heavy request is in flight, /healthz must still answer within this: one request
# must not stall every other client.
PROBE_S = 1.5
# How long a client's going away may take to show in the log (see Fuzz.abandon).
AWAY_SETTLE_S = 2.0

Header = tuple[str | bytes, str | bytes]


def _b(value: str | bytes) -> bytes:
    return value if isinstance(value, bytes) else value.encode("utf-8", "surrogateescape")


# --- compact, eval-able reprs for reproductions -------------------------------------------------


def _repeats(data: bytes, start: int, unit: bytes) -> int:
    """How many times `unit` repeats from `start` (exponential then binary search)."""
    size = len(unit)
    low, high = 1, 2
    while data[start : start + high * size] == unit * high:
        low, high = high, high * 2
    while high - low > 1:
        middle = (low + high) // 2
        if data[start : start + middle * size] == unit * middle:
            low = middle
        else:
            high = middle
    return low


def compact(data: bytes, limit: int = 1200) -> str:
    """`data` as a Python expression whose long runs are folded: `b'[' * 3000 + b'0' + ...`.

    Reproductions stay short enough to read and paste, even for bodies nested 3,000 deep.
    Past 256 KiB only the first 64 KiB are shown (and said so)."""
    if len(data) > 256 * 1024:
        return compact(data[: 64 * 1024], limit) + f" + ...<{len(data) - 64 * 1024} more bytes>"
    parts: list[str] = []
    literal = bytearray()
    i, n = 0, len(data)
    while i < n:
        best: tuple[int, int] | None = None  # (period, repeats)
        for period in range(1, 9):
            unit = data[i : i + period]
            if len(unit) < period:
                break
            if data[i + period : i + 2 * period] != unit:
                continue
            repeats = _repeats(data, i, unit)
            if (
                repeats * period >= 24
                and repeats >= 3
                and (best is None or repeats * period > best[0] * best[1])
            ):
                best = (period, repeats)
        if best is None:
            literal.append(data[i])
            i += 1
            continue
        if literal:
            parts.append(repr(bytes(literal)))
            literal.clear()
        period, repeats = best
        parts.append(f"{data[i : i + period]!r} * {repeats}")
        i += period * repeats
    if literal:
        parts.append(repr(bytes(literal)))
    text = " + ".join(parts) or "b''"
    if len(text) > limit:
        text = (
            text[: limit // 2] + f" ...<{len(text) - limit} chars folded>... " + text[-limit // 2 :]
        )
    return text


class Blob(bytes):
    """Bytes whose repr is `compact`: what Hypothesis prints for a falsifying example."""

    def __repr__(self) -> str:
        return compact(bytes(self))


# --- the raw HTTP client ---------------------------------------------------------------------


@dataclass
class Response:
    status: int
    headers: list[tuple[str, str]]
    body: bytes
    elapsed_s: float
    complete: bool = True  # False: the connection closed before the body was whole

    def header(self, name: str) -> str | None:
        lowered = name.lower()
        return next((v for k, v in self.headers if k == lowered), None)

    def json(self) -> Any:
        try:
            return orjson.loads(self.body)
        except orjson.JSONDecodeError:
            return None

    def error_code(self) -> str | None:
        body = self.json()
        if isinstance(body, dict) and isinstance(body.get("error"), dict):
            code = body["error"].get("code")
            return code if isinstance(code, str) else None
        return None


class NoAnswer(AssertionError):
    def __init__(self, message: str, *, timed_out: bool = False) -> None:
        super().__init__(message)
        self.timed_out = timed_out


def build_request(
    port: int,
    method: str | bytes,
    target: str | bytes,
    headers: Sequence[Header] = (),
    body: bytes = b"",
    *,
    content_length: bool = True,
) -> bytes:
    names = {_b(name).lower() for name, _ in headers}
    lines = [_b(method) + b" " + _b(target) + b" HTTP/1.1"]
    if b"host" not in names:
        lines.append(b"Host: 127.0.0.1:%d" % port)
    if b"connection" not in names:
        lines.append(b"Connection: close")
    framed = b"content-length" in names or b"transfer-encoding" in names
    has_body = body or _b(method).upper() in (b"POST", b"PUT", b"PATCH", b"DELETE")
    if content_length and not framed and has_body:
        lines.append(b"Content-Length: %d" % len(body))
    lines += [_b(name) + b": " + _b(value) for name, value in headers]
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def request_is_whole(data: bytes) -> bool:
    """Whether `data` holds all of the body its Content-Length announces (True when it
    announces none)."""
    head, sep, body = data.partition(b"\r\n\r\n")
    if not sep:
        return False
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length" and value.strip().isdigit():
            return len(body) >= int(value)
    return True


def unread_by_server(server_port: int, client_port: int) -> bool:
    """Whether bytes our client on `client_port` sent to 127.0.0.1:`server_port` still wait
    in the server's receive queue (Linux's /proc/net/tcp; False where it cannot tell)."""
    try:
        table = Path("/proc/net/tcp").read_text().splitlines()[1:]
    except OSError:
        return False
    for row in table:
        fields = row.split()
        local, remote, queues = fields[1], fields[2], fields[4]
        if (
            int(local.rpartition(":")[2], 16) == server_port
            and int(remote.rpartition(":")[2], 16) == client_port
        ):
            return int(queues.partition(":")[2], 16) > 0
    return False


def send_raw(
    port: int, data: bytes, timeout_s: float = TIMEOUT_S, *, half_close: bool = False
) -> Response:
    """Send `data` as it is; read the answer until it is whole (by its length or its last
    chunk) or the daemon closes the connection. `half_close`: shut our side after sending,
    so the daemon sees the end of a truncated request."""
    started = time.monotonic()
    deadline = started + timeout_s
    head_request = data[:5] == b"HEAD "
    buffer = bytearray()
    with socket.create_connection(("127.0.0.1", port), timeout=timeout_s) as sock:
        with contextlib.suppress(ConnectionResetError, BrokenPipeError):
            sock.sendall(data)
            if half_close:
                sock.shutdown(socket.SHUT_WR)
        framing: tuple[str, int] | None = None  # ("length", end) | ("chunked", 0) | ("close", 0)
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                got = compact(bytes(buffer[:300]))
                raise NoAnswer(
                    f"no complete answer within {timeout_s} s; got {got}", timed_out=True
                )
            sock.settimeout(remaining)
            try:
                chunk = sock.recv(1 << 16)
            except TimeoutError:
                continue
            except ConnectionResetError:
                break
            if not chunk:
                break
            buffer += chunk
            if framing is None:
                framing = _framing(bytes(buffer), head_request)
            if framing is not None and _whole(buffer, framing):
                break
    return parse_response(bytes(buffer), time.monotonic() - started, head=head_request)


def _final_head(raw: bytes) -> tuple[int, bytes, bytes] | None:
    """(offset of the final answer, its head, its body so far), past interim 1xx answers."""
    offset = 0
    while True:
        end = raw.find(b"\r\n\r\n", offset)
        if end < 0:
            return None
        head = raw[offset:end]
        status = head[9:12]
        if head.startswith(b"HTTP/") and status.startswith(b"1") and status != b"101":
            offset = end + 4
            continue
        return offset, head, raw[end + 4 :]


def _framing(raw: bytes, head_request: bool) -> tuple[str, int] | None:
    found = _final_head(raw)
    if found is None:
        return None
    offset, head, _ = found
    body_start = offset + len(head) + 4
    status = head[9:12]
    lowered = head.lower()
    if head_request or status in (b"204", b"304"):
        return ("length", body_start)
    if b"\r\ntransfer-encoding:" in lowered and b"chunked" in lowered:
        return ("chunked", body_start)
    marker = lowered.find(b"\r\ncontent-length:")
    if marker >= 0:
        value = lowered[marker + 17 :].split(b"\r\n", 1)[0].strip()
        if value.isdigit():
            return ("length", body_start + int(value))
    return ("close", 0)


def _whole(buffer: bytearray, framing: tuple[str, int]) -> bool:
    kind, value = framing
    if kind == "length":
        return len(buffer) >= value
    if kind == "chunked":
        return buffer.endswith(b"0\r\n\r\n") and _dechunk(bytes(buffer[value:]))[1]
    return False


def parse_response(raw: bytes, elapsed_s: float, *, head: bool = False) -> Response:
    found = _final_head(raw)
    if found is None:
        raise NoAnswer(f"the connection closed without a whole answer: {compact(raw[:300])}")
    _, head_bytes, rest = found
    lines = head_bytes.split(b"\r\n")
    parts = lines[0].split(b" ", 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/") or not parts[1].isdigit():
        raise NoAnswer(f"not an HTTP answer: {compact(raw[:300])}")
    headers = []
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        headers.append((name.strip().lower().decode("latin-1"), value.strip().decode("latin-1")))
    response = Response(int(parts[1]), headers, rest, elapsed_s)
    if head:
        response.body = b""
        return response
    encoding = (response.header("transfer-encoding") or "").lower()
    if "chunked" in encoding:
        response.body, response.complete = _dechunk(rest)
    elif response.header("content-length") is not None:
        length = int(response.header("content-length") or 0)
        response.complete = len(rest) >= length
        response.body = rest[:length]
    return response


def _dechunk(data: bytes) -> tuple[bytes, bool]:
    out = bytearray()
    pos = 0
    while True:
        line_end = data.find(b"\r\n", pos)
        if line_end < 0:
            return bytes(out), False
        size_text = data[pos:line_end].split(b";")[0].strip()
        try:
            size = int(size_text, 16)
        except ValueError:
            return bytes(out), False
        if size == 0:
            return bytes(out), True
        start = line_end + 2
        if len(data) < start + size:
            out += data[start:]
            return bytes(out), False
        out += data[start : start + size]
        pos = start + size + 2


def sse_data(body: bytes) -> list[str]:
    """The `data:` payloads of an SSE body, in order."""
    text = body.decode("utf-8", "replace").replace("\r\n", "\n")
    return [line[5:].strip() for line in text.split("\n") if line.startswith("data:")]


# --- the fake upstream -------------------------------------------------------------------------


@dataclass
class Reply:
    """What the fake upstream sends, byte for byte.

    `mode`: "normal" (Content-Length), "eof" (no length, close after the body), "chunked",
    "chunked-cut" (chunked, connection closed without the final chunk), "short" (a
    Content-Length larger than the body, then close), "drop" (close before any answer),
    "hang" (never answer: the daemon's timeout must fire). `trickle_s`: the answer goes out
    in 64-byte pieces this far apart (a slow stream a client may walk away from)."""

    status: int = 200
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    body: bytes = b""
    mode: str = "normal"
    reason: bytes = b"OK"
    trickle_s: float = 0.0

    def render(self) -> bytes | None:
        if self.mode in ("drop", "hang"):
            return None
        head = [b"HTTP/1.1 %d %s" % (self.status, self.reason)]
        head += [name + b": " + value for name, value in self.headers]
        head.append(b"Connection: close")
        body = self.body
        if self.mode == "normal":
            head.append(b"Content-Length: %d" % len(body))
        elif self.mode == "short":
            head.append(b"Content-Length: %d" % (len(body) + 100))
        elif self.mode in ("chunked", "chunked-cut"):
            head.append(b"Transfer-Encoding: chunked")
            pieces = [body[i : i + 97] for i in range(0, len(body), 97)]
            body = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces)
            if self.mode == "chunked":
                body += b"0\r\n\r\n"
        return b"\r\n".join(head) + b"\r\n\r\n" + body

    def describe(self) -> str:
        headers = ", ".join(
            f"{n.decode('latin-1')}: {v.decode('latin-1')}" for n, v in self.headers
        )
        return (
            f"HTTP {self.status} [{self.mode}] headers {{{headers}}} body {compact(self.body, 600)}"
        )


def json_reply(payload: Any, status: int = 200) -> Reply:
    return Reply(status, [(b"Content-Type", b"application/json")], orjson.dumps(payload))


def sse_reply(frames: Iterable[bytes], mode: str = "chunked") -> Reply:
    headers = [
        (b"Content-Type", b"text/event-stream; charset=utf-8"),
        (b"Cache-Control", b"no-cache"),
    ]
    return Reply(200, headers, b"".join(frames), mode)


@dataclass
class UpstreamRequest:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        try:
            return orjson.loads(self.body)
        except orjson.JSONDecodeError:
            return None


# Which scripted reply answers a request: by what it asks for.
ROUTES = ("chat", "embeddings", "transcriptions", "models", "token", "other")


def route_of(method: str, path: str) -> str:
    if method == "POST" and path.endswith(("/chat/completions", "/v1/messages")):
        return "chat"
    if method == "POST" and path.endswith("/embeddings"):
        return "embeddings"
    if method == "POST" and path.endswith("/audio/transcriptions"):
        return "transcriptions"
    if method == "GET" and path.endswith("/models"):
        return "models"
    if path.startswith("/oauth/token"):
        return "token"
    return "other"


class FakeUpstream:
    """OpenAI and Anthropic on one loopback port (OpenAI under `/openai/v1`, Anthropic under
    `/anthropic`, the OAuth token endpoint at `/oauth/token`), answering well by default and
    with the scripted `Reply` of a route while one is set."""

    def __init__(self) -> None:
        self.requests: list[UpstreamRequest] = []
        self.replies: dict[str, Reply] = {}
        self._server: socketserver.ThreadingTCPServer | None = None
        self._stop = threading.Event()

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> FakeUpstream:
        upstream = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                upstream._handle(self.request)

        socketserver.ThreadingTCPServer.allow_reuse_address = True
        server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        self._server = server
        threading.Thread(target=server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    @contextlib.contextmanager
    def replying(self, route: str, reply: Reply | None) -> Any:
        if reply is None:
            yield
            return
        self.replies[route] = reply
        try:
            yield
        finally:
            self.replies.pop(route, None)

    # --- serving ---

    def _handle(self, sock: socket.socket) -> None:
        sock.settimeout(10)
        try:
            request = _read_request(sock)
        except (OSError, ValueError):
            return
        if request is None:
            return
        self.requests.append(request)
        del self.requests[:-50]
        reply = self.replies.get(route_of(request.method, request.path)) or self._default(request)
        data = reply.render()
        if data is None:
            if reply.mode == "hang":
                self._stop.wait(30)
            return
        with contextlib.suppress(OSError):
            if not reply.trickle_s:
                sock.sendall(data)
                return
            for start in range(0, len(data), 64):
                sock.sendall(data[start : start + 64])
                if self._stop.wait(reply.trickle_s):
                    return

    def _default(self, request: UpstreamRequest) -> Reply:
        route = route_of(request.method, request.path)
        body = request.json()
        body = body if isinstance(body, dict) else {}
        anthropic = request.path.startswith("/anthropic")
        if route == "models":
            models = ["gpt-4o-mini", "text-embedding-3-small", "whisper-1", "claude-sonnet-4-5"]
            wire = anthropic_wire if anthropic else openai_wire
            return json_reply(wire.models_list(models))
        if route == "chat":
            return default_chat(anthropic, body)
        if route == "embeddings":
            return json_reply(default_embeddings(body))
        if route == "transcriptions":
            return json_reply({"text": "transcript from the fake upstream"})
        if route == "token":
            return json_reply(
                {"access_token": "fuzz-access", "token_type": "Bearer", "expires_in": 3600}
            )
        return json_reply(openai_wire.error_body(404, f"no route {request.path}"), 404)


def default_embeddings(body: dict[str, Any]) -> dict[str, Any]:
    """One vector per input, `dimensions` long (cheap to build at any size)."""
    raw = body.get("input")
    count = len(raw) if isinstance(raw, list) and raw and not isinstance(raw[0], int) else 1
    dims = body.get("dimensions")
    dims = dims if isinstance(dims, int) and 0 < dims <= 8192 else 8
    vector = [0.5] * dims
    return {
        "object": "list",
        "data": [{"object": "embedding", "index": i, "embedding": vector} for i in range(count)],
        "model": str(body.get("model", "m")),
        "usage": {"prompt_tokens": count, "total_tokens": count},
    }


def default_chat(anthropic: bool, body: dict[str, Any], reply: ChatReply | None = None) -> Reply:
    """A well-formed answer for the request (streamed when it asks for a stream)."""
    reply = reply or ChatReply(content="Hello from the fuzz upstream.")
    model = str(body.get("model", "m"))
    stream = body.get("stream") is True
    if anthropic:
        if not stream:
            return json_reply(anthropic_wire.message(reply, model=model, prompt=3))
        frames, end = anthropic_wire.stream_events(reply, model=model, prompt=3)
        return sse_reply([*frames, end])
    if not stream:
        return json_reply(openai_wire.chat_completion(reply, model=model, prompt=3))
    frames = openai_wire.chat_chunks(reply, model=model, prompt=3, include_usage=True)
    return sse_reply([*frames, openai_wire.DONE])


def openai_frames() -> list[bytes]:
    """A well-formed OpenAI stream (text, then a tool call, usage, [DONE]), frame by frame."""
    reply = ChatReply(
        content="hello there",
        tool_calls=[{"id": "call_1", "name": "f", "arguments": '{"a": 1}'}],
    )
    frames = openai_wire.chat_chunks(reply, model="gpt-4o-mini", prompt=3, include_usage=True)
    return [*frames, openai_wire.DONE]


def anthropic_frames() -> list[bytes]:
    """A well-formed Anthropic stream, event by event, `message_stop` last."""
    reply = ChatReply(
        content="hello there",
        tool_calls=[{"id": "toolu_1", "name": "f", "arguments": '{"a": 1}'}],
    )
    frames, end = anthropic_wire.stream_events(reply, model="claude-sonnet-4-5", prompt=3)
    return [*frames, end]


def _read_request(sock: socket.socket) -> UpstreamRequest | None:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            return None
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    method, target, _ = [*lines[0].split(" ", 2), "", ""][:3]
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    if "chunked" in headers.get("transfer-encoding", "").lower():
        while not rest.endswith(b"0\r\n\r\n"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            rest += chunk
        body, _ = _dechunk(rest)
    else:
        length = int(headers.get("content-length") or 0)
        while len(rest) < length:
            chunk = sock.recv(65536)
            if not chunk:
                break
            rest += chunk
        body = rest[:length]
    return UpstreamRequest(method, target.split("?")[0], headers, body)


# --- the daemon -----------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def daemon_config(state_dir: Path, upstream: FakeUpstream) -> str:
    """Deterministic models, plus an OpenAI-compatible and an Anthropic provider on the fake
    upstream. One candidate per request and no retries (each client request is one upstream
    request), a breaker that never opens (a 503 would hide the next answer), short timeouts."""
    up = upstream.url
    return f"""version = 1

[daemon]
state_dir = "{state_dir}"
log_level = "info"
shutdown_grace_ms = 2000

[model_provider]
default_chat_model_id = "deterministic"
default_embeddings_model_id = "deterministic-embed"
default_audio_transcription_model_id = "deterministic-transcribe"
failover_enabled = false
max_retries = 0
retry_backoff_ms = 0
request_timeout_ms = 3000
circuit_breaker_failure_threshold = 1000000000
circuit_breaker_cooldown_ms = 1
discovery_ttl_ms = 3600000
health_ttl_ms = 3600000

[[model_provider.providers]]
provider_id = "det"
kind = "deterministic"

[[model_provider.providers]]
provider_id = "oai"
kind = "openai_compatible"
base_url = "{up}/openai/v1"
allow_private_base_url = true
api_key_env = "{UPSTREAM_KEY_ENV}"
discovery = false

[[model_provider.providers]]
provider_id = "claude"
kind = "anthropic"
base_url = "{up}/anthropic"
allow_private_base_url = true
api_key_env = "{UPSTREAM_KEY_ENV}"
discovery = false

[[model_provider.models]]
model_id = "deterministic"
provider_id = "det"

[[model_provider.models]]
model_id = "deterministic-embed"
provider_id = "det"
role = "embeddings"
max_context_tokens = 8192
max_output_tokens = 1

[[model_provider.models]]
model_id = "deterministic-transcribe"
provider_id = "det"
role = "audio_transcription"

[[model_provider.models]]
model_id = "gpt-4o-mini"
provider_id = "oai"

[[model_provider.models]]
model_id = "claude"
provider_id = "claude"
upstream_model = "claude-sonnet-4-5"
max_context_tokens = 200000
max_output_tokens = 4096

[[model_provider.models]]
model_id = "text-embedding-3-small"
provider_id = "oai"
role = "embeddings"

[[model_provider.models]]
model_id = "whisper-1"
provider_id = "oai"
role = "audio_transcription"

[[model_provider.models]]
model_id = "claude-embed"
provider_id = "claude"
role = "embeddings"

[auth.openai_oauth]
authorization_endpoint = "{up}/oauth/authorize"
token_endpoint = "{up}/oauth/token"
client_id = "fuzz-client"

[cron]
max_concurrent_runs = 2
"""


AGENTS = """version = 1

[[agents]]
agent_id = "tools"
display_name = "Tools"
tools = ["current_time", "calculator"]
max_turns = 3
max_tool_calls = 2
timeout_s = 5
"""


class DaemonProcess:
    """`palyrad` on a free port with its own state dir; its JSON-lines log in a file."""

    def __init__(self, workdir: Path, upstream: FakeUpstream) -> None:
        self.workdir = workdir
        self.upstream = upstream
        self.process: subprocess.Popen[bytes] | None = None
        self.port = 0
        self.generation = 0
        self.log_path = workdir / "palyrad.log"
        self._log_offset = 0
        self._partial = b""
        self._sync = itertools.count()

    def start(self) -> None:
        self.generation += 1
        root = self.workdir / f"run-{self.generation}"
        shutil.rmtree(root, ignore_errors=True)
        (root / "home").mkdir(parents=True)
        config = root / "config.toml"
        config.write_text(daemon_config(root / "state", self.upstream))
        (root / "agents.toml").write_text(AGENTS)
        env = {k: v for k, v in os.environ.items() if not k.startswith("PALYRA_")}
        env.update(
            HOME=str(root / "home"),
            XDG_CONFIG_HOME=str(root / "xdg-config"),
            XDG_STATE_HOME=str(root / "xdg-state"),
            PALYRA_ADMIN_TOKEN=ADMIN_TOKEN,
            PALYRA_VAULT_KEYRING="off",
            **{UPSTREAM_KEY_ENV: UPSTREAM_KEY},
        )
        if PACKAGE_ROOT:
            env["PYTHONPATH"] = os.pathsep.join(filter(None, [PACKAGE_ROOT, env.get("PYTHONPATH")]))
        self.port = free_port()
        with open(self.log_path, "ab") as log:
            self._log_offset = log.tell()
            self._partial = b""
            self.process = subprocess.Popen(
                [PALYRAD, "--config", str(config), "--port", str(self.port)],
                env=env,
                stdout=log,
                stderr=log,
                stdin=subprocess.DEVNULL,
            )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(
                    f"palyrad exited at start-up: {self.log_path.read_text()[-4000:]}"
                )
            with contextlib.suppress(OSError, NoAnswer):
                if (
                    send_raw(self.port, build_request(self.port, "GET", "/healthz"), 2).status
                    == 200
                ):
                    self.read_log()  # start-up lines are not any request's
                    return
            time.sleep(0.05)
        raise AssertionError(f"palyrad did not start: {self.log_path.read_text()[-4000:]}")

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def read_log(self) -> list[bytes]:
        """Whole lines written since the last call."""
        with open(self.log_path, "rb") as log:
            log.seek(self._log_offset)
            data = log.read()
        self._log_offset += len(data)
        data = self._partial + data
        lines = data.split(b"\n")
        self._partial = lines.pop()
        return [line for line in lines if line.strip()]

    def sync(self) -> tuple[Response | None, list[bytes]]:
        """GET /healthz with a marker request id and wait for its log line: every line the
        requests before it caused synchronously is in the file by then. Returns the health
        answer (None: no answer) and the log lines read."""
        marker = f"fuzz-sync-{self.generation}-{next(self._sync)}"
        request = build_request(self.port, "GET", "/healthz", [("X-Request-Id", marker)])
        try:
            health: Response | None = send_raw(self.port, request, TIMEOUT_S)
        except (OSError, NoAnswer):
            health = None
        return health, self.read_until(marker, 2.0 if health is not None else 0.2)

    def read_until(self, marker: str, timeout_s: float, event: str | None = None) -> list[bytes]:
        """Read the log until a line holding `marker` (and, given `event`, that is that
        event's) is in it, or `timeout_s` passed, or palyrad died; every line read."""
        lines: list[bytes] = []
        deadline = time.monotonic() + timeout_s
        while True:
            fresh = self.read_log()
            lines += fresh
            if (
                any(is_line_of(line, marker, event) for line in fresh)
                or time.monotonic() > deadline
                or not self.alive()
            ):
                return lines
            time.sleep(0.002)


def is_line_of(line: bytes, marker: str, event: str | None) -> bool:
    if marker.encode() not in line:
        return False
    if event is None:
        return True
    try:
        entry = json.loads(line)
    except ValueError:
        return False
    return isinstance(entry, dict) and entry.get("event") == event


def traceback_tail(text: str, frames: int = 4) -> str:
    """The end of a traceback: its last frames and the exception, indented."""
    lines = [line for line in text.splitlines() if line.strip() and set(line.strip()) != {"^"}]
    starts = [n for n, line in enumerate(lines) if line.lstrip().startswith("File ")]
    keep = lines[starts[-frames] :] if len(starts) >= frames else lines[-16:]
    return "\n".join("      " + line for line in keep)


def log_problems(lines: Iterable[bytes]) -> list[str]:
    """Lines that show a traceback or an unhandled error, or are not JSON at all (aiohttp's
    and asyncio's own tracebacks are plain text; consecutive such lines are one problem)."""
    problems: list[str] = []
    plain: list[str] = []

    def flush() -> None:
        if plain:
            tail = traceback_tail("\n".join(plain))
            problems.append(f"plain-text lines in the log:\n      {plain[0]}\n{tail}")
            plain.clear()

    for raw in lines:
        text = raw.decode("utf-8", "replace")
        try:
            entry = json.loads(text)
        except ValueError:
            plain.append(text)
            continue
        flush()
        if not isinstance(entry, dict):
            problems.append(f"a JSON log line that is not an object: {text[:500]}")
            continue
        exception = entry.get("exception") or entry.get("exc_info")
        if entry.get("event") == "unhandled_error" or exception or "Traceback" in text:
            fields = {
                k: v for k, v in entry.items() if k not in ("exception", "exc_info", "timestamp")
            }
            shown = orjson.dumps(fields).decode()[:500]
            tail = traceback_tail(str(exception)) if exception else ""
            problems.append(f"{shown}\n{tail}" if tail else shown)
    flush()
    return problems


# --- sessions -------------------------------------------------------------------------------


def session_key(admin_token: str = ADMIN_TOKEN) -> bytes:
    return hmac.new(admin_token.encode(), b"palyra-console-session-v1", hashlib.sha256).digest()


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def signed_cookie(payload: bytes) -> str:
    """A session cookie for `payload`, signed as the daemon signs (the suite knows the token)."""
    return f"{b64(payload)}.{b64(hmac.new(session_key(), payload, hashlib.sha256).digest())}"


# --- the checks -----------------------------------------------------------------------------


def describe(
    method: str | bytes, target: str | bytes, headers: Sequence[Header], body: bytes
) -> str:
    shown = "\n".join(f"    {_b(n)!r}: {_b(v)!r}"[:600] for n, v in headers)
    return (
        f"  {_b(method).decode('latin-1')} {_b(target)!r}\n  headers:\n{shown or '    (none)'}\n"
        f"  body ({len(body)} bytes): {compact(body)}"
    )


class Fuzz:
    """One daemon, one upstream, and `send`, which checks every answer."""

    def __init__(self, daemon: DaemonProcess, upstream: FakeUpstream) -> None:
        self.daemon = daemon
        self.upstream = upstream
        self._away = itertools.count()

    @property
    def port(self) -> int:
        return self.daemon.port

    def auth(self) -> list[Header]:
        return [("Authorization", f"Bearer {ADMIN_TOKEN}")]

    def send(
        self,
        method: str | bytes,
        target: str | bytes,
        headers: Sequence[Header] = (),
        body: bytes = b"",
        *,
        authorized: bool = True,
        upstream_fault: bool = False,
        upstream_reply: Reply | None = None,
        stream: bool = False,
        content_length: bool = True,
        check: Callable[[Response], None] | None = None,
        probe: bool = False,
    ) -> Response:
        all_headers: list[Header] = [*(self.auth() if authorized else []), *headers]
        response = self.send_bytes(
            build_request(
                self.port, method, target, all_headers, body, content_length=content_length
            ),
            what=lambda: describe(method, target, all_headers, body),
            upstream_fault=upstream_fault,
            upstream_reply=upstream_reply,
            stream=stream,
            check=check,
            probe=probe,
        )
        assert response is not None  # an answer is required, so there is one
        return response

    def abandon(self, data: bytes, after_bytes: int, *, reset: bool, what: str) -> None:
        """Send `data`, read until `after_bytes` of the answer arrived (or 1.5 s passed; for a
        request cut short, until the daemon has read what was sent), then go away: a plain
        close, or a reset (`reset`). The daemon must notice calmly: no traceback in the log,
        still healthy."""
        # Its access line, written once the handler has unwound (or answered), is what the
        # check below waits for: the line carries this id.
        marker = f"fuzz-away-{self.daemon.generation}-{next(self._away)}"
        end_of_line = data.find(b"\r\n") + 2
        data = data[:end_of_line] + f"X-Request-Id: {marker}\r\n".encode() + data[end_of_line:]
        got = 0
        with socket.create_connection(("127.0.0.1", self.port), timeout=5) as sock:
            with contextlib.suppress(OSError):
                sock.sendall(data)
                deadline = time.monotonic() + 1.5
                if not request_is_whole(data):
                    # No answer comes to a request cut short (it waits for the rest): once the
                    # daemon has read all there is, its handler waits on the body, and reading
                    # on would only wait out the 1.5 s.
                    client_port = sock.getsockname()[1]
                    while unread_by_server(self.port, client_port) and (
                        time.monotonic() < deadline
                    ):
                        time.sleep(0.002)
                    after_bytes = 0
                while got < after_bytes and time.monotonic() < deadline:
                    sock.settimeout(max(0.01, deadline - time.monotonic()))
                    try:
                        chunk = sock.recv(4096)
                    except TimeoutError:
                        break
                    if not chunk:
                        break
                    got += len(chunk)
            if reset:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        # The daemon notices, cancels the handler and writes its lines, the access line last
        # (where a fixed 0.3 s sleep was). None comes for a request it never read (a reset
        # that reached it before the bytes sent did): then the wait runs to AWAY_SETTLE_S.
        settled = self.daemon.read_until(marker, AWAY_SETTLE_S, event="request")
        failures: list[str] = []
        health, lines = self.daemon.sync()
        lines = settled + lines
        if not self.daemon.alive():
            failures.append("palyrad died")
        elif health is None or health.status != 200:
            failures.append(f"GET /healthz afterwards: {health.status if health else 'no answer'}")
        failures += [f"log: {line}" for line in log_problems(lines)]
        if failures:
            gone = "reset" if reset else "closed"
            raise failure_type(failures)(
                "\n".join(
                    [
                        "request:",
                        what,
                        f"the client {gone} the connection after {got} bytes of the answer",
                        "problems:",
                        *failures,
                    ]
                )
            )

    def send_bytes(
        self,
        data: bytes,
        *,
        what: Callable[[], str] | None = None,
        upstream_fault: bool = False,
        upstream_reply: Reply | None = None,
        stream: bool = False,
        check: Callable[[Response], None] | None = None,
        probe: bool = False,
        allow_no_answer: bool = False,
        half_close: bool = False,
    ) -> Response | None:
        """Send, check the answer, then the daemon's health and log. `probe`: also check that
        /healthz answers within PROBE_S while this request is in flight. `allow_no_answer`:
        raw bytes that may be no whole request, which the daemon may close the connection on
        without an answer (but must not leave hanging); `half_close`: shut our side after
        sending, so that the daemon sees the end of a request cut short."""
        failures: list[str] = []
        response: Response | None = None
        outcome: list[Response | BaseException] = []

        def run() -> None:
            try:
                outcome.append(send_raw(self.port, data, half_close=half_close))
            except BaseException as exc:  # handed to the test thread below
                outcome.append(exc)

        worker = threading.Thread(target=run, daemon=True)
        worker.start()
        if probe:
            # Probe a request still in flight 0.3 s on; one answered sooner is not probed.
            worker.join(0.3)
            if worker.is_alive():
                started = time.monotonic()
                check_request = build_request(self.port, "GET", "/healthz")
                try:
                    send_raw(self.port, check_request, PROBE_S)
                except (OSError, NoAnswer):
                    failures.append(
                        f"GET /healthz got no answer within {PROBE_S} s while this request "
                        f"was in flight (waited {time.monotonic() - started:.1f} s): it blocks "
                        "the daemon"
                    )
        worker.join(TIMEOUT_S + 5)
        result = outcome[0] if outcome else NoAnswer("no answer at all")
        if isinstance(result, Response):
            response = result
        elif isinstance(result, NoAnswer):
            if result.timed_out or not allow_no_answer:
                failures.append(str(result))
        elif isinstance(result, OSError):
            failures.append(f"connection failed: {type(result).__name__}: {result}")
        else:
            raise result
        if response is not None:
            failures += status_problems(response, upstream_fault, upstream_reply, stream)
            if check is not None:
                try:
                    check(response)
                except AssertionError as exc:
                    failures.append(str(exc))
        health, lines = self.daemon.sync()
        if not self.daemon.alive():
            failures.append("palyrad died")
        elif health is None or health.status != 200:
            failures.append(f"GET /healthz afterwards: {health.status if health else 'no answer'}")
        failures += [f"log: {line}" for line in log_problems(lines)]
        if failures:
            answer = "no answer"
            if response is not None:
                answer = f"{response.status} {compact(response.body[:1500], 1500)}"
            shown = what() if what is not None else f"  raw bytes: {compact(data)}"
            if upstream_reply is not None:
                shown += f"\n  upstream answered: {upstream_reply.describe()}"
            raise failure_type(failures)(
                "\n".join(["request:", shown, f"answer: {answer}", "problems:", *failures])
            )
        return response


class DaemonFailure(AssertionError):
    """A property the daemon broke. Subclassed per kind of failure (see `failure_type`)."""


_FAILURE_TYPES: dict[str, type[DaemonFailure]] = {}
_FRAME = re.compile(r'File "([^"]+)", line (\d+)')
_EXCEPTION = re.compile(r"^\s*([A-Za-z_][\w.]*(?:Error|Exception|Exit|Interrupt|Warning))\b")


def failure_signature(failures: list[str]) -> str:
    """What tells one defect from another: the daemon's exception and where it was raised
    (for a traceback in the log), else the first problem's kind."""
    for problem in failures:
        frames = _FRAME.findall(problem)
        if frames:
            path, line = frames[-1]
            exception = next(
                (m.group(1) for m in map(_EXCEPTION.match, reversed(problem.splitlines())) if m),
                "exception",
            )
            return f"{exception} at {path.rsplit('/', 2)[-2:][-1]}:{line}"
    first = failures[0] if failures else "failure"
    return re.sub(r"[^A-Za-z]+", " ", first.split(":")[0])[:40].strip() or "failure"


def failure_type(failures: list[str]) -> type[DaemonFailure]:
    """A DaemonFailure subclass named after the failure's signature. Hypothesis tells bugs
    apart by the exception's type and where it was raised; since every failure is raised
    here, distinct types let it report each distinct daemon defect of a test, not only the
    first it shrank."""
    signature = failure_signature(failures)
    if signature not in _FAILURE_TYPES:
        name = re.sub(r"\W+", "_", signature).strip("_")
        _FAILURE_TYPES[signature] = type(f"DaemonFailure_{name}", (DaemonFailure,), {})
    return _FAILURE_TYPES[signature]


def status_problems(
    response: Response, upstream_fault: bool, upstream_reply: Reply | None, stream: bool
) -> list[str]:
    status = response.status
    problems: list[str] = []
    if status == 500:
        problems.append("500: the daemon failed on this request")
    elif status >= 500:
        # The upstream said "unavailable" itself: a 503 or 529 status, or Anthropic's
        # in-band overloaded_error (its 529) in a stream.
        upstream_unavailable = upstream_reply is not None and (
            upstream_reply.status in (503, 529) or b'"overloaded_error"' in upstream_reply.body
        )
        if not upstream_fault:
            problems.append(f"{status} for a request the upstream had no part in")
        elif status == 503:
            code = response.error_code()
            if code not in ("providers_unavailable", "provider_unavailable") and (
                not upstream_unavailable
            ):
                problems.append(f"503 ({code}) that is not 'cooling down'")
        elif status not in (502, 504):
            problems.append(f"{status}: not a status the daemon gives for upstream failures")
    if status == 200 and not response.complete:
        problems.append("the answer was cut off (incomplete body)")
    content_type = response.header("content-type") or ""
    if status == 200 and stream and content_type.startswith("text/event-stream"):
        events = sse_data(response.body)
        # A stream ends with [DONE], or with the error event that stopped it.
        if not events or (events[-1] != "[DONE]" and '"error"' not in events[-1]):
            problems.append(f"a stream that does not end with [DONE] (last: {events[-1:]})")
        for data in events:
            if data == "[DONE]":
                continue
            try:
                event = orjson.loads(data)
            except orjson.JSONDecodeError:
                problems.append(f"a stream event that is not JSON: {data[:200]!r}")
                continue
            error = event.get("error") if isinstance(event, dict) else None
            if isinstance(error, dict) and (
                error.get("code") == "internal_error"
                or (error.get("type") == "server_error" and not upstream_fault)
            ):
                problems.append(f"a stream error event: {data[:500]}")
    return problems
