#!/usr/bin/env bash
# Runs every test: Swift unit and integration tests (the store contract also against a real PostgreSQL
# server, started here in a temporary folder), then end-to-end tests against real `lyceum server`
# processes with real simulator replicas and the official `openai` client.
# Installs what the tests need: PostgreSQL (Debian packages), a Python virtual environment in .venv
# (pytest, openai, requests, gguf, ray) and llama.cpp's llama-server (built from PyPI's llama-cpp-python
# source, cached per version).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -x .venv/bin/pytest ] || ! .venv/bin/python -c "import openai, requests, gguf, anthropic, lyceum.main, ray" 2>/dev/null; then
  python3 -m venv .venv
  .venv/bin/pip install --quiet --upgrade pip
  .venv/bin/pip install --quiet -r tests/e2e/requirements.txt
fi

# The Ray cluster tests put each node in namespaces of its own: `ip` (iproute2), `unshare`, `nsenter` and
# `setpriv` (util-linux); the head-restart test keeps the head's state in Redis (GCS fault tolerance).
if [ "$(id -u)" = 0 ] && { ! command -v ip >/dev/null || ! command -v redis-server >/dev/null; }; then
  echo "installing iproute2 and redis-server (Debian packages)" >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q iproute2 redis-server >/dev/null 2>&1 ||
    { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q iproute2 redis-server >/dev/null; }
fi

source scripts/postgres.sh

swift build
swift test

# Real llama.cpp replicas: build llama-server once (cached in ~/.cache/lyceum, a few minutes the first time).
.build/debug/lyceum engine install llama.cpp

LYCEUM_BIN="$PWD/.build/debug/lyceum" .venv/bin/pytest tests/e2e -v -p no:cacheprovider "$@"
