"""`palyrad` as a real process: start-up on the embedded default, refusal of bad config,
graceful SIGTERM, structured logs that carry request ids and never a secret."""

from __future__ import annotations

import asyncio
import signal
import socket
import stat
from pathlib import Path

import aiohttp
from openai import AsyncOpenAI

from tests.fakes.upstream import ChatReply, ErrorReply, FakeUpstream
from tests.support.process import (
    ADMIN_TOKEN,
    PALYRAD,
    UPSTREAM_KEY,
    Daemon,
    clean_env,
    free_port,
    start_daemon,
)


async def test_embedded_default_creates_private_state(
    tmp_path: Path, daemons: list[Daemon]
) -> None:
    daemon = await start_daemon(tmp_path, [], clean_env(tmp_path))
    daemons.append(daemon)
    state_dir = tmp_path / "xdg-state" / "palyra"
    token_file = state_dir / "admin.token"
    assert stat.S_IMODE(state_dir.stat().st_mode) == 0o700
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    assert (state_dir / "palyra.db").exists()
    token = token_file.read_text().strip()
    client = AsyncOpenAI(api_key=token, base_url=daemon.url + "/v1", max_retries=0)
    completion = await client.chat.completions.create(
        model="deterministic", messages=[{"role": "user", "content": "offline and exact"}]
    )
    assert completion.choices[0].message.content == "offline and exact"
    await client.close()


async def palyrad_exits(tmp_path: Path, *args: str, timeout_s: float = 20) -> tuple[int, str]:
    """palyrad run with `args` until it exits by itself: its exit code and all it printed."""
    process = await asyncio.create_subprocess_exec(
        PALYRAD,
        *args,
        env=clean_env(tmp_path),
        stderr=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), timeout_s)
    assert process.returncode is not None
    return process.returncode, (stdout + stderr).decode()


async def test_bad_config_exits_before_binding(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text(
        'version = 1\n[[model_provider.providers]]\nprovider_id = "x"\nkind = "anthropic"\n'
        'bse_url = "https://api.anthropic.com"\n'
    )
    port = free_port()
    code, output = await palyrad_exits(tmp_path, "--config", str(config), "--port", str(port))
    assert code != 0
    assert "model_provider.providers[0].bse_url: unknown key" in output
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))  # never bound, so still free


