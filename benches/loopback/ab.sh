#!/usr/bin/env bash
# A/B CPU comparison of two haul release binaries (issue 3 speed work), haul only.
#
# Runs `haul send` / `haul recv` of one file, two processes, in a fresh network namespace whose
# lo has MTU 1500, tmpfs to tmpfs, default flags, the binaries interleaved run by run (A, B,
# A, B, ...) so a change of load on this shared machine hits both alike. Prints, per run and
# as means and medians per binary: Gbit/s, CPU seconds (user+sys) per GiB on each end, and
# the load average; every copy is checked against the source (SHA-256 and haul's BLAKE3).
#
#   benches/loopback/ab.sh BIN_A BIN_B          1 GiB, 6 runs of each
#
# Env: SIZE (1G), RUNS (6 per binary), BENCH_STEP_TIMEOUT (600 s per process), BENCH_TMPFS_HUGE
# (a tmpfs `huge=` option such as within_size; default none). Needs root.
# The absolute figures on a loaded machine are floors; the CPU s/GiB difference between the
# interleaved binaries is what this measures.
set -euo pipefail

top=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
# shellcheck source=benches/loopback/lib.sh
source "$top/benches/loopback/lib.sh"
# shellcheck source=scripts/env.sh
source "$top/scripts/env.sh"

[[ $# -eq 2 && -x "$1" && -x "$2" ]] || bench_die "usage: $0 BIN_A BIN_B (two haul binaries)"
SIZE=${SIZE:-1G}
RUNS=${RUNS:-6}
BYTES=$(numfmt --from=iec "$SIZE")
bench_need_tools

trap bench_cleanup EXIT
trap 'exit 130' INT TERM
echo "== haul A/B: $SIZE per run, $RUNS runs each, interleaved"
bench_machine
bench_setup /tmp $((2 * BYTES + (64 << 20)))
W=$BENCH_WORK
# The binaries (with debug info, ~100 MiB each) are copied out of the tmpfs, so another
# build cannot swap them mid-run.
BIN=$(mktemp -d /tmp/haulbench-bin.XXXXXX)
BENCH_EXTRA_DIRS+=("$BIN")
mkdir -p "$W/log"
cp "$1" "$BIN/a" && cp "$2" "$BIN/b"
echo "A: $1 ($("$BIN/a" --version 2>/dev/null || echo '?'))"
echo "B: $2 ($("$BIN/b" --version 2>/dev/null || echo '?'))"
head -c "$BYTES" /dev/urandom >"$W/src.bin"
SRC_SHA=$(sha256sum "$W/src.bin" | cut -d' ' -f1)
bench_warm_tmpfs "$BYTES"
"$BIN/a" keygen "$W/haul.key" >/dev/null
RESULTS=$W/results
: >"$RESULTS"
printf '%-4s %3s %-6s %8s %9s %9s %6s\n' bin run status gbit_s send_s/G recv_s/G load
for i in $(seq "$RUNS"); do
    for b in a b; do
        p=$W/log/$b.$i
        rm -rf "$W/dst" && mkdir "$W/dst"
        bench_haul_transfer "$BIN/$b" "$W/haul.key" "$p" "$W/src.bin" "$W/dst"
        sum=$(sha256sum "$W/dst/src.bin" 2>/dev/null | cut -d' ' -f1 || true)
        [[ "$sum" == "$SRC_SHA" ]] || BENCH_STATUS=${BENCH_STATUS/#ok/sha256-mismatch}
        line=$(awk -v b="$b" -v i="$i" -v st="$BENCH_STATUS" -v by="$BYTES" \
            -v t0="$BENCH_T0" -v t1="$BENCH_T1" -v cs="$(bench_time_field "$p.send" cpu)" \
            -v cr="$(bench_time_field "$p.recv" cpu)" -v l="$(cut -d' ' -f1 /proc/loadavg)" \
            'BEGIN {g = 2^30 / by; printf "%-4s %3d %-6s %8.3f %9.3f %9.3f %6s", toupper(b), i, st,
                by * 8 / (t1 - t0) / 1e9, cs * g, cr * g, l}')
        echo "$line" | tee -a "$RESULTS"
        if [[ $BENCH_STATUS != ok ]]; then
            tail -n3 "$p.send.err" "$p.recv.err" 2>/dev/null | sed 's/^/    /' || true
        fi
    done
done
echo "== per binary, over the runs with status ok: mean (median)"
for b in A B; do
    awk -v b="$b" '$1 == b && $3 == "ok" {n++; g += $4; s += $5; r += $6; gs[n] = $4; ss[n] = $5; rs[n] = $6}
        function med(a, n,   i, j, t) { for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++)
            if (a[j] < a[i]) { t = a[i]; a[i] = a[j]; a[j] = t }; return a[int((n + 1) / 2)] }
        END { if (!n) { print b ": no good run"; exit }
            printf "%s: %d runs, %.3f (%.3f) Gbit/s, sender %.3f (%.3f) CPU s/GiB, receiver %.3f (%.3f)\n",
                b, n, g / n, med(gs, n), s / n, med(ss, n), r / n, med(rs, n) }' "$RESULTS"
done
