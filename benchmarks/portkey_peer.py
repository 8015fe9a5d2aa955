"""The second peer: Portkey's open-source AI gateway (npm `@portkey-ai/gateway`, a Node/Hono
server), installed pinned into benchmarks/.venv-portkey (git-ignored, made once and reused,
a few seconds with the npm registry reachable) and pointed at the same mock upstream.

What it needs, and where each fact comes from (checked on this machine, 2026-11-26, node
v20.20.2, npm 11):

- Pinned: `benchmarks/portkey/package.json` asks for `@portkey-ai/gateway` 1.15.2 (the
  newest in the registry) with npm `overrides` for `@hono/node-server` 1.13.5 and
  `@hono/node-ws` 1.2.0, and `package-lock.json` fixes the rest. The gateway declares
  node-server ^1.3.3, which now resolves to 1.19.x, and from 1.14 on every streamed request
  answers 500 (`TypeError: immutable` in the gateway's `updateHeaders`; Portkey's issue
  #1389, Portkey-AI/gateway). 1.13.5 is what Portkey's own repository pins; node-ws >= 1.3
  wants node-server ^1.19, 1.2.0 accepts ^1.11.1 (it serves only /v1/realtime).
- Portkey's one-line patch to node-server 1.13.5 (its repository's
  `patches/@hono+node-server+1.13.5.patch`: `return await responseViaResponseObject(...)`)
  is applied here, because the npm tarball does not ship its `patches/` folder (so its
  postinstall `patch-package` has nothing to apply, and npm 11 skips install scripts anyway).
- `benchmarks/portkey/bind-loopback.mjs`, a `node --import` preload: the gateway calls
  `serve({fetch, port})` without a host, so it would listen on every interface.
- It has no server-side routing config: every request names its upstream in headers,
  `x-portkey-provider` and `x-portkey-custom-host` (or one `x-portkey-config` JSON), else 400.
  The harness sends them on the wire, as Portkey's clients do, per scenario (the mock's
  behaviour is in its path: /fast/, /slow/, /hold/), with the upstream key as the bearer
  token; failover is an `x-portkey-config` of strategy `fallback` over two targets.
- By design it holds a stream's first chunk back 25 ms (`readStream()` in its build:
  `setTimeout(..., 25)`): its added time to first chunk is about 30 ms, and a stream at 1
  concurrent takes 25 ms more. One Node process: about one core at most.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

GATEWAY_VERSION = "1.15.2"
NODE_SERVER_VERSION = "1.13.5"
NODE_WS_VERSION = "1.2.0"
HERE = Path(__file__).resolve().parent
SOURCE = HERE / "portkey"  # committed: package.json, package-lock.json, bind-loopback.mjs
DIR = HERE / ".venv-portkey"  # git-ignored: what npm installs
MARKER = DIR / "palyra-bench-ready"
PRELOAD = "bind-loopback.mjs"
_PATCH_FROM = "return responseViaResponseObject(res, outgoing, options);"
_PATCH_TO = "return await responseViaResponseObject(res, outgoing, options);"
# The upstream key the mock is sent (it checks none); Portkey forwards the bearer token.
UPSTREAM_KEY = "sk-bench-upstream"


def server_script() -> Path:
    return DIR / "node_modules" / "@portkey-ai" / "gateway" / "build" / "start-server.js"


def _version(package_json: Path) -> str | None:
    try:
        version = json.loads(package_json.read_text())["version"]
    except (OSError, ValueError, KeyError):
        return None
    return str(version)


def _resolved(name: str) -> Path:
    """Where the gateway resolves `name` from: its own node_modules first, then the top."""
    nested = DIR / "node_modules" / "@portkey-ai" / "gateway" / "node_modules" / name
    return nested if nested.exists() else DIR / "node_modules" / name


def installed() -> tuple[str | None, str | None, str | None]:
    """The gateway's, node-server's and node-ws's versions on disk, as the gateway sees them."""
    return (
        _version(DIR / "node_modules" / "@portkey-ai" / "gateway" / "package.json"),
        _version(_resolved("@hono/node-server") / "package.json"),
        _version(_resolved("@hono/node-ws") / "package.json"),
    )


WANTED = (GATEWAY_VERSION, NODE_SERVER_VERSION, NODE_WS_VERSION)


def ready() -> bool:
    return MARKER.exists() and installed() == WANTED and (DIR / PRELOAD).exists()


def ensure_installed(log: bool = True) -> Path:
    """Install the pinned gateway unless it is already there; returns its start script.
    A RuntimeError says what is missing (node, npm, the registry) or what went wrong."""
    if ready():
        return server_script()
    for tool in ("node", "npm"):
        if shutil.which(tool) is None:
            raise RuntimeError(f"{tool} not found (Portkey's gateway needs Node.js >= 18 and npm)")
    if log:
        print(f"installing Portkey's gateway {GATEWAY_VERSION} into {DIR} (once)", flush=True)
    DIR.mkdir(parents=True, exist_ok=True)
    for name in ("package.json", "package-lock.json"):
        shutil.copyfile(SOURCE / name, DIR / name)
    if installed() != WANTED:
        out = subprocess.run(
            ["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"],
            cwd=DIR,
            capture_output=True,
            text=True,
        )
        if out.returncode != 0:
            raise RuntimeError(f"npm ci failed: {(out.stderr or out.stdout).strip()[-400:]}")
        if installed() != WANTED:
            raise RuntimeError(f"npm installed {installed()}, wanted {WANTED}")
    patch_node_server()
    shutil.copyfile(SOURCE / PRELOAD, DIR / PRELOAD)
    MARKER.write_text(" ".join(WANTED) + "\n")
    return server_script()


def patch_node_server() -> None:
    """Portkey's own one-line patch to node-server 1.13.5, applied once."""
    path = _resolved("@hono/node-server") / "dist" / "index.mjs"
    text = path.read_text()
    if _PATCH_TO in text:
        return
    if _PATCH_FROM not in text:
        raise RuntimeError(f"{path} does not look like node-server {NODE_SERVER_VERSION}")
    path.write_text(text.replace(_PATCH_FROM, _PATCH_TO, 1))


def command(port: int) -> list[str]:
    """The gateway on 127.0.0.1:`port` (it takes the port only as `--port=N`)."""
    return [
        "node",
        "--import",
        str(DIR / PRELOAD),
        str(server_script()),
        f"--port={port}",
        "--headless",
    ]


def headers(custom_host: str, provider: str = "openai") -> dict[str, str]:
    """What a Portkey client sends beside its request to name the upstream."""
    return {"x-portkey-provider": provider, "x-portkey-custom-host": custom_host}


def fallback_config(first: str, second: str) -> dict[str, str]:
    """Failover as Portkey configures it: `first`, then `second` when it fails (on any
    non-2xx, Portkey's default)."""
    targets = [
        {"provider": "openai", "api_key": UPSTREAM_KEY, "custom_host": host}
        for host in (first, second)
    ]
    config = {"strategy": {"mode": "fallback"}, "targets": targets}
    return {"x-portkey-config": json.dumps(config, separators=(",", ":"))}


if __name__ == "__main__":
    print(ensure_installed())
    sys.exit(0)
