//! End-to-end tests of the release `haul` binary live in `tests/tests/`.

#![forbid(unsafe_code)]
