"""The report: benchmarks/results.md from the figures of one run, with the targets checked."""

from __future__ import annotations

from typing import Any

from scenarios import DIALECTS, OPEN_STREAMS, Scenario

Results = dict[str, dict[str, dict[str, Any]]]
GATEWAYS = ("floor", "palyra", "litellm", "portkey")
PEERS = ("litellm", "portkey")

# Issue 17: palyrad's CPU per request over the floor's in the same run, at most this, per kind
# of request (the scenarios of that kind that both serve).
FLOOR_CPU_LIMITS = {
    "chat-c1": 1.5,
    "chat-c16": 1.5,
    "stream-c1": 1.7,
    "stream-c16": 1.7,
    "embeddings-c16": 2.0,
    "embeddings-b64-c16": 2.0,
}


def fmt(value: float | None, digits: int = 2) -> str:
    return "–" if value is None else f"{value:,.{digits}f}"


def added(result: dict[str, Any], base: dict[str, Any] | None, key: str, q: str) -> float | None:
    if base is None or result.get(key) is None or base.get(key) is None:
        return None
    mine, theirs = result[key].get(q), base[key].get(q)
    if mine is None or theirs is None:
        return None
    return float(mine - theirs)


def report(
    results: Results,
    tokens: dict[str, Any],
    meta: dict[str, Any],
    scenario_list: list[Scenario],
) -> str:
    lines = [
        "# Benchmark results",
        "",
        f"Run {meta['when']} on {meta['machine']}; "
        f"load generator: {meta['loadgen']}; quick: {meta['quick']}.",
        "Latency in ms; for streams, p50/p90/p99 are the time to the last chunk and TTFC "
        "the time to the first. *added* = through the gateway minus straight to the mock, same "
        "percentile, same run. *floor* is a bare aiohttp pass-through (benchmarks/floor.py). "
        "Peak RSS is the gateway's process tree during the scenario; "
        "CPU ms/req is the gateway's CPU time (user + system) per request, the figure that "
        "other load on the machine moves least.",
        "",
        "| scenario | target | req/s | errors | p50 | p90 | p99 | added p50 | added p90 | "
        "added p99 | TTFC p50 | TTFC p99 | added TTFC p50 | added TTFC p99 | peak RSS MB | "
        "CPU ms/req |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for sc in scenario_list:
        per = results.get(sc.key, {})
        base = per.get("direct")
        for name in ("direct", *GATEWAYS):
            r = per.get(name)
            if r is None:
                continue
            if "error" in r:
                lines.append(f"| {sc.title} | {name} | failed: {r['error'][:120]} |" + " |" * 14)
                continue
            lat, ttfc = r["latency_ms"], r.get("ttfc_ms") or {}
            is_base = name == "direct"
            lines.append(
                "| "
                + " | ".join(
                    [
                        sc.title,
                        name,
                        fmt(r["rps"], 0),
                        str(r["errors"]),
                        fmt(lat["p50"]),
                        fmt(lat["p90"]),
                        fmt(lat["p99"]),
                        "" if is_base else fmt(added(r, base, "latency_ms", "p50")),
                        "" if is_base else fmt(added(r, base, "latency_ms", "p90")),
                        "" if is_base else fmt(added(r, base, "latency_ms", "p99")),
                        fmt(ttfc.get("p50")),
                        fmt(ttfc.get("p99")),
                        "" if is_base or not ttfc else fmt(added(r, base, "ttfc_ms", "p50")),
                        "" if is_base or not ttfc else fmt(added(r, base, "ttfc_ms", "p99")),
                        fmt(r.get("peak_rss_mb"), 0),
                        fmt(r.get("cpu_ms_per_req"), 3),
                    ]
                )
                + " |"
            )
    lines += side_by_side(results, scenario_list)
    lines += floor_table(results, scenario_list)
    lines += ["", "## Token estimator, 100 KB prompt", ""]
    for name, r in tokens.items():
        if isinstance(r, str):
            lines.append(f"- {name}: {r}")
        else:
            extra = f" (tokenizer for {r['model']})" if "model" in r else ""
            lines.append(
                f"- {name}{extra}: {r['chars']:,} chars → {r['tokens']:,} tokens; "
                f"p50 {r['p50']:.2f} ms, p99 {r['p99']:.2f} ms"
            )
    lines += ["", "## Targets", ""] + [f"- {t}" for t in targets(results)]
    notes = meta.get("notes") or []
    if notes:
        lines += ["", "## Notes", ""] + [f"- {n}" for n in notes]
    return "\n".join(lines) + "\n"


def added_headline(r: dict[str, Any] | None, base: dict[str, Any] | None) -> float | None:
    """Added p50: to the first chunk for a stream, to the answer otherwise."""
    if r is None or "error" in r:
        return None
    if r.get("ttfc_ms"):
        return added(r, base, "ttfc_ms", "p50")
    return added(r, base, "latency_ms", "p50")


def side_by_side(results: Results, scenario_list: list[Scenario]) -> list[str]:
    """palyrad, the floor and the peers, one row a scenario: req/s, palyrad's req/s over each
    peer's, CPU per request, added p50 (to the first chunk for streams) and peak RSS."""
    rows = []
    for sc in scenario_list:
        per = results.get(sc.key, {})
        ok = {n: r for n in GATEWAYS if (r := per.get(n)) is not None and "error" not in r}
        p, base = ok.get("palyra"), per.get("direct")
        if p is None:
            continue

        def ratio(peer: str, p: dict[str, Any] = p, ok: dict[str, Any] = ok) -> str:
            theirs = ok.get(peer)
            if theirs is None or not theirs["rps"]:
                return "–"
            return f"{p['rps'] / theirs['rps']:,.1f}×"

        cells = [sc.title]
        cells += [fmt(ok[n]["rps"], 0) if n in ok else "–" for n in GATEWAYS]
        cells += [ratio(peer) for peer in PEERS]
        cells += [fmt(ok[n].get("cpu_ms_per_req"), 3) if n in ok else "–" for n in GATEWAYS]
        cells += [fmt(added_headline(ok.get(n), base)) for n in GATEWAYS]
        cells += [fmt(ok[n].get("peak_rss_mb"), 0) if n in ok else "–" for n in GATEWAYS[1:]]
        rows.append("| " + " | ".join(cells) + " |")
    if not rows:
        return []
    return [
        "",
        "## Side by side: palyrad, the floor, LiteLLM and Portkey",
        "",
        "One run, the same mock and load generator for all. *added p50* is to the first chunk "
        "for streams (Portkey holds a stream's first chunk back 25 ms by design), to the "
        "answer otherwise. – : not run there (LiteLLM serves chat and embeddings only here; "
        "deploy-*, key-* and workers-* are palyrad's alone).",
        "",
        "| scenario | floor req/s | palyra req/s | litellm req/s | portkey req/s | "
        "palyra ÷ litellm | palyra ÷ portkey | floor CPU ms/req | palyra CPU ms/req | "
        "litellm CPU ms/req | portkey CPU ms/req | floor added p50 | palyra added p50 | "
        "litellm added p50 | portkey added p50 | palyra peak RSS MB | litellm peak RSS MB | "
        "portkey peak RSS MB |",
        "|---|" + "---:|" * 17,
        *rows,
    ]


def floor_table(results: Results, scenario_list: list[Scenario]) -> list[str]:
    """Palyra against the bare aiohttp pass-through: what its features cost."""
    rows = []
    for sc in scenario_list:
        per = results.get(sc.key, {})
        p, fl, base = per.get("palyra"), per.get("floor"), per.get("direct")
        if p is None or fl is None or "error" in p or "error" in fl:
            continue
        cpu_p, cpu_f = p.get("cpu_ms_per_req"), fl.get("cpu_ms_per_req")
        ratio = cpu_p / cpu_f if cpu_p and cpu_f else None
        rows.append(
            f"| {sc.title} | {fmt(fl['rps'], 0)} | {fmt(p['rps'], 0)} | "
            f"{fmt(added(fl, base, 'latency_ms', 'p50'))} | "
            f"{fmt(added(p, base, 'latency_ms', 'p50'))} | "
            f"{fmt(cpu_f, 3)} | {fmt(cpu_p, 3)} | {fmt(ratio, 2)}× |"
        )
    if not rows:
        return []
    return [
        "",
        "## Palyra vs the floor (bare aiohttp pass-through)",
        "",
        "| scenario | floor req/s | palyra req/s | floor added p50 | palyra added p50 | "
        "floor CPU ms/req | palyra CPU ms/req | CPU ratio |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
        *rows,
    ]


def targets(results: Results) -> list[str]:
    def get(key: str, name: str) -> dict[str, Any] | None:
        r = results.get(key, {}).get(name)
        return None if r is None or "error" in r else r

    out: list[str] = []

    def check(label: str, value: float | None, limit: float, at_most: bool, unit: str) -> None:
        if value is None:
            out.append(f"{label}: not measured")
            return
        ok = value <= limit if at_most else value >= limit
        sign = "≤" if at_most else "≥"
        out.append(
            f"{'PASS' if ok else 'FAIL'} {label}: {value:,.2f} {unit} "
            f"(target {sign} {limit:,} {unit})"
        )

    base1, p1 = get("chat-c1", "direct"), get("chat-c1", "palyra")
    if p1:
        check(
            "added latency at 1 concurrent, p50",
            added(p1, base1, "latency_ms", "p50"),
            1,
            True,
            "ms",
        )
        check(
            "added latency at 1 concurrent, p99",
            added(p1, base1, "latency_ms", "p99"),
            3,
            True,
            "ms",
        )
    base16, p16 = get("chat-c16", "direct"), get("chat-c16", "palyra")
    if p16:
        check("req/s at 16 concurrent", p16["rps"], 1500, False, "req/s")
        check("added p99 at 16 concurrent", added(p16, base16, "latency_ms", "p99"), 15, True, "ms")
    bs, ps = get("stream-c1", "direct"), get("stream-c1", "palyra")
    if ps:
        check(
            "streamed added TTFC p50 (1 concurrent)", added(ps, bs, "ttfc_ms", "p50"), 1, True, "ms"
        )
    po = get("streams-1000", "palyra")
    if po:
        check("open streams: errors", po["errors"], 0, True, "errors")
        check("open streams: peak RSS", po.get("peak_rss_mb"), 150, True, "MB")
    many, many_base = get("streams-5000", "palyra"), get("streams-5000", "direct")
    if many:
        n = f"{many['requests'] + many['errors']:,}"
        if many.get("peak_open") is not None:
            # Streams that end before the last ones start were never open together.
            out.append(
                f"{n} open streams, one worker: at most {many['peak_open']:,} were open at "
                f"once (from their first byte to their end; straight from the mock: "
                f"{(many_base or {}).get('peak_open', 0):,})"
            )
        check(f"{n} open streams, one worker: errors", many["errors"], 0, True, "errors")
        check(
            f"{n} open streams, one worker: added TTFC p99",
            added(many, many_base, "ttfc_ms", "p99"),
            50,
            True,
            "ms",
        )
        total = many["requests"] + many["errors"]
        if many.get("peak_open") is not None and many["peak_open"] < 0.95 * total:
            # Memory with a fraction of the streams open says little of memory with all.
            out.append(
                f"{n} open streams, one worker: peak RSS {fmt(many.get('peak_rss_mb'), 0)} MB "
                f"with at most {many['peak_open']:,} open at once: not shown "
                "(target ≤ 300 MB with all open)"
            )
        else:
            check(
                f"{n} open streams, one worker: peak RSS", many.get("peak_rss_mb"), 300, True, "MB"
            )
    out += dialect_targets(results)
    out += deployment_targets(results)
    out += client_key_targets(results)
    out += floor_targets(results)
    peer16 = get("chat-c16", "litellm")
    if p16 and peer16 and peer16["rps"]:
        check("req/s at 16 concurrent vs LiteLLM", p16["rps"] / peer16["rps"], 5, False, "×")
    elif p16:
        out.append("req/s vs LiteLLM: not measured (peer not run)")
    out += portkey_targets(results)
    out += worker_targets(results)
    return out


def floor_targets(results: Results) -> list[str]:
    """Issue 17, point 1: palyrad's CPU per request over the floor's, same run: whole chat at
    most 1.5x, streamed 1.7x, embeddings 2x."""
    out = []
    for key, limit in FLOOR_CPU_LIMITS.items():
        per = results.get(key, {})
        p, fl = per.get("palyra"), per.get("floor")
        if p is None and fl is None:
            continue
        if p is None or fl is None or "error" in p or "error" in fl:
            out.append(f"{key}: CPU per request against the floor's not measured")
            continue
        mine, floor = p.get("cpu_ms_per_req"), fl.get("cpu_ms_per_req")
        if not mine or not floor:
            out.append(f"{key}: CPU per request against the floor's not measured")
            continue
        ratio = mine / floor
        verdict = "PASS" if ratio <= limit else "FAIL"
        out.append(
            f"{verdict} {key}: palyrad CPU per request {ratio:.2f}× the floor's "
            f"({mine:.3f} against {floor:.3f} ms; target ≤ {limit}×)"
        )
    return out


def portkey_targets(results: Results) -> list[str]:
    """Issue 17, point 2: at least 3x Portkey's req/s at 16 concurrent whole chats, and ahead
    of it in every streamed scenario both served."""

    def both(key: str) -> tuple[dict[str, Any], dict[str, Any]] | None:
        p, pk = results.get(key, {}).get("palyra"), results.get(key, {}).get("portkey")
        if p is None or pk is None or "error" in p or "error" in pk or not pk["rps"]:
            return None
        return p, pk

    out = []
    pair = both("chat-c16")
    if pair is not None:
        p, pk = pair
        ratio = p["rps"] / pk["rps"]
        out.append(
            f"{'PASS' if ratio >= 3 else 'FAIL'} req/s at 16 concurrent vs Portkey: "
            f"{ratio:.2f}× ({p['rps']:,.0f} against {pk['rps']:,.0f}; target ≥ 3×)"
        )
    elif results.get("chat-c16", {}).get("palyra"):
        out.append("req/s vs Portkey: not measured (peer not run)")
    for key, per in results.items():
        pair = both(key) if any(r.get("ttfc_ms") for r in per.values()) else None
        if pair is None:
            continue
        p, pk = pair
        ratio = p["rps"] / pk["rps"]
        # An open-streams scenario's req/s is its hold time's: errors say more there.
        extra = f", errors {p['errors']} against {pk['errors']}" if key in OPEN_STREAMS else ""
        ahead = ratio > 1 and p["errors"] <= pk["errors"]
        out.append(
            f"{'PASS' if ahead else 'FAIL'} {key} vs Portkey: {ratio:.2f}× its req/s "
            f"({p['rps']:,.0f} against {pk['rps']:,.0f}{extra}; target: ahead)"
        )
    return out


def worker_targets(results: Results) -> list[str]:
    """Issue 17, point 3: two workers serve at least 1.4x one worker's req/s at 64 concurrent
    whole chats."""
    one = results.get("workers-1-c64", {}).get("palyra")
    two = results.get("workers-2-c64", {}).get("palyra")
    if "workers-1-c64" not in results and "workers-2-c64" not in results:
        return []
    if one is None or two is None or "error" in one or "error" in two or not one["rps"]:
        return ["workers = 2 against workers = 1 at 64 concurrent: not measured (see Notes)"]
    ratio = two["rps"] / one["rps"]
    return [
        f"{'PASS' if ratio >= 1.4 else 'FAIL'} workers = 2 against workers = 1, 64 concurrent: "
        f"{ratio:.2f}× the req/s ({two['rps']:,.0f} against {one['rps']:,.0f}; target ≥ 1.4×)"
    ]


def dialect_targets(results: Results) -> list[str]:
    """The Responses and Messages dialects at 1 concurrent, held to chat completions' bar:
    added p50 at most 1 ms for whole answers, and for streams to the first event (as for
    streamed chat); a stream's added p50 to its last event is shown beside it."""
    out = []
    for key, per in results.items():
        endpoint = key.split("-", 1)[0]
        if endpoint not in DIALECTS or not key.endswith("-c1"):
            continue
        mine, base = per.get("palyra"), per.get("direct")
        if mine is None or base is None or "error" in mine or "error" in base:
            out.append(f"{key}: added p50 not measured")
            continue
        if mine["errors"] or not mine["requests"]:
            # A 404 or 400 is quick: its latency says nothing about the dialect.
            out.append(f"FAIL {key}: {mine['errors']} errors in {mine['requests']} requests")
            continue
        if mine.get("ttfc_ms"):
            value = added(mine, base, "ttfc_ms", "p50")
            label = f"{key}: added TTFC p50"
            last = added(mine, base, "latency_ms", "p50")
            note = f"; to the last event {fmt(last)} ms"
        else:
            value, label, note = added(mine, base, "latency_ms", "p50"), f"{key}: added p50", ""
        if value is None:
            out.append(f"{label}: not measured")
            continue
        verdict = "PASS" if value <= 1 else "FAIL"
        out.append(f"{verdict} {label}: {value:,.2f} ms (target ≤ 1 ms){note}")
    return out


def deployment_targets(results: Results) -> list[str]:
    """One model over three deployments among 100 more models (issue 14): added p50 at 1
    concurrent at most 1 ms, as for chat; req/s at 16 concurrent within 10% of chat-c16 (one
    deployment, the usual config) in the same run, so the machine's speed cancels out."""
    return beside_chat(results, "deploy", "3 deployments, +100 models", "one deployment, same run")


def client_key_targets(results: Results) -> list[str]:
    """Chat sent with a client key (issue 15), the ledger on as on every run: added p50 at 1
    concurrent at most 1 ms; req/s at 16 concurrent within 10% of chat-c16 (the admin token,
    same daemon) in the same run."""
    return beside_chat(results, "key", "client key, ledger on", "admin token, same run")


def beside_chat(results: Results, prefix: str, what: str, theirs: str) -> list[str]:
    """The targets of a variant of whole chat, `{prefix}-c1` and `{prefix}-c16`: added p50 at
    1 concurrent at most 1 ms; req/s at 16 concurrent at least 0.90x chat-c16's."""

    def get(key: str, name: str) -> dict[str, Any] | None:
        r = results.get(key, {}).get(name)
        return None if r is None or "error" in r else r

    def failed(key: str, r: dict[str, Any]) -> str | None:
        # A 401, 404 or 429 is quick: its latency and req/s say nothing about the variant.
        if r["errors"] or not r["requests"]:
            return f"FAIL {key}: {r['errors']} errors in {r['requests']} requests"
        return None

    out = []
    c1, c16 = f"{prefix}-c1", f"{prefix}-c16"
    if c1 in results:
        mine, base = get(c1, "palyra"), get(c1, "direct")
        problem = failed(c1, mine) if mine else None
        value = added(mine, base, "latency_ms", "p50") if mine else None
        if problem:
            out.append(problem)
        elif value is None:
            out.append(f"{c1}: added p50 not measured")
        else:
            verdict = "PASS" if value <= 1 else "FAIL"
            out.append(f"{verdict} {c1} ({what}): added p50 {value:,.2f} ms (target ≤ 1 ms)")
    if c16 in results:
        mine, single = get(c16, "palyra"), get("chat-c16", "palyra")
        problem = failed(c16, mine) if mine else None
        if problem:
            out.append(problem)
        elif mine is None or single is None or not single["rps"]:
            missing = c16 if mine is None else "chat-c16, its comparison,"
            out.append(f"{c16}: req/s against chat-c16 not measured ({missing} did not run)")
        else:
            ratio = mine["rps"] / single["rps"]
            verdict = "PASS" if ratio >= 0.9 else "FAIL"
            out.append(
                f"{verdict} {c16} ({what}): {mine['rps']:,.0f} req/s, "
                f"{ratio:.2f}× chat-c16's {single['rps']:,.0f} ({theirs}; "
                "target ≥ 0.90×, within 10%)"
            )
    return out
