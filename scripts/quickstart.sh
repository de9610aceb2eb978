#!/usr/bin/env bash
# The main job, start to finish: build `lyceum`, start the server, deploy a model on simulated H100s
# with two replicas, wait until it runs, chat with it through the OpenAI-compatible gateway (CLI and
# curl), show its status and events, stop it; then run real llama.cpp inference on CPU (a small instruct
# model from the Hugging Face Hub when it can be reached, else a generated tiny model, said plainly), chat
# with it, show usage, and shut the server down.
#
# The `sim.*` hardware profiles run the built-in model-server simulator: real processes, real sockets,
# deterministic filler text. It is not a model; it exists so the platform runs on any machine.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "==> Building lyceum (debug; the first build takes a few minutes)"
swift build --product lyceum
LYCEUM="$PWD/.build/debug/lyceum"

DATA_DIR="$PWD/.lyceum-quickstart"
rm -rf "$DATA_DIR"
echo "==> Starting the server (data in $DATA_DIR)"
"$LYCEUM" server --port 0 --data-dir "$DATA_DIR" >"$DATA_DIR.log" 2>&1 &
SERVER_PID=$!
trap 'kill -TERM $SERVER_PID 2>/dev/null; wait $SERVER_PID 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do [ -s "$DATA_DIR/server.url" ] && break; sleep 0.1; done
[ -s "$DATA_DIR/server.url" ] || { cat "$DATA_DIR.log"; echo "server did not start"; exit 1; }
export LYCEUM_BASE_URL="$(cat "$DATA_DIR/server.url")"
export LYCEUM_API_KEY="$(cat "$DATA_DIR/admin.key")"
echo "    server at $LYCEUM_BASE_URL, admin key in $DATA_DIR/admin.key"

echo "==> lyceum infer models"
"$LYCEUM" infer models

echo "==> lyceum infer deploy meta-llama/Llama-3.1-8B-Instruct -g sim.h100 --min-replicas 2 -w -y"
"$LYCEUM" infer deploy meta-llama/Llama-3.1-8B-Instruct -g sim.h100 --min-replicas 2 -w -y
ID="$("$LYCEUM" infer deployments --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["deployments"][0]["deployment_id"])')"

echo "==> lyceum infer chat -d $ID -p 'Hello!' -t 24"
"$LYCEUM" infer chat -d "$ID" -p "Hello! What can you do?" -t 24

echo "==> curl $LYCEUM_BASE_URL/openai/v1/chat/completions"
curl -sS "$LYCEUM_BASE_URL/openai/v1/chat/completions" -H "Authorization: Bearer $LYCEUM_API_KEY" \
  -H "Content-Type: application/json" \
  -d "{\"model\": \"$ID\", \"messages\": [{\"role\": \"user\", \"content\": \"Say hi\"}], \"max_tokens\": 8}"
echo

echo "==> lyceum infer status $ID"
"$LYCEUM" infer status "$ID"
echo "==> lyceum infer events $ID"
"$LYCEUM" infer events "$ID"

echo "==> lyceum infer stop $ID"
"$LYCEUM" infer stop "$ID"

echo "==> Real inference on CPU: llama.cpp's llama-server (built once and cached; a few minutes the first time)"
"$LYCEUM" engine install llama.cpp
# A small instruct model from the Hugging Face Hub (HF_ENDPOINT, if set, is used instead) when the Hub can be
# reached: downloaded once into the Hub cache (~/.cache/huggingface/hub), about 400 MB. Otherwise a tiny
# random-weight llama-architecture model generated here: its text is gibberish, but every token is real
# llama.cpp inference.
HUB="${HF_ENDPOINT:-https://huggingface.co}"
HUB_MODEL="${LYCEUM_QUICKSTART_MODEL:-Qwen/Qwen2.5-0.5B-Instruct-GGUF:qwen2.5-0.5b-instruct-q4_k_m.gguf}"
if curl -sf -m 5 -o /dev/null "$HUB/api/models/${HUB_MODEL%%:*}"; then
  MODEL="$HUB_MODEL"
  echo "==> lyceum infer deploy $MODEL -g cpu -w -y   (from $HUB)"
else
  echo "==> The Hugging Face Hub ($HUB) cannot be reached from here, so this deploys a generated tiny model"
  echo "    instead (random weights: gibberish text, real llama.cpp inference). With the Hub reachable, it would be"
  echo "    $HUB_MODEL."
  if [ ! -x .venv/bin/python ] || ! .venv/bin/python -c "import gguf" 2>/dev/null; then
    python3 -m venv .venv && .venv/bin/pip install --quiet -r tests/e2e/requirements.txt
  fi
  .venv/bin/python tools/make_tiny_gguf.py "$DATA_DIR/tiny.gguf"
  MODEL="$DATA_DIR/tiny.gguf"
  echo "==> lyceum infer deploy $MODEL -g cpu -w -y"
fi
"$LYCEUM" infer deploy "$MODEL" -g cpu -w -y
CPU_ID="$("$LYCEUM" infer deployments --json | python3 -c 'import json,sys; print([d for d in json.load(sys.stdin)["deployments"] if d["hardware_profile"] == "cpu"][0]["deployment_id"])')"
echo "==> lyceum infer chat -d $CPU_ID -p 'Hello' -t 16"
"$LYCEUM" infer chat -d "$CPU_ID" -p "Hello" -t 16
"$LYCEUM" infer stop "$CPU_ID"
"$LYCEUM" infer usage
"$LYCEUM" infer deployments --all
echo "==> Done. The server shuts down now (SIGTERM); its log is $DATA_DIR.log"
