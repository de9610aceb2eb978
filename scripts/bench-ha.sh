#!/usr/bin/env bash
# Several lyceum server instances on one PostgreSQL: leader takeover after a crash, a freeze and a cut
# lock session; what a PostgreSQL-backed gateway adds against an embedded one; the highest rate held by
# 1, 2 and 3 gateway instances. Starts a throwaway PostgreSQL on loopback (scripts/postgres.sh), release
# builds; writes its section of docs/benchmarks.md. REPS (default 5) and DURATION (default 8 s) size it.
set -euo pipefail
cd "$(dirname "$0")/.."
swift build -c release --product lyceum
swift build -c release --product lyceum-bench
source scripts/postgres.sh
python3 scripts/bench_ha.py | python3 scripts/bench_section.py ha
