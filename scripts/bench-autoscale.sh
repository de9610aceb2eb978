#!/usr/bin/env bash
# Autoscaling against fixed provisioning, side by side in one run: the same slice of an Azure trace
# (../shared/traces: TRACE=code, bursty, the default; TRACE=conv, the smooth conversation trace),
# time-compressed, replayed open loop through the gateway to deployments of the simulator on one server:
# autoscaled (min 1; one row per target in TARGETS), and fixed at each count in FIXED (default: every count
# from 1 to the peak's). Every row first replays the LEAD_IN wall seconds of trace before the measured span,
# unmeasured, so that no row is measured from a cold start the others do not have. Reports the fraction
# of requests within the latency target, replica-seconds used during the measured span (from the usage
# API), scaling actions and flaps (from the events). Writes its section of docs/benchmarks.md (`autoscale`
# for the code trace, `autoscale-conv` for the conversation one), then the frontier model's.
#
#   scripts/bench-autoscale.sh                       # code trace (about 25 minutes)
#   TRACE=conv scripts/bench-autoscale.sh            # conversation trace (about 35 minutes)
#   TRACE=conv FIXED="3 5" scripts/bench-autoscale.sh
#   TRACE=conv FIXED="" LEAD_IN=60 SECTION=autoscale-conv-lead60 scripts/bench-autoscale.sh   # autoscaler rows only
set -euo pipefail
cd "$(dirname "$0")/.."
TRACE_NAME="${TRACE:-code}"
SPEEDUP="${SPEEDUP:-10}"          # 10 trace seconds per wall second
LEAD_IN="${LEAD_IN:-20}"          # wall seconds replayed before the measured span
if [ "$TRACE_NAME" = conv ]; then
  # The issue's setting: 12 req/s per replica, and a target at what one replica serves within 1.5 s here.
  SPAN="${SPAN:-1800}"; TARGETS="${TARGETS:-12 24}"; ITL_MS="${ITL_MS:-1}"; SECTION="${SECTION:-autoscale-conv}"
else
  SPAN="${SPAN:-1200}"; TARGETS="${TARGETS:-15}"; ITL_MS="${ITL_MS:-8}"; SECTION="${SECTION:-autoscale}"   # the first 20 minutes hold the peak minute
fi
TARGET_RPS="${TARGETS%% *}"       # the first target sizes the peak
TARGET_MS="${TARGET_MS:-1500}"    # p95 latency target
CONFIG="${CONFIG:-release}"

swift build -c "$CONFIG" --product lyceum
swift build -c "$CONFIG" --product lyceum-bench
LYCEUM="$PWD/.build/$CONFIG/lyceum"
BENCH="$PWD/.build/$CONFIG/lyceum-bench"
TRACE="$(cd .. && pwd)/shared/traces/azure-llm-2023-$TRACE_NAME.csv"

# Replica model: 8 sequences at once, 40 ms to first token plus 0.05 ms per prompt word, ITL_MS per output token, and a cold
# start of 6 s (a minute of trace time at 10x).
WORK="$(mktemp -d)"
cat >"$WORK/config.json" <<JSON
{"health_interval_s": 1, "reconcile_interval_s": 0.5, "hardware_profiles": [
  {"name": "sim.trace", "engine": "sim", "gpu_type": "h100", "gpu_count": 1, "price_per_hour": "2.50",
   "devices": ["t0","t1","t2","t3","t4","t5","t6","t7","t8","t9","t10","t11","t12","t13","t14","t15"], "ready_timeout_s": 60,
   "engine_args": ["--startup-s", "6", "--ttft-ms", "40", "--prefill-ms-per-token", "0.05", "--itl-ms", "$ITL_MS", "--max-num-seqs", "8", "--jitter", "0.1"]}]}
JSON
"$LYCEUM" server --port 0 --data-dir "$WORK/data" --config "$WORK/config.json" --autoscale-interval 1 --log-level warning >"$WORK/server.log" 2>&1 &
SERVER_PID=$!
trap 'kill -TERM $SERVER_PID 2>/dev/null; wait $SERVER_PID 2>/dev/null; rm -rf "$WORK"' EXIT
for _ in $(seq 1 100); do [ -s "$WORK/data/server.url" ] && break; sleep 0.1; done
export LYCEUM_BASE_URL="$(cat "$WORK/data/server.url")" LYCEUM_API_KEY="$(cat "$WORK/data/admin.key")"

