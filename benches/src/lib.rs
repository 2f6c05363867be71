//! Benchmarks: criterion micro-benchmarks in `benches/benches/`, harness scripts beside them.

#![forbid(unsafe_code)]
