//! What one run produced: the figures, the outcome of each side, and the failures found.
//!
//! [`RunReport::line`] is the one-line summary `haul-sim run` prints. It depends only on the
//! scenario and the simulated run (never on the wall clock), so the same seed prints the same
//! line on any machine.

use crate::attacker::{AttackKind, AttackStats};
use crate::side::Side;
use haul_proto::crypto::SuiteId;
use haul_proto::session::{DiskError, Outcome, Reject, RejectCounts, Role};
use haul_proto::time::Duration;
use std::fmt::Write as _;

/// Why a run failed. Each names what broke and where.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum Failure {
    #[error("panic: {0}")]
    Panic(String),
    #[error("session set-up failed: {0}")]
    Setup(String),
    #[error("step bound reached ({0} steps)")]
    StepBound(u64),
    #[error("simulated-time bound reached ({0:?})")]
    TimeBound(Duration),
    #[error("stalled: nothing scheduled and the session is not over")]
    Stalled,
    #[error("livelock at one instant: {what}")]
    Livelock { what: String },
    #[error("accepted junk: {kind} datagram to {side} shard {shard} got {outcome}")]
    AcceptedJunk { kind: &'static str, side: &'static str, shard: u8, outcome: String },
    #[error("accepted a corrupted datagram: {side} shard {shard} got {outcome}")]
    AcceptedCorrupt { side: &'static str, shard: u8, outcome: String },
    #[error("rejected datagram changed state: {kind} to {side} shard {shard}")]
    AttackChangedState { kind: &'static str, side: &'static str, shard: u8 },
    #[error("intact legit datagram rejected: {side} shard {shard}, {reason:?}")]
    LegitRejected { side: &'static str, shard: u8, reason: Reject },
    #[error("datagram left with outcome Pending: {side} shard {shard}")]
    OutcomePending { side: &'static str, shard: u8 },
    #[error("sequence number transmitted twice: {side} shard {shard} seq {seq:#x}")]
    SeqReused { side: &'static str, shard: u8, seq: u64 },
    #[error("sequence number outside its shard's space: {side} shard {shard} seq {seq:#x}")]
    SeqWrongShard { side: &'static str, shard: u8, seq: u64 },
    #[error("datagram of {len} bytes does not fit the MTU or the buffer ({side})")]
    Oversize { side: &'static str, len: usize },
    #[error("bad request from {side}: {what}")]
    BadRequest { side: &'static str, what: String },
    #[error("{side} ended {got}, expected {want}")]
    WrongOutcome { side: &'static str, got: String, want: String },
    #[error("file {file}: {what}")]
    FileCheck { file: u32, what: String },
}

/// The figures and verdict of one run.
#[derive(Clone, Debug, Default)]
pub struct RunReport {
    pub seed: u64,
    pub shards: u8,
    pub suite: Option<SuiteId>,
    pub sender_is_client: bool,
    pub files: usize,
    pub bytes: u64,
    pub sim_time: Duration,
    /// When the receiver's session completed (every file verified and renamed), from the
    /// start of the run: the end of the goodput clock. `None` if it never did.
    pub renamed_at: Option<Duration>,
    pub steps: u64,
    /// File bytes the sender sent again.
    pub resent_bytes: u64,
    /// File bytes the receiver got more than once (redundant resends).
    pub duplicate_bytes: u64,
    /// Queuing delay at the forward (sender → receiver) bottleneck, per datagram.
    pub queue_delay: crate::net::QueueDelayStats,
    /// Datagrams the forward bottleneck tail-dropped because its queue was full.
    pub queue_drops: u64,
    /// Datagrams transmitted by both sides, each with a sequence number checked to be unique
    /// per (direction, shard): no (key, IV/nonce) pair repeated.
    pub transmitted: u64,
    /// Rejected datagrams by reason, both sides, all shards.
    pub rejects: RejectCounts,
    pub attacks: AttackStats,
    /// Attacker datagrams rejected (all of them, or the run failed).
    pub attacks_rejected: u64,
    /// Link-corrupted datagrams delivered and rejected.
    pub corrupted_rejected: u64,
    /// Each side's outcome, indexed by [`Side::index`].
    pub outcomes: [Option<Outcome>; 2],
    /// The fatal disk error injected, if one fired.
    pub fatal: Option<(Side, DiskError)>,
    /// The run reached `stop_at` (a fixed-span measurement, not a failure).
    pub stopped: bool,
    pub failures: Vec<Failure>,
    /// What the scenario exercised ([`Scenario::coverage_tags`](crate::Scenario::coverage_tags)).
    pub coverage: Vec<String>,
    /// For a failed run: the state of both sides when it ended (`haul-sim run --verbose`).
    pub diagnostics: Vec<String>,
    /// The datagram size the sender's shards ended at (the smallest of them; path-MTU
    /// probing moves it), and their probing counters summed.
    pub datagram_size: Option<u16>,
    pub pmtu: haul_proto::pmtu::PmtuStats,
}

impl RunReport {
    pub fn new(seed: u64, suite: SuiteId, shards: u8, role: Role) -> RunReport {
        RunReport {
            seed,
            shards,
            suite: Some(suite),
            sender_is_client: role == Role::Client,
            ..RunReport::default()
        }
    }

    /// Add one sender shard's probing state.
    pub fn note_pmtu(&mut self, p: &haul_proto::pmtu::Pmtu) {
        let size = p.datagram_size();
        self.datagram_size = Some(self.datagram_size.map_or(size, |s| s.min(size)));
        let (a, b) = (&mut self.pmtu, p.stats());
        a.probes_sent += b.probes_sent;
        a.probes_acked += b.probes_acked;
        a.probes_lost += b.probes_lost;
        a.black_holes += b.black_holes;
        a.too_large += b.too_large;
    }

    pub fn is_ok(&self) -> bool {
        self.failures.is_empty()
    }

    /// Goodput: file bytes over simulated time, Mbit/s.
    pub fn goodput_mbps(&self) -> f64 {
        let s = self.sim_time.as_secs_f64();
        if s > 0.0 { self.bytes as f64 * 8.0 / s / 1e6 } else { 0.0 }
    }

    /// The one-line result `haul-sim run` prints.
    pub fn line(&self) -> String {
        let mut l = format!(
            "seed={} shards={} suite={} sender={} files={} bytes={} sim_time={:.6}s \
             goodput={:.2}Mbit/s resent={} rejects={} attacks={} corrupted_rejected={} outcome={}",
            self.seed,
            self.shards,
            self.suite.map_or("?", SuiteId::name),
            if self.sender_is_client { "client" } else { "server" },
            self.files,
            self.bytes,
            self.sim_time.as_secs_f64(),
            self.goodput_mbps(),
            self.resent_bytes,
            rejects_text(&self.rejects),
            self.attacks.total(),
            self.corrupted_rejected,
            self.outcome_text(),
        );
        if let Some(f) = self.failures.first() {
            let _ = write!(l, " FAIL: {f}");
        }
        l
    }

    fn outcome_text(&self) -> String {
        if !self.failures.is_empty() {
            return "failed".into();
        }
        if self.stopped {
            return "stopped".into();
        }
        match (self.outcomes, self.fatal) {
            ([Some(Outcome::Complete), Some(Outcome::Complete)], _) => "complete".into(),
            (_, Some((side, e))) => format!("aborted({} disk: {e})", side.name()),
            (o, None) => format!("{o:?}"),
        }
    }
}

/// Rejects as `reason:count` pairs, comma-separated, every reason listed.
pub fn rejects_text(r: &RejectCounts) -> String {
    format!(
        "malformed:{},wrong_session:{},wrong_shard:{},reflected:{},replayed:{},stale:{},\
         bad_tag:{},bad_body:{},busy:{},duplicate:{}",
        r.malformed,
        r.wrong_session,
        r.wrong_shard,
        r.reflected,
        r.replayed,
        r.stale,
        r.bad_tag,
        r.bad_body,
        r.busy,
        r.duplicate
    )
}

/// Attacks as `kind:count` pairs.
pub fn attacks_text(a: &AttackStats) -> String {
    AttackKind::ALL
        .iter()
        .map(|k| format!("{}:{}", k.name(), a.by_kind[*k as usize]))
        .collect::<Vec<_>>()
        .join(",")
}

pub fn outcome_name(o: Option<Outcome>) -> String {
    match o {
        None => "unfinished".into(),
        Some(Outcome::Complete) => "complete".into(),
        Some(Outcome::Aborted { reason, by_peer, disk, file }) => {
            format!("aborted({reason:?}, by_peer={by_peer}, disk={disk:?}, file={file:?})")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_names_every_reject_reason_and_the_failure() {
        let mut r = RunReport::new(7, SuiteId::Aes128Gcm, 2, Role::Server);
        r.rejects.add(Reject::BadTag);
        r.bytes = 1_000_000;
        r.sim_time = Duration::from_secs(1);
        let line = r.line();
        assert!(line.starts_with("seed=7 shards=2 suite=aes128-gcm sender=server"), "{line}");
        assert!(line.contains("bad_tag:1") && line.contains("goodput=8.00Mbit/s"), "{line}");
        r.failures.push(Failure::Stalled);
        assert!(r.line().ends_with(
            "outcome=failed FAIL: stalled: nothing scheduled and the session is not over"
        ));
    }
}
