"""The autoscaling benchmark's table from its results (one JSON line per row), for docs/benchmarks.md.

    python3 scripts/bench_autoscale_report.py RESULTS SPEEDUP SPAN TARGET_MS CONFIG TRACE ITL_MS LEAD_IN [NOTE]
"""
import json, os, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
speed, span, target_ms, config, trace, itl, lead = sys.argv[2:9]
note = sys.argv[9] if len(sys.argv) > 9 else ""
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "unknown")
kind = "code trace (bursty)" if trace == "code" else "conversation trace (smooth)"
print(f"## Autoscaling on a production trace: `scripts/bench-autoscale.sh` ({trace})\n")
print(f"{int(float(span))} s of the Azure LLM {kind}, replayed {speed}x faster, open loop, through the gateway, after a lead-in of")
print(f"the {lead} wall seconds of trace before it, replayed the same way but not measured, for every row ({config} build,")
print(f"{os.cpu_count()} cores, {cpu}). Simulator replicas: 8 sequences at once, 40 ms + 0.05 ms per prompt word to first token,")
print(f"{itl} ms per output token, 6 s cold start. p95 target {target_ms} ms; stabilisation 30 s; decisions every second; a request")
print("unanswered 20 s after it was due is an error. Replica-seconds are the usage API's, over the measured span only.\n")
print("| provisioning | replicas | requests | errors | within target | p50 ms | p95 ms | p99 ms | replica-seconds | scaling actions | flaps | unexplained |")
print("|---|---|---|---|---|---|---|---|---|---|---|---|")
for r in rows:
    reps = f"{r['min_replicas']}-{r['max_replicas']}" if r["min_replicas"] != r["max_replicas"] else str(r["min_replicas"])
    print(f"| {r['label']} | {reps} | {r['requests']} | {r['errors']} | {100*r['within_target']:.2f}% | {r['p50_ms']:.0f} | {r['p95_ms']:.0f} | {r['p99_ms']:.0f} | {r['replica_seconds']:.0f} | {r['scaling_actions']} | {r['reversals']} | {r['unexplained']} |")
autos = [r for r in rows if r["label"].startswith("autoscaler")]
fixed = [r for r in rows if not r["label"].startswith("autoscaler")]
good = [r for r in fixed if r["within_target"] >= 0.99]
best = min(good, key=lambda r: r["replica_seconds"]) if good else None
peak = max(fixed, key=lambda r: r["min_replicas"]) if fixed else None
print()
if best:
    print(f"Smallest fixed count reaching 99%: {best['label']} ({100*best['within_target']:.2f}%, {best['replica_seconds']:.0f} replica-seconds).")
elif fixed:
    print("No fixed count reaches 99%.")
for a in autos:
    line = f"- {a['label']}: {100*a['within_target']:.2f}% within target, {a['errors']} errors, {a['reversals']} flaps; "
    if best:
        line += f"{a['replica_seconds']/max(1e-9, best['replica_seconds']):.2f}x the replica-seconds of {best['label']}, "
    if peak:
        line += f"{100*a['replica_seconds']/max(1e-9, peak['replica_seconds']):.0f}% of {peak['label']}'s."
    print(line)
if note:
    print("\n" + note)
