#!/usr/bin/env bash
# Load benchmark of the web console (issue 6, "Load"): a release `haul serve` on loopback with a
# seeded data directory in tmpfs, then wrk with CONNS connections against the inbox page (with a
# session cookie) and the inbox API (with an API token). Prints req/s, p99 latency, the
# server's peak RSS (VmHWM), the load average and the machine. Long: not part of CI.
#
#   benches/web_load/run.sh                 # 100 connections, 30 s per endpoint
#   DURATION=10s CONNS=100 PACKAGES=200 benches/web_load/run.sh
#
# Needs: root or sudo-less apt-get for wrk if missing; curl, python3, openssl-free (wrk does not
# verify the self-signed certificate; curl is given it with --cacert).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
DURATION=${DURATION:-30s}
CONNS=${CONNS:-100}
THREADS=${THREADS:-2}
USERS=${USERS:-20}
PACKAGES=${PACKAGES:-100}
RSS_GOAL_KIB=$((256 * 1024))

# shellcheck source=/dev/null
source "$ROOT/scripts/env.sh"
# haul_setup_env picks its own target directory; a CARGO_TARGET_DIR given by the caller wins.
CALLER_TARGET=${CARGO_TARGET_DIR:-}
haul_setup_env
if [[ -n $CALLER_TARGET ]]; then export CARGO_TARGET_DIR=$CALLER_TARGET; fi
TARGET=$CARGO_TARGET_DIR
HAUL=$TARGET/release/haul
command -v wrk >/dev/null || apt-get install -y wrk >/dev/null
command -v curl >/dev/null || apt-get install -y curl >/dev/null
if [[ ! -x $HAUL || ${REBUILD:-0} == 1 ]]; then
    (cd "$ROOT" && cargo build --release -p haul)
fi

WORK=$(mktemp -d /dev/shm/haul-web-load.XXXXXX)
SERVER_PID=
cleanup() {
    if [[ -n $SERVER_PID ]]; then kill "$SERVER_PID" 2>/dev/null || true; wait "$SERVER_PID" 2>/dev/null || true; fi
    rm -rf "$WORK"
}
trap cleanup EXIT

PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
DATA=$WORK/data
"$HAUL" serve --data-dir "$DATA" --ssh-listen 127.0.0.1:0 --udp-listen 127.0.0.1:0 \
    --web-listen "127.0.0.1:$PORT" --log-level warn >"$WORK/serve.out" 2>"$WORK/serve.log" &
SERVER_PID=$!
BASE=https://localhost:$PORT
for _ in $(seq 1 300); do
    [[ -s $DATA/initial-admin-password && -s $DATA/web-cert.pem ]] &&
        curl -s -o /dev/null --cacert "$DATA/web-cert.pem" "$BASE/login" && break
    kill -0 "$SERVER_PID" 2>/dev/null || { cat "$WORK/serve.log"; exit 1; }
    sleep 0.1
done
CURL=(curl -sS --http1.1 --fail-with-body --cacert "$DATA/web-cert.pem")
PASSWORD='L0ad-bench-password!'

csrf_of() { sed -n 's/.*name="csrf" value="\([^"]*\)".*/\1/p' | head -1; }

# sign_in NAME ONE_TIME_PASSWORD JAR: signs in, sets $PASSWORD, leaves the session in JAR.
sign_in() {
    local name=$1 otp=$2 jar=$3 csrf
    csrf=$("${CURL[@]}" -c "$jar" -b "$jar" "$BASE/login" | csrf_of)
    "${CURL[@]}" -o /dev/null -c "$jar" -b "$jar" --data-urlencode "csrf=$csrf" \
        --data-urlencode "name=$name" --data-urlencode "password=$otp" "$BASE/login"
    csrf=$("${CURL[@]}" -c "$jar" -b "$jar" "$BASE/account/password" | csrf_of)
    "${CURL[@]}" -o /dev/null -c "$jar" -b "$jar" --data-urlencode "csrf=$csrf" \
        --data-urlencode "current=$otp" --data-urlencode "new=$PASSWORD" \
        --data-urlencode "confirm=$PASSWORD" "$BASE/account/password"
}

# token JAR SCOPES_JSON: a new API token made with the session in JAR.
token() {
    local jar=$1 scopes=$2 csrf
    csrf=$("${CURL[@]}" -c "$jar" -b "$jar" "$BASE/" | csrf_of)
    "${CURL[@]}" -c "$jar" -b "$jar" -H "x-csrf-token: $csrf" -H 'content-type: application/json' \
        -d "{\"name\":\"load\",\"scopes\":$scopes}" "$BASE/api/v1/tokens" |
        python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])'
}

