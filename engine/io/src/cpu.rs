//! CPU feature check at start-up.
//!
//! Our builds use `-C target-cpu=native` (scripts/env.sh) so that RustCrypto's AES, CMAC and
//! GHASH compile to AES-NI/VAES/PCLMULQDQ code paths; a generic x86-64 build is about 2x slower
//! on AES. The price: the binary assumes every target feature of the build machine. Copied to
//! an older CPU, it would die on the first such instruction with SIGILL and no explanation.
//!
//! [`check_cpu_features`] compares the target features the binary was compiled with
//! (`cfg!(target_feature = ...)`) against what the CPU reports at run time
//! (`is_x86_feature_detected!`) and names what is missing, with the fix.
//! [`cpu_feature_notes`] reports the opposite, harmless but slow, mismatch: a generic build on a
//! CPU that has AES-NI, or a CPU without AES-NI at all.
//!
//! Limit: the compiler is free to use compiled-in features anywhere, including in the standard
//! library's start-up code that runs before `main`. A binary built for a newer CPU may therefore
//! still die with SIGILL before this check runs. It catches the common case, where the first
//! such instruction sits in our code or in a library we call after start-up.
//!
//! Invariant: this module never panics and, on non-x86_64 targets, always returns `Ok` with no
//! notes (there is nothing to compare yet).

use std::fmt;

/// One target feature: compiled in, and present on this CPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FeatureState {
    /// The feature's name as `target_feature` spells it ("aes", "sse4.1", ...).
    pub name: &'static str,
    /// The binary was compiled with this feature enabled.
    pub is_compiled: bool,
    /// The CPU running the binary reports this feature.
    pub is_detected: bool,
}

/// The binary needs CPU features that this machine lacks. The fault is the build's (built on or
/// for another CPU), not the machine's.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CpuError {
    /// Features the binary was compiled with that this CPU does not report.
    pub missing: Vec<&'static str>,
}

impl fmt::Display for CpuError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "this CPU lacks features this binary was compiled for: {}. \
             This binary was built with -C target-cpu=native on another CPU; rebuild on this \
             machine (scripts/start does) or build a portable binary with \
             RUSTFLAGS='-C target-cpu=x86-64-v3' (or x86-64-v2 for older CPUs, with \
             -C target-feature=+aes,+pclmulqdq to keep AES-NI)",
            self.missing.join(", ")
        )
    }
}

impl std::error::Error for CpuError {}

/// Features whose absence at run time makes the binary unusable (compiled in, not detected).
pub fn missing_features(states: &[FeatureState]) -> Vec<&'static str> {
    states.iter().filter(|s| s.is_compiled && !s.is_detected).map(|s| s.name).collect()
}

/// Notes on a slow but working combination of build and CPU; empty when all is well.
pub fn feature_notes(states: &[FeatureState]) -> Vec<String> {
    let state = |name: &str| states.iter().find(|s| s.name == name).copied();
    let mut notes = Vec::new();
    if let Some(aes) = state("aes") {
        if !aes.is_detected {
            notes.push(
                "this CPU has no AES-NI: AES-128 runs in constant-time software, several times \
                 slower; expect crypto to bound throughput"
                    .to_string(),
            );
        } else if !aes.is_compiled {
            notes.push(
                "this binary was built without the aes target feature although the CPU has \
                 AES-NI (a generic build): AES is about 2x slower; rebuild with \
                 RUSTFLAGS='-C target-cpu=native' (scripts/start does)"
                    .to_string(),
            );
        }
    }
    let is_aes_compiled = state("aes").is_some_and(|a| a.is_compiled);
    if let Some(vaes) = state("vaes")
        && vaes.is_detected
        && !vaes.is_compiled
        && is_aes_compiled
    {
        notes.push(
            "the CPU has VAES but this binary was built without it: batched AES runs at \
             128 bits per instruction instead of 256/512; rebuild with \
             RUSTFLAGS='-C target-cpu=native'"
                .to_string(),
        );
    }
    notes
}

