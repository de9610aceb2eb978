#!/usr/bin/env bash
# Autoscaling against fixed provisioning, side by side in one run: the same slice of an Azure trace
# (../shared/traces: TRACE=code, bursty, the default; TRACE=conv, the smooth conversation trace),
# time-compressed, replayed open loop through the gateway to deployments of the simulator on one server:
# autoscaled (min 1), and fixed at each count in FIXED (default: the peak's and the mean's; SWEEP=1: every
# count from 1 to the peak's). Reports the fraction of requests within the latency target, replica-seconds
# used during the replay (from the usage API), scaling actions and flaps (from the events). Writes its
# section of docs/benchmarks.md (`autoscale` for the code trace, `autoscale-conv` for the conversation one).
#
#   scripts/bench-autoscale.sh                       # code trace: autoscaler, fixed at peak, fixed at mean
#   TRACE=conv FIXED="3 5" scripts/bench-autoscale.sh
#   TRACE=conv SWEEP=1 scripts/bench-autoscale.sh    # the full sweep (about 30 minutes)
set -euo pipefail
cd "$(dirname "$0")/.."
TRACE_NAME="${TRACE:-code}"
SPEEDUP="${SPEEDUP:-10}"          # 10 trace seconds per wall second
if [ "$TRACE_NAME" = conv ]; then
  SPAN="${SPAN:-1800}"; TARGET_RPS="${TARGET_RPS:-12}"; SECTION=autoscale-conv
else
  SPAN="${SPAN:-1200}"; TARGET_RPS="${TARGET_RPS:-15}"; SECTION=autoscale   # the first 20 minutes hold the peak minute
fi
TARGET_MS="${TARGET_MS:-1500}"    # p95 latency target
CONFIG="${CONFIG:-release}"

swift build -c "$CONFIG" --product lyceum
swift build -c "$CONFIG" --product lyceum-bench
LYCEUM="$PWD/.build/$CONFIG/lyceum"
BENCH="$PWD/.build/$CONFIG/lyceum-bench"
TRACE="$(cd .. && pwd)/shared/traces/azure-llm-2023-$TRACE_NAME.csv"

# Replica model: 8 sequences at once, 40 ms to first token plus 0.05 ms per prompt word, 8 ms per output token (about 20 req/s
# per replica on this trace's lengths), and a cold start of 6 s (a minute of trace time at 10x).
WORK="$(mktemp -d)"
cat >"$WORK/config.json" <<JSON
{"health_interval_s": 1, "reconcile_interval_s": 0.5, "hardware_profiles": [
  {"name": "sim.trace", "engine": "sim", "gpu_type": "h100", "gpu_count": 1, "price_per_hour": "2.50",
   "devices": ["t0","t1","t2","t3","t4","t5","t6","t7","t8","t9","t10","t11","t12","t13","t14","t15"], "ready_timeout_s": 60,
   "engine_args": ["--startup-s", "6", "--ttft-ms", "40", "--prefill-ms-per-token", "0.05", "--itl-ms", "8", "--max-num-seqs", "8", "--jitter", "0.1"]}]}
JSON
"$LYCEUM" server --port 0 --data-dir "$WORK/data" --config "$WORK/config.json" --autoscale-interval 1 --log-level warning >"$WORK/server.log" 2>&1 &
SERVER_PID=$!
trap 'kill -TERM $SERVER_PID 2>/dev/null; wait $SERVER_PID 2>/dev/null; rm -rf "$WORK"' EXIT
for _ in $(seq 1 100); do [ -s "$WORK/data/server.url" ] && break; sleep 0.1; done
export LYCEUM_BASE_URL="$(cat "$WORK/data/server.url")" LYCEUM_API_KEY="$(cat "$WORK/data/admin.key")"

