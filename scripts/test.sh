#!/usr/bin/env bash
# Runs Sluice's whole test suite: unit tests, the API tests against real HTTP on SQLite and on
# a PostgreSQL server this script starts (and stops) itself, and the host tests on the real
# Docker engine (started if needed) with a base image made locally (scripts/base-image.sh).
#
# Needs root on Debian (it installs what is missing with apt-get). Usage: scripts/test.sh
# [extra cargo-nextest arguments]
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-deps.sh
scripts/ensure-docker.sh
scripts/base-image.sh

# A throwaway PostgreSQL cluster on a private port, owned by the postgres user.
PG_BIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
PG_PORT=${SLUICE_TEST_PG_PORT:-55432}
# Another run on this machine may hold the port: take the next free one.
while (exec 3<>"/dev/tcp/127.0.0.1/$PG_PORT") 2>/dev/null; do PG_PORT=$((PG_PORT + 1)); done
PG_DIR=$(mktemp -d /tmp/sluice-pg.XXXXXX)
chown postgres:postgres "$PG_DIR"
stop_pg() {
    runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -m immediate stop >/dev/null 2>&1 || true
    rm -rf "$PG_DIR"
}
trap stop_pg EXIT
runuser -u postgres -- "$PG_BIN/initdb" -D "$PG_DIR/data" -A trust -U postgres >/dev/null
if ! runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -l "$PG_DIR/log" -w \
    -o "-p $PG_PORT -k $PG_DIR -c listen_addresses=127.0.0.1 -c max_connections=400 -c fsync=off" start >/dev/null; then
    echo "PostgreSQL did not start; its log:" >&2
    cat "$PG_DIR/log" >&2
    exit 1
fi
export SLUICE_TEST_PG_URL="postgres://postgres@127.0.0.1:$PG_PORT/postgres"

cargo nextest run --no-fail-fast "$@"
