# shellcheck shell=bash
# Shared by benches/loopback/run.sh and benches/smallfiles/run.sh. Source it; do not run it.
#
# What it gives: the tools the benchmarks need (installed with apt-get when missing), the
# release build of the binaries (copied out of the shared target directory, so another build
# cannot swap them mid-run), a fresh network namespace whose lo has MTU 1500, a throwaway sshd
# inside it, process timing (/usr/bin/time: wall, user, system, peak RSS), and one cleanup
# that undoes all of it on exit.
#
# Invariants: every process a benchmark starts runs inside the namespace, so it can only reach
# that namespace's loopback, and is ended (by its pid, listed by `ip netns pids`) before the
# namespace is deleted; every step is bounded by `timeout "$BENCH_STEP_TIMEOUT"`.

BENCH_STEP_TIMEOUT=${BENCH_STEP_TIMEOUT:-600}
BENCH_TIME_FORMAT="TIME %e %U %S %M"
BENCH_SSH_PORT=2222
BENCH_NS=""
BENCH_WORK=""
BENCH_TMPFS=""
BENCH_EXTRA_DIRS=()

bench_die() {
    echo "bench: $*" >&2
    exit 1
}

# bench_need_tools: root, ip, and the measuring tools; installs the missing Debian packages.
bench_need_tools() {
    [[ $(id -u) -eq 0 ]] || bench_die "must run as root (network namespaces, tmpfs, sshd)"
    command -v ip >/dev/null || haul_apt_install iproute2
    [[ -x /usr/bin/time ]] || haul_apt_install time
    need_pkg iperf3 iperf3
    need_pkg jq jq
    [[ -x /usr/sbin/sshd ]] || haul_apt_install openssh-server
    need_pkg ssh openssh-client
    need_pkg scp openssh-client
}

# bench_machine: the machine and its load, printed before any run.
bench_machine() {
    echo "date: $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
    echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | xargs)," \
        "kernel $(uname -r), memory $(free -g | awk '/^Mem:/{print $2}') GiB"
    echo "load average before the run: $(cut -d' ' -f1-3 /proc/loadavg)"
}

# bench_build TOP BIN_DIR: release builds with scripts/env.sh's flags; binaries copied to BIN_DIR.
# HAUL_BIN=/path/to/haul uses that release binary instead of building this tree's haul (to
# measure another branch's build); the run prints which one it measured.
bench_build() {
    local top=$1 bin=$2 pkgs=(-p quic-baseline)
    # shellcheck source=scripts/env.sh
    source "$top/scripts/env.sh"
    haul_setup_env
    [[ -n "${HAUL_BIN:-}" ]] || pkgs+=(-p haul)
    echo "building (release, RUSTFLAGS=$RUSTFLAGS, CARGO_TARGET_DIR=$CARGO_TARGET_DIR)" >&2
    (cd "$top" && timeout 1800 cargo build --release -q "${pkgs[@]}")
    (cd "$top" && timeout 1800 cargo build --release -q -p haul-io --example udp_blast)
    mkdir -p "$bin"
    cp "${HAUL_BIN:-$CARGO_TARGET_DIR/release/haul}" "$bin/haul"
    cp "$CARGO_TARGET_DIR/release/quic-baseline" "$CARGO_TARGET_DIR/release/examples/udp_blast" \
        "$bin/"
    local which
    which="the build of this tree (HEAD $(git -C "$top" rev-parse --short HEAD))"
    [[ -z "${HAUL_BIN:-}" ]] || which="HAUL_BIN=$HAUL_BIN"
    echo "haul measured: $which, $("$bin/haul" --version 2>/dev/null || echo no --version)"
}

# bench_prepare TOP TITLE: tools, the title, the machine, and the release binaries in a fresh
# BIN directory (removed on cleanup); HAUL_OK=1 when that haul has send/recv.
# shellcheck disable=SC2034 # BIN and HAUL_OK are read by the scripts that source this file
bench_prepare() {
    # shellcheck source=scripts/env.sh
    source "$1/scripts/env.sh"
    bench_need_tools
    echo "== $2"
    bench_machine
    BIN=$(mktemp -d /tmp/haulbench-bin.XXXXXX)
    BENCH_EXTRA_DIRS+=("$BIN")
    bench_build "$1" "$BIN"
    HAUL_OK=0
    if bench_haul_available "$BIN/haul"; then HAUL_OK=1; fi
}

# bench_haul_available BIN: true when this haul has the direct-transfer commands.
bench_haul_available() {
    "$1" send --help >/dev/null 2>&1 && "$1" recv --help >/dev/null 2>&1 &&
        "$1" keygen --help >/dev/null 2>&1
}

