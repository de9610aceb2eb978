#!/usr/bin/env bash
# Side by side: our gateway against nginx, HAProxy, vllm-router, sglang-router and the LiteLLM proxy, all in
# front of the very same simulator replicas on loopback, under the same open-loop schedules.
#
# Part 1, overhead (one fast replica: 2 ms to first token, 2 ms between tokens): added p50/p99 latency against
# calling the replica directly at fixed non-streaming rates, the highest rate held with under 0.1% errors
# (a bounded step search that stops climbing at the first failure), added time to first token and chunk gap
# with 16 and 64 concurrent streams and whether every stream carries exactly the replica's chunks,
# CPU-seconds per 1,000 requests of the proxy's processes, and their resident memory.
# Part 2, load-balancing quality: a slice of the Azure conversation trace, time-compressed and streamed,
# against 4 replicas of 4 sequences each; goodput = the fraction of requests with time to first token
# <= 1 s and time per output token <= 50 ms, for our gateway and every other balancer's policies.
#
# The proxy under test is pinned to CPU 0; replicas and the load generator to CPU 1. While another contender
# is measured, the lyceum server (which only manages the replicas then) moves to CPU 1, so CPU 0 is the
# proxy's alone. Debian packages (nginx, haproxy) and PyPI packages (into .venv-bench) are installed here;
# whatever cannot be installed or started is reported as such in its table row.
#
# Environment: CONTENDERS, DURATION (s per rate), WARMUP, LAT_RATES, SEARCH_RATES, REQ_TIMEOUT (s after
# which a request counts as an error), CPU_RATE, STREAMS, OVERHEAD (0 skips part 1), LB (0 skips part 2),
# LB_SKIP/LB_SPAN (trace seconds), LB_SPEEDUP, LB_SWEEP (other speedups, fewer balancers), LB_ITL_MS, VLLM_POLICIES, SGLANG_POLICIES, SKIP_BUILD=1 (use
# existing release binaries), WRITE_DOCS=0 (print the section instead of writing docs/benchmarks.md and the plot).
# Full run: about 23 minutes on 2 cores.
# Smoke run: DURATION=1 CONTENDERS="nginx lyceum" LB_SPAN=30 scripts/bench-compare.sh
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD"
DURATION="${DURATION:-5}"
WARMUP="${WARMUP:-2}"
LAT_RATES="${LAT_RATES:-100 1000 2500}"
SEARCH_RATES="${SEARCH_RATES:-500 1000 1500 2000 2500 4000 6000}"
REQ_TIMEOUT="${REQ_TIMEOUT:-2}"
CPU_RATE="${CPU_RATE:-1000}"
STREAMS="${STREAMS:-16 64}"
CONTENDERS="${CONTENDERS:-direct lyceum nginx haproxy vllm-router sglang-router litellm}"
OVERHEAD="${OVERHEAD:-1}"
LB="${LB:-1}"
LB_SKIP="${LB_SKIP:-600}"
LB_SPAN="${LB_SPAN:-180}"
LB_SPEEDUP="${LB_SPEEDUP:-3}"
# Other loads for the same slice, run only for our gateway, round robin and least connections (the load a
# balancer is judged at decides how far round robin falls behind; these show the trend).
LB_SWEEP="${LB_SWEEP:-3.25 3.5 3.75}"
LB_ITL_MS="${LB_ITL_MS:-3.5}"
VLLM_POLICIES="${VLLM_POLICIES:-round_robin random power_of_two cache_aware}"
SGLANG_POLICIES="${SGLANG_POLICIES:-round_robin random power_of_two cache_aware}"
WRITE_DOCS="${WRITE_DOCS:-1}"
TRACE="$(cd .. && pwd)/shared/traces/azure-llm-2023-conv.csv"
VENV="$ROOT/.venv-bench"
STARTED_AT=$(date +%s)
COMMAND="$(for v in DURATION WARMUP LAT_RATES SEARCH_RATES REQ_TIMEOUT CPU_RATE STREAMS CONTENDERS OVERHEAD LB LB_SKIP LB_SPAN LB_SPEEDUP LB_SWEEP LB_ITL_MS; do
  printf '%s=%q ' "$v" "${!v}"; done)scripts/bench-compare.sh"

for name in $CONTENDERS; do
  case "$name" in direct|lyceum|nginx|haproxy|vllm-router|sglang-router|litellm) ;;
    *) echo "unknown contender '$name' (known: direct lyceum nginx haproxy vllm-router sglang-router litellm)" >&2; exit 2;; esac
