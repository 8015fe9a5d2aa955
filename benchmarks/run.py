"""The benchmark harness: the daemon's overhead, measured against a fast mock upstream, side by
side with the floor (a bare aiohttp pass-through), LiteLLM's proxy and Portkey's gateway, in
one run.

    .venv/bin/python benchmarks/run.py            # everything; writes benchmarks/results.md
    .venv/bin/python benchmarks/run.py --quick --no-peer   # a few seconds, as the smoke test does

Processes, all on loopback (benchmarks/processes.py): the mock upstream
(benchmarks/mock_upstream.py), `palyrad` with a config pointing at it, the floor
(benchmarks/floor.py), LiteLLM's proxy (benchmarks/.venv-litellm, installed on first use),
Portkey's gateway (benchmarks/.venv-portkey, installed on first use with npm; see
benchmarks/portkey_peer.py) and the load generator (wrk when installed,
else benchmarks/loadgen.py; streams always use loadgen.py, which sees the first chunk; see
benchmarks/measure.py). Each scenario (benchmarks/scenarios.py) runs straight against the
mock first, then through each gateway: "added" latency is the gateway's percentile minus the
mock's, in the same wire format. The report is benchmarks/report.py.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

# Sibling scripts, not a package.
import litellm_peer  # noqa: E402
from measure import cpu_seconds, ensure_wrk, measure, rss_mb  # noqa: E402
from processes import (  # noqa: E402
    CLIENT_KEY_NAME,
    CLIENT_KEY_SETTINGS,
    CPU_AFFINITY,
    DEPLOYED_MODEL,
    EXTRA_MODELS,
    PYTHON,
    ROLES,
    Target,
    describe_pins,
    dispatched,
    fd_room,
    ledger_by_key,
    mock_target,
    parse_cpus,
    raise_fd_limit,
    start_client_key,
    start_daemon,
    start_deployed_daemon,
    start_floor,
    start_litellm,
    start_mock,
    start_portkey,
    start_workers_daemon,
    stop,
    workdir,
)
from report import fmt, report  # noqa: E402
from scenarios import (  # noqa: E402
    CLIENT_KEY,
    HOLD_MS,
    QUICK_HOLD_MS,
    WORKERS,
    Scenario,
    scenarios,
    uses_client_key,
    uses_deployments,
    uses_dialects,
    worker_counts,
)

PEERS = ("litellm", "portkey")
# Scenarios a peer sits out, and why: LiteLLM's 1,000 open streams alone take 40-100 s.
PEER_SKIPS = {
    "litellm": {"streams-5000": "LiteLLM not run on 5,000 open streams (its 1,000 take 40-100 s)"}
}

PORTKEY_NOTE = (
    "portkey: Portkey's gateway 1.15.2 (one Node process; headers x-portkey-provider and "
    "x-portkey-custom-host sent per scenario, failover as an x-portkey-config fallback); by "
    "design it holds each stream's first chunk back 25 ms (readStream() in its build), so its "
    "added TTFC is about 30 ms and its streams at 1 concurrent take 25 ms more; /v1/responses "
    "and /v1/messages are passed through to the provider's own route (palyrad translates "
    "Responses onto chat completions in responses-*)"
)

# --- token estimator ----------------------------------------------------------------------

PALYRA_TOKENS = """
import json, statistics, sys, time
from pathlib import Path
from palyra import tokens
from palyra.types import ChatRequest
text = Path({prompt!r}).read_text()
request = ChatRequest.model_validate({{"messages": [{{"role": "user", "content": text}}]}})
tokens.warm_up()
count = tokens.estimate_token_count(request)
runs = []
for _ in range({runs}):
    t = time.perf_counter(); tokens.estimate_token_count(request)
    runs.append((time.perf_counter() - t) * 1000)
runs.sort()
print(json.dumps({{"chars": len(text), "tokens": count, "p50": statistics.median(runs),
                  "p99": runs[min(len(runs) - 1, int(len(runs) * 0.99))]}}))
