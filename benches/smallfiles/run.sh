#!/usr/bin/env bash
# Small-files benchmark (issue 3, acceptance "Small files"): a tree of FILES files of 1-64 KiB
# (sizes and contents from a fixed seed) sent with `haul send` and with
# `tar -C src -cf - . | ssh ... 'tar -C dst -xf -'`, both inside a fresh network namespace whose
# lo has MTU 1500, tmpfs to tmpfs. Prints files/s for each (median of RUNS runs), the ratio
# (goal: haul >= 5x tar|ssh), and checks every received tree against the source, file by file.
#
#   benches/smallfiles/run.sh
#
# Env: FILES (10000), SEED (3), RUNS (3), BENCH_STEP_TIMEOUT (600 s per process), HAUL_BIN (a
#      prebuilt haul instead of this tree's).
# Needs root; shares benches/loopback/lib.sh (namespace, sshd, build, cleanup).
# files/s = FILES / wall time from starting the sender until both ends have exited.
set -euo pipefail

top=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
# shellcheck source=benches/loopback/lib.sh
source "$top/benches/loopback/lib.sh"
# shellcheck source=benches/smallfiles/lib.sh
source "$top/benches/smallfiles/lib.sh"

case "${1:-}" in
-h | --help)
    bench_usage "${BASH_SOURCE[0]}"
    exit 0
    ;;
"") ;;
*) bench_die "unknown argument '$1' (try --help)" ;;
esac
FILES=${FILES:-10000}
SEED=${SEED:-3}
RUNS=${RUNS:-3}
FILES_PER_DIR=100

trap bench_cleanup EXIT
trap 'exit 130' INT TERM

bench_prepare "$top" "small files (issue 3): $FILES files of 1-64 KiB (seed $SEED), $RUNS runs per tool"
# The tree is about FILES x 32.5 KiB; room for the source and one received copy, twice over.
bench_setup /tmp $((FILES * 65 * 1024 * 2 + (256 << 20)))
W=$BENCH_WORK
LOG=$W/log
mkdir -p "$LOG" "$W/src"

# The tree: FILES_PER_DIR files per directory, sizes uniform in 1..64 KiB, seeded contents.
small_tree "$W/src" "$FILES" "$SEED" "$FILES_PER_DIR"
SRC_DIGEST=$(tree_digest "$W/src")
SRC_BYTES=$(du -sb --apparent-size "$W/src" | cut -f1)
echo "tree: $FILES files, $SRC_BYTES bytes, digest $SRC_DIGEST"
RESULTS=$W/results # tool run status seconds

# check_tree DIR: "ok" when DIR holds exactly the source's files with the same contents.
check_tree() {
    if [[ -d "$1" && "$(tree_digest "$1")" == "$SRC_DIGEST" ]]; then echo ok; else echo tree-mismatch; fi
}

secs() { awk -v t0="$1" -v t1="$2" 'BEGIN {printf "%.3f", t1 - t0}'; }

run_haul() {
    local i=$1
    local dst=$W/dst.haul got
    rm -rf "$dst" && mkdir "$dst"
    bench_haul_transfer "$BIN/haul" "$W/haul.key" "$LOG/haul.$i" "$W/src" "$dst"
    # A directory argument arrives as DEST/<its name>.
    got=$(check_tree "$dst/src")
    [[ $got == ok ]] || BENCH_STATUS=${BENCH_STATUS/#ok/$got}
    rm -rf "$dst"
    echo "haul $i $BENCH_STATUS $(secs "$BENCH_T0" "$BENCH_T1")" >>"$RESULTS"
}

run_tar_ssh() {
    local i=$1
    local p=$LOG/tar.$i dst=$W/dst.tar t0 t1 status=ok got
    rm -rf "$dst" && mkdir "$dst"
    bench_sshd_start "$W/ssh" "$p.recv" || { status=no-sshd; bench_ns_kill; }
    t0=$(bench_now)
    # shellcheck disable=SC2016 # expanded by the inner bash
    if [[ $status == ok ]] && ! bench_in_ns "$p.send" bash -c \
        'set -o pipefail; src=$1 dst=$2 port=$3; shift 3
         tar -C "$src" -cf - . | ssh "$@" -p "$port" root@127.0.0.1 "tar -C $dst -xf -"' \
        tar-ssh "$W/src" "$dst" "$BENCH_SSH_PORT" "${BENCH_SSH_OPTS[@]}"; then
        status=send-failed
    fi
    wait "$BENCH_SSHD_PID" || true # sshd -d exits after its one connection
    t1=$(bench_now)
    got=$(check_tree "$dst")
    [[ $got == ok ]] || status=${status/#ok/$got}
    rm -rf "$dst"
    echo "tar_ssh $i $status $(secs "$t0" "$t1")" >>"$RESULTS"
}

[[ $HAUL_OK -eq 1 ]] && "$BIN/haul" keygen "$W/haul.key" >/dev/null
bench_sshd_setup "$W/ssh"
: >"$RESULTS"
read -r s0 tt0 < <(bench_steal_ticks)
for i in $(seq "$RUNS"); do
    if [[ $HAUL_OK -eq 1 ]]; then
        echo "run $i/$RUNS: haul" >&2
        run_haul "$i"
    fi
    echo "run $i/$RUNS: tar | ssh" >&2
    run_tar_ssh "$i"
done
read -r s1 tt1 < <(bench_steal_ticks)

median_secs() { awk -v t="$1" '$1 == t && $3 == "ok" {print $4}' "$RESULTS" | bench_median; }
rate() { awk -v n="$FILES" -v s="$1" 'BEGIN {if (s == "n/a") print "n/a"; else printf "%.0f", n / s}'; }

echo
echo "== results: median of $RUNS runs, tmpfs to tmpfs, netns lo mtu 1500"
printf '%-10s %6s %10s %10s  %s\n' tool ok seconds files/s check
tar_s=$(median_secs tar_ssh)
tar_rate=$(rate "$tar_s")
for tool in haul tar_ssh; do
    if [[ $tool == haul && $HAUL_OK -eq 0 ]]; then
        printf '%-10s %s\n' haul "haul send/recv not available yet (this build's haul lacks them)"
        continue
    fi
    s=$(median_secs "$tool")
    good=$(awk -v t="$tool" '$1 == t && $3 == "ok"' "$RESULTS" | wc -l)
    bad=$(awk -v t="$tool" '$1 == t && $3 != "ok" {printf "run %s: %s; ", $2, $3}' "$RESULTS")
    printf '%-10s %3s/%-2s %10s %10s  %s\n' "$tool" "$good" "$RUNS" "$s" "$(rate "$s")" \
        "${bad:-every tree matches the source}"
done
awk -v s="$((s1 - s0))" -v t="$((tt1 - tt0))" 'BEGIN {printf "steal%% during the runs: %.1f\n", t ? 100 * s / t : 0}'
if [[ $HAUL_OK -eq 1 ]]; then
    haul_rate=$(rate "$(median_secs haul)")
    awk -v h="$haul_rate" -v t="$tar_rate" 'BEGIN {
        if (h == "n/a" || t == "n/a" || t == 0) { print "ratio haul / tar|ssh: n/a"; exit }
        r = h / t
        printf "ratio haul / tar|ssh: %.2fx (goal >= 5x): %s\n", r, (r >= 5) ? "PASS" : "FAIL" }'
else
    echo "ratio haul / tar|ssh: n/a (haul send/recv not available yet)"
fi
echo "== per run"
cat "$RESULTS"
echo "load average after the run: $(cut -d' ' -f1-3 /proc/loadavg)"