done

if [ "${SKIP_BUILD:-0}" != 1 ]; then
  swift build -c release --product lyceum
  swift build -c release --product lyceum-bench
fi
LYCEUM="$ROOT/.build/release/lyceum"
BENCH="$ROOT/.build/release/lyceum-bench"

WORK="$(mktemp -d)"
RESULTS="$WORK/results.jsonl"
SERVER_PID=""
PROXY_PID=""
POLICY_RC_CREATED=0
cleanup() {
  set +e
  if [ -n "$PROXY_PID" ]; then kill -TERM "$PROXY_PID" 2>/dev/null; wait "$PROXY_PID" 2>/dev/null; fi
  if [ -n "$SERVER_PID" ]; then kill -TERM "$SERVER_PID" 2>/dev/null; wait "$SERVER_PID" 2>/dev/null; fi
  [ "$POLICY_RC_CREATED" = 1 ] && as_root rm -f /usr/sbin/policy-rc.d
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

log() { echo "[bench-compare $(date +%H:%M:%S)] $*" >&2; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
has() { case " $CONTENDERS " in *" $1 "*) return 0;; *) return 1;; esac; }
status_row() {  # contender part status
  python3 -c 'import json,sys; print(json.dumps({"mode": "status", "label": sys.argv[1], "part": sys.argv[2], "status": sys.argv[3]}))' "$1" "$2" "$3" >>"$RESULTS"
  log "$1 ($2): $3"
}

# --- Installation: what fails is remembered, per contender, and reported in its row. ------------------------------
declare -A MISSING=()
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo -n "$@"; else return 1; fi; }
install_deb() {  # contender package binary
  command -v "$3" >/dev/null && return 0
  if ! command -v apt-get >/dev/null; then MISSING[$1]="not installed: no apt-get on this machine"; return 0; fi
  # Keep the package's service from starting (it would take port 80); we run our own foreground instance.
  if [ ! -e /usr/sbin/policy-rc.d ] && as_root sh -c 'printf "#!/bin/sh\nexit 101\n" >/usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d'; then
    POLICY_RC_CREATED=1
  fi
  log "installing $2 (apt-get)"
  if ! { as_root apt-get update -qq && DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "$2"; } >"$WORK/apt-$2.log" 2>&1; then
    MISSING[$1]="not installed: apt-get install $2 failed: $(tail -n 1 "$WORK/apt-$2.log")"
  elif ! command -v "$3" >/dev/null; then
    MISSING[$1]="not installed: apt-get install $2 gave no $3 binary"
  fi
}
install_pip() {  # contender pip-spec import-check-module
  if [ ! -x "$VENV/bin/python" ] && ! python3 -m venv "$VENV" >"$WORK/venv.log" 2>&1; then
    MISSING[$1]="not installed: python3 -m venv failed: $(tail -n 1 "$WORK/venv.log")"; return 0
  fi
  "$VENV/bin/python" -c "import $3" 2>/dev/null && return 0
  log "installing $2 (pip, into .venv-bench)"
  if ! "$VENV/bin/pip" install -q "$2" >"$WORK/pip-$1.log" 2>&1; then
    MISSING[$1]="not installed: pip install '$2' failed: $(grep -m1 -i error "$WORK/pip-$1.log" || tail -n 1 "$WORK/pip-$1.log")"
  elif ! "$VENV/bin/python" -c "import $3" 2>/dev/null; then
    MISSING[$1]="not installed: '$2' installed but 'import $3' fails"
  fi
}
has nginx && install_deb nginx nginx nginx
has haproxy && install_deb haproxy haproxy haproxy
has vllm-router && install_pip vllm-router vllm-router vllm_router
has sglang-router && install_pip sglang-router sglang-router sglang_router
has litellm && install_pip litellm 'litellm[proxy]' 'litellm.proxy.proxy_server'
[ "$WRITE_DOCS" = 1 ] && install_pip plot matplotlib matplotlib
[ -n "${MISSING[plot]:-}" ] && log "no plot: ${MISSING[plot]}"
PYTHON_PLOT="$VENV/bin/python"; [ -x "$PYTHON_PLOT" ] || PYTHON_PLOT=python3

