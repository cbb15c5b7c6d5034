#!/usr/bin/env bash
# Renewal throughput of one issuer instance against two on one PostgreSQL
# database, in one run (a measurement to report, not a test): wrk on
# loopback against licenses/validate, 16 connections in all (split over
# the instances), and the CPU time the issuer processes and the database
# server used, from /proc (user + system), so the database's share of the
# server CPU. On a 2-core machine two instances share the same cores: the
# figure says what a second instance costs, not what a second machine gives.
#   cargo build --release -p coditect-issuer && tests/load/instances-load.sh
# Needs wrk (apt-get install wrk); starts a throwaway PostgreSQL.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$HERE/../..
BIN=${ISSUER_BIN:-$ROOT/target/release/coditect-issuer}
SECS=${LOAD_SECONDS:-10}
TICK=$(getconf CLK_TCK)
# shellcheck source=scripts/postgres.sh
. "$ROOT/scripts/postgres.sh"
postgres_throwaway
PG=$CODITECT_TEST_POSTGRES
psql "$PG" -XAtqc 'CREATE DATABASE coditect_instances' >/dev/null
export DATABASE_URL=${PG%/*}/coditect_instances RUST_LOG=warn
export RATE_LIMIT_LOGIN=1000000/min RATE_LIMIT_SIGNUP=1000000/min RATE_LIMIT_VALIDATE=1000000/min \
    RATE_LIMIT_ACTIVATE=1000000/hour RATE_LIMIT_LICENSE_IP=1000000/min
DATA=$(mktemp -d)
export CODITECT_DATA_DIR=$DATA
cd "$HERE"
PIDS=()
cleanup() { kill "${PIDS[@]}" 2>/dev/null || true; rm -rf "$DATA"; postgres_throwaway_stop; }
trap cleanup EXIT

ticks() { # total user+system ticks of the given pids
    local t=0 p
    for p in "$@"; do
        [ -r "/proc/$p/stat" ] && t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat")))
    done
    echo "$t"
}
pg_pids() { # the throwaway server and its backends
    local master
    master=$(head -n1 "$PG_THROWAWAY_DIR/data/postmaster.pid")
    echo "$master $(pgrep -P "$master" | tr '\n' ' ')"
}

start() { # port
    "$BIN" serve --bind 127.0.0.1:"$1" 2>>"$DATA/log" &
    PIDS+=($!)
    until curl -sf "http://127.0.0.1:$1/readyz" >/dev/null; do sleep 0.05; done
}

start 18201
KEY=$("$BIN" license create --email load@example.com --tier pilot-professional --json 2>/dev/null \
    | python3 -c 'import json,sys;print(json.load(sys.stdin)["key"])')
HW=$(python3 -c "print('cd'*32)")
curl -sf -X POST http://127.0.0.1:18201/api/v1/licenses/activate -H 'content-type: application/json' \
    -d "{\"license_key\":\"$KEY\",\"hardware_id\":\"$HW\"}" >/dev/null
echo "{\"license_key\":\"$KEY\",\"hardware_id\":\"$HW\",\"client_version\":\"1.0\"}" >"$DATA/validate.json"
export VALIDATE_BODY=$DATA/validate.json
wrk -t2 -c16 -d3s -s validate.lua http://127.0.0.1:18201/api/v1/licenses/validate >/dev/null

measure() { # label ports...
    local label=$1; shift
    local before_i before_p after_i after_p n=$# per=$((16 / $#)) port total=0 outs=()
    # shellcheck disable=SC2046
    before_i=$(ticks "${PIDS[@]}"); before_p=$(ticks $(pg_pids))
    local loads=()
    for port in "$@"; do
        wrk -t1 -c"$per" -d"${SECS}s" -s validate.lua "http://127.0.0.1:$port/api/v1/licenses/validate" \
            >"$DATA/wrk.$port" &
        loads+=($!)
    done
    wait "${loads[@]}"
    # shellcheck disable=SC2046
    after_i=$(ticks "${PIDS[@]}"); after_p=$(ticks $(pg_pids))
    for port in "$@"; do
        outs+=("$(grep RESULT "$DATA/wrk.$port")")
        total=$((total + $(grep -o 'rps=[0-9]*' "$DATA/wrk.$port" | cut -d= -f2)))
    done
    python3 - "$label" "$n" "$total" "$((after_i - before_i))" "$((after_p - before_p))" "$TICK" "${outs[@]}" <<'PY'
import sys
label, n, total, ti, tp, tick = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6])
share = tp / max(ti + tp, 1)
print(f"{label}: {n} instance(s) validate rps={total} issuer_cpu_s={ti/tick:.1f} db_cpu_s={tp/tick:.1f} db_share={share:.2f}")
for o in sys.argv[7:]:
    print("   ", o)
PY
}

measure "one instance " 18201
start 18202
measure "two instances" 18201 18202