# Peak and mean request rates of the replayed slice, compressed, in replicas at TARGET_RPS.
read -r PEAK MEAN < <(python3 - "$TRACE" "$SPAN" "$SPEEDUP" "$TARGET_RPS" <<'PY'
import csv, datetime, math, sys, collections
rows = list(csv.DictReader(open(sys.argv[1])))
t0 = datetime.datetime.fromisoformat(rows[0]["TIMESTAMP"][:26])
span, speed, target = float(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
secs = [(datetime.datetime.fromisoformat(r["TIMESTAMP"][:26]) - t0).total_seconds() for r in rows]
secs = [s for s in secs if s < span]
per_min = collections.Counter(int(s // 60) for s in secs)
peak_rps = max(per_min.values()) / 60 * speed
mean_rps = len(secs) / span * speed
print(math.ceil(peak_rps / target), math.ceil(mean_rps / target))
PY
)
echo "fixed at peak: $PEAK replicas; fixed at mean: $MEAN replicas"
if [ "${SWEEP:-0}" = 1 ]; then FIXED="${FIXED:-$(seq -s ' ' 1 "$PEAK")}"; else FIXED="${FIXED:-$PEAK $MEAN}"; fi

RESULTS="$WORK/results.jsonl"
run() {  # label min max stabilisation
  local id from to
  id="$("$LYCEUM" infer deploy bench/trace -g sim.trace --min-replicas "$2" --max-replicas "$3" --target-rps "$TARGET_RPS" \
        --target-latency "$TARGET_MS" --stabilisation "$4" -w -y --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["deployment_id"])')"
  from="$(date -u +%Y-%m-%dT%H:%M:%S.%3NZ)"
  "$BENCH" replay --url "$LYCEUM_BASE_URL/openai/v1" --key "$LYCEUM_API_KEY" --model "$id" --trace "$TRACE" \
    --speedup "$SPEEDUP" --span "$SPAN" --target-ms "$TARGET_MS" --label "$1" >"$WORK/replay.json"
  to="$(date -u +%Y-%m-%dT%H:%M:%S.%3NZ)"
  python3 - "$WORK/replay.json" "$id" "$from" "$to" "$2" "$3" >>"$RESULTS" <<'PY'
import json, os, sys, urllib.request
replay = json.load(open(sys.argv[1]))
base, key = os.environ["LYCEUM_BASE_URL"], os.environ["LYCEUM_API_KEY"]
def get(path):
    req = urllib.request.Request(base + path, headers={"Authorization": "Bearer " + key})
    return json.load(urllib.request.urlopen(req))
usage = get(f"/api/v2/external/inference/usage?deployment_id={sys.argv[2]}&from={sys.argv[3]}&to={sys.argv[4]}")
events = get(f"/api/v2/external/inference/events?deployment_id={sys.argv[2]}")["events"]
scaled = [e for e in events if e["kind"] == "scaled"]
def direction(e):
    a, b = e["message"].split(":", 1)[0].removeprefix("scaled ").split(" -> ")
    return int(b) > int(a)
import datetime
def at(e):
    return datetime.datetime.fromisoformat(e["at"].replace("Z", "+00:00"))
# A flap: a reversal within one stabilisation window (30 s) of the change it undoes.
flaps = sum(1 for x, y in zip(scaled, scaled[1:]) if direction(x) != direction(y) and (at(y) - at(x)).total_seconds() < 30)
replay.update(replica_seconds=usage["replica_seconds"], scaling_actions=len(scaled), reversals=flaps,
              min_replicas=int(sys.argv[5]), max_replicas=int(sys.argv[6]))
print(json.dumps(replay))
PY
  "$LYCEUM" infer stop "$id" >/dev/null
}
run "autoscaler" 1 "$PEAK" 30
for n in $FIXED; do run "fixed at $n" "$n" "$n" 30; done

python3 - "$RESULTS" "$SPEEDUP" "$SPAN" "$TARGET_RPS" "$TARGET_MS" "$CONFIG" "$TRACE_NAME" <<'PY' | python3 scripts/bench_section.py "$SECTION"
import json, os, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
speed, span, target_rps, target_ms, config, trace = sys.argv[2:8]
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "unknown")
kind = "code trace (bursty)" if trace == "code" else "conversation trace (smooth)"
print(f"## Autoscaling on a production trace: `scripts/bench-autoscale.sh` ({trace})\n")
print(f"The first {int(float(span))} s of the Azure LLM {kind}, replayed {speed}x faster, open loop, through the gateway")
print(f"({config} build, {os.cpu_count()} cores, {cpu}). Simulator replicas: 8 sequences at once, 40 ms + 0.05 ms per prompt word to first")
print(f"token, 8 ms per output token, 6 s cold start. Target {target_rps} req/s per replica and p95 {target_ms} ms; stabilisation 30 s;")
print("decisions every second. Replica-seconds are the usage API's, over the replay only.\n")
print("| provisioning | replicas | requests | errors | within target | p50 ms | p95 ms | p99 ms | replica-seconds | scaling actions | flaps |")
print("|---|---|---|---|---|---|---|---|---|---|---|")
for r in rows:
    reps = f"{r['min_replicas']}-{r['max_replicas']}" if r["min_replicas"] != r["max_replicas"] else str(r["min_replicas"])
    print(f"| {r['label']} | {reps} | {r['requests']} | {r['errors']} | {100*r['within_target']:.2f}% | {r['p50_ms']:.0f} | {r['p95_ms']:.0f} | {r['p99_ms']:.0f} | {r['replica_seconds']:.0f} | {r['scaling_actions']} | {r['reversals']} |")
auto, fixed = rows[0], rows[1:]
good = [r for r in fixed if r["within_target"] >= 0.99]
if good:
    best = min(good, key=lambda r: r["replica_seconds"])
    print(f"\nSmallest fixed count reaching 99%: {best['label']} ({100*best['within_target']:.2f}%, {best['replica_seconds']:.0f} replica-seconds). "
          f"Autoscaler: {100*auto['within_target']:.2f}% with {auto['replica_seconds']:.0f} replica-seconds "
          f"({auto['replica_seconds']/max(1e-9, best['replica_seconds']):.2f}x), {auto['reversals']} flaps.")
peak = max(fixed, key=lambda r: r["min_replicas"])
print(f"\nAgainst the largest fixed count ({peak['label']}): {100*auto['within_target']:.2f}% vs {100*peak['within_target']:.2f}% within target, "
      f"using {100*auto['replica_seconds']/max(1e-9, peak['replica_seconds']):.0f}% of its replica-seconds.")
PY
