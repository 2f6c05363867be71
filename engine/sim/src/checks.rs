//! The checks made at the end of a run, and the small predicates the driver checks on the way.
//!
//! Without a fatal disk error: both sides `Complete`; every receiver file finalized once, wholly
//! written, byte-identical to the sender's (stored files) or matching the content function at
//! every written byte (virtual files); the BLAKE3 of each stored file equal on both sides; no
//! byte written past a file's end. With a fatal disk error: the side whose disk failed ends
//! `Aborted` with `disk` naming that error, and its peer ends `Aborted` too.

use crate::disk::{Disk, SimFile};
use crate::endpoint::{AnyShard, Endpoint};
use crate::report::{Failure, outcome_name};
use crate::side::Side;
use haul_proto::session::{DiskError, Outcome, ShardStats};
use haul_proto::time::Instant;

/// The counters a rejected datagram must not move.
pub fn traffic_fingerprint(s: &ShardStats) -> [u64; 6] {
    [
        s.datagrams_sent,
        s.data_bytes_sent,
        s.data_bytes_resent,
        s.data_bytes_duplicate,
        s.naks_sent,
        s.naks_received,
    ]
}

/// Everything a rejected datagram must leave as it was: the shard's own account of its state
/// (`debug_state`: stream positions, window, holes, slots), its next deadline, and its traffic
/// counters. Reject counters are left out: counting the reject is the one change allowed.
pub fn state_fingerprint(shard: &AnyShard) -> (String, Option<Instant>, [u64; 6]) {
    (shard.debug_state(), shard.poll_timeout(), traffic_fingerprint(shard.stats()))
}

/// A file may be finalized once, and only when every byte of it is on disk.
pub fn finalize_allowed(disk: &Disk, file: u32) -> Result<(), String> {
    let Some(f) = disk.files().get(file as usize) else {
        return Err("finalize of a file that does not exist".into());
    };
    if disk.finalized().contains(&file) {
        return Err("finalized twice".into());
    }
    if !f.written().contains_range(0..f.size()) {
        return Err(format!(
            "finalized with {} of {} bytes written",
            f.written().covered(),
            f.size()
        ));
    }
    Ok(())
}

/// Every end-of-run check; an empty result means the run passed.
pub fn end_of_run(ends: &[Endpoint; 2], fatal: Option<(Side, DiskError)>) -> Vec<Failure> {
    let outcomes = [ends[0].coord.outcome(), ends[1].coord.outcome()];
    match fatal {
        Some((side, err)) => check_fatal_abort(outcomes, side, err),
        None => {
            let mut out = Vec::new();
            for side in Side::BOTH {
                if outcomes[side.index()] != Some(Outcome::Complete) {
                    out.push(Failure::WrongOutcome {
                        side: side.name(),
                        got: outcome_name(outcomes[side.index()]),
                        want: "complete".into(),
                    });
                }
            }
            out.extend(check_files(&ends[0].disk, &ends[1].disk));
            out
        }
    }
}

fn check_fatal_abort(outcomes: [Option<Outcome>; 2], side: Side, err: DiskError) -> Vec<Failure> {
    let mut out = Vec::new();
    let want = format!("aborted naming disk error {err:?}");
    match outcomes[side.index()] {
        Some(Outcome::Aborted { disk: Some(e), .. }) if e == err => {}
        got => out.push(Failure::WrongOutcome { side: side.name(), got: outcome_name(got), want }),
    }
    let peer = side.peer();
    if !matches!(outcomes[peer.index()], Some(Outcome::Aborted { .. })) {
        out.push(Failure::WrongOutcome {
            side: peer.name(),
            got: outcome_name(outcomes[peer.index()]),
            want: "aborted".into(),
        });
    }
    out
}

