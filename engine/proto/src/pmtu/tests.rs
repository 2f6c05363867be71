//! Probing state-machine tests: a scripted path that carries datagrams up to a hidden size,
//! convergence, probe loss, black holes, EMSGSIZE, and random operation sequences checked
//! against the invariants of the module doc.

// Tests: a panic is the failure report.
#![allow(clippy::unwrap_used)]

use super::*;
use proptest::prelude::*;

const BASE: u16 = 1472;

/// Drive `p` against a path that carries datagrams of at most `path` bytes and loses a probe
/// when `lose(n)` says so (n = probes sent so far); every probe that passes is acked after
/// `rtt`. Returns the time reached.
fn run(p: &mut Pmtu, mut now: Instant, until: Instant, path: u16, lose: impl Fn(u64) -> bool) {
    let rtt = Duration::from_millis(10);
    p.set_rtt(rtt);
    let mut pending: Option<(Instant, u32, u16)> = None;
    let mut steps = 0;
    while now < until {
        steps += 1;
        assert!(steps < 100_000, "no progress at {now:?}");
        if let Some((at, id, size)) = pending
            && now >= at
        {
            p.handle_probe_ack(now, id, size);
            pending = None;
        }
        p.handle_timeout(now);
        if let Some(probe) = p.poll_probe(now) {
            let n = p.stats().probes_sent;
            if probe.size <= path && !lose(n) {
                pending = Some((now + rtt, probe.id, probe.size));
            }
        }
        check_invariants(p);
        let mut next = p.poll_timeout().unwrap_or(until).max(now + Duration::from_micros(1));
        if let Some((at, _, _)) = pending {
            next = next.min(at.max(now));
        }
        now = next.max(now).min(until).max(now + Duration::from_micros(1));
    }
}

fn check_invariants(p: &Pmtu) {
    assert!(p.base <= p.size && p.size <= p.ceiling.max(p.base), "{p:?}");
    if p.state == PmtuState::Searching {
        assert!(p.low <= p.size && p.size < p.high, "{p:?}");
    }
}

fn secs(s: u64) -> Instant {
    Instant::from_nanos(Duration::from_secs(s).as_nanos())
}

#[test]
fn jumbo_path_takes_the_ceiling_with_one_probe() {
    let mut p = Pmtu::new(BASE, 8972, Instant::ZERO);
    run(&mut p, Instant::ZERO, secs(1), 8972, |_| false);
    assert_eq!(p.datagram_size(), 8972);
    assert_eq!(p.state(), PmtuState::Complete);
    assert_eq!(p.stats().probes_sent, 1);
}

#[test]
fn a_1500_path_stays_at_the_base() {
    let mut p = Pmtu::new(BASE, 8972, Instant::ZERO);
    run(&mut p, Instant::ZERO, secs(10), 1472, |_| false);
    assert_eq!(p.datagram_size(), BASE);
    assert_eq!(p.state(), PmtuState::Complete);
    assert!(p.stats().probes_lost >= u64::from(MAX_PROBES));
}

#[test]
fn a_middle_path_is_found_within_the_resolution() {
    let mut p = Pmtu::new(BASE, 8972, Instant::ZERO);
    run(&mut p, Instant::ZERO, secs(20), 3972, |_| false);
    let size = p.datagram_size();
    assert!(size <= 3972 && size > 3972 - SEARCH_RESOLUTION, "{size}");
    assert_eq!(p.state(), PmtuState::Complete);
}

#[test]
fn lost_probes_below_max_probes_do_not_lower_the_bound() {
    // Every other probe is lost: each size still gets through within MAX_PROBES tries.
    let mut p = Pmtu::new(BASE, 8972, Instant::ZERO);
    run(&mut p, Instant::ZERO, secs(30), 4000, |n| n % 2 == 1);
    let size = p.datagram_size();
    assert!(size <= 4000 && size > 4000 - SEARCH_RESOLUTION, "{size}");
}

#[test]
fn probe_ack_for_a_probe_never_sent_is_ignored() {
    let mut p = Pmtu::new(BASE, 8972, Instant::ZERO);
    assert!(!p.handle_probe_ack(Instant::ZERO, 0, 8972));
    let probe = p.poll_probe(Instant::ZERO).unwrap();
    assert!(!p.handle_probe_ack(Instant::ZERO, probe.id + 1, 8972));
    assert_eq!(p.datagram_size(), BASE);
    assert!(p.handle_probe_ack(Instant::ZERO, probe.id, probe.size));
    assert_eq!(p.datagram_size(), 8972);
}

