#!/usr/bin/env bash
# Starts a throwaway PostgreSQL server for the tests: a new cluster in a temporary folder, listening on
# 127.0.0.1 only, trust authentication for the `lyceum` role. Installs PostgreSQL from Debian's packages
# when it is missing. Sourced by scripts/test.sh; exports LYCEUM_TEST_POSTGRES_URL and stops the server
# (by its own data folder, so no other PostgreSQL is touched) when the calling shell exits.
set -euo pipefail
initdb_bin="$(ls /usr/lib/postgresql/*/bin/initdb 2>/dev/null | sort -V | tail -1 || true)"
if [ -z "$initdb_bin" ]; then
  echo "installing PostgreSQL (Debian packages)" >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql >/dev/null
  initdb_bin="$(ls /usr/lib/postgresql/*/bin/initdb | sort -V | tail -1)"
fi
pg_bin="$(dirname "$initdb_bin")"
PG_DIR="$(mktemp -d /tmp/lyceum-pg.XXXXXX)"
PG_PORT="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
as_pg=()
if [ "$(id -u)" = 0 ]; then
  # PostgreSQL refuses to run as root: its own system user runs it.
  id postgres >/dev/null 2>&1 || useradd --system --no-create-home postgres
  chown postgres "$PG_DIR"
  as_pg=(runuser -u postgres --)
fi
"${as_pg[@]}" "$pg_bin/initdb" -D "$PG_DIR/data" -A trust -U lyceum >"$PG_DIR/initdb.log" 2>&1
"${as_pg[@]}" "$pg_bin/pg_ctl" -D "$PG_DIR/data" -l "$PG_DIR/server.log" -w -o "-c listen_addresses=127.0.0.1 -p $PG_PORT -k $PG_DIR -c max_connections=300 -c fsync=off" start >/dev/null
stop_postgres() { "${as_pg[@]}" "$pg_bin/pg_ctl" -D "$PG_DIR/data" -m immediate stop >/dev/null 2>&1 || true; rm -rf "$PG_DIR"; }
trap stop_postgres EXIT
export LYCEUM_TEST_POSTGRES_URL="postgres://lyceum@127.0.0.1:$PG_PORT/postgres"
echo "PostgreSQL for the tests at $LYCEUM_TEST_POSTGRES_URL" >&2
