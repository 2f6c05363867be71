#!/usr/bin/env bash
# Kernel UDP ceiling: raw GSO+GRO blaster (engine/io/examples/udp_blast.rs), no crypto, two
# processes on loopback. Prints each run and the median Gbit/s, CPU seconds per GiB on each end,
# syscalls per 1,000 datagrams, and the steal% of the machine during the runs.
#
# As root with unshare(1), the runs happen in a fresh network namespace whose lo has MTU 1500
# (like the issue's acceptance benchmark); otherwise on the host's loopback (MTU noted).
#
# Env: RUNS (5), BYTES (4G), SIZE (datagram payload bytes; default fills MTU 1500: 1472 on IPv4,
#      1452 on IPv6), BACKEND (uring|portable, default auto), FAMILY (4|6, default 4), MTU (1500).
set -euo pipefail
RUNS=${RUNS:-5}
BYTES=${BYTES:-4G}
BACKEND=${BACKEND:-}
FAMILY=${FAMILY:-4}
if [ "$FAMILY" = 6 ]; then SIZE=${SIZE:-1452}; else SIZE=${SIZE:-1472}; fi
MTU=${MTU:-1500}
PORT=9733

top=$(cd "$(dirname "$0")/../.." && pwd)
export RUSTFLAGS="-C target-cpu=native"
(cd "$top" && cargo build --release -q -p haul-io --example udp_blast)
BIN="$top/target/release/examples/udp_blast"
[ "$FAMILY" = 6 ] && ADDR="[::1]:$PORT" || ADDR="127.0.0.1:$PORT"
EXTRA=()
[ -n "$BACKEND" ] && EXTRA=(--backend "$BACKEND")
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT

# One run: receiver in the background, sender in the foreground, both in the same namespace.
one_run() {
  local i=$1
  "$BIN" --role recv --addr "$ADDR" --bytes "$BYTES" --datagram-size "$SIZE" "${EXTRA[@]}" \
    >"$OUT/recv.$i" 2>"$OUT/recv.$i.err" &
  local rp=$!
  for _ in $(seq 100); do grep -q listening "$OUT/recv.$i" 2>/dev/null && break; sleep 0.05; done
  "$BIN" --role send --addr "$ADDR" --bytes "$BYTES" --datagram-size "$SIZE" "${EXTRA[@]}" \
    >"$OUT/send.$i" 2>"$OUT/send.$i.err" || { cat "$OUT/send.$i.err" >&2; kill "$rp"; return 1; }
  wait "$rp" || { cat "$OUT/recv.$i.err" >&2; return 1; }
}

steal_ticks() { awk '/^cpu /{print $9, $2+$3+$4+$5+$6+$7+$8+$9}' /proc/stat; }

read -r s0 t0 < <(steal_ticks)
if [ "$(id -u)" = 0 ] && command -v unshare >/dev/null && unshare -n true 2>/dev/null; then
  WHERE="fresh netns, lo mtu $MTU"
  export BIN ADDR BYTES SIZE OUT
  for i in $(seq "$RUNS"); do
    EXTRA_STR="${EXTRA[*]:-}" unshare -n bash -c "ip link set lo mtu $MTU up; \
      EXTRA=(\$EXTRA_STR); $(declare -f one_run); one_run $i"
  done
else
  WHERE="host loopback, lo mtu $(cat /sys/class/net/lo/mtu)"
  for i in $(seq "$RUNS"); do one_run "$i"; done
fi
read -r s1 t1 < <(steal_ticks)

field() { sed -n "s/.* $2 \([0-9.]*\).*/\1/p" "$1"; }
median() { sort -n | awk '{a[NR]=$1} END {if (NR) print a[int((NR+1)/2)]; else print "n/a"}'; }

echo "udp_ceiling: $WHERE, $BYTES per run, datagram $SIZE B, IPv$FAMILY, $RUNS runs"
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | xargs), kernel $(uname -r)"
for i in $(seq "$RUNS"); do
  echo "run $i: $(grep "^recv:" "$OUT/recv.$i")"
  echo "       $(grep "^send:" "$OUT/send.$i")"
done
grep -h "^backend\|^io_uring features\|^\[" "$OUT/recv.1.err" || true
echo "median gbit_s (receiver): $(for i in $(seq "$RUNS"); do field "$OUT/recv.$i" gbit_s; done | median)"
echo "median cpu_s_per_gib receiver: $(for i in $(seq "$RUNS"); do field "$OUT/recv.$i" cpu_s_per_gib; done | median)"
echo "median cpu_s_per_gib sender: $(for i in $(seq "$RUNS"); do field "$OUT/send.$i" cpu_s_per_gib; done | median)"
echo "median syscalls_per_1000 receiver: $(for i in $(seq "$RUNS"); do field "$OUT/recv.$i" syscalls_per_1000; done | median)"
echo "median syscalls_per_1000 sender: $(for i in $(seq "$RUNS"); do field "$OUT/send.$i" syscalls_per_1000; done | median)"
awk -v s="$((s1 - s0))" -v t="$((t1 - t0))" 'BEGIN {printf "steal%% during runs: %.1f\n", t ? 100*s/t : 0}'
