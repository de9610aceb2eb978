#!/usr/bin/env bash
# What an idle fleet costs: N deployments that wait for devices (a profile with none, so no replica process
# runs at all), the server's CPU over a quiet minute, and how long `inference/list` takes. Release build,
# production intervals. Writes its section of docs/benchmarks.md.
#
#   scripts/bench-fleet.sh                 # N = 100, 1000, 10000
#   COUNTS="100 1000" IDLE_S=30 scripts/bench-fleet.sh
set -euo pipefail
cd "$(dirname "$0")/.."
COUNTS="${COUNTS:-100 1000 10000}"
IDLE_S="${IDLE_S:-60}"
swift build -c release --product lyceum
PY=python3
[ -x .venv/bin/python ] && PY=.venv/bin/python
exec "$PY" scripts/bench_fleet.py --lyceum "$PWD/.build/release/lyceum" --counts $COUNTS --idle-s "$IDLE_S" | "$PY" scripts/bench_section.py fleet
