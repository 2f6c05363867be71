//! Fuzz target `decode`: every packet decoder over arbitrary bytes (docs/FUZZING.md).
//!
//! The input is decoded as a whole datagram (`Header::decode`, then the body between header
//! and tag as the header's type) and as a bare body of every packet type; whatever decodes must
//! re-encode to the same bytes and decode to the same value. All of that lives in
//! `haul_proto::wire::fuzz_check_decode`, which the proptests and the corpus replay test
//! (`engine/proto/tests/fuzz_corpus.rs`) call too, so a crash here is a failing test there.
//! A panic (the check's assertion, or any panic inside a decoder) is the crash AFL records.

fn main() {
    afl::fuzz!(|data: &[u8]| {
        haul_proto::wire::fuzz_check_decode(data);
    });
}
