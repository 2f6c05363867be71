#!/usr/bin/env bash
# Loopback throughput benchmark (issue 3, acceptance "Loopback throughput" and "Memory").
#
# One run measures every tool, file to file on a tmpfs, inside a fresh network namespace whose
# lo has MTU 1500; runs are interleaved (run 1 of every tool, then run 2, ...) so that a change
# of load on this shared machine hits every tool alike. For each tool: the median Gbit/s of RUNS
# runs, CPU seconds per GiB on each end, peak RSS of each end, steal% during its runs, and a
# check of the received file against the source, and for haul the syscalls per 1,000 datagrams
# of each end (from its --json summary); beside them, what reading and writing the file alone
# cost on this tmpfs (`dd`), the floor under every tool's CPU per GiB. Then the issue's
# targets with PASS/FAIL, and the memory item (haul's peak RSS for a 1 GiB file and a 16 GiB
# sparse file).
#
#   benches/loopback/run.sh            4 GiB, 5 runs per tool
#   benches/loopback/run.sh --quick    512 MiB, 2 runs per tool
#
# Env: SIZE (4G), RUNS (5), TOOLS ("haul blast iperf3 scp quic"), MEMORY (1; 0 skips the
#      memory item), MEMORY_DEST (/var/tmp: the memory item's 16 GiB lands on disk, not in RAM),
#      BENCH_STEP_TIMEOUT (600 s per process), HAUL_BIN (a prebuilt haul instead of this tree's),
#      BENCH_TMPFS_HUGE (a tmpfs `huge=` option such as within_size; default none, 4 KiB pages).
# Needs root. Installs iperf3, openssh-server/client, jq and time with apt-get when missing.
# Gbit/s = file bytes x 8 / wall time from starting the sender until both ends have exited
# (the received file is complete and closed), except the raw blaster, which has no file and
# reports its own receive rate.
set -euo pipefail

top=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
# shellcheck source=benches/loopback/lib.sh
source "$top/benches/loopback/lib.sh"

quick=0
for arg in "$@"; do
    case "$arg" in
    --quick) quick=1 ;;
    -h | --help)
        bench_usage "${BASH_SOURCE[0]}"
        exit 0
        ;;
    *) bench_die "unknown argument '$arg' (try --quick or --help)" ;;
    esac
done
if [[ $quick -eq 1 ]]; then
    SIZE=${SIZE:-512M}
    RUNS=${RUNS:-2}
else
    SIZE=${SIZE:-4G}
    RUNS=${RUNS:-5}
fi
TOOLS=${TOOLS:-haul blast iperf3 scp quic}
MEMORY=${MEMORY:-1}
MEMORY_DEST=${MEMORY_DEST:-/var/tmp}
BYTES=$(numfmt --from=iec "$SIZE")
GIB=$((1 << 30))
DATAGRAM=1472 # fills a 1500-byte MTU over IPv4, as haul's default does

trap bench_cleanup EXIT
trap 'exit 130' INT TERM

bench_prepare "$top" "loopback throughput (issue 3): $SIZE ($BYTES bytes) per run, $RUNS runs per tool"
# Source + one received copy, plus room for the memory item's 1 GiB source.
bench_setup /tmp $((2 * BYTES + 2 * GIB))
W=$BENCH_WORK
LOG=$W/log
mkdir -p "$LOG" "$W/dst"
echo "creating the $SIZE source file (random bytes)"
head -c "$BYTES" /dev/urandom >"$W/src.bin"
SRC_SHA=$(sha256sum "$W/src.bin" | cut -d' ' -f1)
bench_warm_tmpfs "$BYTES"
RESULTS=$W/results # tool run status gbit_s cpu_send cpu_recv rss_send_kib rss_recv_kib note

# record TOOL RUN STATUS GBIT_S SEND_PREFIX RECV_PREFIX NOTE
record() {
    local cs cr rs rr
    cs=$(bench_time_field "$5" cpu) cr=$(bench_time_field "$6" cpu)
    rs=$(bench_time_field "$5" rss) rr=$(bench_time_field "$6" rss)
    echo "$1 $2 $3 $4 ${cs:-nan} ${cr:-nan} ${rs:-nan} ${rr:-nan} ${7:-}" >>"$RESULTS"
}

# check_copy FILE: "ok" when FILE's SHA-256 is the source's; the copy is removed either way.
check_copy() {
    local sum
    sum=$(sha256sum "$1" 2>/dev/null | cut -d' ' -f1 || true)
    rm -f "$1"
    if [[ "$sum" == "$SRC_SHA" ]]; then echo ok; else echo "sha256-mismatch"; fi
}

