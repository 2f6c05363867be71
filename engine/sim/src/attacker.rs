//! The on-path attacker.
//!
//! It watches both directions (keeping bounded samples of what it sees) and injects, at a
//! configured rate, datagrams that must all be rejected:
//! - `Forged`: a well-formed header of any of the nine packet types with the right version,
//!   session id and shard and a sequence number inside the replay window, then a random body and
//!   tag;
//! - `WrongSession`, `WrongShard`: forged, with another session id, or handed to a shard other
//!   than the one its header names (or naming a shard the session lacks);
//! - `Junk`: random bytes of random length, sometimes behind a plausible first few bytes;
//! - `Tampered`: a captured legit datagram with one header field changed (type, shard, seq or
//!   timestamp) or its body truncated;
//! - `ReplaySoon`: a recently delivered legit datagram sent again;
//! - `ReplayLate`: one of the first legit datagrams a side accepted, sent again much later (after
//!   its window moved, if the transfer is long enough);
//! - `Reflection`: a datagram a side sent, handed back to that same side.
//!
//! Headers are built by hand from the layout in `haul_proto::wire` (docs/PROTOCOL.md §2), so the
//! attacker does not depend on the codec it attacks.
//!
//! Invariants: only datagrams the receiving shard already *accepted* are kept for replay (a
//! copy of a datagram the link lost would be a legitimate late delivery, not an attack); every
//! capture buffer has a named bound; all choices come from the attacker's own seeded [`Rng`].

use crate::side::Side;
use haul_proto::crypto::TAG_LEN;
use haul_proto::rng::Rng;
use haul_proto::time::{Duration, Instant};
use haul_proto::wire::{DATA_PREFIX_LEN, HEADER_LEN, VERSION};
use std::collections::VecDeque;

/// Recent datagrams kept per side for replays and reflections.
pub const CAPTURE_RING: usize = 64;
/// The earliest accepted datagrams kept per side for late replays.
pub const EARLY_CAPTURES: usize = 32;
/// One in this many datagrams is captured into the rings (copying every one would dominate the
/// simulator's cost).
pub const CAPTURE_EVERY: u64 = 8;
/// The nine packet type codes of wire version 1.
pub const PACKET_TYPES: core::ops::RangeInclusive<u8> = 1..=9;

/// How hard the attacker works.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AttackerConfig {
    /// Mean injections per second of simulated time.
    pub rate_per_sec: u64,
    /// Most injections in one run.
    pub max_datagrams: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AttackKind {
    Forged,
    WrongSession,
    WrongShard,
    Junk,
    Tampered,
    ReplaySoon,
    ReplayLate,
    Reflection,
}

impl AttackKind {
    pub const ALL: [AttackKind; 8] = [
        AttackKind::Forged,
        AttackKind::WrongSession,
        AttackKind::WrongShard,
        AttackKind::Junk,
        AttackKind::Tampered,
        AttackKind::ReplaySoon,
        AttackKind::ReplayLate,
        AttackKind::Reflection,
    ];
    pub const fn name(self) -> &'static str {
        match self {
            AttackKind::Forged => "forged",
            AttackKind::WrongSession => "wrong_session",
            AttackKind::WrongShard => "wrong_shard",
            AttackKind::Junk => "junk",
            AttackKind::Tampered => "tampered",
            AttackKind::ReplaySoon => "replay_soon",
            AttackKind::ReplayLate => "replay_late",
            AttackKind::Reflection => "reflection",
        }
    }
}

/// One hostile datagram: hand `bytes` to `target`'s shard `shard`, alone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Injection {
    pub target: Side,
    pub shard: u8,
    pub kind: AttackKind,
    pub bytes: Vec<u8>,
}

/// Injections made, by kind, and by packet type for forged ones.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AttackStats {
    pub by_kind: [u64; 8],
    /// Forged datagrams by packet type code (index = code).
    pub forged_by_type: [u64; 10],
}

impl AttackStats {
    pub fn total(&self) -> u64 {
        self.by_kind.iter().sum()
    }
    pub fn merge(&mut self, o: &AttackStats) {
        for (a, b) in self.by_kind.iter_mut().zip(o.by_kind) {
            *a += b;
        }
        for (a, b) in self.forged_by_type.iter_mut().zip(o.forged_by_type) {
            *a += b;
        }
    }
}

