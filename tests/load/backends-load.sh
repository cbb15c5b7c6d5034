#!/usr/bin/env bash
# The issuer on SQLite and on PostgreSQL in one run (a measurement to
# report, not a test: timings on a shared machine are noisy). For each
# backend: renewals (licenses/validate) and activations of new machines
# (licenses/activate), throughput and p50/p99 with wrk; on PostgreSQL also
# the database round trips per request, counted by pg_stat_statements
# (statements executed, BEGIN and COMMIT included, divided by the requests).
#   cargo build --release -p coditect-issuer && tests/load/backends-load.sh
# Needs wrk (apt-get install wrk). PostgreSQL: a throwaway server started
# here with pg_stat_statements loaded (scripts/postgres.sh).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$HERE/../..
BIN=${ISSUER_BIN:-$ROOT/target/release/coditect-issuer}
SECS=${LOAD_SECONDS:-10}
CLIENTS=${LOAD_CLIENTS:-16}
# shellcheck source=scripts/postgres.sh
. "$ROOT/scripts/postgres.sh"
postgres_throwaway shared_preload_libraries=pg_stat_statements pg_stat_statements.track_utility=on
PG=$CODITECT_TEST_POSTGRES
psql "$PG" -XAtqc 'CREATE DATABASE coditect_load' >/dev/null
PG_DB=${PG%/*}/coditect_load
psql "$PG_DB" -XAtqc 'CREATE EXTENSION pg_stat_statements' >/dev/null

export RUST_LOG=warn
export RATE_LIMIT_LOGIN=1000000/min RATE_LIMIT_SIGNUP=1000000/min RATE_LIMIT_VALIDATE=1000000/min \
    RATE_LIMIT_ACTIVATE=1000000/hour RATE_LIMIT_LICENSE_IP=1000000/min
cd "$HERE"

statements() { # executed statements in the load database since the last reset
    psql "$PG_DB" -XAtqc "SELECT coalesce(sum(calls), 0) FROM pg_stat_statements
        WHERE dbid = (SELECT oid FROM pg_database WHERE datname = 'coditect_load')
          AND query NOT ILIKE '%pg_stat_statements%'"
}

run_backend() { # name DATABASE_URL
    local name=$1 url=$2 port=18191 data pid key hw out requests calls
    data=$(mktemp -d)
    export CODITECT_DATA_DIR=$data
    if [ -n "$url" ]; then export DATABASE_URL=$url; else unset DATABASE_URL; fi
    "$BIN" serve --bind 127.0.0.1:$port 2>"$data/log" & pid=$!
    until curl -sf http://127.0.0.1:$port/readyz >/dev/null; do sleep 0.05; done
    key=$("$BIN" license create --email load@example.com --tier pilot-professional \
        --max-devices 1000000 --json 2>/dev/null | python3 -c 'import json,sys;print(json.load(sys.stdin)["key"])')
    hw=$(python3 -c "print('ab'*32)")
    curl -sf -X POST http://127.0.0.1:$port/api/v1/licenses/activate -H 'content-type: application/json' \
        -d "{\"license_key\":\"$key\",\"hardware_id\":\"$hw\"}" >/dev/null
    echo "{\"license_key\":\"$key\",\"hardware_id\":\"$hw\",\"client_version\":\"1.0\"}" >"$data/validate.json"
    export VALIDATE_BODY=$data/validate.json LICENSE_KEY=$key
    # Warm-up (connections, prepared statements, caches).
    wrk -t2 -c"$CLIENTS" -d3s -s validate.lua http://127.0.0.1:$port/api/v1/licenses/validate >/dev/null
    for what in validate activate; do
        [ "$name" = postgres ] && psql "$PG_DB" -XAtqc 'SELECT pg_stat_statements_reset()' >/dev/null
        out=$(wrk -t2 -c"$CLIENTS" -d"${SECS}s" -s $what.lua \
            http://127.0.0.1:$port/api/v1/licenses/$what | grep RESULT)
        requests=$(echo "$out" | grep -o 'requests=[0-9]*' | cut -d= -f2 || true)
        if [ -z "$requests" ]; then
            rps=$(echo "$out" | grep -o 'rps=[0-9]*' | cut -d= -f2)
            requests=$((rps * SECS))
        fi
        if [ "$name" = postgres ]; then
            calls=$(statements)
            printf '%-8s %-8s %s round_trips_per_request=%s\n' "$name" "$what" "$out" \
                "$(python3 -c "print(f'{$calls/max($requests,1):.2f}')")"
        else
            printf '%-8s %-8s %s\n' "$name" "$what" "$out"
        fi
    done
    kill "$pid"; wait "$pid" 2>/dev/null || true
    rm -rf "$data"
}

echo "issuer: $BIN; $CLIENTS clients, ${SECS}s per measurement"
run_backend sqlite ""
run_backend postgres "$PG_DB"
unset DATABASE_URL