#[test]
fn one_probe_outstanding_and_spaced() {
    let mut p = Pmtu::new(BASE, 8972, Instant::ZERO);
    assert!(p.poll_probe(Instant::ZERO).is_some());
    assert!(p.poll_probe(Instant::ZERO).is_none(), "a second probe while one is out");
    let t = Instant::ZERO + PROBE_TIMEOUT_MIN;
    p.handle_timeout(t);
    assert_eq!(p.stats().probes_lost, 1);
    assert!(p.poll_probe(t).is_some());
}

#[test]
fn black_hole_falls_back_to_base_then_searches_below_it() {
    let mut p = Pmtu::new(BASE, 8972, Instant::ZERO);
    run(&mut p, Instant::ZERO, secs(1), 8972, |_| false);
    assert_eq!(p.datagram_size(), 8972);
    // The path shrinks to 1500: data at 8972 stops being acknowledged.
    let t = secs(2);
    p.on_data_sent(t);
    p.handle_timeout(t + BLACK_HOLE_MIN - Duration::from_millis(1));
    assert_eq!(p.datagram_size(), 8972, "too early");
    p.handle_timeout(t + BLACK_HOLE_MIN);
    assert_eq!(p.datagram_size(), BASE);
    assert_eq!(p.state(), PmtuState::BlackHole);
    assert_eq!(p.stats().black_holes, 1);
    run(&mut p, t + BLACK_HOLE_MIN, secs(30), 1472, |_| false);
    assert_eq!(p.datagram_size(), BASE);
    assert_eq!(p.state(), PmtuState::Complete);
}

#[test]
fn progress_keeps_the_size() {
    let mut p = Pmtu::new(BASE, 8972, Instant::ZERO);
    run(&mut p, Instant::ZERO, secs(1), 8972, |_| false);
    let mut t = secs(2);
    p.on_data_sent(t);
    for _ in 0..20 {
        t += Duration::from_millis(100);
        p.on_delivery();
        p.on_data_sent(t);
        p.handle_timeout(t);
    }
    assert_eq!(p.datagram_size(), 8972);
}

#[test]
fn a_sender_that_stops_sending_is_no_black_hole() {
    // Flow control or a slow receiver disk: the last data was delivered, nothing more sent.
    let mut p = Pmtu::new(BASE, 8972, Instant::ZERO);
    run(&mut p, Instant::ZERO, secs(1), 8972, |_| false);
    p.on_data_sent(secs(2));
    p.on_delivery();
    p.handle_timeout(secs(30));
    assert_eq!(p.datagram_size(), 8972);
    assert_eq!(p.stats().black_holes, 0);
}

#[test]
fn emsgsize_lowers_the_ceiling_at_once() {
    let mut p = Pmtu::new(BASE, 8972, Instant::ZERO);
    let probe = p.poll_probe(Instant::ZERO).unwrap();
    assert_eq!(probe.size, 8972);
    p.handle_too_large(Instant::ZERO, probe.size);
    assert_eq!(p.ceiling(), 8971);
    assert_eq!(p.stats().too_large, 1);
    // The next probe goes out at once, below the refused size.
    let next = p.poll_probe(Instant::ZERO).unwrap();
    assert!(next.size < 8972);
    // A local limit below the current size drops the size too.
    p.handle_probe_ack(Instant::ZERO, next.id, next.size);
    p.set_ceiling(Instant::ZERO, 2000);
    assert!(p.datagram_size() <= 2000 && p.ceiling() == 2000);
}

#[test]
fn emsgsize_on_data_falls_back_to_the_base_and_searches_below() {
    // The interface shrinks from 4000 to 2000 under a transfer running at 3972.
    let mut p = Pmtu::new(BASE, 3972, Instant::ZERO);
    run(&mut p, Instant::ZERO, secs(5), 3972, |_| false);
    assert_eq!(p.datagram_size(), 3972);
    p.handle_too_large(secs(5), 3972);
    assert_eq!((p.datagram_size(), p.state(), p.ceiling()), (BASE, PmtuState::Searching, 3971));
    // The driver reads the route's new MTU; the first probe tries it and settles the search.
    p.set_ceiling(secs(5), 1972);
    let probe = p.poll_probe(secs(5)).unwrap();
    assert_eq!(probe.size, 1972);
    p.handle_probe_ack(secs(5), probe.id, probe.size);
    assert_eq!((p.datagram_size(), p.state()), (1972, PmtuState::Complete));
    assert_eq!(p.stats().too_large, 1);
}