# bench_setup WORK_PARENT TMPFS_BYTES: the namespace, and a tmpfs mounted at BENCH_WORK.
bench_setup() {
    BENCH_WORK=$(mktemp -d "$1/haulbench.XXXXXX")
    mount -t tmpfs -o "size=$2,mode=0700${BENCH_TMPFS_HUGE:+,huge=$BENCH_TMPFS_HUGE}" haulbench \
        "$BENCH_WORK"
    BENCH_TMPFS=$BENCH_WORK
    BENCH_NS="haulbench-$$"
    ip netns add "$BENCH_NS"
    ip -n "$BENCH_NS" link set lo mtu 1500 up
    echo "namespace $BENCH_NS: lo mtu $(ip netns exec "$BENCH_NS" cat /sys/class/net/lo/mtu);" \
        "tmpfs $BENCH_WORK ($(numfmt --to=iec "$2"), huge=${BENCH_TMPFS_HUGE:-never})"
}

# bench_warm_tmpfs BYTES: write BYTES of zeros into a file on the benchmark's tmpfs and remove
# it, so the first measured run does not alone pay for memory this VM has not touched lately:
# a receiver's first 4 GiB write into a fresh tmpfs cost haul 3.7 CPU s/GiB against 1.7 in the
# run after it (2026-11-30; the VM hands freed memory back to its host, virtio-balloon free
# page reporting, and takes it back through faults). Fair to every tool: all runs after it
# reuse memory a previous run freed.
bench_warm_tmpfs() {
    dd if=/dev/zero of="$BENCH_TMPFS/warm" bs=1M count=$(($1 >> 20)) status=none
    rm -f "$BENCH_TMPFS/warm"
}

# bench_ns_kill: end every process in our namespace (all started by this benchmark), by pid.
bench_ns_kill() {
    local pids
    [[ -n "$BENCH_NS" ]] || return 0
    pids=$(ip netns pids "$BENCH_NS" 2>/dev/null || true)
    [[ -n "$pids" ]] || return 0
    # shellcheck disable=SC2086 # one pid per word
    kill $pids 2>/dev/null || true
    sleep 0.5
    pids=$(ip netns pids "$BENCH_NS" 2>/dev/null || true)
    # shellcheck disable=SC2086
    [[ -z "$pids" ]] || kill -9 $pids 2>/dev/null || true
}

# bench_cleanup: end what runs in the namespace, delete it, unmount the tmpfs. Idempotent.
bench_cleanup() {
    if [[ -n "$BENCH_NS" ]]; then
        bench_ns_kill
        ip netns del "$BENCH_NS" 2>/dev/null || true
        BENCH_NS=""
    fi
    if [[ -n "$BENCH_TMPFS" ]]; then
        umount "$BENCH_TMPFS" 2>/dev/null || umount -l "$BENCH_TMPFS" 2>/dev/null || true
        rmdir "$BENCH_TMPFS" 2>/dev/null || true
        BENCH_TMPFS=""
    fi
    local d
    for d in "${BENCH_EXTRA_DIRS[@]}"; do rm -rf "$d"; done
    BENCH_EXTRA_DIRS=()
}

# bench_in_ns PREFIX CMD...: run CMD in the namespace under /usr/bin/time and the step
# timeout; stdout to PREFIX.out, stderr to PREFIX.err, timing to PREFIX.time.
bench_in_ns() {
    local p=$1
    shift
    ip netns exec "$BENCH_NS" /usr/bin/time -f "$BENCH_TIME_FORMAT" -o "$p.time" \
        timeout "$BENCH_STEP_TIMEOUT" "$@" >"$p.out" 2>"$p.err"
}

