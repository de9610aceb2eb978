#!/usr/bin/env bash
# Measures what the gateway adds on top of calling a simulator replica directly, side by side in one run:
# non-streaming latency at fixed open-loop rates, time to first token and chunk gaps with 16 concurrent
# streams, and the gateway's resident memory per open stream. Writes its section of docs/benchmarks.md.
#
# The server (gateway) is pinned to CPU 0; the simulator replica and the load generator to CPU 1, so the
# gateway's cost is not hidden by, or blamed on, the load generator. Release builds.
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION="${DURATION:-10}"
RATES="${RATES:-100 500 1000}"

swift build -c release --product lyceum
swift build -c release --product lyceum-bench
LYCEUM="$PWD/.build/release/lyceum"
BENCH="$PWD/.build/release/lyceum-bench"

WORK="$(mktemp -d)"
cat >"$WORK/config.json" <<JSON
{"health_interval_s": 1, "hardware_profiles": [
  {"name": "sim.bench", "engine": "sim", "gpu_type": "h100", "gpu_count": 1, "price_per_hour": "0", "devices": ["b0"],
   "ready_timeout_s": 30, "engine_args": ["--ttft-ms", "2", "--itl-ms", "2", "--jitter", "0", "--max-num-seqs", "1024"]},
  {"name": "sim.hold", "engine": "sim", "gpu_type": "h100", "gpu_count": 1, "price_per_hour": "0", "devices": ["h0"],
   "ready_timeout_s": 30, "engine_args": ["--ttft-ms", "2", "--itl-ms", "500", "--jitter", "0", "--max-num-seqs", "1024"]}]}
JSON
taskset -c 0 "$LYCEUM" server --port 0 --data-dir "$WORK/data" --config "$WORK/config.json" --log-level warning >"$WORK/server.log" 2>&1 &
SERVER_PID=$!
trap 'kill -TERM $SERVER_PID 2>/dev/null; wait $SERVER_PID 2>/dev/null; rm -rf "$WORK"' EXIT
for _ in $(seq 1 100); do [ -s "$WORK/data/server.url" ] && break; sleep 0.1; done
URL="$(cat "$WORK/data/server.url")"
KEY="$(cat "$WORK/data/admin.key")"
ID="$(LYCEUM_BASE_URL=$URL LYCEUM_API_KEY=$KEY "$LYCEUM" infer deploy bench/model -g sim.bench -w -y --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["deployment_id"])')"
read -r REPLICA_PID REPLICA_PORT < <(python3 - "$WORK/data/lyceum.db" "$ID" <<'PY'
import sqlite3, sys
row = sqlite3.connect(sys.argv[1]).execute("select pid, port from replicas where deploymentId=? and status='running'", (sys.argv[2],)).fetchone()
print(row[0], row[1])
PY
)
taskset -a -p -c 1 "$REPLICA_PID" >/dev/null
DIRECT="http://127.0.0.1:$REPLICA_PORT/v1"
GATEWAY="$URL/openai/v1"
RUN="taskset -c 1 $BENCH"

RESULTS="$WORK/results.jsonl"
for rps in $RATES; do
  $RUN rate --url "$DIRECT" --model "$ID" --rps "$rps" --duration "$DURATION" --label "direct" >>"$RESULTS"
  $RUN rate --url "$GATEWAY" --key "$KEY" --model "$ID" --rps "$rps" --duration "$DURATION" --label "gateway" >>"$RESULTS"
done
for c in 16 64; do
  $RUN streams --url "$DIRECT" --model "$ID" --concurrency "$c" --requests $((c * 20)) --max-tokens 32 --label "direct" >>"$RESULTS"
  $RUN streams --url "$GATEWAY" --key "$KEY" --model "$ID" --concurrency "$c" --requests $((c * 20)) --max-tokens 32 --label "gateway" >>"$RESULTS"