# Peak and mean request rates of the replayed slice, compressed, in replicas at TARGET_RPS.
read -r PEAK MEAN < <(python3 - "$TRACE" "$SPAN" "$SPEEDUP" "$TARGET_RPS" "$LEAD_IN" <<'PY'
import csv, datetime, math, sys, collections
rows = list(csv.DictReader(open(sys.argv[1])))
t0 = datetime.datetime.fromisoformat(rows[0]["TIMESTAMP"][:26])
span, speed, target, lead = float(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4]), float(sys.argv[5]) * float(sys.argv[3])
secs = [(datetime.datetime.fromisoformat(r["TIMESTAMP"][:26]) - t0).total_seconds() - lead for r in rows]
secs = [s for s in secs if 0 <= s < span]
per_min = collections.Counter(int(s // 60) for s in secs)
peak_rps = max(per_min.values()) / 60 * speed
mean_rps = len(secs) / span * speed
print(math.ceil(peak_rps / target), math.ceil(mean_rps / target))
PY
)
echo "fixed at peak: $PEAK replicas; fixed at mean: $MEAN replicas"
FIXED="${FIXED-$(seq -s ' ' 1 "$PEAK")}"   # FIXED="" runs the autoscaler rows only

RESULTS="$WORK/results.jsonl"
run() {  # label min max stabilisation target_rps
  local id
  id="$("$LYCEUM" infer deploy bench/trace -g sim.trace --min-replicas "$2" --max-replicas "$3" --target-rps "$5" \
        --target-latency "$TARGET_MS" --stabilisation "$4" -w -y --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["deployment_id"])')"
  # A request still unanswered 20 s after it was due counts as an error (an overloaded fixed count's backlog).
  "$BENCH" replay --url "$LYCEUM_BASE_URL/openai/v1" --key "$LYCEUM_API_KEY" --model "$id" --trace "$TRACE" \
    --speedup "$SPEEDUP" --lead-in "$((LEAD_IN * SPEEDUP))" --span "$SPAN" --target-ms "$TARGET_MS" --timeout 20 --label "$1" >"$WORK/replay.json"
  python3 - "$WORK/replay.json" "$id" "$2" "$3" "$5" >>"$RESULTS" <<'PY'
import json, os, sys, urllib.request
replay = json.load(open(sys.argv[1]))
from_, to = replay["measured_from"], replay["measured_to"]
base, key = os.environ["LYCEUM_BASE_URL"], os.environ["LYCEUM_API_KEY"]
def get(path):
    req = urllib.request.Request(base + path, headers={"Authorization": "Bearer " + key})
    return json.load(urllib.request.urlopen(req))
usage = get(f"/api/v2/external/inference/usage?deployment_id={sys.argv[2]}&from={from_}&to={to}")
events = get(f"/api/v2/external/inference/events?deployment_id={sys.argv[2]}")["events"]
scaled = [e for e in events if e["kind"] == "scaled" and from_ <= e["at"].replace("+00:00", "Z") <= to]
def direction(e):
    a, b = e["message"].split(":", 1)[0].removeprefix("scaled ").split(" -> ")
    return int(b) > int(a)
import datetime
def at(e):
    return datetime.datetime.fromisoformat(e["at"].replace("Z", "+00:00"))
# A flap: a reversal within one stabilisation window (30 s) of the change it undoes.
flaps = sum(1 for x, y in zip(scaled, scaled[1:]) if direction(x) != direction(y) and (at(y) - at(x)).total_seconds() < 30)
unexplained = [e for e in scaled if "[rate " not in e["message"]]
replay.update(replica_seconds=usage["replica_seconds"], scaling_actions=len(scaled), reversals=flaps, unexplained=len(unexplained),
              min_replicas=int(sys.argv[3]), max_replicas=int(sys.argv[4]), target_rps=float(sys.argv[5]),
              decisions=[e["message"] for e in scaled][:40])
print(json.dumps(replay))
PY
  "$LYCEUM" infer stop "$id" >/dev/null
}
for target in $TARGETS; do run "autoscaler, $target req/s per replica" 1 8 30 "$target"; done
for n in $FIXED; do run "fixed at $n" "$n" "$n" 30 "$TARGET_RPS"; done
cp "$RESULTS" "docs/bench-$SECTION.jsonl"   # every row, with the autoscaler's decisions

python3 scripts/bench_autoscale_report.py "$RESULTS" "$SPEEDUP" "$SPAN" "$TARGET_MS" "$CONFIG" "$TRACE_NAME" "$ITL_MS" "$LEAD_IN" \
  | python3 scripts/bench_section.py "$SECTION"

# The frontier model of the same slice, settings and policies.
if [ -n "$FIXED" ]; then
  python3 scripts/autoscale_frontier.py --trace "$TRACE" --span "$SPAN" --speedup "$SPEEDUP" --lead-in "$LEAD_IN" --itl-ms "$ITL_MS" \
    --targets "$TARGETS" --peak "$PEAK" --target-ms "$TARGET_MS" | python3 scripts/bench_section.py "$SECTION-frontier"
fi