gbit() { awk -v b="$1" -v t0="$2" -v t1="$3" 'BEGIN {printf "%.3f", b * 8 / (t1 - t0) / 1e9}'; }

# Each run_TOOL RUN: one transfer; appends one line to $RESULTS.
run_haul() {
    local i=$1
    local p=$LOG/haul.$i copy
    rm -rf "$W/dst" && mkdir "$W/dst"
    bench_haul_transfer "$BIN/haul" "$W/haul.key" "$p" "$W/src.bin" "$W/dst"
    copy=$(check_copy "$W/dst/src.bin")
    [[ $copy == ok ]] || BENCH_STATUS=${BENCH_STATUS/#ok/$copy}
    record haul "$i" "$BENCH_STATUS" "$(gbit "$BYTES" "$BENCH_T0" "$BENCH_T1")" "$p.send" \
        "$p.recv" "blake3=$BENCH_BLAKE3;syscalls_per_1k=$(haul_syscalls "$p.send.out"),$(haul_syscalls "$p.recv.out")"
}

# haul_syscalls OUT: syscalls per 1,000 datagrams (network + disk, sent + received) from the
# JSON summary in OUT, or "nan".
haul_syscalls() {
    grep '^{' "$1" 2>/dev/null | tail -n1 |
        jq -r '.io.syscalls_per_1000_datagrams // "nan" | if type == "number" then (. * 10 | round / 10) else . end' \
            2>/dev/null || echo nan
}

run_blast() {
    local i=$1
    local p=$LOG/blast.$i status=ok g loss
    bench_in_ns "$p.recv" "$BIN/udp_blast" --role recv --addr 127.0.0.1:9733 --bytes "$BYTES" \
        --datagram-size "$DATAGRAM" &
    local rpid=$!
    bench_wait_line "$p.recv.out" '^listening' >/dev/null || { status=no-listen; bench_ns_kill; }
    if [[ $status == ok ]] && ! bench_in_ns "$p.send" "$BIN/udp_blast" --role send \
        --addr 127.0.0.1:9733 --bytes "$BYTES" --datagram-size "$DATAGRAM"; then
        status=send-failed
    fi
    wait "$rpid" || status=recv-failed
    g=$(sed -n 's/.* gbit_s \([0-9.]*\).*/\1/p' "$p.recv.out")
    loss=$(sed -n 's/.* loss_pct \([0-9.]*\).*/\1/p' "$p.recv.out")
    record blast "$i" "$status" "${g:-nan}" "$p.send" "$p.recv" "loss_pct=${loss:-?}"
}

# iperf3 is TCP memory to memory at the receiver: its -F on the receiving side does not
# reproduce a file (a 64 MiB test here wrote 64,814,728 bytes, differing at byte 217,153), so
# the sender reads the source file and the receiver discards; the check is iperf3's own count.
run_iperf3() {
    local i=$1
    local p=$LOG/iperf3.$i t0 t1 status=ok sent own
    bench_in_ns "$p.recv" iperf3 -s -1 -B 127.0.0.1 -p 5201 --forceflush &
    local rpid=$!
    bench_wait_line "$p.recv.out" 'Server listening' >/dev/null || { status=no-listen; bench_ns_kill; }
    t0=$(bench_now)
    if [[ $status == ok ]] && ! bench_in_ns "$p.send" iperf3 -c 127.0.0.1 -p 5201 \
        -F "$W/src.bin" -n "$BYTES" --json; then status=send-failed; fi
    wait "$rpid" || status=recv-failed
    t1=$(bench_now)
    sent=$(jq -r '.end.sum_sent.bytes' "$p.send.out" 2>/dev/null || true)
    own=$(jq -r '.end.sum_sent.bits_per_second / 1e9 * 1000 | floor / 1000' "$p.send.out" \
        2>/dev/null || true)
    [[ "$sent" == "$BYTES" ]] || status=${status/#ok/short-send}
    record iperf3 "$i" "$status" "$(gbit "$BYTES" "$t0" "$t1")" "$p.send" "$p.recv" \
        "no-file-check;iperf3_own_gbit_s=$own"
}

run_scp() {
    local i=$1
    local p=$LOG/scp.$i t0 t1 status=ok
    bench_sshd_start "$W/ssh" "$p.recv" || { status=no-sshd; bench_ns_kill; }
    t0=$(bench_now)
    if [[ $status == ok ]] && ! bench_in_ns "$p.send" scp -q "${BENCH_SSH_OPTS[@]}" \
        -P "$BENCH_SSH_PORT" "$W/src.bin" "root@127.0.0.1:$W/dst/copy"; then
        status=send-failed
    fi
    wait "$BENCH_SSHD_PID" || true # sshd -d exits 255 after its one connection on some builds
    t1=$(bench_now)
    local copy
    copy=$(check_copy "$W/dst/copy")
    [[ $copy == ok ]] || status=${status/#ok/$copy}
    record scp "$i" "$status" "$(gbit "$BYTES" "$t0" "$t1")" "$p.send" "$p.recv"
}

run_quic() {
    local i=$1
    local p=$LOG/quic.$i addr t0 t1 status=ok s r
    bench_in_ns "$p.recv" "$BIN/quic-baseline" server --listen 127.0.0.1:0 \
        --out "$W/dst/copy" --cert "$W/quic.cert.der" &
    local rpid=$!
    addr=$(bench_wait_line "$p.recv.out" '^listening on ') || { status=no-listen; bench_ns_kill; }
    addr=${addr#listening on }
    t0=$(bench_now)
    if [[ $status == ok ]] && ! bench_in_ns "$p.send" "$BIN/quic-baseline" client \
        --connect "$addr" --file "$W/src.bin" --cert "$W/quic.cert.der"; then
        status=send-failed
    fi
    wait "$rpid" || status=recv-failed
    t1=$(bench_now)
    s=$(sed -n 's/^result: .* blake3 //p' "$p.send.out")
    r=$(sed -n 's/^result: .* blake3 //p' "$p.recv.out")
    [[ -n "$s" && "$s" == "$r" ]] || status=${status/#ok/blake3-mismatch}
    local copy
    copy=$(check_copy "$W/dst/copy")
    [[ $copy == ok ]] || status=${status/#ok/$copy}
    record quic "$i" "$status" "$(gbit "$BYTES" "$t0" "$t1")" "$p.send" "$p.recv" "blake3=$s"
}

# The tmpfs's own cost, beside the tools' (once per run, same conditions): CPU seconds (user +
# sys) of reading the source with `dd` into /dev/null, and of writing as many zero bytes into a
# new file with `dd`. No tool moving the file can use less than the read on its sending end and
# the write on its receiving end. Appends "READ_CPU WRITE_CPU" (seconds) to $FLOOR.
FLOOR=$W/floor
run_floor() {
    local r w
    r=$(/usr/bin/time -f '%U %S' dd if="$W/src.bin" of=/dev/null bs=1M status=none 2>&1 |
        awk 'END {print $1 + $2}')
    w=$(/usr/bin/time -f '%U %S' dd if=/dev/zero of="$W/dst/floor" bs=1M count=$((BYTES >> 20)) \
        status=none 2>&1 | awk 'END {print $1 + $2}')
    rm -f "$W/dst/floor"
    echo "$r $w" >>"$FLOOR"
}

# --- the runs -----------------------------------------------------------------------------
[[ $HAUL_OK -eq 1 ]] && "$BIN/haul" keygen "$W/haul.key" >/dev/null
[[ " $TOOLS " == *" scp "* ]] && bench_sshd_setup "$W/ssh"
declare -A steal_ticks total_ticks
: >"$RESULTS"
for i in $(seq "$RUNS"); do
    for tool in $TOOLS; do
        if [[ $tool == haul && $HAUL_OK -eq 0 ]]; then continue; fi
        read -r s0 t0 < <(bench_steal_ticks)
        echo "run $i/$RUNS: $tool" >&2
        "run_$tool" "$i"
        read -r s1 t1 < <(bench_steal_ticks)
        steal_ticks[$tool]=$((${steal_ticks[$tool]:-0} + s1 - s0))
        total_ticks[$tool]=$((${total_ticks[$tool]:-0} + t1 - t0))
    done
    run_floor
done

# --- the table ----------------------------------------------------------------------------
# column N of TOOL's good runs (status ok); median or max.
col() { awk -v t="$1" -v c="$2" '$1 == t && $3 == "ok" {print $c}' "$RESULTS"; }
median_of() { col "$1" "$2" | bench_median; }
max_of() { col "$1" "$2" | sort -g | tail -n1; }
per_gib() { awk -v c="$1" -v b="$BYTES" 'BEGIN {if (c == "n/a") print "n/a"; else printf "%.3f", c * 2^30 / b}'; }
mib() { awk -v k="$1" 'BEGIN {if (k == "") print "n/a"; else printf "%.0f", k / 1024}'; }

ok_note() {
    case $1 in
    blast) echo "no file: raw datagrams, not checked" ;;
    iperf3) echo "receiver discards (memory to memory); sender reads the file" ;;
    *) echo "every copy matches the source" ;;
    esac
}

declare -A med_gbit cpu_send cpu_recv rss_send rss_recv
echo
echo "== results: median of $RUNS runs, $SIZE file, tmpfs to tmpfs, netns lo mtu 1500"
printf '%-8s %5s %9s %11s %11s %9s %9s %7s  %s\n' tool ok gbit_s send_cpu/G recv_cpu/G \
    send_MiB recv_MiB steal% "check / note"
for tool in haul blast iperf3 scp quic; do
    [[ " $TOOLS " == *" $tool "* ]] || continue
    if [[ $tool == haul && $HAUL_OK -eq 0 ]]; then
        printf '%-8s %s\n' haul "haul send/recv not available yet (this build's haul lacks them)"
        continue
    fi
    good=$(col "$tool" 2 | wc -l)
    med_gbit[$tool]=$(median_of "$tool" 4)
    cpu_send[$tool]=$(per_gib "$(median_of "$tool" 5)")
    cpu_recv[$tool]=$(per_gib "$(median_of "$tool" 6)")
    rss_send[$tool]=$(mib "$(max_of "$tool" 7)")
    rss_recv[$tool]=$(mib "$(max_of "$tool" 8)")
    steal=$(awk -v s="${steal_ticks[$tool]}" -v t="${total_ticks[$tool]}" \
        'BEGIN {printf "%.1f", t ? 100 * s / t : 0}')
    bad=$(awk -v t="$tool" '$1 == t && $3 != "ok" {printf "%s run %s: %s; ", $1, $2, $3}' "$RESULTS")
    printf '%-8s %2s/%-2s %9s %11s %11s %9s %9s %7s  %s\n' "$tool" "$good" "$RUNS" \
        "${med_gbit[$tool]}" "${cpu_send[$tool]}" "${cpu_recv[$tool]}" "${rss_send[$tool]}" \
        "${rss_recv[$tool]}" "$steal" "${bad:-$(ok_note "$tool")}"
done
echo "(gbit_s: median; */G: median CPU seconds (user+sys) per GiB moved; *_MiB: peak RSS, max over"
echo " runs; blast has no file: its gbit_s is its receiver's own, over the datagrams that arrived)"
floor_read=$(per_gib "$(cut -d' ' -f1 "$FLOOR" | bench_median)")
floor_write=$(per_gib "$(cut -d' ' -f2 "$FLOOR" | bench_median)")
echo "tmpfs floor (dd, median of $RUNS): reading the source ${floor_read} CPU s/GiB (below any"
echo " sender's send_cpu/G), writing a new file ${floor_write} CPU s/GiB (below any receiver's"
echo " recv_cpu/G, except iperf3's, which writes nothing)"
if [[ " $TOOLS " == *" haul "* && $HAUL_OK -eq 1 ]]; then
    # Per end: (network + disk syscalls) x 1000 / (datagrams sent + received), from IoStats.
    sys_of() {
        awk '$1 == "haul" && $3 == "ok"' "$RESULTS" | sed -n 's/.*syscalls_per_1k=\([^ ]*\).*/\1/p' |
            cut -d, -f"$1" | bench_median
    }
    echo "haul syscalls per 1,000 datagrams (median of the runs): sender $(sys_of 1)," \
        "receiver $(sys_of 2)"
fi
echo
echo "== per run"
cat "$RESULTS"
for tool in blast quic; do
    [[ " $TOOLS " == *" $tool "* ]] || continue
    echo "== $tool configuration (run 1)"
    grep -h -E '^(config|stats|recv|send|backend|io_uring)' "$LOG/$tool.1.recv.out" \
        "$LOG/$tool.1.send.out" "$LOG/$tool.1.recv.err" 2>/dev/null | sort -u || true
done

# --- haul's JSON summary and the targets ----------------------------------------------------
if [[ $HAUL_OK -eq 1 ]]; then
    med_run=$(awk -v m="${med_gbit[haul]}" '$1 == "haul" && $3 == "ok" && $4 == m {print $2; exit}' \
        "$RESULTS")
    if [[ -n "$med_run" ]]; then
        echo "== haul JSON summary, median run ($med_run)"
        for end in send recv; do
            grep '^{' "$LOG/haul.$med_run.$end.out" | tail -n1 |
                jq -c '{role, outcome, bytes, mbit_per_s, resent_bytes, rejects, backend, cpu_seconds, io}'
        done
    fi
fi

# verdict NAME VALUE OP LIMIT: one PASS/FAIL line (n/a when VALUE is missing).
verdict() {
    awk -v n="$1" -v v="$2" -v op="$3" -v l="$4" 'BEGIN {
        if (v == "" || v == "n/a" || l == "" || l == "n/a") {
            printf "  %-44s %10s  n/a (a figure is missing)\n", n, v; exit }
        ok = (op == ">=") ? (v + 0 >= l + 0) : (v + 0 <= l + 0)
        printf "  %-44s %10s %s %-8s %s\n", n, v, op, l, ok ? "PASS" : "FAIL" }'
}
times() { awk -v a="$1" -v k="$2" 'BEGIN {if (a == "" || a == "n/a") print "n/a"; else print a * k}'; }

echo
echo "== targets (issue 3), from the figures above"
if [[ $HAUL_OK -eq 0 ]]; then
    echo "  haul send/recv not available yet: no target can be computed"
else
    verdict "haul Gbit/s >= 5" "${med_gbit[haul]}" ">=" 5
    verdict "haul >= 3x scp (Gbit/s)" "${med_gbit[haul]}" ">=" "$(times "${med_gbit[scp]:-}" 3)"
    verdict "haul >= 2x quic-baseline (Gbit/s)" "${med_gbit[haul]}" ">=" \
        "$(times "${med_gbit[quic]:-}" 2)"
    verdict "haul sender CPU s/GiB <= 0.6" "${cpu_send[haul]}" "<=" 0.6
    verdict "haul receiver CPU s/GiB <= 0.6" "${cpu_recv[haul]}" "<=" 0.6
    verdict "haul sender peak RSS MiB <= 256" "${rss_send[haul]}" "<=" 256
    verdict "haul receiver peak RSS MiB <= 256" "${rss_recv[haul]}" "<=" 256
fi

# --- memory item: peak RSS for a 1 GiB file and a 16 GiB sparse file -------------------------
# rss_run LABEL SRC: one haul transfer of SRC into a directory under MEM_DEST; prints
# "send_kib recv_kib status".
rss_run() {
    local p=$LOG/mem.$1 dest=$MEM_DEST/$1
    mkdir -p "$dest"
    bench_haul_transfer "$BIN/haul" "$W/haul.key" "$p" "$2" "$dest"
    rm -rf "$dest"
    echo "$(bench_time_field "$p.send" rss) $(bench_time_field "$p.recv" rss) $BENCH_STATUS"
}

if [[ $MEMORY -eq 1 ]]; then
    echo
    echo "== memory: haul peak RSS, 1 GiB file vs 16 GiB sparse file (destination on $MEMORY_DEST)"
    if [[ $HAUL_OK -eq 0 ]]; then
        echo "  haul send/recv not available yet"
    else
        rm -f "$W/src.bin"
        MEM_DEST=$(mktemp -d "$MEMORY_DEST/haulbench-mem.XXXXXX")
        BENCH_EXTRA_DIRS+=("$MEM_DEST")
        head -c "$GIB" /dev/urandom >"$W/one.bin"
        truncate -s 16G "$W/sparse.bin"
        read -r s1 r1 st1 < <(rss_run 1g "$W/one.bin")
        read -r s16 r16 st16 < <(rss_run 16g "$W/sparse.bin")
        echo "  1 GiB:  sender $(mib "$s1") MiB, receiver $(mib "$r1") MiB ($st1)"
        echo "  16 GiB: sender $(mib "$s16") MiB, receiver $(mib "$r16") MiB ($st16)"
        for side in sender receiver; do
            if [[ $side == sender ]]; then a=$s1 b=$s16; else a=$r1 b=$r16; fi
            awk -v n="$side" -v a="$a" -v b="$b" 'BEGIN {
                d = (a > 0) ? 100 * (b - a) / a : 0
                printf "  %-44s %+9.1f%% within 10%%: %s\n", n " RSS change 1 GiB -> 16 GiB", d,
                    (d <= 10 && d >= -10) ? "PASS" : "FAIL" }'
        done
    fi
fi
echo
echo "load average after the run: $(cut -d' ' -f1-3 /proc/loadavg)"
