#!/usr/bin/env bash
# benches/wan/haul_only.sh: haul alone on the emulated WAN, with the rate controller's trace.
#
# For each scenario (link rate / RTT / loss), as in run.sh but without the ceiling, TCP and scp
# runs: haul-wanemu up, one `haul send` with default flags (plus HAUL_FLAGS) of a 50 x BDP file
# (at least 64 MiB, or BYTES), with HAUL_RATE_TRACE=1; the sender's trace is kept in
# OUT/SCENARIO.trace and the emulator's per-direction report printed. For the startup: the
# first rate-trace lines show the rate, queue and mode of the first seconds (docs/RATE.md).
#
# Usage: benches/wan/haul_only.sh           (root; about 30 s per scenario)
# Knobs (environment): SCENARIOS="200M/200ms/1% 200M/200ms/5%" OUT=dir BYTES=n HAUL_FLAGS="..."
#                       HAUL_WANEMU=path HAUL_BIN=path
#                       PRE_TCP_SECS=n (iperf3 cubic and bbr for n s each on the same emulator
#                       first, as run.sh runs them)
# shellcheck source-path=SCRIPTDIR
set -euo pipefail

if [[ $(id -u) -ne 0 ]]; then
    echo "haul_only: needs root (network namespaces, TUN devices)" >&2
    exit 1
fi
SCENARIOS=${SCENARIOS:-"200M/200ms/1% 200M/200ms/5%"}
OUT=${OUT:-/tmp/haul-wan-trace}
HAUL_PAYLOAD_FRACTION=0.9467

# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
wan_build
wan_haul_build
mkdir -p "$OUT"
echo "== load=\"$(cut -d' ' -f1-3 /proc/loadavg)\""
for scenario in $SCENARIOS; do
    IFS=/ read -r rate rtt loss <<<"$scenario"
    rtt_ms=${rtt%ms}
    one_way="$(awk -v r="$rtt_ms" 'BEGIN { printf "%g", r / 2 }')ms"
    link=$(awk -v r="$rate" 'BEGIN { n = r + 0; if (r ~ /G$/) n *= 1000; print n }')
    bytes=${BYTES:-$(awk -v l="$link" -v r="$rtt_ms" 'BEGIN { b = 50 * l * 1e6 * r / 1e3 / 8;
        if (b < 67108864) b = 67108864; printf "%d", b }')}
    trace="$OUT/$(tr '/%' '_p' <<<"$scenario").trace"
    wan_up --rate "$rate" --delay "$one_way" --loss "$loss"
    if [[ ${PRE_TCP_SECS:-0} -gt 0 ]]; then
        # As run.sh does: TCP cubic and bbr on the same emulator just before haul.
        wan_tcp_buffers
        echo "== $scenario: TCP before haul: cubic $(wan_iperf3 cubic "$PRE_TCP_SECS")," \
            "bbr $(wan_iperf3 bbr "$PRE_TCP_SECS") Mbit/s"
    fi
    # shellcheck disable=SC2086 # HAUL_FLAGS is a list of flags
    read -r haul resent twice session <<<"$(HAUL_RATE_TRACE=1 WAN_KEEP_STDERR="$trace" \
        wan_haul "$bytes" ${HAUL_FLAGS:-})"
    wan_down >"$trace.wanemu"
    wan_restore
    cat "$trace.wanemu"
    goal=$(awk -v l="$link" -v p="${loss%\%}" -v f="$HAUL_PAYLOAD_FRACTION" \
        'BEGIN { printf "%.1f", 0.95 * (1 - p / 100) * l * f }')
    echo "== $scenario: haul $haul Mbit/s (session $session; target vs the link $goal)," \
        "resent $resent%, twice $twice%," \
        "$((bytes >> 20)) MiB, load \"$(cut -d' ' -f1-3 /proc/loadavg)\", trace $trace"
done
