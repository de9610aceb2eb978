"""Turns scripts/bench-compare.sh's results (JSON lines) into the `compare` section of docs/benchmarks.md
(printed) and, with --plot, a PNG of p99 latency against offered load for every contender."""
import argparse
import json
import os
import platform

NAMES = {
    "direct": "direct to the replica",
    "lyceum": "lyceum gateway (ours)",
    "nginx": "nginx (upstream keepalive, `proxy_buffering off`)",
    "haproxy": "HAProxy (`balance leastconn`)",
    "vllm-router": "vllm-router",
    "sglang-router": "sglang-router",
    "litellm": "LiteLLM proxy",
}
RUST_ROUTERS = ("vllm-router", "sglang-router")
ENV = {k[len("BENCH_"):].lower(): v for k, v in os.environ.items() if k.startswith("BENCH_")}


def num(x, digits=2, sign=False):
    if x is None:
        return "n/a"
    return f"{x:+.{digits}f}" if sign else f"{x:.{digits}f}"


def pct(x):
    return "n/a" if x is None else f"{100 * x:.1f}%"


def rate_label(r):
    return f"{r:,.0f}"


def offered_load(trace, skip, span, speed, itl):
    """The slice's work as a share of the 16 sequence slots: arrival rate times mean time a request holds a slot."""
    import csv
    import datetime
    if not trace or not os.path.exists(trace) or not itl:
        return ""
    rows = list(csv.DictReader(open(trace)))
    t0 = datetime.datetime.fromisoformat(rows[0]["TIMESTAMP"][:26])
    busy, count = 0.0, 0
    for r in rows:
        t = (datetime.datetime.fromisoformat(r["TIMESTAMP"][:26]) - t0).total_seconds()
        if skip <= t < skip + span:
            busy += (20 + 0.02 * (int(r["ContextTokens"]) + 4) + itl * (max(1, int(r["GeneratedTokens"])) - 1)) / 1000
            count += 1
    if not count:
        return ""
    return (f"; {count / span * speed:.1f} requests/s holding a slot {busy / count:.2f} s on average: an offered load of "
            f"{busy / (span / speed) / 16:.0%} of the 16 slots")


