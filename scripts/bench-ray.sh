#!/usr/bin/env bash
# Replicas on a Ray cluster against local processes: create to first healthy replica, and a worker node killed
# whole under load (replacement time, requests lost). Needs root (network, PID and mount namespaces) and Ray in
# .venv (scripts/test.sh installs it). Release build; writes its section of docs/benchmarks.md. REPS (default 5)
# and TRIALS (default 2) size it.
set -euo pipefail
cd "$(dirname "$0")/.."
swift build -c release --product lyceum
LYCEUM_BIN="$PWD/.build/release/lyceum" .venv/bin/python scripts/bench_ray.py | .venv/bin/python scripts/bench_section.py ray