done
# Memory per open stream: 512 slow streams (a token every 500 ms, 10 s each) held open through the gateway at
# once, on their own deployment so the gateway is not CPU-bound while they are counted.
HOLD="$(LYCEUM_BASE_URL=$URL LYCEUM_API_KEY=$KEY "$LYCEUM" infer deploy bench/hold -g sim.hold -w -y --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["deployment_id"])')"
$RUN streams --url "$GATEWAY" --key "$KEY" --model "$HOLD" --concurrency 512 --requests 512 --max-tokens 20 --label "gateway-hold" --rss-pid "$SERVER_PID" >>"$RESULTS"

python3 - "$RESULTS" "$DURATION" <<'PY' | python3 scripts/bench_section.py gateway
import json, sys, platform, os, subprocess
rows = [json.loads(l) for l in open(sys.argv[1])]
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "unknown")
print("## Gateway overhead: `scripts/bench-gateway.sh`\n")
print(f"Measured by `scripts/bench-gateway.sh` (release build) on {os.cpu_count()} cores ({cpu}), {platform.system()} {platform.release()}.")
print("The server is pinned to CPU 0; the simulator replica (2 ms to first token, 2 ms between tokens, no jitter) and")
print("`lyceum-bench` (open loop, latency from each request's scheduled send time, HdrHistogram) to CPU 1.")
print(f"Each rate runs {sys.argv[2]} s after 2 s of warm-up, direct to the replica and through the gateway, side by side.\n")
print("### Non-streaming, fixed rates (max_tokens 4)\n")
print("| rate (req/s) | path | ok | errors | p50 ms | p99 ms | p99.9 ms | added p50 ms | added p99 ms |")
print("|---|---|---|---|---|---|---|---|---|")
rate = [r for r in rows if r["mode"] == "rate"]
for d, g in zip(rate[0::2], rate[1::2]):
    print(f"| {d['rps']:.0f} | direct | {d['ok']} | {d['errors']} | {d['p50_ms']:.3f} | {d['p99_ms']:.3f} | {d['p999_ms']:.3f} | | |")
    print(f"| {g['rps']:.0f} | gateway | {g['ok']} | {g['errors']} | {g['p50_ms']:.3f} | {g['p99_ms']:.3f} | {g['p999_ms']:.3f} | {g['p50_ms']-d['p50_ms']:+.3f} | {g['p99_ms']-d['p99_ms']:+.3f} |")
print("\n### Streaming (32 tokens per stream)\n")
print("| concurrent streams | path | streams | errors | chunks per stream | TTFT p50 ms | TTFT p99 ms | gap p99 ms | added TTFT p99 ms |")
print("|---|---|---|---|---|---|---|---|---|")
st = [r for r in rows if r["mode"] == "streams" and r["label"] in ("direct", "gateway")]
for d, g in zip(st[0::2], st[1::2]):
    for r in (d, g):
        added = f"{g['ttft_p99_ms']-d['ttft_p99_ms']:+.3f}" if r is g else ""
        print(f"| {r['concurrency']} | {r['label']} | {r['streams']} | {r['errors']} | {r['chunks_min']}-{r['chunks_max']} | {r['ttft_p50_ms']:.3f} | {r['ttft_p99_ms']:.3f} | {r['gap_p99_ms']:.3f} | {added} |")
hold = next(r for r in rows if r["label"] == "gateway-hold")
per = (hold["rss_at_peak_kib"] - hold["rss_before_kib"]) / max(1, hold["peak_open"])
print(f"\n### Memory per open stream\n")
print(f"{hold['concurrency']} streams opened through the gateway at once ({hold['errors']} errors); at most {hold['peak_open']} open together: "
      f"server RSS {hold['rss_before_kib']} KiB before, {hold['rss_at_peak_kib']} KiB then: "
      f"**{per:.1f} KiB per open stream** (server process as a whole, after the warm-up runs above).")
PY