/// What the attacker has seen of one side.
#[derive(Debug, Default)]
struct Seen {
    /// Legit datagrams this side accepted, recent ones.
    accepted: VecDeque<Vec<u8>>,
    /// The first legit datagrams this side accepted.
    early: Vec<Vec<u8>>,
    /// Datagrams this side sent.
    sent: VecDeque<Vec<u8>>,
    /// Highest sequence number this side accepted, per shard.
    top_seq: Vec<u64>,
}

#[derive(Debug)]
pub struct Attacker {
    cfg: AttackerConfig,
    rng: Rng,
    session_id: u64,
    shards: u8,
    datagram_size: usize,
    seen: [Seen; 2],
    next_at: Instant,
    observed: u64,
    stats: AttackStats,
}

/// Header bytes as wire version 1 lays them out (see `haul_proto::wire::Header`).
pub fn header_bytes(
    ptype: u8,
    shard: u8,
    session_id: u64,
    seq: u64,
    ts_us: u32,
) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[0] = VERSION;
    h[1] = ptype;
    h[2] = shard;
    h[3] = 0;
    h[4..12].copy_from_slice(&session_id.to_le_bytes());
    h[12..20].copy_from_slice(&seq.to_le_bytes());
    h[20..24].copy_from_slice(&ts_us.to_le_bytes());
    h
}

/// The (shard byte, sequence number) of a datagram's header, if it is long enough.
pub fn header_shard_seq(datagram: &[u8]) -> Option<(u8, u64)> {
    let seq = datagram.get(12..20)?;
    let mut b = [0u8; 8];
    b.copy_from_slice(seq);
    Some((datagram[2], u64::from_le_bytes(b)))
}

impl Attacker {
    pub fn new(
        cfg: AttackerConfig,
        session_id: u64,
        shards: u8,
        datagram_size: usize,
        seed: u64,
    ) -> Attacker {
        let mut rng = Rng::new(seed);
        let first = Duration::from_nanos(rng.below(2_000_000_000 / cfg.rate_per_sec.max(1)));
        let seen = || Seen { top_seq: vec![0; usize::from(shards)], ..Seen::default() };
        Attacker {
            cfg,
            rng,
            session_id,
            shards,
            datagram_size,
            seen: [seen(), seen()],
            next_at: Instant::ZERO + first,
            observed: 0,
            stats: AttackStats::default(),
        }
    }

    pub fn stats(&self) -> &AttackStats {
        &self.stats
    }

    /// `from` transmitted `datagram` on its shard.
    pub fn observe_sent(&mut self, from: Side, datagram: &[u8]) {
        self.observed += 1;
        if !self.observed.is_multiple_of(CAPTURE_EVERY) {
            return;
        }
        let ring = &mut self.seen[from.index()].sent;
        if ring.len() >= CAPTURE_RING {
            ring.pop_front();
        }
        ring.push_back(datagram.to_vec());
    }

    /// `to`'s shard `shard` accepted the legit `datagram`.
    pub fn observe_accepted(&mut self, to: Side, shard: u8, datagram: &[u8]) {
        let seen = &mut self.seen[to.index()];
        if let (Some((_, seq)), Some(top)) =
            (header_shard_seq(datagram), seen.top_seq.get_mut(usize::from(shard)))
        {
            *top = (*top).max(seq);
        }
        if seen.early.len() < EARLY_CAPTURES {
            seen.early.push(datagram.to_vec());
            return;
        }
        if !self.observed.is_multiple_of(CAPTURE_EVERY) {
            return;
        }
        if seen.accepted.len() >= CAPTURE_RING {
            seen.accepted.pop_front();
        }
        seen.accepted.push_back(datagram.to_vec());
    }

    /// When the next injection is due, or `None` once the budget is spent.
    pub fn next_injection(&self) -> Option<Instant> {
        (self.stats.total() < self.cfg.max_datagrams).then_some(self.next_at)
    }

    /// The injection due at `now`, if any. Falls back to a forged datagram when the chosen kind
    /// has nothing captured to work from yet.
    pub fn poll_injection(&mut self, now: Instant) -> Option<Injection> {
        if now < self.next_at || self.stats.total() >= self.cfg.max_datagrams {
            return None;
        }
        let gap = 2_000_000_000 / self.cfg.rate_per_sec.max(1);
        self.next_at = now + Duration::from_nanos(1 + self.rng.below(gap));
        let target = if self.rng.chance(0.5) { Side::Sender } else { Side::Receiver };
        let kind = AttackKind::ALL[self.rng.below(AttackKind::ALL.len() as u64) as usize];
        let inj = self.make(kind, target).unwrap_or_else(|| self.forge(AttackKind::Forged, target));
        self.stats.by_kind[inj.kind as usize] += 1;
        Some(inj)
    }

