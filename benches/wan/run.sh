#!/usr/bin/env bash
# benches/wan/run.sh: issue 4's emulated-WAN scenarios, side by side, in one run.
#
# For each scenario (link rate / RTT / loss), on haul-wanemu (docs/WANEMU.md):
#   1. the emulator's own ceiling: the fixed-rate UDP blaster at the link rate, 0% loss;
#   2. iperf3 TCP with -C cubic and with -C bbr (set explicitly: this kernel's default is bbr),
#      socket buffers raised so that TCP is not window-limited (restored on exit).
# Loss applies to both directions (a symmetric lossy link, ACKs included).
# Prints one table: goodput in Mbit/s and in % of the link.
#
#   3. haul with default flags: one file of 50 x BDP (at least 64 MiB) from side A to side B;
#      goodput = file bytes / the time from the first datagram sent to the verified rename
#      (issue 4's definition; both ends' --json timestamps on this host's clock), and beside
#      it, marked "session", file bytes / the sender's whole session time (key set-up and the
#      last acknowledgement's way back included: about 1.5 RTT more); the bytes it resent (as
#      % of the file) and the bytes that reached the receiver twice are printed with it. Its rate trace (HAUL_RATE_TRACE=1), both ends' --json summaries and the
#      emulator's report are kept in OUT/SCENARIO.{trace,trace.send.json,trace.recv.json,wanemu}
#      so that a bad row can be analysed afterwards.
#   4. scp (OpenSSH) of min(the haul file, SCP_BYTES) to an sshd inside namespace B, stopped
#      after SCP_SECS (then the partial file over the time, marked *); the sender's TCP
#      congestion control (side A's default, which scp does not change) is printed.
#
# Usage: benches/wan/run.sh            (root; about 10 minutes)
# Knobs (environment): SCENARIOS="200M/20ms/0% ..." CEILING_SECS=5 TCP_SECS=20
#                       SCP_BYTES=268435456 SCP_SECS=60 HAUL_WANEMU=path HAUL_BIN=path
#                       OUT=dir (default /tmp/haul-wan-run)
# shellcheck source-path=SCRIPTDIR
set -euo pipefail

if [[ $(id -u) -ne 0 ]]; then
    echo "wan bench: needs root (network namespaces, TUN devices)" >&2
    exit 1
fi
SCENARIOS=${SCENARIOS:-"200M/20ms/0% 200M/200ms/0% 200M/200ms/1% 200M/200ms/5% 500M/100ms/2%"}
CEILING_SECS=${CEILING_SECS:-5}
TCP_SECS=${TCP_SECS:-20}
SCP_BYTES=${SCP_BYTES:-268435456}
SCP_SECS=${SCP_SECS:-60}
# File bytes per IP byte of a full haul datagram on a 1500-byte IPv4 path: 1420 / 1500
# (1472-byte UDP payload less 52 bytes of header, offset and tag; the same for every suite).
HAUL_PAYLOAD_FRACTION=0.9467
OUT=${OUT:-/tmp/haul-wan-run}

# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
wan_build
wan_haul_build
mkdir -p "$OUT"
if ! command -v iperf3 >/dev/null 2>&1; then
    # shellcheck source=../../scripts/env.sh
    source "$WAN_ROOT/scripts/env.sh"
    haul_apt_install iperf3 >&2
fi

# mbit RATE: "200M" -> 200, "1G" -> 1000.
mbit() {
    case $1 in
        *G) echo $((${1%G} * 1000)) ;;
        *M) echo "${1%M}" ;;
        *) echo "unsupported rate $1 (use NNNM or NG)" >&2; return 1 ;;
    esac
}
# pct VALUE LINK: VALUE as a percentage of LINK, one decimal.
pct() { awk -v v="$1" -v l="$2" 'BEGIN { if (v == "" || v == "-") print "-"; else printf "%.1f", 100 * v / l }'; }

echo "== machine: nproc=$(nproc) cpu=\"$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 |
    sed 's/^ //')\" kernel=$(uname -r) load=\"$(cut -d' ' -f1-3 /proc/loadavg)\""
rows=()
for scenario in $SCENARIOS; do
    IFS=/ read -r rate rtt loss <<<"$scenario"
    rtt_ms=${rtt%ms}
    one_way="$(awk -v r="$rtt_ms" 'BEGIN { printf "%g", r / 2 }')ms"
    link=$(mbit "$rate")
    echo "== $scenario: ceiling (${CEILING_SECS}s, 0% loss)"
    wan_up --rate "$rate" --delay "$one_way"
    ceiling=$(wan_udp_ceiling "$rate" "$CEILING_SECS" | sed -n 's/^sink:.* mbit_s=\([0-9.]*\).*/\1/p')
    wan_down
    echo "== $scenario: TCP (${TCP_SECS}s each, loss $loss)"
    wan_up --rate "$rate" --delay "$one_way" --loss "$loss"
    wan_tcp_buffers
    cubic=$(wan_iperf3 cubic "$TCP_SECS")
    bbr=$(wan_iperf3 bbr "$TCP_SECS")
    bytes=$(awk -v l="$link" -v r="$rtt_ms" 'BEGIN { b = 50 * l * 1e6 * r / 1e3 / 8;
        if (b < 67108864) b = 67108864; printf "%d", b }')
    echo "== $scenario: haul, default flags, $((bytes >> 20)) MiB"
    keep="$OUT/$(tr '/%' '_p' <<<"$scenario")"
    read -r haul resent dup session <<<"$(HAUL_RATE_TRACE=1 WAN_KEEP_STDERR="$keep.trace" \
        wan_haul "$bytes")"
    scp_bytes=$((bytes < SCP_BYTES ? bytes : SCP_BYTES))
    echo "== $scenario: scp, $((scp_bytes >> 20)) MiB, at most ${SCP_SECS}s"
    read -r scp scp_cc <<<"$(wan_scp "$scp_bytes" "$SCP_SECS")"
    wan_down >"$keep.wanemu"
    cat "$keep.wanemu"
    wan_restore
    loss_frac=$(awk -v l="${loss%\%}" 'BEGIN { print l / 100 }')
    # Utilization target (issue 4): 0.95 x (1 - loss) x min(link, ceiling) x payload fraction.
    goal=$(awk -v l="$link" -v c="$ceiling" -v p="$loss_frac" -v f="$HAUL_PAYLOAD_FRACTION" \
        'BEGIN { m = (c != "" && c < l) ? c : l; printf "%.1f", 0.95 * (1 - p) * m * f }')
    verdict=$(awk -v h="$haul" -v g="$goal" 'BEGIN { print (h != "-" && h + 0 >= g) ? "PASS" : "FAIL" }')
    rows+=("$(printf '| %s | %s | %s (%s%%) | %s (%s%%, session %s, resent %s%%, twice %s%%) | %s %s | %s (%s%%) | %s (%s%%) | %s (%s%%, %s) |' \
        "$scenario" "$link" "$ceiling" "$(pct "$ceiling" "$link")" \
        "$haul" "$(pct "$haul" "$link")" "$session" "$resent" "$dup" "$goal" "$verdict" \
        "$cubic" "$(pct "$cubic" "$link")" "$bbr" "$(pct "$bbr" "$link")" \
        "$scp" "$(pct "${scp%\*}" "$link")" "$scp_cc")")
done

echo
echo "| scenario (rate/RTT/loss) | link Mbit/s | emulator ceiling | haul (defaults) | target, verdict | TCP cubic | TCP bbr | scp (sender cc) |"
echo "| --- | --- | --- | --- | --- | --- | --- | --- |"
printf '%s\n' "${rows[@]}"