"""

# LiteLLM's own counter, as its proxy uses it for budgets; gpt-4o (o200k) when its
# vocabulary is available offline, else the cl100k it bundles.
PEER_TOKENS = """
import json, statistics, sys, time, warnings
from pathlib import Path
warnings.simplefilter("ignore")
import litellm
text = Path({prompt!r}).read_text()
messages = [{{"role": "user", "content": text}}]
model = "gpt-4o"
try:
    count = litellm.token_counter(model=model, messages=messages)
except Exception:
    model = "gpt-3.5-turbo"
    count = litellm.token_counter(model=model, messages=messages)
runs = []
for _ in range({runs}):
    t = time.perf_counter(); litellm.token_counter(model=model, messages=messages)
    runs.append((time.perf_counter() - t) * 1000)
runs.sort()
print(json.dumps({{"chars": len(text), "tokens": count, "model": model,
                  "p50": statistics.median(runs),
                  "p99": runs[min(len(runs) - 1, int(len(runs) * 0.99))]}}))
"""


def token_bench(
    python: str, template: str, prompt: Path, runs: int, env: dict[str, str] | None = None
) -> dict[str, Any] | str:
    code = template.format(prompt=str(prompt), runs=runs)
    out = subprocess.run(
        [python, "-c", code], capture_output=True, text=True, timeout=600, env=env, cwd=str(ROOT)
    )
    if out.returncode != 0:
        return "failed: " + (out.stderr.strip().splitlines() or ["?"])[-1][:200]
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def spread_note(deployed: Target) -> str:
    """How the deployed model's requests fell over its deployments: a deploy-* figure means
    little if one deployment took them all."""
    try:
        counts = dispatched(deployed, DEPLOYED_MODEL)
    except OSError as exc:
        return f"{DEPLOYED_MODEL}: per-deployment counts not read from /metrics: {exc}"
    if not counts:
        return f"{DEPLOYED_MODEL}: this palyrad's /metrics has no per-deployment counts"
    total = sum(counts.values()) or 1
    shares = ", ".join(
        f"{provider} {n:,} ({n / total:.0%})" for provider, n in sorted(counts.items())
    )
    return f"{DEPLOYED_MODEL} requests per deployment, whole run: {shares}"


def ledger_note(ledger: dict[str, Any], results: dict[str, Any], chosen: list[Scenario]) -> str:
    """What palyrad's ledger held at the end of the run, per key, so that a reader sees it was
    on, and that the key-* requests were the key's."""
    total = ledger["total"]["requests"]
    per_key = ", ".join(
        f"{g['key_name']} {g['requests']:,}"
        # Priced, so a key's budget was charged with it.
        + ("" if g["cost_usd"] is None else f" costing {g['cost_usd']:,.4f} USD")
        + (f" ({g['errors']:,} errors)" if g["errors"] else "")
        for g in ledger["groups"]
    )
    counted = sum(
        r.get("requests", 0)
        for sc in chosen
        if sc.via == CLIENT_KEY
        for r in [results.get(sc.key, {}).get("palyra", {})]
    )
    key_part = (
        f"; key-* counted {counted:,} answers with {CLIENT_KEY_NAME} (the ledger also has "
        "the load generators' untimed warm-ups)"
        if any(sc.via == CLIENT_KEY for sc in chosen)
        else ""
    )
    dropped = ledger.get("dropped")
    dropped_part = "" if dropped is None else f"; records dropped: {dropped:,}"
    return (
        f"ledger on: palyrad wrote {total:,} usage records in the run "
        f"(GET /console/v1/usage?group_by=key: {per_key or 'none'}){key_part}{dropped_part}"
    )