def load(path):
    rows = [json.loads(line) for line in open(path) if line.strip()]
    order = []
    for r in rows:
        if r.get("mode") in ("idle", "status") and r["label"] not in order and not str(r.get("part", "overhead")).startswith("lb"):
            order.append(r["label"])
    return rows, order


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("results")
    parser.add_argument("--plot")
    args = parser.parse_args()
    rows, order = load(args.results)
    status = {r["label"]: r["status"] for r in rows if r["mode"] == "status" and r.get("part") == "overhead"}
    idle = {r["label"]: r for r in rows if r["mode"] == "idle"}
    rate = {}
    for r in rows:
        if r["mode"] == "rate":
            rate.setdefault(r["label"], {})[r["rps"]] = r
    streams = {}
    for r in rows:
        if r["mode"] == "streams":
            streams.setdefault(r["label"], {})[r["concurrency"]] = r
    main_speed = float(ENV.get("lb_speedup", 0) or 0)
    all_replays = [r for r in rows if r["mode"] == "replay"]
    replays = [r for r in all_replays if float(r.get("speedup", main_speed)) == main_speed]
    sweep = [r for r in all_replays if float(r.get("speedup", main_speed)) != main_speed]
    lb_status = [r for r in rows if r["mode"] == "status" and str(r.get("part", "")).startswith("lb")]

    lat_rates = [float(x) for x in ENV.get("lat_rates", "100 1000 2500").split()]
    search_rates = [float(x) for x in ENV.get("search_rates", "").split()]
    cpu_rate = float(ENV.get("cpu_rate", "1000"))
    conc = [int(x) for x in ENV.get("streams", "16 64").split()]
    direct = rate.get("direct", {})
    direct_streams = streams.get("direct", {})

    def added(label, rps, key):
        r, d = rate.get(label, {}).get(rps), direct.get(rps)
        if not r or not d or r.get("ok", 0) == 0:
            return None
        return r[key] - d[key]

    def highest_held(label):
        held = [rps for rps, r in sorted(rate.get(label, {}).items()) if r.get("search") and r.get("held")]
        searched = [rps for rps, r in sorted(rate.get(label, {}).items()) if r.get("search")]
        if not searched:
            return None, None
        failed = next((rps for rps in searched if not rate[label][rps]["held"]), None)
        return (max(held) if held else 0), failed

    def err_note(r):
        if r is None:
            return ""
        if r.get("killed"):
            return " (run killed)"
        if not r.get("held"):
            return f" (**not held**: {100 * r['errors'] / max(1, r['sent']):.1f}% errors)"
        return ""

    cpu = os.popen("grep -m1 'model name' /proc/cpuinfo").read().split(":", 1)[-1].strip() or "unknown"
    out = []
    w = out.append
    w("## Side by side: lyceum against nginx, HAProxy, vllm-router, sglang-router and LiteLLM (`scripts/bench-compare.sh`)\n")
    w(f"Measured on {os.cpu_count()} cores ({cpu}), {platform.system()} {platform.release()}; the whole script took "
      f"{int(ENV.get('elapsed', 0)) // 60} min {int(ENV.get('elapsed', 0)) % 60} s. Command:\n")
    w(f"    {ENV.get('command', 'scripts/bench-compare.sh')}\n")
    w("Every contender stands in front of the very same simulator replicas (started once, by the lyceum server) on loopback and gets the "
      "same open-loop schedules from `lyceum-bench` (latency counted from each request's scheduled send time, HdrHistogram). "
      "The proxy under test is pinned to CPU 0 (`taskset -c 0`); the replicas and the load generator share CPU 1. While another "
      "contender is measured the lyceum server, which then only health-checks the replicas, is moved to CPU 1 so that CPU 0 is the "
      "proxy's alone. Every contender runs with its defaults except: one worker/process where that is a setting (nginx "
      "`worker_processes 1`, LiteLLM `--num_workers 1`; HAProxy, the routers and lyceum size their threads to the one CPU they get), "
      "no per-request access log (nginx `access_log off`, HAProxy without `log`, `--log-level warning`/`warn` for lyceum and the routers, "
      "`LITELLM_LOG=WARNING`), and metrics endpoints on loopback. The routers keep their default health checks, retries and "
      "circuit breakers; nginx and HAProxy have no active health checks. HAProxy gets `option http-no-delay`, its documented "
      "setting for interactive traffic: without it, it held server-sent events back to send them together (while this script "
      "was written: time to first token p50 39 ms against 6 ms with it, at 16 streams). LiteLLM needs a master key, so it and lyceum get a bearer key; "
      "the others none. Versions: " + "; ".join(v["version"] for k, v in idle.items() if v.get("version")) + ".\n")

    # ---- Part 1 ------------------------------------------------------------------------------------------------
    part1 = bool(rate or streams or status)
    chunks_exact = {}
    if part1:
        w("### Overhead: one replica (2 ms to first token, 2 ms between tokens, no jitter)\n")
        w(f"Non-streaming requests (max_tokens 4) at fixed rates for {ENV.get('duration', '?')} s each after {ENV.get('warmup', '?')} s of warm-up; "
          f"a request counts as an error when it is not answered 200 within {ENV.get('req_timeout', '?')} s of its scheduled time. "
          f"*Highest rate held*: the step search over {', '.join(rate_label(x) for x in search_rates)} req/s, each run ascending, stopping at the "
          "first rate with 0.1% errors or more. Streams: 32 tokens each, 20 streams per concurrent slot, back to back. "
          f"CPU-seconds: utime+stime of all the proxy's processes and threads (from /proc, workers and children included; for lyceum the "
          f"server process alone, whose children are the shared replicas), over the whole {rate_label(cpu_rate)} req/s run, warm-up included, "
          "per 1,000 requests sent. RSS: the sum over those processes, idle before the first run and right after that run.\n")
        head = ["contender"] + [f"added p50 / p99 ms, {rate_label(r)} req/s" for r in lat_rates] + ["highest rate held, req/s"]
        for c in conc:
            head.append(f"added TTFT p99 / gap p99 ms, {c} streams")
        head += ["chunks = replica's", f"CPU-s per 1,000 req ({rate_label(cpu_rate)} req/s)", "RSS MiB idle / loaded"]
        w("| " + " | ".join(head) + " |")
        w("|" + "---|" * len(head))
        expected_chunks = 32
        chunks_exact = {}
        for label in order:
            name = NAMES.get(label, label)
            if label in status:
                w(f"| {name} | " + " | ".join([status[label]] + [""] * (len(head) - 2)) + " |")
                continue
            cells = [name]
            for rps in lat_rates:
                r = rate.get(label, {}).get(rps)
                if r is None:
                    cells.append("not run")
                elif r.get("ok", 0) == 0:
                    cells.append(f"no answers{err_note(r)}")
                elif label == "direct":
                    cells.append(f"{num(r['p50_ms'])} / {num(r['p99_ms'])} (absolute){err_note(r)}")
                else:
                    cells.append(f"{num(added(label, rps, 'p50_ms'), sign=True)} / {num(added(label, rps, 'p99_ms'), sign=True)}{err_note(r)}")
            held, failed = highest_held(label)
            cells.append("n/a" if held is None else (f"{rate_label(held)}" + (f" (fails at {rate_label(failed)})" if failed else " (top of the search)")))
            ok_all = True
            for c in conc:
                s, d = streams.get(label, {}).get(c), direct_streams.get(c)
                if s is None:
                    cells.append("not run")
                    ok_all = False
                    continue
                exact = s.get("errors", 1) == 0 and s.get("streams", 0) > 0 and s.get("chunks_min") == s.get("chunks_max") == (
                    d["chunks_max"] if d else expected_chunks)
                ok_all = ok_all and exact
                if s.get("killed"):
                    cells.append("run killed")
                elif label == "direct":
                    cells.append(f"{num(s['ttft_p99_ms'])} / {num(s['gap_p99_ms'])} (absolute)")
                elif d:
                    errs = f" ({s['errors']} errors)" if s.get("errors") else ""
                    cells.append(f"{num(s['ttft_p99_ms'] - d['ttft_p99_ms'], sign=True)} / {num(s['gap_p99_ms'] - d['gap_p99_ms'], sign=True)}{errs}")
                else:
                    cells.append(f"{num(s['ttft_p99_ms'])} / {num(s['gap_p99_ms'])} (absolute)")
            chunk_text = []
            for c in conc:
                s = streams.get(label, {}).get(c)
                if s and not s.get("killed"):
                    chunk_text.append(f"{s['chunks_min']}-{s['chunks_max']}")
            chunks_exact[label] = ok_all
            cells.append(("yes" if ok_all else "**no**") + (f" ({', '.join(chunk_text)})" if chunk_text else ""))
            r = rate.get(label, {}).get(cpu_rate)
            if r and "cpu_s" in r:
                cells.append(f"{num(1000 * r['cpu_s'] / max(1, r.get('sent_with_warmup', r['sent'])), 3)}{' (rate not held)' if not r.get('held') else ''}")
            else:
                cells.append("n/a")
            i = idle.get(label, {})
            cells.append(f"{num(i['rss_kib'] / 1024, 1)} / {num(r['rss_kib'] / 1024, 1)}" if i.get("rss_kib") and r and "rss_kib" in r else "n/a")
            w("| " + " | ".join(cells) + " |")
        if args.plot:
            w(f"\n![p99 latency against offered load]({os.path.basename(args.plot)})\n")
            w("p99 latency (absolute, log scale) against the offered rate; hollow markers: the rate was not held (0.1% errors or more).")

    # ---- Part 2 ------------------------------------------------------------------------------------------------
    rr = next((r for r in replays if r["label"] == "nginx" and r.get("goodput") is not None), None)
    ours_lb = next((r for r in replays if r["label"] == "lyceum" and r.get("goodput") is not None), None)
    if replays or lb_status:
        skip, span, speed = float(ENV.get("lb_skip", 0)), float(ENV.get("lb_span", 0)), float(ENV.get("lb_speedup", 1))
        n = next((r["requests"] for r in replays if "requests" in r), None)
        offered = offered_load(ENV.get("trace"), skip, span, speed, float(ENV.get("lb_itl_ms", "0") or 0))
        w("\n### Load balancing: Azure conversation trace, 4 replicas of 4 sequences\n")
        w(f"Trace seconds {skip:.0f} to {skip + span:.0f} of `azure-llm-2023-conv.csv` ({n} requests), replayed {speed:g}x faster "
          f"({span / speed:.0f} s), open loop and streaming, through each balancer to the same 4 replicas (at most 4 sequences each, "
          f"more wait in the replica's queue; 20 ms + 0.02 ms per prompt token to first token, {ENV.get('lb_itl_ms', '?')} ms per "
          f"output token, 10% jitter){offered}. Each request asks for the trace's output length and sends its prompt length in words, starting with "
          "a word of its own so that no two prompts share a prefix (prefix-cache policies get no free affinity). *Goodput*: the "
          "fraction of all requests whose first token came within 1 s of the scheduled send and whose time per output token after the "
          "first was within 50 ms; failed requests count as misses. Round robin is nginx's default.\n")
        w("| balancer | policy | requests | errors | goodput | TTFT <= 1 s | TPOT <= 50 ms | TTFT p50 / p90 / p99 ms | TPOT p99 ms | chunk count off | goodput vs round robin |")
        w("|---|---|---|---|---|---|---|---|---|---|---|")
        for r in replays:
            name = NAMES.get(r["label"], r["label"]).split(" (")[0]
            if r.get("killed"):
                w(f"| {name} | {r['policy']} | | | run killed (time limit) | | | | | | |")
                continue
            ratio = f"{r['goodput'] / rr['goodput']:.2f}x" if rr and rr["goodput"] > 0 else "n/a"
            w(f"| {name} | {r['policy']} | {r['requests']} | {r['errors']} | **{pct(r['goodput'])}** | {pct(r['ttft_met'])} | {pct(r['tpot_met'])} | "
              f"{num(r['ttft_p50_ms'], 0)} / {num(r['ttft_p90_ms'], 0)} / {num(r['ttft_p99_ms'], 0)} | {num(r['tpot_p99_ms'])} | {r['chunk_mismatches']} | {ratio} |")
        for r in lb_status:
            w(f"| {NAMES.get(r['label'], r['label']).split(' (')[0]} | {r['part'][3:]} | {r['status']} | | | | | | | | |")
        if sweep:
            w("\nThe same slice at other loads (other speedups), for our gateway, round robin and least connections only:\n")
            w("| speedup | offered load | lyceum goodput | nginx round robin | HAProxy leastconn | lyceum vs round robin |")
            w("|---|---|---|---|---|---|")
            by_speed = {}
            for r in all_replays:
                by_speed.setdefault(float(r.get("speedup", main_speed)), {})[r["label"]] = r
            for sp in sorted(by_speed):
                row = by_speed[sp]
                g = {k: row[k].get("goodput") for k in ("lyceum", "nginx", "haproxy") if k in row}
                load_text = offered_load(ENV.get("trace"), skip, span, sp, float(ENV.get("lb_itl_ms", "0") or 0))
                load_pct = load_text.rsplit("load of ", 1)[-1].split(" ")[0] if load_text else "?"
                ratio = f"{g['lyceum'] / g['nginx']:.2f}x" if g.get("lyceum") is not None and g.get("nginx") else "n/a"
                w(f"| {sp:g}x | {load_pct} | {pct(g['lyceum']) if g.get('lyceum') is not None else 'n/a'} | "
                  f"{pct(g['nginx']) if g.get('nginx') is not None else 'n/a'} | {pct(g['haproxy']) if g.get('haproxy') is not None else 'n/a'} | {ratio} |")

    # ---- Targets -------------------------------------------------------------------------------------------------
    w("\n### Targets\n")

    def verdict(ok):
        return "**met**" if ok else "**missed**"

    ours = rate.get("lyceum", {})
    if ours and rate.get("nginx"):
        parts, ok = [], True
        for rps in lat_rates:
            a, b = added("lyceum", rps, "p99_ms"), added("nginx", rps, "p99_ms")
            if a is None or b is None:
                continue
            ok = ok and a <= b
            parts.append(f"{rate_label(rps)} req/s: ours {a:+.2f} ms, nginx {b:+.2f} ms")
        if parts:
            w(f"- Added p99 no worse than nginx's at every rate: {verdict(ok)} ({'; '.join(parts)}).")
        else:
            w("- Added p99 no worse than nginx's: not measured (no direct baseline, or no answers, in this run).")
    else:
        w("- Added p99 no worse than nginx's: not measured (lyceum or nginx missing from this run).")
    if ours and rate.get("litellm"):
        parts, ok = [], True
        held_rates = [rps for rps in lat_rates if rate["litellm"].get(rps, {}).get("held")]
        for rps in held_rates:
            a, b = added("lyceum", rps, "p99_ms"), added("litellm", rps, "p99_ms")
            if a is None or b is None:
                continue
            good = b >= 10 * max(a, 0.0) and b > 0
            ok = ok and good
            parts.append(f"{rate_label(rps)} req/s: ours {a:+.2f} ms, LiteLLM {b:+.2f} ms" + (f" ({b / a:.0f}x)" if a > 0 else ""))
        if held_rates:
            w(f"- Added p99 at least 10x lower than LiteLLM's at every rate LiteLLM holds: {verdict(ok)} ({'; '.join(parts)}).")
        else:
            w("- Added p99 at least 10x lower than LiteLLM's at every rate LiteLLM holds: LiteLLM held none of the "
              f"{', '.join(rate_label(r) for r in lat_rates)} req/s rates, so there is nothing to compare (vacuously met).")
    elif "litellm" in status:
        w(f"- Against LiteLLM: not measured ({status['litellm']}).")
    routers = {k: highest_held(k)[0] for k in RUST_ROUTERS if k in rate}
    if ours and routers:
        best = max(routers.items(), key=lambda kv: kv[1] or 0)
        mine = highest_held("lyceum")[0] or 0
        w(f"- Highest error-free rate at least the best Rust router's: {verdict(mine >= (best[1] or 0))} (ours {rate_label(mine)} req/s, "
          f"{best[0]} {rate_label(best[1] or 0)} req/s; " + ", ".join(f"{k} {rate_label(v or 0)}" for k, v in routers.items()) + ").")
    else:
        why = "; ".join(f"{k}: {status[k]}" for k in RUST_ROUTERS if k in status) or "lyceum or both routers missing from this run"
        w(f"- Highest error-free rate against the Rust routers: not measured ({why}).")
    if "lyceum" in chunks_exact:
        w(f"- Streaming chunk count exactly the replica's: {verdict(chunks_exact['lyceum'])}.")
    if ours_lb and rr:
        ratio = ours_lb["goodput"] / rr["goodput"] if rr["goodput"] > 0 else float("inf")
        w(f"- Goodput at least 1.3x round robin's: {verdict(ratio >= 1.3)} at the main load (ours {pct(ours_lb['goodput'])}, nginx round robin "
          f"{pct(rr['goodput'])}: {ratio:.2f}x; no balancer can beat round robin by more than {1 / rr['goodput']:.2f}x there, "
          "since that would take more than 100% goodput).")
        ratios = []
        for sp in sorted({float(r.get("speedup", main_speed)) for r in sweep}):
            o = next((r for r in sweep if float(r["speedup"]) == sp and r["label"] == "lyceum" and r.get("goodput") is not None), None)
            n_ = next((r for r in sweep if float(r["speedup"]) == sp and r["label"] == "nginx" and r.get("goodput")), None)
            if o and n_:
                ratios.append(f"{sp:g}x: {o['goodput'] / n_['goodput']:.2f}x")
        if ratios:
            w(f"  At the other loads: {'; '.join(ratios)}.")
    elif replays:
        w("- Goodput against round robin: not measured (lyceum or nginx missing from part 2).")

    # ---- Reading (from the numbers) -------------------------------------------------------------------------------
    w("\n### Reading\n")
    if direct:
        d_held, d_fail = highest_held("direct")
        if d_held is not None:
            w(f"- The rig itself (load generator and replica on one core, no proxy) holds {rate_label(d_held)} req/s"
              + (f" and fails at {rate_label(d_fail)}" if d_fail else "") + "; a proxy cannot be shown to hold more than that here, "
              "and rates near it measure the shared core as much as the proxy.")
    cpu_rank = sorted(((1000 * r[cpu_rate]["cpu_s"] / max(1, r[cpu_rate].get("sent_with_warmup", 1)), k) for k, r in rate.items()
                       if k != "direct" and cpu_rate in r and "cpu_s" in r[cpu_rate] and r[cpu_rate].get("held")))
    if cpu_rank:
        w(f"- CPU per request at {rate_label(cpu_rate)} req/s, cheapest first: " + ", ".join(f"{k} {v:.3f} s" for v, k in cpu_rank) + " per 1,000.")
    not_held = []
    for k in rate:
        bad = [rps for rps in sorted(rate[k]) if not rate[k][rps].get("held")]
        if bad and k != "direct":
            not_held.append(f"{NAMES.get(k, k).split(' (')[0]} from {rate_label(bad[0])} req/s")
    if not_held:
        w("- Not held (0.1% errors or more): " + "; ".join(not_held) + ". Latencies in such cells are those of the requests "
          "that were answered within the time limit; read them with the error share beside them.")
    negative = [k for k in streams if k != "direct" and any(
        c in direct_streams and not s_.get("killed") and s_["gap_p99_ms"] < direct_streams[c]["gap_p99_ms"] for c, s_ in streams[k].items())]
    if negative:
        w("- Negative *added* stream numbers: with many streams straight to the replica, the replica and the load generator "
          "compete for the one core they share, so the direct baseline is itself slowed; a proxy on the other core "
          "evens out delivery. Read them as \"no worse than direct\", not as faster than the replica.")
    bursty = []
    for k, per in streams.items():
        for c, s_ in per.items():
            d = direct_streams.get(c)
            if k != "direct" and d and not s_.get("killed") and d["gap_p50_ms"] >= 1 and s_["gap_p50_ms"] < 0.1:
                bursty.append(f"{NAMES.get(k, k).split(' (')[0]} at {c} streams (gap p50 {s_['gap_p50_ms']:.2f} ms against "
                              f"{d['gap_p50_ms']:.2f} ms direct, TTFT p50 {s_['ttft_p50_ms']:.1f} against {d['ttft_p50_ms']:.1f} ms)")
    if bursty:
        w("- Chunks delivered in bursts rather than as the replica sends them: " + "; ".join(bursty) + ". The counts still match; "
          "the timing does not.")
    if rate.get("litellm") and ours:
        info = []
        for rps in lat_rates:
            a, b = added("lyceum", rps, "p99_ms"), added("litellm", rps, "p99_ms")
            if a is not None and b is not None and rate["litellm"][rps].get("ok"):
                info.append(f"{rate_label(rps)} req/s: ours {a:+.2f} ms, LiteLLM {b:+.2f} ms"
                            + ("" if rate["litellm"][rps].get("held") else " (not held by LiteLLM)"))
        if info:
            w("- Against LiteLLM, rate by rate: " + "; ".join(info) + ".")
    disturbed = []
    for k, per in rate.items():
        for rps, r in sorted(per.items()):
            if r.get("cpu0_other_share", 0) > 0.1:
                disturbed.append(f"{k} at {rate_label(rps)} req/s ({r['cpu0_other_share']:.0%})")
    for r in replays:
        if r.get("cpu0_other_share", 0) > 0.1:
            disturbed.append(f"{r['label']} {r['policy']} in part 2 ({r['cpu0_other_share']:.0%})")
    if disturbed:
        w("- Runs during which something besides the proxy kept CPU 0 more than 10% busy (other work on the machine, or kernel "
          "time not charged to the proxy): " + "; ".join(disturbed) + ". Treat those numbers as disturbed and rerun on a quiet machine.")
    elif any("cpu0_other_share" in r for per in rate.values() for r in per.values()):
        w("- No run had CPU 0 more than 10% busy with anything but the proxy under test.")
    for k, v in status.items():
        w(f"- {NAMES.get(k, k).split(' (')[0]}: {v}.")
    if replays and ours_lb:
        ranked = sorted((r for r in replays if r.get("goodput") is not None), key=lambda r: -r["goodput"])
        w("- Goodput in part 2, best first: " + ", ".join(
            f"{NAMES.get(r['label'], r['label']).split(' (')[0]} {r['policy']} {pct(r['goodput'])}" for r in ranked) + ". "
          "A replica runs at most 4 sequences and queues the rest, so a balancer's choices show up as time to first token; "
          "time per output token is the replica's own pace unless a proxy holds chunks back.")
    w("- Single runs on a shared 2-core machine: differences of a few tenths of a millisecond at p99 are within run-to-run noise.")

    # ---- Every run ----------------------------------------------------------------------------------------------
    if not part1:
        print("\n".join(out))
        return
    w("\n<details><summary>Every run of part 1</summary>\n")
    w("| contender | rate (req/s) | sent | ok | errors | p50 ms | p99 ms | p99.9 ms | CPU-s per 1,000 req | CPU 0 busy with others | held |")
    w("|---|---|---|---|---|---|---|---|---|---|---|")
    for label in order:
        for rps, r in sorted(rate.get(label, {}).items()):
            c = f"{1000 * r['cpu_s'] / max(1, r.get('sent_with_warmup', 1)):.3f}" if "cpu_s" in r else ""
            o = f"{r['cpu0_other_share']:.1%}" if "cpu0_other_share" in r else "n/a"
            w(f"| {label} | {rate_label(rps)} | {r['sent']} | {r['ok']} | {r['errors']} | {num(r.get('p50_ms'))} | {num(r.get('p99_ms'))} | "
              f"{num(r.get('p999_ms'))} | {c} | {o} | {'yes' if r.get('held') else 'no'} |")
    w("\n| contender | streams at once | streams | errors | chunks | TTFT p50 ms | TTFT p99 ms | gap p50 ms | gap p99 ms |")
    w("|---|---|---|---|---|---|---|---|---|")
    for label in order:
        for c, s in sorted(streams.get(label, {}).items()):
            if s.get("killed"):
                w(f"| {label} | {c} | run killed | | | | | | |")
                continue
            w(f"| {label} | {c} | {s['streams']} | {s['errors']} | {s['chunks_min']}-{s['chunks_max']} | {num(s['ttft_p50_ms'])} | "
              f"{num(s['ttft_p99_ms'])} | {num(s['gap_p50_ms'])} | {num(s['gap_p99_ms'])} |")
    w("\n</details>")
    print("\n".join(out))

    if args.plot:
        try:
            import matplotlib
            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
        except ImportError:
            return
        fig, ax = plt.subplots(figsize=(8, 5))
        for label in order:
            points = sorted(rate.get(label, {}).items())
            points = [(rps, r) for rps, r in points if r.get("ok", 0) > 0]
            if not points:
                continue
            xs = [p[0] for p in points]
            ys = [p[1]["p99_ms"] for p in points]
            line, = ax.plot(xs, ys, "-", label=NAMES.get(label, label).split(" (")[0])
            for x, (_, r) in zip(xs, points):
                ax.plot([x], [r["p99_ms"]], "o", color=line.get_color(), markerfacecolor=line.get_color() if r.get("held") else "none")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("offered load, non-streaming requests/s (open loop)")
        ax.set_ylabel("p99 latency, ms")
        ax.set_title("p99 latency against offered load (hollow: not held)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(args.plot, dpi=110)


if __name__ == "__main__":
    main()
