#!/usr/bin/env bash
# Load run of the issuer (issue 3): not a test (timings on a shared machine
# are noisy), a measurement to report. Needs wrk (apt-get install wrk).
#   cargo build --release -p coditect-issuer && tests/load/issuer-load.sh
# Prints: cold start to /readyz, RSS after ~30 s of validations and after
# logins, throughput and p50/p99 of licenses/validate next to /healthz in
# the same run, and validate's p99 with and without 20 clients logging in.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
BIN=${ISSUER_BIN:-$HERE/../../target/release/coditect-issuer}
PORT=${PORT_UNDER_TEST:-18181}
URL=http://127.0.0.1:$PORT
D=$(mktemp -d)
export CODITECT_DATA_DIR=$D RUST_LOG=warn
# Throughput, not the rate limits, is measured here.
export RATE_LIMIT_LOGIN=1000000/min RATE_LIMIT_SIGNUP=1000000/min RATE_LIMIT_VALIDATE=1000000/min \
    RATE_LIMIT_ACTIVATE=1000000/hour RATE_LIMIT_LICENSE_IP=1000000/min
export VALIDATE_BODY=$D/validate.json
cd "$HERE"
start=$(date +%s%N)
"$BIN" serve --bind 127.0.0.1:$PORT 2>"$D/log" & PID=$!
trap 'kill $PID 2>/dev/null || true; rm -rf "$D"' EXIT
until curl -sf $URL/readyz >/dev/null; do sleep 0.005; done
end=$(date +%s%N)
echo "cold start to /readyz 200: $(( (end-start)/1000000 )) ms"
KEY=$("$BIN" license create --email load@example.com --tier pilot-professional --json 2>/dev/null \
  | python3 -c 'import json,sys;print(json.load(sys.stdin)["key"])')
HW=$(python3 -c "print('ab'*32)")
curl -sf -X POST $URL/api/v1/licenses/activate -H 'content-type: application/json' \
  -d "{\"license_key\":\"$KEY\",\"hardware_id\":\"$HW\"}" >/dev/null
echo "{\"license_key\":\"$KEY\",\"hardware_id\":\"$HW\",\"client_version\":\"1.0\"}" > "$VALIDATE_BODY"
curl -sf -X POST $URL/api/v1/auth/signup -H 'content-type: application/json' \
  -d '{"email":"load@example.com","password":"correct horse battery","company_name":"Load"}' >/dev/null
wrk -t2 -c8 -d30s -s validate.lua $URL/api/v1/licenses/validate | grep RESULT | sed 's/^/warm-up validations: /'
echo "RSS after the warm-up validations: $(grep VmRSS /proc/$PID/status | awk '{print $2}') kB"
for i in 1 2; do
  echo "round $i"
  echo -n "  healthz  "; wrk -t2 -c16 -d10s -s healthz.lua $URL/healthz | grep RESULT
  echo -n "  validate "; wrk -t2 -c16 -d10s -s validate.lua $URL/api/v1/licenses/validate | grep RESULT
done
echo -n "validate, 4 clients, alone               "
wrk -t1 -c4 -d10s -s validate.lua $URL/api/v1/licenses/validate | grep RESULT
wrk -t1 -c20 -d12s -s login.lua $URL/api/v1/auth/login > "$D/login.out" &
LPID=$!
sleep 1
echo -n "validate, 4 clients, 20 logging in       "
wrk -t1 -c4 -d10s -s validate.lua $URL/api/v1/licenses/validate | grep RESULT
wait $LPID
grep LOGIN "$D/login.out" | sed 's/^/  /'
echo -n "validate, 4 clients, alone again         "
wrk -t1 -c4 -d10s -s validate.lua $URL/api/v1/licenses/validate | grep RESULT
echo "RSS after the logins: $(grep VmRSS /proc/$PID/status | awk '{print $2}') kB"