version_of() {
  case "$1" in
    lyceum) echo "lyceum $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')$(git -C "$ROOT" diff --quiet 2>/dev/null || echo '+local changes')";;
    nginx) nginx -v 2>&1 | sed 's/^nginx version: //';;
    haproxy) haproxy -v 2>/dev/null | head -n 1 | awk '{print "HAProxy " $3}';;
    vllm-router) echo "vllm-router $("$VENV/bin/pip" show vllm-router 2>/dev/null | awk '/^Version/{print $2}')";;
    sglang-router) echo "sglang-router $("$VENV/bin/pip" show sglang-router 2>/dev/null | awk '/^Version/{print $2}')";;
    litellm) echo "litellm $("$VENV/bin/pip" show litellm 2>/dev/null | awk '/^Version/{print $2}')";;
    *) echo "";;
  esac
}

# --- The lyceum server and the replicas every contender shares. -----------------------------------------------------
cat >"$WORK/config.json" <<JSON
{"health_interval_s": 1, "hardware_profiles": [
  {"name": "sim.fast", "engine": "sim", "gpu_type": "h100", "gpu_count": 1, "price_per_hour": "0", "devices": ["f0"],
   "ready_timeout_s": 30, "engine_args": ["--ttft-ms", "2", "--itl-ms", "2", "--jitter", "0", "--max-num-seqs", "1024"]},
  {"name": "sim.lb", "engine": "sim", "gpu_type": "h100", "gpu_count": 1, "price_per_hour": "0", "devices": ["l0", "l1", "l2", "l3"],
   "ready_timeout_s": 30, "engine_args": ["--ttft-ms", "20", "--prefill-ms-per-token", "0.02", "--itl-ms", "$LB_ITL_MS", "--max-num-seqs", "4", "--jitter", "0.1"]}]}
JSON
taskset -c 0 "$LYCEUM" server --port 0 --data-dir "$WORK/data" --config "$WORK/config.json" --log-level warning >"$WORK/server.log" 2>&1 &
SERVER_PID=$!
for _ in $(seq 1 200); do [ -s "$WORK/data/server.url" ] && break; sleep 0.1; done
URL="$(cat "$WORK/data/server.url")"
KEY="$(cat "$WORK/data/admin.key")"
deploy() {  # name profile replicas -> deployment id
  LYCEUM_BASE_URL=$URL LYCEUM_API_KEY=$KEY "$LYCEUM" infer deploy "$1" -g "$2" --min-replicas "$3" -w -y --json |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["deployment_id"])'
}
replicas() {  # deployment count -> "pid port" lines once that many run
  python3 - "$WORK/data/lyceum.db" "$1" "$2" <<'PY'
import sqlite3, sys, time
for _ in range(600):
    rows = sqlite3.connect(sys.argv[1]).execute(
        "select pid, port from replicas where deploymentId=? and status='running' order by port", (sys.argv[2],)).fetchall()
    if len(rows) >= int(sys.argv[3]):
        break
    time.sleep(0.1)
else:
    sys.exit(f"only {len(rows)} of {sys.argv[3]} replicas of {sys.argv[2]} came up")
for pid, port in rows:
    print(pid, port)
PY
}
ID="$(deploy bench/fast sim.fast 1)"
read -r FAST_PID FAST_PORT < <(replicas "$ID" 1)
taskset -a -p -c 1 "$FAST_PID" >/dev/null
FAST_PORTS="$FAST_PORT"
if [ "$LB" = 1 ]; then
  LBID="$(deploy bench/lb sim.lb 4)"
  LB_PORTS=""
  while read -r pid port; do taskset -a -p -c 1 "$pid" >/dev/null; LB_PORTS="$LB_PORTS $port"; done < <(replicas "$LBID" 4)
  LB_PORTS="${LB_PORTS# }"
fi
server_on() { taskset -a -p -c "$1" "$SERVER_PID" >/dev/null; }
log "server $URL; fast replica :$FAST_PORT${LB_PORTS:+; balancing replicas :${LB_PORTS// /, :}}"

