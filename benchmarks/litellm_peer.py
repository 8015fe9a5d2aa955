"""The peer: LiteLLM's proxy in a virtualenv of its own (benchmarks/.venv-litellm), pointed at
the same mock upstream as the daemon.

`pip install 'litellm[proxy]==1.110.2'` does not resolve (the extra pins a `litellm-proxy`
package the registry lacks), so the venv gets `litellm==1.110.2`, then the other requirements
of its `proxy` extra as read from the installed distribution's metadata, with the newest
`litellm-proxy-extras` and `litellm-enterprise`. The venv is made once and reused: a marker
file records what was installed.
"""

from __future__ import annotations

import os
import subprocess
import sys
import venv
from pathlib import Path

LITELLM_VERSION = "1.110.2"
HERE = Path(__file__).resolve().parent
VENV = HERE / ".venv-litellm"
MARKER = VENV / "palyra-bench-ready"
# Requirements of the proxy extra that cannot or should not be pinned as the metadata says.
_UNPINNED = {"litellm-proxy-extras", "litellm-enterprise"}
_SKIPPED = {"litellm-proxy"}

# Run inside the peer venv: print the `proxy` extra's requirements, one per line.
_READ_EXTRA = r"""
import re
from importlib.metadata import requires
from packaging.requirements import Requirement
for line in requires("litellm") or ():
    req = Requirement(line)
    if req.marker is None or not req.marker.evaluate({"extra": "proxy"}):
        continue
    if req.marker.evaluate({"extra": ""}):
        continue  # a base requirement, not the extra's
    extras = "[" + ",".join(sorted(req.extras)) + "]" if req.extras else ""
    print(req.name, str(req.specifier), extras, sep="\t")
"""


def python() -> Path:
    return VENV / "bin" / "python"


def litellm_bin() -> Path:
    return VENV / "bin" / "litellm"


def ready() -> bool:
    return MARKER.exists() and litellm_bin().exists()


def _pip(*args: str) -> None:
    subprocess.run(
        [str(python()), "-m", "pip", "install", "--disable-pip-version-check", "-q", *args],
        check=True,
    )


def ensure_venv(log: bool = True) -> Path:
    """Create and fill the peer venv unless it is already there; returns the `litellm` script."""
    if ready():
        return litellm_bin()
    if log:
        print(f"installing LiteLLM {LITELLM_VERSION} into {VENV} (once; takes minutes)", flush=True)
    if not python().exists():
        venv.EnvBuilder(with_pip=True, clear=True).create(VENV)
    _pip(f"litellm=={LITELLM_VERSION}", "packaging")
    out = subprocess.run(
        [str(python()), "-c", _READ_EXTRA], check=True, capture_output=True, text=True
    ).stdout
    wanted: list[str] = []
    for line in out.splitlines():
        name, spec, extras = [*line.split("\t"), "", ""][:3]
        if name in _SKIPPED:
            continue
        wanted.append(name + extras if name in _UNPINNED else name + extras + spec)
    if log:
        print("proxy extra requirements: " + " ".join(wanted), flush=True)
    _pip(f"litellm=={LITELLM_VERSION}", *wanted)
    MARKER.write_text(" ".join(wanted) + "\n")
    return litellm_bin()


def write_config(path: Path, mock: str) -> None:
    """Models mirroring the daemon's: chat, a 50 ms chat, streams, embeddings, and a failover
    pair (the first deployment answers 503, the fallback answers)."""
    models = [
        ("bench-chat", "gpt-4o-mini", f"{mock}/fast/v1"),
        ("bench-slow", "gpt-4o-mini", f"{mock}/slow/v1"),
        ("bench-hold", "gpt-4o-mini", f"{mock}/hold/v1"),
        ("bench-embed", "text-embedding-3-small", f"{mock}/fast/v1"),
        ("bench-failover", "gpt-4o-mini", f"{mock}/fail/v1"),
        ("bench-failover-b", "gpt-4o-mini", f"{mock}/fast/v1"),
    ]
    lines = ["model_list:"]
    for name, upstream, base in models:
        lines += [
            f"  - model_name: {name}",
            "    litellm_params:",
            f"      model: openai/{upstream}",
            f"      api_base: {base}",
            "      api_key: sk-bench-upstream",
        ]
    lines += [
        "litellm_settings:",
        "  num_retries: 0",
        "  request_timeout: 60",
        "  drop_params: true",
        "  set_verbose: false",
        '  fallbacks: [{"bench-failover": ["bench-failover-b"]}]',
        "general_settings:",
        "  master_key: sk-bench-admin",
    ]
    path.write_text("\n".join(lines) + "\n")


def env() -> dict[str, str]:
    out = dict(os.environ)
    out.update(LITELLM_LOCAL_MODEL_COST_MAP="True", LITELLM_LOG="ERROR", NO_DOCS="True")
    return out


if __name__ == "__main__":
    print(ensure_venv())
    sys.exit(0)
