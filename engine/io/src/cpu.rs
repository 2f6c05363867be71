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
///
/// Detection reads CPUID directly: `is_x86_feature_detected!` answers `true` at compile time
/// for every feature the binary was compiled with, so it cannot tell us what the CPU lacks.
#[cfg(target_arch = "x86_64")]
pub fn feature_states() -> Vec<FeatureState> {
    use cpuid::{Os, Reg::*};
    let cpu = cpuid::Cpuid::read();
    // `cfg!` needs a literal feature name, hence a macro rather than a loop over a table.
    macro_rules! states {
        ($(($name:tt, $reg:expr, $bit:expr, $os:expr)),* $(,)?) => {
            vec![$(FeatureState {
                name: $name,
                is_compiled: cfg!(target_feature = $name),
                is_detected: cpu.has($reg, $bit, $os),
            }),*]
        };
    }
    // (name, CPUID register, bit, OS state needed): Intel SDM vol. 2A, CPUID, tables 3-8..3-11.
    states![
        ("sse2", L1Edx, 26, Os::None),
        ("ssse3", L1Ecx, 9, Os::None),
        ("sse4.1", L1Ecx, 19, Os::None),
        ("sse4.2", L1Ecx, 20, Os::None),
        ("popcnt", L1Ecx, 23, Os::None),
        ("aes", L1Ecx, 25, Os::None),
        ("pclmulqdq", L1Ecx, 1, Os::None),
        ("movbe", L1Ecx, 22, Os::None),
        ("avx", L1Ecx, 28, Os::Avx),
        ("fma", L1Ecx, 12, Os::Avx),
        ("f16c", L1Ecx, 29, Os::Avx),
        ("lzcnt", Ext1Ecx, 5, Os::None),
        ("bmi1", L7Ebx, 3, Os::None),
        ("bmi2", L7Ebx, 8, Os::None),
        ("adx", L7Ebx, 19, Os::None),
        ("sha", L7Ebx, 29, Os::None),
        ("avx2", L7Ebx, 5, Os::Avx),
        ("gfni", L7Ecx, 8, Os::None),
        ("vaes", L7Ecx, 9, Os::Avx),
        ("vpclmulqdq", L7Ecx, 10, Os::Avx),
        ("avx512f", L7Ebx, 16, Os::Avx512),
        ("avx512dq", L7Ebx, 17, Os::Avx512),
        ("avx512bw", L7Ebx, 30, Os::Avx512),
        ("avx512vl", L7Ebx, 31, Os::Avx512),
        ("avx512vbmi", L7Ecx, 1, Os::Avx512),
        ("avx512vbmi2", L7Ecx, 6, Os::Avx512),
        ("avx512vnni", L7Ecx, 11, Os::Avx512),
        ("avx512fp16", L7Edx, 23, Os::Avx512),
        ("avxvnni", L7s1Eax, 4, Os::Avx),
        ("sha512", L7s1Eax, 0, Os::Avx),
    ]
}

/// Raw CPUID and XCR0 decoding for [`feature_states`].
#[cfg(target_arch = "x86_64")]
mod cpuid {
    use std::arch::x86_64::{__cpuid, __cpuid_count, _xgetbv};

    /// Which register of which CPUID leaf holds a feature bit.
    #[derive(Clone, Copy, Debug)]
    pub(super) enum Reg {
        L1Ecx,
        L1Edx,
        L7Ebx,
        L7Ecx,
        L7Edx,
        L7s1Eax,
        Ext1Ecx,
    }

    /// The register state the OS must save on context switch for a feature to be usable.
    #[derive(Clone, Copy, Debug)]
    pub(super) enum Os {
        None,
        /// XMM and YMM state (XCR0 bits 1, 2).
        Avx,
        /// XMM, YMM, opmask and ZMM state (XCR0 bits 1, 2, 5, 6, 7).
        Avx512,
    }

    const XCR0_AVX: u64 = 0b110;
    const XCR0_AVX512: u64 = 0b1110_0110;
    const OSXSAVE_BIT: u32 = 27;