# --- Starting and stopping a contender. Each start sets PROXY_URL, PROXY_KEY, PROXY_PID (or none for lyceum and
# direct), PROXY_TREE (count child processes too) and returns 1 with START_ERROR when it cannot start. ------------------
PROXY_URL="" PROXY_KEY="" PROXY_TREE="" START_ERROR=""
start_nginx() {  # ports policy(rr)
  local dir="$WORK/nginx" port servers=""
  mkdir -p "$dir"; port=$(free_port)
  for p in $1; do servers="$servers    server 127.0.0.1:$p;"$'\n'; done
  cat >"$dir/nginx.conf" <<CONF
daemon off;
master_process on;
worker_processes 1;
worker_rlimit_nofile 65536;
pid $dir/nginx.pid;
error_log $dir/error.log warn;
events { worker_connections 16384; }
http {
  access_log off;
  client_body_temp_path $dir/body; proxy_temp_path $dir/proxy; fastcgi_temp_path $dir/fastcgi;
  uwsgi_temp_path $dir/uwsgi; scgi_temp_path $dir/scgi;
  keepalive_requests 1000000;
  client_body_buffer_size 1m;
  upstream replicas {
$servers    keepalive 1024;
    keepalive_requests 1000000;
  }
  server {
    listen 127.0.0.1:$port backlog=4096;
    location /v1/ {
      proxy_pass http://replicas;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_buffering off;
      proxy_read_timeout 300s;
    }
  }
}
CONF
  taskset -c 0 nginx -p "$dir" -c "$dir/nginx.conf" -e "$dir/error.log" >"$dir/stdout.log" 2>&1 &
  PROXY_PID=$! PROXY_URL="http://127.0.0.1:$port/v1" PROXY_KEY="" PROXY_TREE=--tree PROXY_LOG="$dir/error.log"
}
start_haproxy() {  # ports balance
  local dir="$WORK/haproxy" port servers="" i=0
  mkdir -p "$dir"; port=$(free_port)
  for p in $1; do servers="$servers  server r$i 127.0.0.1:$p"$'\n'; i=$((i + 1)); done
  cat >"$dir/haproxy.cfg" <<CONF
global
  maxconn 8000
defaults
  mode http
  timeout connect 5s
  timeout client 300s
  timeout server 300s
  maxconn 8000
  # Without this HAProxy holds back small chunks to send them together, which delays server-sent events.
  option http-no-delay
frontend fe
  bind 127.0.0.1:$port
  default_backend be
backend be
  balance ${2:-leastconn}
$servers
CONF
  taskset -c 0 haproxy -db -f "$dir/haproxy.cfg" >"$dir/haproxy.log" 2>&1 &
  PROXY_PID=$! PROXY_URL="http://127.0.0.1:$port/v1" PROXY_KEY="" PROXY_TREE=--tree PROXY_LOG="$dir/haproxy.log"
}
start_vllm-router() {  # ports policy
  local port urls=""; port=$(free_port)
  for p in $1; do urls="$urls http://127.0.0.1:$p"; done
  # shellcheck disable=SC2086
  taskset -c 0 "$VENV/bin/vllm-router" --host 127.0.0.1 --port "$port" --worker-urls $urls --policy "${2:-round_robin}" \
    --prometheus-host 127.0.0.1 --prometheus-port "$(free_port)" --log-level warning >"$WORK/vllm-router.log" 2>&1 &
  PROXY_PID=$! PROXY_URL="http://127.0.0.1:$port/v1" PROXY_KEY="" PROXY_TREE=--tree PROXY_LOG="$WORK/vllm-router.log"
}
start_sglang-router() {  # ports policy
  local port urls=""; port=$(free_port)
  for p in $1; do urls="$urls http://127.0.0.1:$p"; done
  # shellcheck disable=SC2086
  taskset -c 0 "$VENV/bin/sglang-router" launch --host 127.0.0.1 --port "$port" --worker-urls $urls --policy "${2:-round_robin}" \
    --prometheus-host 127.0.0.1 --prometheus-port "$(free_port)" --log-level warn >"$WORK/sglang-router.log" 2>&1 &
  PROXY_PID=$! PROXY_URL="http://127.0.0.1:$port/v1" PROXY_KEY="" PROXY_TREE=--tree PROXY_LOG="$WORK/sglang-router.log"
}
start_litellm() {  # ports
  local dir="$WORK/litellm" port key; mkdir -p "$dir"; port=$(free_port)
  key="sk-bench-$(python3 -c 'import secrets; print(secrets.token_hex(16))')"
  {
    echo "model_list:"
    for p in $1; do
      printf '  - model_name: "%s"\n    litellm_params: {model: "openai/%s", api_base: "http://127.0.0.1:%s/v1", api_key: "x"}\n' "$ID" "$ID" "$p"
    done
    echo "general_settings: {master_key: \"$key\"}"
  } >"$dir/config.yaml"
  # LITELLM_LOG=WARNING: no access log line per request (as for every contender); the local cost map: no fetch at start.
  (cd "$dir" && LITELLM_LOG=WARNING LITELLM_LOCAL_MODEL_COST_MAP=True exec taskset -c 0 "$VENV/bin/litellm" --config "$dir/config.yaml" \
    --host 127.0.0.1 --port "$port" --num_workers 1 >"$dir/litellm.log" 2>&1) &
  PROXY_PID=$! PROXY_URL="http://127.0.0.1:$port/v1" PROXY_KEY="$key" PROXY_TREE=--tree PROXY_LOG="$dir/litellm.log"
}
start_contender() {  # name ports policy model
  START_ERROR="" PROXY_PID="" PROXY_LOG=""
  if [ -n "${MISSING[$1]:-}" ]; then START_ERROR="${MISSING[$1]}"; return 1; fi
  case "$1" in
    direct) server_on 1; PROXY_URL="http://127.0.0.1:$2/v1" PROXY_KEY="" PROXY_TREE=""; return 0;;
    lyceum) server_on 0; PROXY_URL="$URL/openai/v1" PROXY_KEY="$KEY" PROXY_TREE=""; return 0;;
  esac
  server_on 1
  "start_$1" "$2" "$3"
  # Ready once a chat completion comes back 200 through it (90 s at most).
  local code="" i
  for i in $(seq 1 180); do
    if ! kill -0 "$PROXY_PID" 2>/dev/null; then
      wait "$PROXY_PID" 2>/dev/null || true
      START_ERROR="did not start: exited: $(grep -v '^\s*$' "$PROXY_LOG" 2>/dev/null | tail -n 2 | tr '\n' ' ' | cut -c1-200)"
      PROXY_PID=""; return 1
    fi
    code=$(curl -s -o /dev/null -w '%{http_code}' -m 5 "$PROXY_URL/chat/completions" -H 'Content-Type: application/json' \
      ${PROXY_KEY:+-H "Authorization: Bearer $PROXY_KEY"} \
      -d "{\"model\":\"$4\",\"messages\":[{\"role\":\"user\",\"content\":\"ready\"}],\"max_tokens\":1}" || true)
    [ "$code" = 200 ] && return 0
    sleep 0.5
  done
  START_ERROR="did not start: no 200 from a chat completion within 90 s (last HTTP status: ${code:-none})"
  stop_contender; return 1
}
stop_contender() {
  if [ -n "$PROXY_PID" ]; then
    kill -TERM "$PROXY_PID" 2>/dev/null || true
    for _ in $(seq 1 100); do kill -0 "$PROXY_PID" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$PROXY_PID" 2>/dev/null || true
    wait "$PROXY_PID" 2>/dev/null || true
  fi
  PROXY_PID=""
}
proxy_pid() { [ -n "$PROXY_PID" ] && echo "$PROXY_PID" || { [ "$1" = lyceum ] && echo "$SERVER_PID"; }; }
usage() {  # contender -> JSON (empty object for direct)
  local pid; pid=$(proxy_pid "$1" || true)
  if [ -n "$pid" ]; then python3 "$ROOT/scripts/bench_compare_proc.py" usage "$pid" $PROXY_TREE; else echo '{}'; fi
}
settle() {  # let a contender finish any backlog before the next run (30 s at most)
  local pid; pid=$(proxy_pid "$1" || true)
  [ -n "$pid" ] && python3 "$ROOT/scripts/bench_compare_proc.py" idle "$pid" $PROXY_TREE --max 30
  sleep 0.5
}