# bench_haul_transfer HAUL KEY PREFIX SRC DEST: one `haul send SRC` to a `haul recv DEST`, in the
# namespace, both ends under /usr/bin/time (PREFIX.send.*, PREFIX.recv.*). Sets BENCH_STATUS (ok,
# or the first thing that failed), BENCH_T0 and BENCH_T1 (sender started; both ends exited) and
# BENCH_BLAKE3 (the first file's digest from the sender's JSON summary; the status says
# blake3-mismatch unless the receiver's summary has the same).
# shellcheck disable=SC2034 # BENCH_T0/BENCH_T1 are read by the scripts that source this file
bench_haul_transfer() {
    local haul=$1 key=$2 p=$3 src=$4 dest=$5 addr rpid r
    BENCH_STATUS=ok
    bench_in_ns "$p.recv" "$haul" recv --listen 127.0.0.1:0 --key-file "$key" --json "$dest" &
    rpid=$!
    addr=$(bench_wait_line "$p.recv.out" '^listening on ') || {
        BENCH_STATUS=no-listen
        bench_ns_kill
    }
    addr=${addr#listening on }
    BENCH_T0=$(bench_now)
    if [[ $BENCH_STATUS == ok ]] &&
        ! bench_in_ns "$p.send" "$haul" send --to "$addr" --key-file "$key" --json "$src"; then
        BENCH_STATUS=send-failed
    fi
    wait "$rpid" || BENCH_STATUS=${BENCH_STATUS/#ok/recv-failed}
    BENCH_T1=$(bench_now)
    BENCH_BLAKE3=$(grep '^{' "$p.send.out" | tail -n1 | jq -r '.files[0].blake3' 2>/dev/null || true)
    r=$(grep '^{' "$p.recv.out" | tail -n1 | jq -r '.files[0].blake3' 2>/dev/null || true)
    if [[ -z "$BENCH_BLAKE3" || "$BENCH_BLAKE3" == null || "$BENCH_BLAKE3" != "$r" ]]; then
        BENCH_STATUS=${BENCH_STATUS/#ok/blake3-mismatch}
    fi
}

# bench_wait_line FILE REGEX [SECONDS]: print the first line of FILE matching REGEX once it
# appears; fail after SECONDS (default 30).
bench_wait_line() {
    local file=$1 re=$2 limit=${3:-30} i line
    for ((i = 0; i < limit * 20; i++)); do
        line=$(grep -m1 -E "$re" "$file" 2>/dev/null || true)
        if [[ -n "$line" ]]; then
            printf '%s\n' "$line"
            return 0
        fi
        sleep 0.05
    done
    echo "bench: no line matching '$re' in $file after ${limit}s" >&2
    return 1
}

# bench_time_field PREFIX FIELD: from PREFIX.time, wall|cpu (user+sys seconds)|rss_kib.
bench_time_field() {
    awk -v f="$2" '/^TIME / {
        if (f == "wall") print $2; else if (f == "cpu") print $3 + $4; else print $5 }' \
        "$1.time" 2>/dev/null || true
}

bench_now() { date +%s.%N; }

# bench_steal_ticks: "steal total" jiffies from /proc/stat (whole machine).
bench_steal_ticks() { awk '/^cpu /{print $9, $2+$3+$4+$5+$6+$7+$8+$9}' /proc/stat; }

# bench_sshd_setup DIR: a throwaway host key, client key, authorized_keys, known_hosts pinning
# the host key, and an sshd config that touches nothing of the system's. Sets BENCH_SSH_OPTS.
bench_sshd_setup() {
    local d=$1
    mkdir -p "$d" /run/sshd # /run/sshd: sshd's privilege-separation directory (empty)
    chmod 700 "$d"
    ssh-keygen -q -t ed25519 -N '' -f "$d/host_key" -C haulbench-host
    ssh-keygen -q -t ed25519 -N '' -f "$d/client_key" -C haulbench-client
    cp "$d/client_key.pub" "$d/authorized_keys"
    echo "[127.0.0.1]:$BENCH_SSH_PORT $(cat "$d/host_key.pub")" >"$d/known_hosts"
    cat >"$d/sshd_config" <<EOF
Port $BENCH_SSH_PORT
ListenAddress 127.0.0.1
HostKey $d/host_key
AuthorizedKeysFile $d/authorized_keys
PidFile none
StrictModes no
UsePAM no
PermitRootLogin prohibit-password
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
X11Forwarding no
AllowTcpForwarding no
Compression no
Ciphers aes128-gcm@openssh.com
Subsystem sftp internal-sftp
EOF
    # shellcheck disable=SC2034 # used by the scripts that source this file
    BENCH_SSH_OPTS=(-F /dev/null -i "$d/client_key" -o BatchMode=yes -o IdentitiesOnly=yes
        -o StrictHostKeyChecking=yes -o "UserKnownHostsFile=$d/known_hosts"
        -o Compression=no -c aes128-gcm@openssh.com)
}

# bench_sshd_start DIR PREFIX: start a one-connection sshd (-d: serves one connection, then
# exits, so /usr/bin/time covers exactly that session's processes) in the background; sets
# BENCH_SSHD_PID. Its debug log (stderr) says when it listens.
bench_sshd_start() {
    local d=$1 p=$2
    bench_in_ns "$p" /usr/sbin/sshd -d -f "$d/sshd_config" &
    # shellcheck disable=SC2034 # used by the scripts that source this file
    BENCH_SSHD_PID=$!
    bench_wait_line "$p.err" 'Server listening on' >/dev/null
}

# bench_usage SCRIPT: print SCRIPT's header comment (its usage).
bench_usage() { awk 'NR > 1 && /^#/ {sub(/^# ?/, ""); print; next} NR > 1 {exit}' "$1"; }

# bench_median: the median of the numbers on stdin (lower middle for an even count).
bench_median() {
    sort -g | awk '{a[NR]=$1} END {if (NR) print a[int((NR+1)/2)]; else print "n/a"}'
}
