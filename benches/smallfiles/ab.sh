#!/usr/bin/env bash
# A/B comparison of two haul release binaries on the small-files tree (issue 3, "Small
# files"), haul only: per run, the wall time of one tree and each end's CPU seconds for it.
#
# The tree of run.sh (FILES files of 1-64 KiB from a fixed seed) is sent with `haul send` to
# a `haul recv`, two processes in a fresh network namespace whose lo has MTU 1500, tmpfs to
# tmpfs, default flags, the binaries interleaved run by run (A, B, B, A, A, B, ...: each
# pair swaps the order, since a run's place in a pair was seen to matter) so a change of
# load on this shared machine hits both alike. Every received tree is checked against the
# source, file by file.
#
#   benches/smallfiles/ab.sh BIN_A BIN_B          4 runs of each
#
# Env: FILES (10000), SEED (3), RUNS (4 per binary), BENCH_STEP_TIMEOUT (600 s per process).
# Needs root. On a loaded machine the wall times are floors and noisy; the CPU seconds per
# tree on each end are the fair comparison.
set -euo pipefail

top=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
# shellcheck source=benches/loopback/lib.sh
source "$top/benches/loopback/lib.sh"
# shellcheck source=benches/smallfiles/lib.sh
source "$top/benches/smallfiles/lib.sh"
# shellcheck source=scripts/env.sh
source "$top/scripts/env.sh"

case "${1:-}" in
-h | --help)
    bench_usage "${BASH_SOURCE[0]}"
    exit 0
    ;;
esac
[[ $# -eq 2 && -x "$1" && -x "$2" ]] || bench_die "usage: $0 BIN_A BIN_B (two haul binaries)"
FILES=${FILES:-10000}
SEED=${SEED:-3}
RUNS=${RUNS:-4}
bench_need_tools

trap bench_cleanup EXIT
trap 'exit 130' INT TERM
echo "== haul A/B, small files: $FILES files of 1-64 KiB (seed $SEED), $RUNS runs each"
bench_machine
bench_setup /tmp $((FILES * 65 * 1024 * 2 + (256 << 20)))
W=$BENCH_WORK
# The binaries are copied out of the target directory, so a build cannot swap them mid-run.
BIN=$(mktemp -d /tmp/haulbench-bin.XXXXXX)
BENCH_EXTRA_DIRS+=("$BIN")
mkdir -p "$W/log" "$W/src"
cp "$1" "$BIN/a" && cp "$2" "$BIN/b"
echo "A: $1"
echo "B: $2"
small_tree "$W/src" "$FILES" "$SEED" 100
SRC_DIGEST=$(tree_digest "$W/src")
"$BIN/a" keygen "$W/haul.key" >/dev/null
RESULTS=$W/results
: >"$RESULTS"
printf '%-4s %3s %-14s %8s %8s %8s %6s\n' bin run status wall_s send_cpu recv_cpu load
for i in $(seq "$RUNS"); do
    order="a b"
    [[ $((i % 2)) -eq 0 ]] && order="b a"
    for b in $order; do
        p=$W/log/$b.$i
        rm -rf "$W/dst" && mkdir "$W/dst"
        bench_haul_transfer "$BIN/$b" "$W/haul.key" "$p" "$W/src" "$W/dst"
        if [[ ! -d "$W/dst/src" || "$(tree_digest "$W/dst/src")" != "$SRC_DIGEST" ]]; then
            BENCH_STATUS=${BENCH_STATUS/#ok/tree-mismatch}
        fi
        awk -v b="$b" -v i="$i" -v st="$BENCH_STATUS" -v t0="$BENCH_T0" -v t1="$BENCH_T1" \
            -v cs="$(bench_time_field "$p.send" cpu)" -v cr="$(bench_time_field "$p.recv" cpu)" \
            -v l="$(cut -d' ' -f1 /proc/loadavg)" \
            'BEGIN {printf "%-4s %3d %-14s %8.3f %8.2f %8.2f %6s\n", toupper(b), i, st, t1 - t0, cs, cr, l}' |
            tee -a "$RESULTS"
    done
done
echo "== per binary, over the runs with status ok: mean (median)"
for b in A B; do
    awk -v b="$b" '$1 == b && $3 == "ok" {n++; w += $4; s += $5; r += $6; ws[n] = $4; ss[n] = $5; rs[n] = $6}
        function med(a, n,   i, j, t) { for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++)
            if (a[j] < a[i]) { t = a[i]; a[i] = a[j]; a[j] = t }; return a[int((n + 1) / 2)] }
        END { if (!n) { print b ": no good run"; exit }
            printf "%s: %d runs, wall %.3f (%.3f) s, sender %.3f (%.3f) CPU s, receiver %.3f (%.3f) CPU s per tree\n",
                b, n, w / n, med(ws, n), s / n, med(ss, n), r / n, med(rs, n) }' "$RESULTS"
done
echo "load average after the runs: $(cut -d' ' -f1-3 /proc/loadavg)"
