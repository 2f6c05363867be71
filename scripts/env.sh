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

# The toolchain scripts install when cargo is missing (the workspace's rust-version).
HAUL_RUST_VERSION=1.95

haul_apt_updated=0
# haul_apt_install PKG...: apt-get install, as root or through sudo; `apt-get update` once.
haul_apt_install() {
    local sudo=()
    if [[ $(id -u) -ne 0 ]]; then
        if ! command -v sudo >/dev/null 2>&1; then
            echo "haul: need root (or sudo) to install: $*" >&2
            return 1
        fi
        sudo=(sudo)
    fi
    if ! command -v apt-get >/dev/null 2>&1; then
        echo "haul: no apt-get on this system; install by hand: $*" >&2
        return 1
    fi
    echo "haul: installing $*" >&2
    if [[ $haul_apt_updated -eq 0 ]]; then
        "${sudo[@]}" apt-get update -qq
        haul_apt_updated=1
    fi
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -qq --no-install-recommends "$@"
}

# need_pkg CMD PKG: install Debian package PKG when command CMD is missing.
need_pkg() {
    if ! command -v "$1" >/dev/null 2>&1; then
        haul_apt_install "$2"
    fi
}

# haul_need_rust: when cargo is missing, install Rust $HAUL_RUST_VERSION with rustup (the
# documented installer; needs network access to rustup.rs and static.rust-lang.org).
haul_need_rust() {
    if command -v cargo >/dev/null 2>&1; then
        return 0
    fi
    if [[ -x "${HOME:-}/.cargo/bin/cargo" ]]; then
        export PATH="$HOME/.cargo/bin:$PATH"
        return 0
    fi
    need_pkg curl curl
    need_pkg cc gcc
    haul_apt_install ca-certificates
    echo "haul: installing Rust $HAUL_RUST_VERSION with rustup" >&2
    curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs |
        sh -s -- -y --profile minimal --default-toolchain "$HAUL_RUST_VERSION" \
            -c rustfmt -c clippy
    export PATH="$HOME/.cargo/bin:$PATH"
}

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
        echo "haul: cargo is not on PATH: install Rust $HAUL_RUST_VERSION (https://rustup.rs)" >&2
        return 1
    fi
    export CARGO_INCREMENTAL=0
    export RUSTFLAGS="-C target-cpu=native"
    local key
    key=$(haul_target_key "$(haul_cpu_flags)" "$(rustc -vV)" "$RUSTFLAGS")
    export CARGO_TARGET_DIR="${HAUL_TARGET_ROOT:-${HOME:?HOME is unset: set HAUL_TARGET_ROOT}/.cache/haul-target}/$key"
    mkdir -p "$CARGO_TARGET_DIR"
}