#[test]
fn explicit_size_disables_probing() {
    let mut p = Pmtu::new(4000, 4000, Instant::ZERO);
    assert_eq!(p.state(), PmtuState::Disabled);
    assert!(p.poll_probe(Instant::ZERO).is_none());
    assert_eq!(p.poll_timeout(), None);
    p.handle_too_large(Instant::ZERO, 4000);
    assert_eq!(p.datagram_size(), 4000);
}

#[test]
fn raise_timer_searches_above_again() {
    let mut p = Pmtu::new(BASE, 8972, Instant::ZERO);
    run(&mut p, Instant::ZERO, secs(20), 3000, |_| false);
    let found = p.datagram_size();
    assert!(found <= 3000);
    // The path grows; after the raise interval the search finds the new ceiling.
    let t = secs(20) + RAISE_INTERVAL;
    run(&mut p, secs(20), t + Duration::from_secs(1), 8972, |_| false);
    assert_eq!(p.datagram_size(), 8972);
}

#[derive(Clone, Debug)]
enum Op {
    Advance(u32),
    Ack,
    LateAck(u32, u16),
    Sent,
    Delivery,
    TooLarge(u16),
    Ceiling(u16),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0u32..400_000).prop_map(Op::Advance),
        Just(Op::Ack),
        any::<(u32, u16)>().prop_map(|(i, s)| Op::LateAck(i % 64, s)),
        Just(Op::Sent),
        Just(Op::Delivery),
        (500u16..10_000).prop_map(Op::TooLarge),
        (500u16..10_000).prop_map(Op::Ceiling),
    ]
}

proptest! {
    /// Any sequence of events keeps the invariants, and the size is always one the path
    /// carries (acks come only for sizes at most `path`, as an honest peer's would).
    #[test]
    fn random_sequences_keep_the_invariants(
        base in 1200u16..1500,
        max in 1200u16..10_000,
        path in 1200u16..10_000,
        ops in prop::collection::vec(op(), 1..200),
    ) {
        let mut p = Pmtu::new(base, max, Instant::ZERO);
        let mut now = Instant::ZERO;
        let mut out: Option<ProbeRequest> = None;
        for op in ops {
            match op {
                Op::Advance(us) => now += Duration::from_micros(u64::from(us)),
                Op::Ack => {
                    if let Some(pr) = out.take().filter(|pr| pr.size <= path) {
                        p.handle_probe_ack(now, pr.id, pr.size);
                    }
                }
                Op::LateAck(id, size) => {
                    if size <= path {
                        p.handle_probe_ack(now, id, size);
                    }
                }
                Op::Sent => p.on_data_sent(now),
                Op::Delivery => p.on_delivery(),
                Op::TooLarge(s) => p.handle_too_large(now, s),
                Op::Ceiling(s) => p.set_ceiling(now, s),
            }
            p.handle_timeout(now);
            if let Some(pr) = p.poll_probe(now) {
                prop_assert!(pr.size > p.datagram_size() && pr.size <= p.ceiling());
                out = Some(pr);
            }
            check_invariants(&p);
            prop_assert!(p.datagram_size() == p.base || p.datagram_size() <= path.max(base));
            if let Some(t) = p.poll_timeout() {
                prop_assert!(t >= Instant::ZERO);
            }
        }
    }

    /// On a clean path the search always ends, within the resolution of the path (or at the
    /// ceiling, or at the base when nothing larger passes).
    #[test]
    fn clean_paths_converge(max in 1472u16..9000, path in 1400u16..9000) {
        let mut p = Pmtu::new(BASE, max, Instant::ZERO);
        run(&mut p, Instant::ZERO, secs(60), path, |_| false);
        prop_assert_eq!(p.state(), PmtuState::Complete);
        let want = path.min(p.ceiling()).max(BASE);
        let size = p.datagram_size();
        prop_assert!(size <= want && size + SEARCH_RESOLUTION >= want, "{} vs {}", size, want);
    }
}
