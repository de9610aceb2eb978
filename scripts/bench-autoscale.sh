#!/usr/bin/env bash
# Autoscaling against fixed provisioning, side by side in one run: the same slice of the Azure code trace
# (../shared/traces/azure-llm-2023-code.csv, bursty), time-compressed, replayed open loop through the
# gateway to three deployments of the simulator on one server: autoscaled (min 1), fixed at the peak's
# replica count, and fixed at the mean's. Reports the fraction of requests within the latency target,
# replica-seconds used during the replay (from the usage API), and scaling actions (from the events).
# Writes its section of docs/benchmarks.md.
set -euo pipefail
cd "$(dirname "$0")/.."
SPEEDUP="${SPEEDUP:-10}"          # 10 trace seconds per wall second
SPAN="${SPAN:-1200}"              # trace seconds replayed (the first 20 minutes hold the peak minute)
TARGET_RPS="${TARGET_RPS:-15}"    # per replica
TARGET_MS="${TARGET_MS:-1500}"    # p95 latency target
CONFIG="${CONFIG:-release}"

swift build -c "$CONFIG" --product lyceum
swift build -c "$CONFIG" --product lyceum-bench
LYCEUM="$PWD/.build/$CONFIG/lyceum"
BENCH="$PWD/.build/$CONFIG/lyceum-bench"
TRACE="$(cd .. && pwd)/shared/traces/azure-llm-2023-code.csv"

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
replay.update(replica_seconds=usage["replica_seconds"], scaling_actions=sum(e["kind"] == "scaled" for e in events),
              min_replicas=int(sys.argv[5]), max_replicas=int(sys.argv[6]))
print(json.dumps(replay))
PY
  "$LYCEUM" infer stop "$id" >/dev/null
}
run "autoscaler" 1 "$PEAK" 30
run "fixed at peak" "$PEAK" "$PEAK" 30
run "fixed at mean" "$MEAN" "$MEAN" 30

python3 - "$RESULTS" "$SPEEDUP" "$SPAN" "$TARGET_RPS" "$TARGET_MS" "$CONFIG" <<'PY' | python3 scripts/bench_section.py autoscale
import json, os, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
speed, span, target_rps, target_ms, config = sys.argv[2:7]
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "unknown")
print("## Autoscaling on a production trace: `scripts/bench-autoscale.sh`\n")
print(f"The first {int(float(span))} s of the Azure LLM code trace (bursty), replayed {speed}x faster, open loop, through the gateway")
print(f"({config} build, {os.cpu_count()} cores, {cpu}). Simulator replicas: 8 sequences at once, 40 ms + 0.05 ms per prompt word to first")
print(f"token, 8 ms per output token, 6 s cold start. Target {target_rps} req/s per replica and p95 {target_ms} ms; stabilisation 30 s;")
print("decisions every second. Replica-seconds are the usage API's, over the replay only.\n")
print("| provisioning | replicas | requests | errors | within target | p50 ms | p95 ms | p99 ms | replica-seconds | scaling actions |")
print("|---|---|---|---|---|---|---|---|---|---|")
for r in rows:
    reps = f"{r['min_replicas']}-{r['max_replicas']}" if r["min_replicas"] != r["max_replicas"] else str(r["min_replicas"])
    print(f"| {r['label']} | {reps} | {r['requests']} | {r['errors']} | {100*r['within_target']:.2f}% | {r['p50_ms']:.0f} | {r['p95_ms']:.0f} | {r['p99_ms']:.0f} | {r['replica_seconds']:.0f} | {r['scaling_actions']} |")
auto, peak = rows[0], rows[1]
ratio = auto["replica_seconds"] / max(1e-9, peak["replica_seconds"])
print(f"\nAutoscaler against peak provisioning: {100*auto['within_target']:.2f}% vs {100*peak['within_target']:.2f}% of requests within target, "
      f"using {100*ratio:.0f}% of its replica-seconds (target: the same attainment with at most 50%).")
PY