# --- Part 1: overhead ---------------------------------------------------------------------------------------------
RATE_LIMIT_S=$(python3 -c "import math; print(math.ceil($WARMUP + $DURATION + $REQ_TIMEOUT + 60))")
cpu0() { python3 "$ROOT/scripts/bench_compare_proc.py" cpu0; }
run_rate() {  # contender rps in_search -> prints 1 if held, 0 if not
  local before after out busy0 busy1
  busy0=$(cpu0)
  before=$(usage "$1")
  out=$(timeout "$RATE_LIMIT_S" taskset -c 1 "$BENCH" rate --url "$PROXY_URL" ${PROXY_KEY:+--key "$PROXY_KEY"} \
    --model "$ID" --rps "$2" --duration "$DURATION" --warmup "$WARMUP" --timeout "$REQ_TIMEOUT" --label "$1" || true)
  after=$(usage "$1")
  busy1=$(cpu0)
  python3 - "$out" "$before" "$after" "$3" "$2" "$1" "$DURATION" "$WARMUP" "$busy0" "$busy1" 3>&1 >>"$RESULTS" <<'PY'
import json, os, sys
out, before, after, search, rps, label, duration, warmup, busy0, busy1 = sys.argv[1:11]
rps, duration, warmup = float(rps), float(duration), float(warmup)
try:
    row = json.loads(out.strip().splitlines()[-1])
except (ValueError, IndexError):
    sent = int(duration * rps)
    row = {"label": label, "mode": "rate", "rps": rps, "sent": sent, "ok": 0, "errors": sent, "killed": True,
           "sent_with_warmup": int((duration + warmup) * rps)}
before, after = json.loads(before), json.loads(after)
if "cpu_s" in before and "cpu_s" in after:
    row["cpu_s"] = after["cpu_s"] - before["cpu_s"]
    row["rss_kib"] = after["rss_kib"]
    row["procs"] = len(after["pids"])
# CPU 0 is meant to be the proxy's alone: whatever else kept it busy during the run (other work on the machine,
# kernel time not charged to the proxy) is reported as a share of the run's wall time, to tell a noisy run.
busy0, busy1 = json.loads(busy0), json.loads(busy1)
if busy0 and busy1 and busy1["at"] > busy0["at"]:
    other = busy1["busy_s"] - busy0["busy_s"] - row.get("cpu_s", 0)
    row["cpu0_other_share"] = max(0.0, other) / (busy1["at"] - busy0["at"])
row["search"] = search == "1"
row["held"] = row["errors"] <= 0.001 * row["sent"] and row["ok"] > 0
print(json.dumps(row))
os.write(3, b"1\n" if row["held"] else b"0\n")
PY
}
measure() {  # contender
  local idle rates searching=1 rps held c
  idle=$(usage "$1")
  python3 -c 'import json,sys; u=json.loads(sys.argv[2]); print(json.dumps({"mode": "idle", "label": sys.argv[1], "rss_kib": u.get("rss_kib"), "procs": len(u.get("pids", [])), "version": sys.argv[3]}))' \
    "$1" "$idle" "$(version_of "$1")" >>"$RESULTS"
  rates=$(printf '%s\n' $LAT_RATES $SEARCH_RATES "$CPU_RATE" | sort -n -u)
  for rps in $rates; do
    local in_search=0 in_lat=0
    case " $SEARCH_RATES " in *" $rps "*) in_search=$searching;; esac
    case " $LAT_RATES $CPU_RATE " in *" $rps "*) in_lat=1;; esac
    [ "$in_search" = 0 ] && [ "$in_lat" = 0 ] && continue
    held=$(run_rate "$1" "$rps" "$in_search")
    log "$1: $rps req/s $([ "$held" = 1 ] && echo held || echo 'NOT held')"
    [ "$in_search" = 1 ] && [ "$held" = 0 ] && searching=0
    settle "$1"
  done
  for c in $STREAMS; do
    timeout 300 taskset -c 1 "$BENCH" streams --url "$PROXY_URL" ${PROXY_KEY:+--key "$PROXY_KEY"} --model "$ID" \
      --concurrency "$c" --requests $((c * 20)) --max-tokens 32 --label "$1" >>"$RESULTS" ||
      python3 -c 'import json,sys; print(json.dumps({"label": sys.argv[1], "mode": "streams", "concurrency": int(sys.argv[2]), "killed": True, "streams": 0, "errors": int(sys.argv[2]) * 20}))' "$1" "$c" >>"$RESULTS"
    settle "$1"
  done
}
for name in $CONTENDERS; do
  [ "$OVERHEAD" = 1 ] || break
  log "part 1: $name"
  if start_contender "$name" "$FAST_PORTS" "" "$ID"; then
    measure "$name"
  else
    status_row "$name" overhead "$START_ERROR"
  fi
  stop_contender
