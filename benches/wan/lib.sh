# shellcheck shell=bash source-path=SCRIPTDIR
# benches/wan/lib.sh: helpers shared by the WAN benchmark scripts. Source it; do not run it.
#
# It starts and stops `haul-wanemu up` (docs/WANEMU.md), runs commands on either side of the
# emulated link, raises the socket-buffer limits TCP needs on a long path and restores them on
# exit. Every script that sources it gets one EXIT/INT/TERM trap that stops the emulator (which
# deletes its namespaces) and restores what was changed, whatever happens.
#
# After wan_up: WAN_NS_A, WAN_NS_B (namespace names), WAN_ADDR_A, WAN_ADDR_B (10.201.0.1/.2,
# configured only inside those namespaces), WAN_LOG (the emulator's output).

WAN_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
WAN_PID=""
WAN_LOG=""
WAN_NS_A=""
WAN_NS_B=""
WAN_ADDR_A=""
WAN_ADDR_B=""
WAN_SYSCTL_SAVED=()
WAN_TMP=$(mktemp -d /tmp/haul-wan.XXXXXX)

# wan_build: sets HAUL_WANEMU to a release haul-wanemu (built here unless already given).
wan_build() {
    if [[ -n "${HAUL_WANEMU:-}" ]]; then
        return 0
    fi
    # shellcheck source=../../scripts/env.sh
    source "$WAN_ROOT/scripts/env.sh"
    haul_setup_env
    (cd "$WAN_ROOT" && cargo build --release -q -p haul-io --bin haul-wanemu) >&2
    HAUL_WANEMU="$CARGO_TARGET_DIR/release/haul-wanemu"
}

# wan_up ARGS...: starts `haul-wanemu up ARGS...` in the background and waits for `ready`.
wan_up() {
    WAN_LOG="$WAN_TMP/wanemu.$$.$RANDOM.log"
    "$HAUL_WANEMU" up --name "bench$$" "$@" >"$WAN_LOG" 2>&1 &
    WAN_PID=$!
    local i
    for ((i = 0; i < 100; i++)); do
        if grep -qx ready "$WAN_LOG"; then
            WAN_NS_A=$(sed -n 's/^netns_a=\([^ ]*\).*/\1/p' "$WAN_LOG")
            WAN_NS_B=$(sed -n 's/^netns_b=\([^ ]*\).*/\1/p' "$WAN_LOG")
            # shellcheck disable=SC2034 # for the scripts that source this file
            WAN_ADDR_A=$(sed -n 's/.* addr_a=\([^ ]*\).*/\1/p' "$WAN_LOG")
            WAN_ADDR_B=$(sed -n 's/.* addr_b=\([^ ]*\).*/\1/p' "$WAN_LOG")
            return 0
        fi
        if ! kill -0 "$WAN_PID" 2>/dev/null; then
            break
        fi
        sleep 0.1
    done
    echo "haul-wanemu did not start:" >&2
    cat "$WAN_LOG" >&2
    WAN_PID=""
    return 1
}

# wan_down: stops the emulator (SIGTERM: it prints its counters and deletes its namespaces)
# and prints its per-direction report, indented. Call it from the shell that ran wan_up, not
# in a pipeline or $(...): a subshell cannot wait for the emulator.
wan_down() {
    if [[ -z "$WAN_PID" ]]; then
        return 0
    fi
    kill -TERM "$WAN_PID" 2>/dev/null || true
    wait "$WAN_PID" 2>/dev/null || true
    WAN_PID=""
    grep -E '^(a->b|b->a): .*packets_in=' "$WAN_LOG" | sed 's/^/    emulator /' || true
}

# in_a CMD... / in_b CMD...: run a command on side A / side B.
in_a() { ip netns exec "$WAN_NS_A" "$@"; }
in_b() { ip netns exec "$WAN_NS_B" "$@"; }

# wan_sysctl KEY VALUE: sets a host-wide sysctl, remembering the old value for wan_restore.
wan_sysctl() {
    local old
    old=$(sysctl -n "$1")
    WAN_SYSCTL_SAVED+=("$1=$old")
    sysctl -q -w "$1=$2"
}

# wan_tcp_buffers: raises TCP's buffer limits so that a 200 Mbit/s x 200 ms path (5 MB) is not
# window-limited. net.core.{r,w}mem_max are host-wide on this kernel (read-only inside a
# netns), so they are set on the host and restored on exit; net.ipv4.tcp_{r,w}mem are per
# namespace and vanish with the namespaces.
wan_tcp_buffers() {
    wan_sysctl net.core.rmem_max 67108864
    wan_sysctl net.core.wmem_max 67108864
    local ns
    for ns in "$WAN_NS_A" "$WAN_NS_B"; do
        ip netns exec "$ns" sysctl -q -w net.ipv4.tcp_rmem="4096 131072 67108864"
        ip netns exec "$ns" sysctl -q -w net.ipv4.tcp_wmem="4096 16384 67108864"
    done
}