async def test_every_config_problem_is_a_line_of_its_own(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text('version = 1\n[daemon]\nport = 99999\nlog_levl = "info"\n')
    code, output = await palyrad_exits(tmp_path, "--config", str(config))
    assert code != 0
    lines = [line for line in output.splitlines() if "config error" in line]
    assert len(lines) == 2, lines
    assert any("daemon.port" in line for line in lines), lines
    assert any("daemon.log_levl: unknown key" in line for line in lines), lines
    assert all(line.startswith("palyrad: config error: ") for line in lines), lines


async def test_a_taken_port_is_one_clear_error_and_never_ready(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code, output = await palyrad_exits(tmp_path, "--port", str(port), timeout_s=30)
    assert code == 1, output
    assert '"ready"' not in output
    assert output.strip().splitlines()[-1] == (
        f"palyrad: cannot start: cannot listen on 127.0.0.1:{port}: the address is already in "
        "use (another palyrad?); stop it, or choose another port with --port or [daemon] port"
    )
    # Nothing was started before the port: no state store was opened.
    assert not (tmp_path / "xdg-state" / "palyra" / "palyra.db").exists()


async def test_sigterm_finishes_in_flight_requests(tmp_path: Path, daemons: list[Daemon]) -> None:
    async with FakeUpstream(api_key=UPSTREAM_KEY) as upstream:
        config = tmp_path / "config.toml"
        config.write_text(
            "version = 1\n"
            "[[model_provider.providers]]\n"
            'provider_id = "oai"\nkind = "openai_compatible"\n'
            f'base_url = "{upstream.openai_base_url}"\n'
            'allow_private_base_url = true\napi_key_env = "UPSTREAM_KEY"\n'
            "[[model_provider.models]]\n"
            'model_id = "slow"\nprovider_id = "oai"\n'
        )
        env = clean_env(tmp_path, PALYRA_ADMIN_TOKEN=ADMIN_TOKEN, UPSTREAM_KEY=UPSTREAM_KEY)
        daemon = await start_daemon(tmp_path, ["--config", str(config)], env)
        daemons.append(daemon)
        upstream.script("/v1/chat/completions", ChatReply(content="made it", delay_s=1.0))
        client = AsyncOpenAI(api_key=ADMIN_TOKEN, base_url=daemon.url + "/v1", max_retries=0)
        in_flight = asyncio.create_task(
            client.chat.completions.create(
                model="slow", messages=[{"role": "user", "content": "x"}]
            )
        )
        while not upstream.requests_to("/v1/chat/completions"):
            await asyncio.sleep(0.02)
        daemon.process.send_signal(signal.SIGTERM)
        completion = await in_flight
        assert completion.choices[0].message.content == "made it"
        assert await asyncio.wait_for(daemon.process.wait(), 20) == 0
        await client.close()


async def test_logs_are_json_with_request_ids_and_no_secrets(
    tmp_path: Path, daemons: list[Daemon]
) -> None:
    async with FakeUpstream(api_key=UPSTREAM_KEY) as upstream:
        config = tmp_path / "config.toml"
        config.write_text(
            "version = 1\n"
            "[[model_provider.providers]]\n"
            'provider_id = "oai"\nkind = "openai_compatible"\n'
            f'base_url = "{upstream.openai_base_url}"\n'
            'allow_private_base_url = true\napi_key_env = "UPSTREAM_KEY"\n'
            "[[model_provider.models]]\n"
            'model_id = "gpt-4o-mini"\nprovider_id = "oai"\n'
        )
        env = clean_env(
            tmp_path,
            PALYRA_ADMIN_TOKEN=ADMIN_TOKEN,
            UPSTREAM_KEY=UPSTREAM_KEY,
            PALYRA_DAEMON_LOG_LEVEL="debug",
        )
        daemon = await start_daemon(tmp_path, ["--config", str(config)], env)
        daemons.append(daemon)
        # An upstream that echoes the key in its error, as some real ones do.
        upstream.script("/v1/chat/completions", ErrorReply(401, f"bad key {UPSTREAM_KEY}"))
        upstream.script("/v1/chat/completions", ErrorReply(500, f"oops {UPSTREAM_KEY}"))
        async with aiohttp.ClientSession() as http:
            bodies = []
            for request_id in ("req-one", "req-two", "req-three"):
                async with http.post(
                    daemon.url + "/v1/chat/completions",
                    json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x"}]},
                    headers={"Authorization": f"Bearer {ADMIN_TOKEN}", "x-request-id": request_id},
                ) as response:
                    bodies.append(await response.text())
            async with http.get(
                daemon.url + "/v1/models", headers={"Authorization": "Bearer wrong-token"}
            ) as response:
                assert response.status == 401
        daemon.process.send_signal(signal.SIGTERM)
        await asyncio.wait_for(daemon.process.wait(), 20)
        # The upstream got the key: it was really used, so its absence below means something.
        assert (
            upstream.requests_to("/v1/chat/completions")[0]
            .headers["authorization"]
            .endswith(UPSTREAM_KEY)
        )
    raw_log = daemon.log_path.read_text()
    lines = daemon.log_lines()  # every line parses as JSON
    requests = [line for line in lines if line.get("event") == "request"]
    assert {"req-one", "req-two", "req-three"} <= {line.get("request_id") for line in requests}
    for secret in (UPSTREAM_KEY, ADMIN_TOKEN, "wrong-token"):
        assert secret not in raw_log
        assert all(secret not in body for body in bodies)


async def send_raw(port: int, request: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request)
    await writer.drain()
    answer = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    return answer


async def test_unparseable_requests_are_one_log_line_not_a_traceback(
    tmp_path: Path, daemons: list[Daemon]
) -> None:
    env = clean_env(tmp_path, PALYRA_ADMIN_TOKEN=ADMIN_TOKEN)
    daemon = await start_daemon(tmp_path, [], env)
    daemons.append(daemon)
    secret = "sk-secret-in-a-broken-header"
    broken = [
        # A control byte in a header (aiohttp quotes the whole line in its error).
        f"GET /v1/models HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {secret}\x1f\r\n\r\n",
        f"GET /console/session HTTP/1.1\r\nHost: x\r\nCookie: palyra_session={secret}.\x1f\r\n\r\n",
        # A header line longer than aiohttp takes.
        f"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Long: {secret}{'a' * 20000}\r\n\r\n",
    ]
    for request in broken:
        answer = await send_raw(daemon.port, request.encode())
        # (The answer quotes the client's own bytes back to it; the log must not.)
        assert answer.startswith((b"HTTP/1.1 400", b"HTTP/1.0 400")), answer[:200]
    daemon.process.send_signal(signal.SIGTERM)
    await asyncio.wait_for(daemon.process.wait(), 20)
    raw_log = daemon.log_path.read_text()
    assert "Traceback" not in raw_log and secret not in raw_log
    lines = daemon.log_lines()  # every line is JSON: nothing aiohttp wrote on its own
    assert len([line for line in lines if line.get("event") == "bad_http_request"]) == 3