    fn make(&mut self, kind: AttackKind, target: Side) -> Option<Injection> {
        let t = target.index();
        let pick = |rng: &mut Rng, v: &VecDeque<Vec<u8>>| -> Option<Vec<u8>> {
            (!v.is_empty()).then(|| v[rng.below(v.len() as u64) as usize].clone())
        };
        let (bytes, kind) = match kind {
            AttackKind::Forged | AttackKind::WrongSession | AttackKind::WrongShard => {
                return Some(self.forge(kind, target));
            }
            AttackKind::Junk => (self.junk(), kind),
            AttackKind::ReplaySoon => (pick(&mut self.rng, &self.seen[t].accepted)?, kind),
            AttackKind::ReplayLate => {
                let e = &self.seen[t].early;
                (e.get(self.rng.below(e.len() as u64) as usize)?.clone(), kind)
            }
            AttackKind::Reflection => (pick(&mut self.rng, &self.seen[t].sent)?, kind),
            AttackKind::Tampered => {
                let mut b = pick(&mut self.rng, &self.seen[t].accepted)
                    .or_else(|| self.seen[t].early.first().cloned())?;
                self.tamper(&mut b);
                (b, kind)
            }
        };
        let shard = header_shard_seq(&bytes).map_or(0, |(s, _)| s) % self.shards;
        Some(Injection { target, shard, kind, bytes })
    }

    /// A forged datagram of a random packet type, sequence number near what `target` accepted.
    fn forge(&mut self, kind: AttackKind, target: Side) -> Injection {
        let ptype = *PACKET_TYPES.start() + self.rng.below(PACKET_TYPES.len() as u64) as u8;
        let mut shard = self.rng.below(u64::from(self.shards)) as u8;
        let top = self.seen[target.index()].top_seq[usize::from(shard)] & ((1 << 56) - 1);
        let counter = (top + 32).saturating_sub(self.rng.below(64));
        let seq = (u64::from(shard) << 56) | counter;
        let mut session_id = self.session_id;
        let mut deliver_to = shard;
        match kind {
            AttackKind::WrongSession => session_id ^= 1 + self.rng.below(u64::MAX - 1),
            AttackKind::WrongShard if self.shards > 1 => {
                deliver_to =
                    (shard + 1 + self.rng.below(u64::from(self.shards) - 1) as u8) % self.shards;
            }
            AttackKind::WrongShard => shard = self.shards + self.rng.below(8) as u8,
            _ => {}
        }
        let ts = self.rng.next_u64() as u32;
        let body_len = self.forged_body_len(ptype);
        let mut bytes = header_bytes(ptype, shard, session_id, seq, ts).to_vec();
        bytes.resize(HEADER_LEN + body_len + TAG_LEN, 0);
        self.rng.fill_bytes(&mut bytes[HEADER_LEN..]);
        if kind == AttackKind::Forged {
            self.stats.forged_by_type[usize::from(ptype)] += 1;
        }
        Injection { target, shard: deliver_to, kind, bytes }
    }

    /// A plausible body length for `ptype`.
    fn forged_body_len(&mut self, ptype: u8) -> usize {
        let room = self.datagram_size.saturating_sub(HEADER_LEN + TAG_LEN);
        let len = match ptype {
            1 => {
                DATA_PREFIX_LEN
                    + self.rng.below((room - DATA_PREFIX_LEN.min(room)) as u64 + 1) as usize
            }
            2 => 2 + 16 * self.rng.below(8) as usize,
            _ => self.rng.below(48) as usize,
        };
        len.min(room)
    }

    /// Random bytes of random length; half of them behind a valid version and type.
    fn junk(&mut self) -> Vec<u8> {
        let len = self.rng.below(self.datagram_size as u64 + 1) as usize;
        let mut b = vec![0u8; len];
        self.rng.fill_bytes(&mut b);
        if len >= 2 && self.rng.chance(0.5) {
            b[0] = VERSION;
            b[1] = *PACKET_TYPES.start() + self.rng.below(PACKET_TYPES.len() as u64) as u8;
        }
        b
    }