wan_restore() {
    local kv
    for kv in "${WAN_SYSCTL_SAVED[@]}"; do
        sysctl -q -w "${kv%%=*}=${kv#*=}" || echo "could not restore $kv" >&2
    done
    WAN_SYSCTL_SAVED=()
}

wan_on_exit() {
    wan_down >/dev/null
    wan_restore
    rm -rf "$WAN_TMP"
}
trap wan_on_exit EXIT
trap 'exit 130' INT TERM

# wan_udp_ceiling RATE SECS: a blaster on A at RATE through the emulator to a sink on B;
# prints the sink's line (packets, IP bytes, Mbit/s delivered at the IP layer).
wan_udp_ceiling() {
    local rate=$1 secs=$2 out="$WAN_TMP/sink.out"
    in_b "$HAUL_WANEMU" sink --bind "$WAN_ADDR_B:9000" --idle 1s --time "$((secs + 30))s" \
        >"$out" &
    local sink_pid=$!
    sleep 0.3
    in_a "$HAUL_WANEMU" blast --to "$WAN_ADDR_B:9000" --rate "$rate" --time "${secs}s"
    wait "$sink_pid"
    cat "$out"
}

# wan_iperf3 CC SECS: iperf3 TCP from A to B with congestion control CC; prints the
# receiver's goodput in Mbit/s.
wan_iperf3() {
    local cc=$1 secs=$2
    in_b iperf3 -s -1 >/dev/null 2>&1 &
    local srv=$!
    sleep 0.5
    in_a iperf3 -c "$WAN_ADDR_B" -C "$cc" -t "$secs" -f m \
        | awk '/receiver/ { for (i = 1; i <= NF; i++) if ($i == "Mbits/sec") print $(i - 1) }'
    wait "$srv" 2>/dev/null || true
}

# wan_haul_build: sets HAUL_BIN to a release haul (built here unless already given).
wan_haul_build() {
    if [[ -n "${HAUL_BIN:-}" ]]; then
        return 0
    fi
    # shellcheck source=../../scripts/env.sh
    source "$WAN_ROOT/scripts/env.sh"
    haul_setup_env
    (cd "$WAN_ROOT" && cargo build --release -q -p haul) >&2
    HAUL_BIN="$CARGO_TARGET_DIR/release/haul"
}

