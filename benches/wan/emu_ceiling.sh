#!/usr/bin/env bash
# benches/wan/emu_ceiling.sh: the WAN emulator's own ceiling, and TCP through it.
#
# 1. For each rate in RATES (default 200M and 500M): haul-wanemu at that rate, one-way DELAY
#    (default 10 ms, so 20 ms RTT), 0% loss; a fixed-rate UDP blaster (haul-wanemu blast,
#    1500-byte IP packets) on side A at the same rate; a sink on side B. Prints Mbit/s
#    delivered at the IP layer and the emulator's own counters and timing error. Then the
#    same blaster through the emulator without a rate limit (its forwarding capacity).
# 2. If iperf3 is present (installed with apt-get when missing and we are root): iperf3 TCP
#    with -C cubic and -C bbr through the emulator at 200 Mbit/s / 20 ms RTT, socket buffers
#    raised (restored on exit), goodput printed.
#
# Usage: benches/wan/emu_ceiling.sh          (root; about 1 minute)
# Knobs (environment): RATES="200M 500M" DELAY=10ms SECS=5 TCP_SECS=10 (0: skip TCP)
#                       HAUL_WANEMU=path
# shellcheck source-path=SCRIPTDIR
set -euo pipefail

if [[ $(id -u) -ne 0 ]]; then
    echo "emu_ceiling: needs root (network namespaces, TUN devices)" >&2
    exit 1
fi
RATES=${RATES:-"200M 500M"}
DELAY=${DELAY:-10ms}
SECS=${SECS:-5}
TCP_SECS=${TCP_SECS:-10}

# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
wan_build
haul_need_iperf3() {
    command -v iperf3 >/dev/null 2>&1 && return 0
    # shellcheck source=../../scripts/env.sh
    source "$WAN_ROOT/scripts/env.sh"
    haul_apt_install iperf3 >&2 || return 1
}

echo "== machine: nproc=$(nproc) cpu=\"$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 |
    sed 's/^ //')\" kernel=$(uname -r)"
echo "== emulator ceiling: UDP blaster at the link rate, one-way delay $DELAY, 0% loss, ${SECS}s"
for rate in $RATES; do
    wan_up --rate "$rate" --delay "$DELAY"
    line=$(wan_udp_ceiling "$rate" "$SECS" | grep '^sink:')
    mbit=$(sed -n 's/.* mbit_s=\([0-9.]*\).*/\1/p' <<<"$line")
    echo "ceiling rate=$rate delivered_mbit_s=$mbit   ($line)"
    wan_down
    # The same blaster through an emulator with no rate limit: what the forwarder itself
    # moves. At the link rate the queue is critically loaded (offered = capacity), so every
    # stall of the blaster or the emulator leaves a backlog that never drains; this row tells
    # such stalls apart from a forwarder that cannot keep up.
    wan_up --rate 0 --delay "$DELAY"
    line=$(wan_udp_ceiling "$rate" "$SECS" | grep '^sink:')
    mbit=$(sed -n 's/.* mbit_s=\([0-9.]*\).*/\1/p' <<<"$line")
    echo "forwarding blaster=$rate rate_limit=none delivered_mbit_s=$mbit   ($line)"
    wan_down
done

if [[ $TCP_SECS -eq 0 ]]; then
    echo "== TCP: SKIPPED (TCP_SECS=0)"
elif haul_need_iperf3; then
    echo "== TCP through the emulator: 200 Mbit/s, 20 ms RTT, 0% loss, ${TCP_SECS}s, buffers raised"
    wan_up --rate 200M --delay 10ms
    wan_tcp_buffers
    for cc in cubic bbr; do
        echo "tcp cc=$cc goodput_mbit_s=$(wan_iperf3 "$cc" "$TCP_SECS")"
    done
    wan_down
else
    echo "== TCP: SKIPPED (no iperf3, and it could not be installed)"
fi