    /// The CPUID words we decode; leaves the CPU does not implement read as zero.
    #[derive(Clone, Copy, Debug, Default)]
    pub(super) struct Cpuid {
        l1_ecx: u32,
        l1_edx: u32,
        l7_ebx: u32,
        l7_ecx: u32,
        l7_edx: u32,
        l7s1_eax: u32,
        ext1_ecx: u32,
        xcr0: u64,
    }

    impl Cpuid {
        pub(super) fn read() -> Self {
            let mut c = Cpuid::default();
            let max_leaf = __cpuid(0).eax;
            let l1 = __cpuid(1);
            (c.l1_ecx, c.l1_edx) = (l1.ecx, l1.edx);
            if max_leaf >= 7 {
                let l7 = __cpuid_count(7, 0);
                (c.l7_ebx, c.l7_ecx, c.l7_edx) = (l7.ebx, l7.ecx, l7.edx);
                if l7.eax >= 1 {
                    c.l7s1_eax = __cpuid_count(7, 1).eax;
                }
            }
            if __cpuid(0x8000_0000).eax >= 0x8000_0001 {
                c.ext1_ecx = __cpuid(0x8000_0001).ecx;
            }
            if c.l1_ecx & (1 << OSXSAVE_BIT) != 0 {
                // SAFETY: CPUID.1:ECX.OSXSAVE is set, so the CPU implements XGETBV and the OS
                // has enabled it (CR4.OSXSAVE); XCR0 (index 0) always exists then.
                c.xcr0 = unsafe { _xgetbv(0) };
            }
            c
        }

        pub(super) fn has(&self, reg: Reg, bit: u32, os: Os) -> bool {
            let word = match reg {
                Reg::L1Ecx => self.l1_ecx,
                Reg::L1Edx => self.l1_edx,
                Reg::L7Ebx => self.l7_ebx,
                Reg::L7Ecx => self.l7_ecx,
                Reg::L7Edx => self.l7_edx,
                Reg::L7s1Eax => self.l7s1_eax,
                Reg::Ext1Ecx => self.ext1_ecx,
            };
            let is_os_ready = match os {
                Os::None => true,
                Os::Avx => self.xcr0 & XCR0_AVX == XCR0_AVX,
                Os::Avx512 => self.xcr0 & XCR0_AVX512 == XCR0_AVX512,
            };
            word & (1 << bit) != 0 && is_os_ready
        }
    }
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

    /// For every feature not compiled in, std's runtime detection is a real CPUID query (for
    /// compiled-in ones it answers `true` statically), so our decoding must agree with it.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn cpuid_decoding_agrees_with_std_detection() {
        macro_rules! std_detect {
            ($($name:tt),*) => { [$(($name, std::is_x86_feature_detected!($name))),*] };
        }
        let std_view = std_detect![
            "sse2",
            "ssse3",
            "sse4.1",
            "sse4.2",
            "popcnt",
            "aes",
            "pclmulqdq",
            "movbe",
            "avx",
            "fma",
            "f16c",
            "lzcnt",
            "bmi1",
            "bmi2",
            "adx",
            "sha",
            "avx2",
            "gfni",
            "vaes",
            "vpclmulqdq",
            "avx512f",
            "avx512dq",
            "avx512bw",
            "avx512vl",
            "avx512vbmi",
            "avx512vbmi2",
            "avx512vnni",
            "avx512fp16",
            "avxvnni",
            "sha512"
        ];
        let ours = feature_states();
        assert_eq!(ours.len(), std_view.len(), "the two tables list different features");
        for (name, std_detected) in std_view {
            let state = ours.iter().find(|s| s.name == name).copied();
            let Some(state) = state else { panic!("{name} missing from feature_states()") };
            if state.is_compiled {
                // Built on this machine: whatever was compiled in must be present.
                assert!(state.is_detected, "{name}: compiled in but CPUID says absent");
            } else {
                assert_eq!(state.is_detected, std_detected, "{name}: CPUID decoding disagrees");
            }
        }
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