/// Compare every receiver file with the sender's.
pub fn check_files(sender: &Disk, receiver: &Disk) -> Vec<Failure> {
    let mut out = Vec::new();
    if receiver.stats().out_of_bounds_bytes > 0 {
        out.push(Failure::FileCheck {
            file: u32::MAX,
            what: format!(
                "{} bytes written past a file's end",
                receiver.stats().out_of_bounds_bytes
            ),
        });
    }
    for (i, (s, r)) in sender.files().iter().zip(receiver.files()).enumerate() {
        let file = i as u32;
        let mut bad = |what: String| out.push(Failure::FileCheck { file, what });
        if receiver.finalized().iter().filter(|&&f| f == file).count() != 1 {
            bad("not finalized exactly once".into());
        }
        if !r.written().contains_range(0..r.size()) {
            bad(format!("{} of {} bytes written", r.written().covered(), r.size()));
        }
        match (s, r) {
            (SimFile::Stored { data: a, .. }, SimFile::Stored { data: b, .. }) => {
                if let Some(at) = a.iter().zip(b.iter()).position(|(x, y)| x != y) {
                    bad(format!("content differs from byte {at}"));
                } else if a.len() != b.len() {
                    bad(format!("size {} instead of {}", b.len(), a.len()));
                }
                if blake3::hash(a) != blake3::hash(b) {
                    bad("BLAKE3 differs".into());
                }
            }
            (_, SimFile::Virtual { mismatched_bytes, .. }) => {
                if *mismatched_bytes > 0 {
                    bad(format!("{mismatched_bytes} written bytes differ from the content"));
                }
            }
            _ => bad("stored on one side, virtual on the other".into()),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::disk::{DiskConfig, DiskOp};
    use haul_proto::rangeset::RangeSet;

    fn disk(files: Vec<Vec<u8>>) -> Disk {
        let files = files
            .into_iter()
            .map(|data| SimFile::Stored { data, written: RangeSet::new() })
            .collect();
        Disk::new(DiskConfig::fast(), files, None, 1)
    }

    fn write_all(d: &mut Disk, file: u32, data: &[u8]) {
        d.submit(Instant::ZERO, DiskOp::Write { shard: 0, file, offset: 0, data: data.to_vec() })
            .unwrap();
        d.submit(Instant::ZERO, DiskOp::Finalize { file }).unwrap();
        while d.poll_completion(Instant::from_nanos(1 << 40)).is_some() {}
    }

    #[test]
    fn identical_files_pass_and_a_flipped_byte_fails() {
        let sender = disk(vec![vec![1, 2, 3], vec![]]);
        let mut recv = disk(vec![vec![0; 3], vec![]]);
        assert!(finalize_allowed(&recv, 0).is_err(), "nothing written yet");
        write_all(&mut recv, 0, &[1, 2, 3]);
        write_all(&mut recv, 1, &[]);
        assert_eq!(check_files(&sender, &recv), vec![]);
        assert!(finalize_allowed(&recv, 0).is_err(), "finalized already");
        let mut bad = disk(vec![vec![0; 3], vec![]]);
        write_all(&mut bad, 0, &[1, 9, 3]);
        let f = check_files(&sender, &bad);
        assert!(f.iter().any(|f| f.to_string().contains("differs from byte 1")), "{f:?}");
        assert!(f.iter().any(|f| f.to_string().contains("BLAKE3")));
        assert!(f.iter().any(|f| f.to_string().contains("file 1: not finalized")));
    }

    #[test]
    fn fatal_abort_must_name_the_error() {
        use haul_proto::session::AbortReason;
        let ab = |disk| {
            Some(Outcome::Aborted {
                reason: AbortReason::DiskFull,
                by_peer: false,
                disk,
                file: None,
            })
        };
        let peer = Some(Outcome::Aborted {
            reason: AbortReason::DiskFull,
            by_peer: true,
            disk: None,
            file: None,
        });
        assert!(
            check_fatal_abort(
                [peer, ab(Some(DiskError::NoSpace))],
                Side::Receiver,
                DiskError::NoSpace
            )
            .is_empty()
        );
        assert_eq!(
            check_fatal_abort([peer, ab(Some(DiskError::Io))], Side::Receiver, DiskError::NoSpace)
                .len(),
            1
        );
        assert_eq!(
            check_fatal_abort(
                [Some(Outcome::Complete), ab(None)],
                Side::Receiver,
                DiskError::NoSpace
            )
            .len(),
            2
        );
    }
}