    /// Change one header field of a captured datagram, or truncate it.
    fn tamper(&mut self, b: &mut Vec<u8>) {
        if b.len() < HEADER_LEN {
            b.clear();
            return;
        }
        match self.rng.below(5) {
            0 => b[1] = *PACKET_TYPES.start() + ((b[1] % 9) + 1) % 9,
            1 => b[12] = b[12].wrapping_add(1 + self.rng.below(255) as u8),
            2 => b[20] ^= 1 + self.rng.below(255) as u8,
            3 => b[4] ^= 1 + self.rng.below(255) as u8,
            _ => {
                let keep = self.rng.below(b.len() as u64) as usize;
                b.truncate(keep);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn legit(shard: u8, seq: u64) -> Vec<u8> {
        let mut v = header_bytes(1, shard, 77, (u64::from(shard) << 56) | seq, 5).to_vec();
        v.extend_from_slice(&[0xab; 100]);
        v
    }

    #[test]
    fn hand_built_headers_match_the_codec() {
        use haul_proto::wire::{Header, PacketType};
        let mut d = header_bytes(4, 3, 0x1122, (3 << 56) | 9, 77).to_vec();
        d.extend_from_slice(&[0; TAG_LEN]);
        let h = Header::decode(&d).unwrap();
        assert_eq!((h.ptype, h.shard, h.session_id), (PacketType::Window, 3, 0x1122));
        assert_eq!((h.seq, h.timestamp_us), ((3 << 56) | 9, 77));
        let mut out = [0u8; HEADER_LEN];
        h.encode(&mut out);
        assert_eq!(out[..], d[..HEADER_LEN]);
    }

    #[test]
    fn header_layout_round_trips() {
        let h = header_bytes(4, 3, 0x1122, (3 << 56) | 9, 1);
        assert_eq!(header_shard_seq(&h), Some((3, (3 << 56) | 9)));
        assert_eq!(header_shard_seq(&h[..19]), None);
        assert_eq!((h[0], h[1], h[3]), (VERSION, 4, 0));
    }

    #[test]
    fn injects_every_kind_and_every_packet_type_at_its_rate() {
        let cfg = AttackerConfig { rate_per_sec: 1000, max_datagrams: 5000 };
        let mut a = Attacker::new(cfg, 77, 2, 1472, 1);
        for i in 0..400 {
            let side = if i % 2 == 0 { Side::Sender } else { Side::Receiver };
            a.observe_sent(side.peer(), &legit((i % 2) as u8, i));
            a.observe_accepted(side, (i % 2) as u8, &legit((i % 2) as u8, i));
        }
        let mut now = Instant::ZERO;
        let mut made = Vec::new();
        while let Some(at) = a.next_injection() {
            now = now.max(at);
            if let Some(inj) = a.poll_injection(now) {
                assert!(inj.shard < 2);
                assert!(inj.bytes.len() <= 1472);
                made.push(inj);
            }
        }
        assert_eq!(made.len(), 5000);
        // 5000 injections at 1000/s take about five simulated seconds.
        assert!((4..7).contains(&(now.as_nanos() / 1_000_000_000)), "{now:?}");
        let s = a.stats();
        assert!(s.by_kind.iter().all(|&n| n > 300), "{s:?}");
        assert!(s.forged_by_type[1..].iter().all(|&n| n > 20), "{s:?}");
        let forged = made.iter().find(|i| i.kind == AttackKind::Forged).unwrap();
        assert_eq!(&forged.bytes[4..12], &77u64.to_le_bytes());
        let (shard, seq) = header_shard_seq(&forged.bytes).unwrap();
        assert_eq!(seq >> 56, u64::from(shard));
        assert_eq!(shard, forged.shard);
    }

    #[test]
    fn without_captures_replays_fall_back_to_forgeries() {
        let cfg = AttackerConfig { rate_per_sec: 1000, max_datagrams: 50 };
        let mut a = Attacker::new(cfg, 1, 1, 1472, 2);
        let mut now = Instant::ZERO;
        while let Some(at) = a.next_injection() {
            now = now.max(at);
            let inj = a.poll_injection(now).unwrap();
            assert!(!matches!(
                inj.kind,
                AttackKind::ReplaySoon
                    | AttackKind::ReplayLate
                    | AttackKind::Reflection
                    | AttackKind::Tampered
            ));
        }
    }
}