def worker_notes(results: dict[str, Any], chosen: list[Scenario]) -> list[str]:
    """Where the CPU went in each workers-* scenario: palyrad's master and each worker, the
    mock and the load generator, so that a reader sees what the two cores were shared by."""
    out = []
    for sc in chosen:
        r = results.get(sc.key, {}).get("palyra")
        if not sc.via.startswith(WORKERS) or r is None or "error" in r:
            continue
        spent = r.get("cpu_s_by_process") or []
        label = "master, then each worker" if len(spent) > 1 else "the one process"
        mock, load = r.get("mock_cpu_s", 0.0), r.get("loadgen_cpu_s", 0.0)
        busy = r.get("machine_busy_s", 0.0)
        rest = busy - sum(spent) - mock - load
        seconds = r.get("seconds") or sc.duration_s
        out.append(
            f"{sc.key}: CPU seconds over its {seconds:.1f} s ({os.cpu_count()} cores: "
            f"{seconds * (os.cpu_count() or 1):.1f} s): palyrad {sum(spent):.2f} ({label}: "
            f"{', '.join(f'{s:.2f}' for s in spent)}), the mock {mock:.2f}, the load generator "
            f"{load:.2f}, anything else on the machine {max(rest, 0.0):.2f} "
            f"(all cores busy {busy:.2f})"
        )
    return out


