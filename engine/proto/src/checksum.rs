//! Whole-file checksum.