done

# --- Part 2: load-balancing quality ---------------------------------------------------------------------------------
if [ "$LB" = 1 ]; then
  LB_RUNS=()
  for name in $CONTENDERS; do
    case "$name" in
      lyceum) LB_RUNS+=("$LB_SPEEDUP:lyceum:least outstanding");;
      nginx) LB_RUNS+=("$LB_SPEEDUP:nginx:round robin");;
      haproxy) LB_RUNS+=("$LB_SPEEDUP:haproxy:leastconn");;
      vllm-router) for p in $VLLM_POLICIES; do LB_RUNS+=("$LB_SPEEDUP:vllm-router:$p"); done;;
      sglang-router) for p in $SGLANG_POLICIES; do LB_RUNS+=("$LB_SPEEDUP:sglang-router:$p"); done;;
    esac
  done
  for speed in $LB_SWEEP; do
    for name in $CONTENDERS; do
      case "$name" in
        lyceum) LB_RUNS+=("$speed:lyceum:least outstanding");;
        nginx) LB_RUNS+=("$speed:nginx:round robin");;
        haproxy) LB_RUNS+=("$speed:haproxy:leastconn");;
      esac
    done
  done
  for run in "${LB_RUNS[@]}"; do
    speed="${run%%:*}" run="${run#*:}"
    name="${run%%:*}" policy="${run#*:}"
    log "part 2: $name $policy at ${speed}x"
    arg="$policy"; [ "$name" = nginx ] && arg=""; [ "$name" = haproxy ] && arg=leastconn
    if ! start_contender "$name" "$LB_PORTS" "$arg" "$LBID"; then
      status_row "$name" "lb:$policy" "$START_ERROR"; stop_contender; continue
    fi
    busy0=$(cpu0); before=$(usage "$name")
    out=$(timeout $(python3 -c "print(int($LB_SPAN / $speed + 180))") taskset -c 1 "$BENCH" replay --url "$PROXY_URL" \
      ${PROXY_KEY:+--key "$PROXY_KEY"} --model "$LBID" --trace "$TRACE" --skip "$LB_SKIP" --span "$LB_SPAN" --speedup "$speed" \
      --stream --unique-prompts --ttft-slo-ms 1000 --tpot-slo-ms 50 --timeout 120 --label "$name" || true)
    after=$(usage "$name"); busy1=$(cpu0)
    python3 - "$out" "$name" "$policy" "$before" "$after" "$busy0" "$busy1" "$speed" >>"$RESULTS" <<'PY'