/// The features this binary was compiled with and this CPU's support for each.
#[cfg(target_arch = "x86_64")]
pub fn feature_states() -> Vec<FeatureState> {
    // Both macros need literal feature names, hence a macro rather than a loop over a table.
    macro_rules! states {
        ($($name:tt),* $(,)?) => {
            vec![$(FeatureState {
                name: $name,
                is_compiled: cfg!(target_feature = $name),
                is_detected: std::is_x86_feature_detected!($name),
            }),*]
        };
    }
    states![
        "sse2",
        "ssse3",
        "sse4.1",
        "sse4.2",
        "popcnt",
        "aes",
        "pclmulqdq",
        "avx",
        "avx2",
        "bmi1",
        "bmi2",
        "fma",
        "lzcnt",
        "movbe",
        "sha",
        "vaes",
        "vpclmulqdq",
        "avx512f",
        "avx512bw",
        "avx512vl",
        "avx512dq",
        "gfni",
    ]
}

/// The features this binary was compiled with and this CPU's support for each.
#[cfg(not(target_arch = "x86_64"))]
pub fn feature_states() -> Vec<FeatureState> {
    Vec::new()
}

/// Fails, naming the missing features and the fix, when the binary was compiled for CPU
/// features this machine lacks. Call it first thing in `main`.
pub fn check_cpu_features() -> Result<(), CpuError> {
    let missing = missing_features(&feature_states());
    if missing.is_empty() { Ok(()) } else { Err(CpuError { missing }) }
}

/// Warnings worth printing at start-up: no AES-NI at all, or a generic build on an AES-NI CPU.
pub fn cpu_feature_notes() -> Vec<String> {
    feature_notes(&feature_states())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn st(name: &'static str, is_compiled: bool, is_detected: bool) -> FeatureState {
        FeatureState { name, is_compiled, is_detected }
    }

    #[test]
    fn compiled_but_absent_features_are_missing() {
        let states = [st("aes", true, true), st("avx512f", true, false), st("vaes", true, false)];
        assert_eq!(missing_features(&states), vec!["avx512f", "vaes"]);
    }

    #[test]
    fn detected_but_not_compiled_is_not_missing() {
        let states = [st("aes", false, true), st("avx2", false, true)];
        assert!(missing_features(&states).is_empty());
    }

    #[test]
    fn error_names_features_and_fix() {
        let msg = CpuError { missing: vec!["avx512f", "vaes"] }.to_string();
        assert!(msg.contains("avx512f, vaes"), "{msg}");
        assert!(msg.contains("-C target-cpu=native on another CPU"), "{msg}");
        assert!(msg.contains("scripts/start"), "{msg}");
        assert!(msg.contains("x86-64-v3"), "{msg}");
    }

    #[test]
    fn notes_generic_build_on_aes_cpu() {
        let notes = feature_notes(&[st("aes", false, true), st("vaes", false, true)]);
        assert_eq!(notes.len(), 1, "{notes:?}");
        assert!(notes[0].contains("generic build"), "{notes:?}");
    }

    #[test]
    fn notes_cpu_without_aes_ni() {
        let notes = feature_notes(&[st("aes", false, false)]);
        assert_eq!(notes.len(), 1, "{notes:?}");
        assert!(notes[0].contains("no AES-NI"), "{notes:?}");
    }

    #[test]
    fn notes_vaes_not_compiled() {
        let notes = feature_notes(&[st("aes", true, true), st("vaes", false, true)]);
        assert_eq!(notes.len(), 1, "{notes:?}");
        assert!(notes[0].contains("VAES"), "{notes:?}");
    }

    #[test]
    fn no_notes_for_matching_native_build() {
        assert!(feature_notes(&[st("aes", true, true), st("vaes", true, true)]).is_empty());
    }

    /// This test binary was built on this machine, so whatever flags built it, the check passes.
    #[test]
    fn this_binary_passes_on_the_machine_that_built_it() {
        assert_eq!(check_cpu_features(), Ok(()));
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn table_reflects_compile_flags() {
        let states = feature_states();
        let sse2 = states.iter().find(|s| s.name == "sse2").copied();
        // SSE2 is part of the x86_64 baseline: always compiled in, always present.
        assert_eq!(sse2, Some(st("sse2", true, true)));
        let aes = states.iter().find(|s| s.name == "aes").map(|s| s.is_compiled);
        assert_eq!(aes, Some(cfg!(target_feature = "aes")));
    }
}