api() { # api AUTH METHOD PATH [JSON]: the answer on stdout; on an error status, it on stderr
    local auth=$1 method=$2 path=$3 out
    if ! out=$("${CURL[@]}" -X "$method" -H "authorization: Bearer $auth" \
        -H 'content-type: application/json' ${4:+-d "$4"} "$BASE$path"); then
        echo "$method $path: $out" >&2
        return 1
    fi
    echo "$out"
}
json_field() { python3 -c "import json,sys; print(json.load(sys.stdin)[\"$1\"])"; }

echo "seeding: $USERS users, $PACKAGES packages with one file each ..." >&2
sign_in admin "$(cat "$DATA/initial-admin-password")" "$WORK/admin.jar"
ADMIN=$(token "$WORK/admin.jar" '["read","write","admin"]')
for i in $(seq 1 "$USERS"); do
    api "$ADMIN" POST /api/v1/admin/users "{\"name\":\"user$i\",\"role\":\"user\"}" >/dev/null
done
OTP=$(api "$ADMIN" POST /api/v1/admin/users '{"name":"reader","role":"user"}' | json_field one_time_password)
sign_in reader "$OTP" "$WORK/reader.jar"
READER=$(token "$WORK/reader.jar" '["read"]')
api "$ADMIN" PUT /api/v1/admin/upload-settings '{"max_bytes":1048576,"per_user":4}' >/dev/null
head -c 4096 /dev/urandom >"$WORK/file.bin"
for i in $(seq 1 "$PACKAGES"); do
    pkg=$(api "$ADMIN" POST /api/v1/packages \
        "{\"title\":\"Package $i\",\"note\":\"load bench\",\"users\":[\"reader\",\"user$(((i % USERS) + 1))\"]}" |
        json_field id)
    up=$(api "$ADMIN" POST "/api/v1/packages/$pkg/uploads" '{"name":"file.bin","size":4096}' | json_field location)
    "${CURL[@]}" -o /dev/null -X PATCH -H "authorization: Bearer $ADMIN" \
        -H 'content-type: application/offset+octet-stream' -H 'upload-offset: 0' \
        --data-binary "@$WORK/file.bin" "$BASE$up"
    api "$ADMIN" POST "/api/v1/packages/$pkg/send" >/dev/null
done
COUNT=$(api "$READER" GET /api/v1/packages/inbox | python3 -c 'import json,sys; print(len(json.load(sys.stdin)["packages"]))')
[[ $COUNT == "$PACKAGES" ]] || { echo "seeding failed: reader's inbox holds $COUNT packages" >&2; exit 1; }
COOKIE=$(awk '$6 ~ /^__Host-/ { printf "%s%s=%s", sep, $6, $7; sep="; " }' "$WORK/reader.jar")
[[ $("${CURL[@]}" -o /dev/null -w '%{http_code}' -H "cookie: $COOKIE" "$BASE/packages/inbox") == 200 ]] ||
    { echo "the session cookie does not open the inbox page" >&2; exit 1; }

# run NAME PATH HEADER: wrk, then one line of results.
run() {
    local name=$1 path=$2 header=$3 out
    out=$(wrk -t "$THREADS" -c "$CONNS" -d "$DURATION" --latency -H "$header" "$BASE$path")
    echo "$out" >>"$WORK/wrk.txt"
    local rps p99 non2xx errors
    rps=$(awk '/^Requests\/sec/ { print $2 }' <<<"$out")
    p99=$(awk '$1 == "99%" { print $2 }' <<<"$out")
    non2xx=$(awk '/Non-2xx/ { print $5 }' <<<"$out")
    errors=$(grep -o 'Socket errors:.*' <<<"$out" || true)
    printf '%-28s %10s req/s   p99 %8s   non-2xx %s %s\n' "$name" "$rps" "$p99" "${non2xx:-0}" "$errors"
}

echo
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(uname -r)"
echo "haul: $(git -C "$ROOT" rev-parse --short HEAD), wrk -t $THREADS -c $CONNS -d $DURATION"
echo "seeded: $((USERS + 2)) users, $PACKAGES packages in the reader's inbox"
echo "server peak RSS after seeding (VmHWM): $(($(awk '/^VmHWM/ { print $2 }' "/proc/$SERVER_PID/status") / 1024)) MiB"
echo "load before: $(uptime)"
run "GET /packages/inbox (page)" /packages/inbox "cookie: $COOKIE"
run "GET /api/v1/packages/inbox" /api/v1/packages/inbox "authorization: Bearer $READER"
echo "load after:  $(uptime)"
[[ ${VERBOSE:-0} == 1 ]] && cat "$WORK/wrk.txt"
HWM=$(awk '/^VmHWM/ { print $2 }' "/proc/$SERVER_PID/status")
echo "threads at the end: $(awk '/^Threads/ { print $2 }' "/proc/$SERVER_PID/status")"
echo "server peak RSS (VmHWM): $((HWM / 1024)) MiB (goal <= 256 MiB: $([[ $HWM -le $RSS_GOAL_KIB ]] && echo met || echo MISSED))"