# wan_haul BYTES [FLAGS...]: one `haul send` of a BYTES-long random file from side A to a
# `haul recv` on side B, default flags plus FLAGS; prints
# "GOODPUT_MBIT RESENT_PCT TWICE_PCT SESSION_MBIT" where goodput is issue 4's definition: file
# bytes over the time from the first datagram sent (the sender's `first_data_unix_us`) to the
# verified rename (the receiver's `verified_unix_us`; both ends are on this host's clock),
# SESSION_MBIT the stricter file bytes over the sender's whole session time (`seconds`: key
# set-up and the final acknowledgement's way back included), RESENT_PCT the bytes the sender
# sent again and TWICE_PCT the bytes that reached the receiver a second time (redundant
# resends), both as % of the file; or "- - - -" when the transfer failed (its output is left
# under $WAN_TMP). With WAN_KEEP_STDERR=FILE the
# sender's stderr (e.g. its HAUL_RATE_TRACE lines) is copied to FILE, and both ends' --json
# summaries to FILE.send.json and FILE.recv.json (the receiver's `resent_bytes` counts the
# bytes that arrived twice; its `rejects` the datagrams it dropped).
wan_haul() {
    local bytes=$1 dir rpid addr out secs resent twice
    shift
    dir=$(mktemp -d "$WAN_TMP/haul.XXXXXX")
    mkdir -p "$dir/dest"
    "$HAUL_BIN" keygen "$dir/key" >/dev/null
    head -c "$bytes" /dev/urandom >"$dir/src.bin"
    in_b timeout 900 "$HAUL_BIN" recv --listen "$WAN_ADDR_B:0" --key-file "$dir/key" --json \
        "$dir/dest" >"$dir/recv.out" 2>"$dir/recv.err" &
    rpid=$!
    local i
    for ((i = 0; i < 200; i++)); do
        addr=$(sed -n 's/^listening on //p' "$dir/recv.out" 2>/dev/null | head -n1)
        [[ -n "$addr" ]] && break
        sleep 0.05
    done
    if [[ -z "$addr" ]] || ! in_a timeout 900 "$HAUL_BIN" send --to "$addr" --key-file "$dir/key" \
        --json "$@" "$dir/src.bin" >"$dir/send.out" 2>"$dir/send.err"; then
        # Why it failed, on stderr (the table only says "-").
        grep -v '^rate-trace' "$dir/send.err" | tail -n 2 | sed 's/^/    haul send: /' >&2
        sleep 1
        kill "$rpid" 2>/dev/null || true
        wait "$rpid" 2>/dev/null || true
        if [[ -n "${WAN_KEEP_STDERR:-}" ]]; then
            cp "$dir/send.err" "$WAN_KEEP_STDERR" 2>/dev/null || true
            cat "$dir/recv.out" "$dir/recv.err" >"$WAN_KEEP_STDERR.recv" 2>/dev/null || true
            wan_keep_json "$dir" "$WAN_KEEP_STDERR"
        fi
        echo "- - - -"
        return 0
    fi
    wait "$rpid" 2>/dev/null || true
    if [[ -n "${WAN_KEEP_STDERR:-}" ]]; then
        cp "$dir/send.err" "$WAN_KEEP_STDERR"
        wan_keep_json "$dir" "$WAN_KEEP_STDERR"
    fi
    out=$(grep '^{' "$dir/send.out" | tail -n1)
    secs=$(jq -r '.seconds' <<<"$out")
    resent=$(jq -r '.resent_bytes' <<<"$out")
    first=$(jq -r '.first_data_unix_us // empty' <<<"$out")
    rout=$(grep '^{' "$dir/recv.out" | tail -n1)
    twice=$(jq -r '.resent_bytes // 0' <<<"$rout")
    verified=$(jq -r '.verified_unix_us // empty' <<<"$rout")
    awk -v b="$bytes" -v s="$secs" -v r="$resent" -v t="${twice:-0}" -v f="${first:-0}" \
        -v v="${verified:-0}" 'BEGIN {
            g = (f > 0 && v > f) ? sprintf("%.1f", b * 8 / ((v - f) / 1e6) / 1e6) : "-"
            printf "%s %.2f %.2f %.1f\n", g, 100 * r / b, 100 * t / b, b * 8 / s / 1e6 }'
    rm -f "$dir/src.bin" "$dir"/dest/*
}

# wan_keep_json DIR FILE: copies the last --json line of the sender (DIR/send.out) and of the
# receiver (DIR/recv.out) to FILE.send.json and FILE.recv.json, and each namespace's UDP
# counters (/proc/net/snmp: RcvbufErrors are datagrams a full socket buffer dropped, which the
# emulator does not see) to FILE.udp.
wan_keep_json() {
    grep '^{' "$1/send.out" 2>/dev/null | tail -n1 >"$2.send.json" || true
    grep '^{' "$1/recv.out" 2>/dev/null | tail -n1 >"$2.recv.json" || true
    { in_a grep '^Udp:' /proc/net/snmp | sed 's/^/a /'
      in_b grep '^Udp:' /proc/net/snmp | sed 's/^/b /'; } >"$2.udp" 2>/dev/null || true
}

# wan_scp BYTES SECS: scp of a BYTES-long random file from side A to an sshd run inside
# namespace B (its own host key, config and authorized key under $WAN_TMP; nothing on the host
# changes), stopped after SECS. Prints "GOODPUT_MBIT CC": bytes that reached B over the
# time taken (connection set-up included; when stopped at SECS, the partial file's size over
# SECS, marked with a trailing "*"), and the sending side's TCP congestion control (side A's
# netns default: scp sets none); "- CC" when nothing arrived.
wan_scp() {
    local bytes=$1 secs=$2 dir cc start end port=2222 got mark=""
    dir=$(mktemp -d "$WAN_TMP/scp.XXXXXX")
    mkdir -p "$dir/dest" /run/sshd
    ssh-keygen -q -t ed25519 -N '' -f "$dir/host_key"
    ssh-keygen -q -t ed25519 -N '' -f "$dir/user_key"
    cp "$dir/user_key.pub" "$dir/authorized_keys"
    chmod 600 "$dir/authorized_keys"
    cat >"$dir/sshd_config" <<CFG
ListenAddress $WAN_ADDR_B
Port $port
HostKey $dir/host_key
AuthorizedKeysFile $dir/authorized_keys
PidFile $dir/sshd.pid
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
Subsystem sftp internal-sftp
CFG
    head -c "$bytes" /dev/urandom >"$dir/src.bin"
    in_b /usr/sbin/sshd -D -e -f "$dir/sshd_config" 2>"$dir/sshd.err" &
    local spid=$!
    sleep 0.5
    cc=$(in_a sysctl -n net.ipv4.tcp_congestion_control)
    start=$(date +%s.%N)
    if ! in_a timeout "$secs" scp -q -i "$dir/user_key" -P "$port" -o BatchMode=yes \
        -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null \
        "$dir/src.bin" "root@$WAN_ADDR_B:$dir/dest/" 2>"$dir/scp.err"; then
        mark="*"
    fi
    end=$(date +%s.%N)
    got=$(stat -c %s "$dir/dest/src.bin" 2>/dev/null || echo 0)
    if [[ $got -gt 0 ]]; then
        awk -v b="$got" -v s="$start" -v e="$end" -v cc="$cc" -v m="$mark" \
            'BEGIN { printf "%.2f%s %s\n", b * 8 / (e - s) / 1e6, m, cc }'
    else
        echo "- $cc"
    fi
    # sshd runs under `ip netns exec` in a subshell: stop it by its own pid.
    if [[ -s "$dir/sshd.pid" ]]; then
        kill "$(cat "$dir/sshd.pid")" 2>/dev/null || true
    fi
    wait "$spid" 2>/dev/null || true
    rm -f "$dir/src.bin" "$dir"/dest/*
}
