//! Fuzz target `receive`: the receiver's datagram path (docs/FUZZING.md).
//!
//! The input is cut into records; each is fed to a receiver shard either raw or sealed with the
//! peer's real keys around an arbitrary body, so the fuzzer reaches the authenticated paths
//! (data, flow control, FileDone, Complete, Abort) and the disk completions. All of that lives in
//! `haul_proto::session::fuzz::fuzz_check_receiver`, which the corpus replay test and a bounded
//! proptest call too. A panic is the crash AFL records.

fn main() {
    afl::fuzz!(|data: &[u8]| {
        let _ = haul_proto::session::fuzz::fuzz_check_receiver(data);
    });
}