import json, sys
out, name, policy = sys.argv[1:4]
before, after, busy0, busy1 = (json.loads(x) for x in sys.argv[4:8])
speed = float(sys.argv[8])
try:
    row = json.loads(out.strip().splitlines()[-1])
except (ValueError, IndexError):
    row = {"label": name, "mode": "replay", "killed": True}
row["policy"] = policy
row["speedup"] = speed
proxy = after.get("cpu_s", 0) - before.get("cpu_s", 0)
if busy1["at"] > busy0["at"]:
    row["proxy_cpu_s"] = proxy
    row["cpu0_other_share"] = max(0.0, busy1["busy_s"] - busy0["busy_s"] - proxy) / (busy1["at"] - busy0["at"])
print(json.dumps(row))
PY
    stop_contender
    sleep 1
  done
fi

# --- The section and the plot ---------------------------------------------------------------------------------------
ELAPSED=$(( $(date +%s) - STARTED_AT ))
cp "$RESULTS" "$ROOT/.build/bench-compare-results.jsonl" 2>/dev/null || true
export BENCH_COMMAND="$COMMAND" BENCH_ELAPSED="$ELAPSED" BENCH_TRACE="$TRACE" BENCH_LB_SKIP="$LB_SKIP" BENCH_LB_SPAN="$LB_SPAN" \
  BENCH_LB_SPEEDUP="$LB_SPEEDUP" BENCH_LB_SWEEP="$LB_SWEEP" BENCH_LB_ITL_MS="$LB_ITL_MS" BENCH_DURATION="$DURATION" BENCH_WARMUP="$WARMUP" \
  BENCH_LAT_RATES="$LAT_RATES" BENCH_SEARCH_RATES="$SEARCH_RATES" BENCH_REQ_TIMEOUT="$REQ_TIMEOUT" BENCH_CPU_RATE="$CPU_RATE" \
  BENCH_STREAMS="$STREAMS"
if [ "$WRITE_DOCS" = 1 ]; then
  "$PYTHON_PLOT" scripts/bench_compare_report.py "$RESULTS" --plot docs/bench-compare.png | python3 scripts/bench_section.py compare
else
  "$PYTHON_PLOT" scripts/bench_compare_report.py "$RESULTS"
fi
log "done in ${ELAPSED} s (results also in .build/bench-compare-results.jsonl)"