# --- main ---------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Palyra benchmarks, side by side with the floor, LiteLLM and Portkey"
    )
    parser.add_argument("--quick", action="store_true", help="tiny runs (smoke test)")
    parser.add_argument("--no-peer", action="store_true", help="skip both peers")
    parser.add_argument(
        "--peers",
        default=",".join(PEERS),
        help=f"comma-separated peers to run beside palyrad (of {', '.join(PEERS)}; "
        "default both; --no-peer: none)",
    )
    parser.add_argument(
        "--pin",
        action="append",
        default=[],
        metavar="ROLE=CPUS",
        help=f"run a role's processes on these CPUs only (roles: {', '.join(ROLES)}; CPUS "
        "as 0, 0,1 or 0-1; loadgen is wrk and loadgen.py), e.g. --pin mock=1 --pin loadgen=1",
    )
    parser.add_argument(
        "--no-floor", action="store_true", help="skip the bare aiohttp pass-through"
    )
    parser.add_argument(
        "--floor-loop",
        choices=("asyncio", "uvloop"),
        default="asyncio",
        help="the floor's event loop (default asyncio's own, as in every run before issue 17; "
        "uvloop costs it 6-12%% less CPU per request here, and palyrad runs on uvloop)",
    )
    parser.add_argument(
        "--hold-interval-ms",
        type=float,
        default=0.0,
        help=f"the mock's pause between the chunks of an open stream (default {HOLD_MS:g} ms, "
        f"{QUICK_HOLD_MS:g} with --quick): at 5,000 streams, 50 ms is 100,000 chunks a second",
    )
    parser.add_argument("--no-wrk", action="store_true", help="use the Python load generator")
    parser.add_argument("--only", default="", help="comma-separated scenario keys")
    parser.add_argument(
        "--output",
        default="",
        help="results file (default: benchmarks/results.md, not written with --quick)",
    )
    parser.add_argument("--json", default="", help="also write raw figures here")
    parser.add_argument("--keep", action="store_true", help="keep the work dir with logs")
    parser.add_argument(
        "--palyra-src",
        default="",
        help="run palyrad on the package in this tree (a worktree of an older commit, for "
        "before/after figures; pick scenarios it serves with --only)",
    )
    args = parser.parse_args(argv)
    peers = [] if args.no_peer else [p for p in args.peers.split(",") if p]
    unknown = sorted(set(peers) - set(PEERS))
    if unknown:
        parser.error(f"--peers: unknown peer {', '.join(unknown)} (known: {', '.join(PEERS)})")
    for spec in args.pin:
        role, _, cpus = spec.partition("=")
        if role not in ROLES:
            parser.error(f"--pin {spec}: unknown role {role!r} (roles: {', '.join(ROLES)})")
        try:
            CPU_AFFINITY[role] = parse_cpus(cpus)
        except ValueError as exc:
            parser.error(f"--pin {spec}: {exc}")

    fd_limit = raise_fd_limit()
    use_wrk = not args.no_wrk and ensure_wrk()
    hold_ms = args.hold_interval_ms or (QUICK_HOLD_MS if args.quick else HOLD_MS)
    chosen = scenarios(args.quick, hold_ms)
    if args.only:
        keys = set(args.only.split(","))
        chosen = [s for s in chosen if s.key in keys]
    notes: list[str] = []
    for sc in [s for s in chosen if s.requests and fd_room(s.requests) > fd_limit]:
        chosen.remove(sc)
        why = (
            f"{sc.key} not run: {sc.requests:,} open streams need an open-file limit of about "
            f"{fd_room(sc.requests):,}, and this process could raise its own to {fd_limit:,} "
            "only (ulimit -Hn)"
        )
        notes.append(why)
        print(why, flush=True)
    ledger_figures: dict[str, Any] | None = None
    results: dict[str, dict[str, dict[str, Any]]] = {}
    processes: list[subprocess.Popen[bytes]] = []
    with workdir(args.keep) as work:
        try:
            mock_process, mock = start_mock(work, hold_ms)
            processes.append(mock_process)
            targets_: list[Target] = [mock_target(mock)]
            if not args.no_floor:
                floor = start_floor(work, mock, args.floor_loop)
                notes.append(f"the floor ran on {args.floor_loop}'s event loop")
                assert floor.process is not None
                processes.append(floor.process)
                targets_.append(floor)
            dialects = uses_dialects(chosen)
            daemon = start_daemon(work, mock, dialects=dialects, palyra_src=args.palyra_src)
            if args.palyra_src:
                notes.append(f"palyrad ran on the package in {args.palyra_src}")
            if not dialects:
                notes.append("daemon config without the Responses and Messages providers")
            assert daemon.process is not None
            processes.append(daemon.process)
            targets_.append(daemon)
            if uses_client_key(chosen):
                try:
                    keyed = start_client_key(daemon)
                except RuntimeError as exc:
                    # A tree from before issue 15 has no client keys.
                    notes.append(f"key-* not run through palyrad: {exc}")
                    print(f"key-* not run through palyrad: {exc}", flush=True)
                else:
                    targets_.append(keyed)
                    k = CLIENT_KEY_SETTINGS
                    notes.append(
                        f"key-* sent with a client key ({CLIENT_KEY_NAME}: models "
                        f"{', '.join(k['models'])}, rpm {k['rpm']:,}, tpm {k['tpm']:,}, a "
                        f"{k['budget_usd']:,.0f} USD {k['budget_period']} budget; none binds) "
                        "to the palyrad of chat-c1 and chat-c16"
                    )
            deployed: Target | None = None
            if uses_deployments(chosen):
                try:
                    deployed = start_deployed_daemon(work, mock, palyra_src=args.palyra_src)
                except RuntimeError as exc:
                    # A tree from before issue 14 refuses a model_id on several providers.
                    notes.append(f"deploy-* not run through palyrad: {exc}")
                    print(f"deploy-* not run through palyrad: {exc}", flush=True)
                else:
                    assert deployed.process is not None
                    processes.append(deployed.process)
                    targets_.append(deployed)
                    notes.append(
                        f"deploy-* ran on a second palyrad: the same config plus "
                        f"{DEPLOYED_MODEL} (3 deployments, weighted) and {EXTRA_MODELS} more "
                        "models"
                    )
            for n in sorted(set(worker_counts(chosen))):
                try:
                    scaled = start_workers_daemon(work, mock, n, palyra_src=args.palyra_src)
                except RuntimeError as exc:
                    # Before issue 17 palyrad refuses the key, or reads it and serves one.
                    notes.append(f"workers-{n}-* not run: {exc}")
                    print(f"workers-{n}-* not run: {exc}", flush=True)
                else:
                    assert scaled.process is not None
                    processes.append(scaled.process)
                    targets_.append(scaled)
            if any(s.via.startswith(WORKERS) for s in chosen):
                notes.append(
                    "workers-*: a palyrad of their own each, [daemon] workers = 1 and = 2, "
                    "the usual config otherwise"
                )
            for name, start in (("litellm", start_litellm), ("portkey", start_portkey)):
                if name not in peers:
                    continue
                try:
                    peer = start(work, mock)
                except (RuntimeError, subprocess.CalledProcessError, OSError) as exc:
                    notes.append(f"{name} peer not run: {exc}")
                    print(f"{name} peer not run: {exc}", flush=True)
                    continue
                assert peer.process is not None
                processes.append(peer.process)
                targets_.append(peer)
                for key, why in PEER_SKIPS.get(name, {}).items():
                    if any(s.key == key for s in chosen):
                        peer.skips[key] = why
                        notes.append(why)
                if name == "portkey":
                    notes.append(PORTKEY_NOTE)
            notes.append(describe_pins())
            for sc in chosen:
                for target in targets_:
                    if target.route(sc) is None:
                        # LiteLLM is set up for chat and embeddings only; deploy-*, key-*
                        # and workers-* are palyrad's alone, served by daemons of their own.
                        continue
                    print(f"{sc.key:16s} {target.name:8s} ...", end=" ", flush=True)
                    mock_cpu = cpu_seconds(mock_process.pid)
                    try:
                        r = measure(target, sc, work, use_wrk, args.quick)
                    except (RuntimeError, subprocess.TimeoutExpired, KeyError) as exc:
                        r = {"error": str(exc)}
                        print(f"failed: {exc}", flush=True)
                    else:
                        lat = r["latency_ms"]
                        print(
                            f"{r['rps']:8,.0f} req/s  errors {r['errors']}  "
                            f"p50 {fmt(lat['p50'])}  p99 {fmt(lat['p99'])}  "
                            f"rss {fmt(r.get('peak_rss_mb'), 0)}  "
                            f"cpu/req {fmt(r.get('cpu_ms_per_req'), 3)} ms",
                            flush=True,
                        )
                        r["mock_cpu_s"] = round(cpu_seconds(mock_process.pid) - mock_cpu, 2)
                        if r.get("error_samples"):
                            print("   e.g. " + "; ".join(r["error_samples"][:2]), flush=True)
                    results.setdefault(sc.key, {})[target.name] = r
            notes += worker_notes(results, chosen)
            if daemon.process is not None:
                notes.append(f"palyrad RSS after the run: {rss_mb(daemon.process.pid):.0f} MB")
            try:
                ledger = ledger_by_key(daemon)
            except RuntimeError as exc:
                notes.append(f"palyrad's ledger not read: {exc}")
            else:
                ledger_figures = ledger
                notes.append(ledger_note(ledger, results, chosen))
            if deployed is not None and deployed.process is not None:
                notes.append(spread_note(deployed))
        finally:
            for process in reversed(processes):
                stop(process)
        runs = 5 if args.quick else 100
        # The same 100 KB mixed prompt (prose, code, JSON) as benchmarks/tokens_bench.py.
        from tokens_bench import mixed_prompt

        prompt = work / "prompt.txt"
        prompt.write_text(mixed_prompt())
        tokens: dict[str, Any] = {"palyra": token_bench(PYTHON, PALYRA_TOKENS, prompt, runs)}
        if "litellm" in peers and litellm_peer.ready():
            tokens["litellm"] = token_bench(
                str(litellm_peer.python()),
                PEER_TOKENS,
                prompt,
                max(5, runs // 5),
                litellm_peer.env(),
            )
    meta = {
        "when": time.strftime("%Y-%m-%d %H:%M"),
        "machine": f"{os.cpu_count()} cores, {platform.python_implementation()} "
        f"{platform.python_version()}, {platform.machine()}",
        "loadgen": "wrk (whole requests) + loadgen.py (streams)" if use_wrk else "loadgen.py",
        "quick": args.quick,
        "notes": notes,
        "ledger": ledger_figures,
    }
    text = report(results, tokens, meta, chosen)
    print()
    print(text)
    output = args.output or ("" if args.quick else str(HERE / "results.md"))
    if output:
        Path(output).write_text(text)
        print(f"written to {output}")
    if args.json:
        Path(args.json).write_text(
            json.dumps({"results": results, "tokens": tokens, "meta": meta}, indent=1)
        )
    failed = [k for k, per in results.items() for r in per.values() if "error" in r]
    return 1 if failed and args.quick else 0


if __name__ == "__main__":
    sys.exit(main())
