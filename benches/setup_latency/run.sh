#!/usr/bin/env bash
# Set-up latency benchmark (issue 5, acceptance "Set-up latency"): the time from a haul:// URL
# to the first data byte on loopback.
#
# Starts `haul serve` on 127.0.0.1 (port 0) with a fresh data directory, adds a user, puts a
# 1-byte file in their storage, then RUNS times: mints a download URL and runs
# `haul get --json URL DEST`. For each run it records
#   setup_ms  the client's own measure, from the start of the run (URL parsed) to the moment
#             its data plane starts: TCP connect, SSH handshake and host key pin check,
#             publickey login, Ask, token verification, grant, key derivation, Offer and the
#             two Accepts. The first data byte follows within one round trip on loopback.
#   wall_ms   the whole `haul get` process, start to exit, for a 1-byte file (an upper bound of
#             URL to first byte: it also counts process start, the transfer's end and exit).
# and prints the median and the minimum of each, with the machine's load average.
#
#   benches/setup_latency/run.sh          20 runs
#   RUNS=50 benches/setup_latency/run.sh
#
# Env: RUNS (20), HAUL_BIN (default: this tree's release build; build it with
#      `cargo build --release -p haul`).
set -euo pipefail

top=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
RUNS=${RUNS:-20}
if [[ -z "${HAUL_BIN:-}" ]]; then
    # shellcheck source=scripts/env.sh
    source "$top/scripts/env.sh"
    haul_setup_env
    HAUL_BIN="${CARGO_TARGET_DIR}/release/haul"
fi
[[ -x "$HAUL_BIN" ]] || {
    echo "setup_latency: no haul binary at $HAUL_BIN (cargo build --release -p haul)" >&2
    exit 2
}
command -v jq >/dev/null || {
    echo "setup_latency: needs jq (apt-get install jq)" >&2
    exit 2
}

work=$(mktemp -d /tmp/haul-setup-latency.XXXXXX)
chmod 700 "$work"
server_pid=""
cleanup() {
    if [[ -n "$server_pid" ]]; then
        kill -TERM "$server_pid" 2>/dev/null || true
        wait "$server_pid" 2>/dev/null || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT

data="$work/data"
"$HAUL_BIN" serve --data-dir "$data" --ssh-listen 127.0.0.1:0 --udp-listen 127.0.0.1:0 \
    --log-level warn >"$work/serve.out" 2>"$work/serve.log" &
server_pid=$!
for _ in $(seq 1 300); do
    [[ $(wc -l <"$work/serve.out") -ge 2 ]] && break
    sleep 0.1
done
[[ $(wc -l <"$work/serve.out") -ge 2 ]] || {
    echo "setup_latency: haul serve did not start:" >&2
    cat "$work/serve.log" >&2
    exit 1
}
"$HAUL_BIN" user add --data-dir "$data" bench >/dev/null 2>&1
printf x >"$data/storage/bench/one.byte"

setup=()
wall=()
for i in $(seq 1 "$RUNS"); do
    url=$("$HAUL_BIN" token mint --data-dir "$data" --user bench --direction download \
        --path /one.byte 2>/dev/null)
    dest="$work/dest.$i"
    mkdir "$dest"
    t0=$(date +%s%N)
    out=$(printf '%s\n' "$url" | "$HAUL_BIN" get --json --url-file - "$dest")
    t1=$(date +%s%N)
    cmp -s "$dest/one.byte" "$data/storage/bench/one.byte" || {
        echo "setup_latency: run $i received the wrong bytes" >&2
        exit 1
    }
    setup+=("$(jq -r .setup_ms <<<"$out")")
    wall+=("$(((t1 - t0) / 1000))")
done

stats() { # prints "median min" of the numbers on stdin
    sort -g | awk '{v[NR]=$1} END {m=(NR%2)?v[(NR+1)/2]:(v[NR/2]+v[NR/2+1])/2; printf "%.2f %.2f\n", m, v[1]}'
}
read -r s_med s_min < <(printf '%s\n' "${setup[@]}" | stats)
read -r w_med w_min < <(printf '%s\n' "${wall[@]}" | awk '{print $1/1000}' | stats)
echo "haul set-up latency on loopback, $RUNS runs ($(nproc) CPUs, load $(cut -d' ' -f1-3 /proc/loadavg))"
echo "  URL to data plane start (client setup_ms): median ${s_med} ms, min ${s_min} ms"
echo "  whole 'haul get' of 1 byte (process wall):  median ${w_med} ms, min ${w_min} ms"
