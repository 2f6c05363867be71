# shellcheck shell=bash
# Shared build environment for scripts/start and scripts/test. Source it; do not run it.
#
# Every cargo invocation made by our scripts uses the same RUSTFLAGS, CARGO_INCREMENTAL and
# target directory, so fmt/clippy/build/test/bench never rebuild each other's artifacts.
#
# Why -C target-cpu=native: RustCrypto's AES, CMAC and GCM pick their AES-NI/VAES/PCLMULQDQ
# paths at compile time when the target features are on; a generic x86-64 build falls back to
# runtime detection or to slower code (about 2x slower AES here). The binary therefore only runs
# on CPUs with the same features: `haul` checks this at start-up (haul_io::cpu).
#
# Why the target directory is keyed by a hash of the CPU flags: cargo fingerprints
# `-C target-cpu=native` as a string, not as the CPU it resolved to. A target directory shared
# between machines (a cache restored in CI, a home directory on NFS) could hand a binary built
# for one CPU to another. The key covers /proc/cpuinfo's flags, `rustc -vV` and RUSTFLAGS.

# The flags line of the first CPU ("flags" on x86, "Features" on arm64), or the machine name
# where /proc/cpuinfo is absent.
haul_cpu_flags() {
    local line=""
    if [[ -r /proc/cpuinfo ]]; then
        line=$(grep -m1 -E '^(flags|Features)[[:space:]]*:' /proc/cpuinfo || true)
    fi
    if [[ -z "$line" ]]; then
        line="machine: $(uname -m)"
    fi
    printf '%s\n' "$line"
}

# haul_target_key CPU_FLAGS RUSTC_VV RUSTFLAGS -> 16 hex digits. Pure: same inputs, same key.
haul_target_key() {
    printf 'cpu=%s\nrustc=%s\nrustflags=%s\n' "$1" "$2" "$3" | sha256sum | cut -c1-16
}

# Self-check of the key function: stable for equal inputs, different when any input changes.
haul_env_self_check() {
    local a b c d
    a=$(haul_target_key "flags : sse2 aes avx2" "rustc 1.95.0" "-C target-cpu=native")
    b=$(haul_target_key "flags : sse2 aes avx2" "rustc 1.95.0" "-C target-cpu=native")
    c=$(haul_target_key "flags : sse2 aes" "rustc 1.95.0" "-C target-cpu=native")
    d=$(haul_target_key "flags : sse2 aes avx2" "rustc 1.96.0" "-C target-cpu=native")
    if [[ "$a" != "$b" ]]; then
        echo "env.sh self-check: key is not stable ($a vs $b)" >&2
        return 1
    fi
    if [[ "$a" == "$c" || "$a" == "$d" ]]; then
        echo "env.sh self-check: key ignores a change of CPU flags or rustc ($a $c $d)" >&2
        return 1
    fi
    if [[ ! "$a" =~ ^[0-9a-f]{16}$ ]]; then
        echo "env.sh self-check: key '$a' is not 16 hex digits" >&2
        return 1
    fi
}

haul_setup_env() {
    if ! command -v cargo >/dev/null 2>&1; then
        echo "cargo is not on PATH: install Rust 1.95 stable (https://rustup.rs)" >&2
        return 1
    fi
    export CARGO_INCREMENTAL=0
    export RUSTFLAGS="-C target-cpu=native"
    local key
    key=$(haul_target_key "$(haul_cpu_flags)" "$(rustc -vV)" "$RUSTFLAGS")
    export CARGO_TARGET_DIR="${HAUL_TARGET_ROOT:-${HOME:?HOME is unset: set HAUL_TARGET_ROOT}/.cache/haul-target}/$key"
    mkdir -p "$CARGO_TARGET_DIR"
}
