//! Several flows sharing one bottleneck: the multi-flow model behind the fairness, policy and
//! node-cap scenarios.
//!
//! The bottleneck is a [`Link`] (FIFO, bounded queue, serialization at the link rate, random
//! loss), shared by every flow; each flow adds its own propagation delay (RTT/2 each way), so
//! flows of different RTTs meet in one queue. Two kinds of flow:
//! - **haul**: the real `haul-proto` controller ([`controller_for`]) paces 1500-byte datagrams
//!   in batches of [`PACE_BATCH`]; its receiver sums every [`FEEDBACK_INTERVAL`] exactly what
//!   the receiver shard puts in a `Feedback` (bytes, smallest one-way delay, newest timestamp),
//!   and the sender turns it into a `FeedbackSample` the way `SenderShard::on_feedback` does
//!   (smoothed RTT, queuing delay over the smallest one-way delay ever seen, receive rate).
//!   Optionally under a shared [`NodeCap`].
//! - **tcp**: a TCP-like Reno flow: slow start, +1 datagram per RTT in congestion avoidance,
//!   window halved (at most once per RTT) when a loss is detected a round trip after it
//!   happened, ack-clocked, unpaced.
//!
//! What this model leaves out (the grid covers it with real sessions): NAKs and resends (a lost
//! datagram is simply gone), crypto, disks. Limits: at most [`MAX_FLOWS`] flows, at most
//! [`MAX_EVENTS`] events pending; deterministic from the seed.

use crate::net::{Fate, Link, LinkConfig};
use haul_proto::rate::{
    FeedbackSample, NodeCap, NodeCapShare, Policy, RateController, RateLimits, controller_for,
};
use haul_proto::time::{Duration, Instant};
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::Arc;

/// IP bytes of every datagram (a full 1500-byte MTU).
pub const PACKET_BYTES: u64 = 1500;
/// The haul pacer's batch (as `session::shared::PACE_BATCH`).
pub const PACE_BATCH: Duration = Duration::from_millis(1);
/// The receiver's feedback interval (as `SessionParams::feedback_interval`).
pub const FEEDBACK_INTERVAL: Duration = Duration::from_millis(2);
/// Most flows in one run.
pub const MAX_FLOWS: usize = 16;
/// Most pending events (datagrams in flight dominate).
pub const MAX_EVENTS: usize = 1 << 22;
/// Width of the throughput bins the report is built from.
pub const BIN: Duration = Duration::from_millis(500);

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum FlowKind {
    Haul { policy: Policy, target_bps: u64 },
    Tcp,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct FlowSpec {
    pub kind: FlowKind,
    pub rtt: Duration,
    pub start: Duration,
    /// Under the run's node cap.
    pub capped: bool,
}

#[derive(Clone, Debug)]
pub struct MultiScenario {
    pub seed: u64,
    pub link_bps: u64,
    /// Random loss on the bottleneck.
    pub loss: f64,
    /// Bottleneck queue, bytes.
    pub queue_bytes: u64,
    pub flows: Vec<FlowSpec>,
    pub duration: Duration,
    pub node_cap_bps: Option<u64>,
}

/// Delivered bytes per flow per [`BIN`].
#[derive(Clone, Debug)]
pub struct MultiResult {
    pub bins: Vec<Vec<u64>>,
    pub flows: Vec<FlowSpec>,
    pub link_bps: u64,
    pub queue_mean: Duration,
    pub queue_p99: Duration,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Ev {
    /// Haul flow: send one pacing batch.
    Pace(usize),
    /// A datagram reaches flow's receiver; sent at (ns).
    Arrive(usize, u64),
    /// Haul receiver: the feedback interval ends.
    FbTick(usize),
    /// Haul sender: feedback (bytes, datagrams, owd_min ns, echoed send time ns) arrives.
    Feedback(usize, u64, u64, u64, u64),
    /// TCP: an ack for one datagram.
    Ack(usize),
    /// TCP: the sender learns of a loss.
    LossSeen(usize),
}

struct HaulState {
    ctrl: Box<dyn RateController>,
    share: Option<NodeCapShare>,
    credit_bits: u64,
    // receiver interval
    rx_bytes: u64,
    rx_count: u64,
    rx_owd_min: u64,
    rx_newest_sent: u64,
    // sender's view
    srtt: Option<Duration>,
    rtt_min: Duration,
    base_owd: Option<u64>,
    last_fb: Option<Instant>,
}

struct TcpState {
    cwnd: f64,
    ssthresh: f64,
    in_flight: u64,
    recover_until: Instant,
}

enum State {
    Haul(Box<HaulState>),
    Tcp(TcpState),
    NotStarted,
}

struct Run {
    sc: MultiScenario,
    link: Link,
    now: Instant,
    events: BinaryHeap<Reverse<(Instant, u64, Ev)>>,
    order: u64,
    state: Vec<State>,
    bins: Vec<Vec<u64>>,
    cap: Option<Arc<NodeCap>>,
}

/// Run a multi-flow scenario to its end.
pub fn run(sc: &MultiScenario) -> MultiResult {
    let mut cfg = LinkConfig::clean(sc.link_bps, Duration::ZERO);
    cfg.queue_bytes = sc.queue_bytes;
    cfg.loss = sc.loss;
    let nbins = (sc.duration.as_nanos() / BIN.as_nanos() + 1) as usize;
    let flows = sc.flows.len().min(MAX_FLOWS);
    let mut r = Run {
        link: Link::new(cfg, sc.seed),
        now: Instant::ZERO,
        events: BinaryHeap::new(),
        order: 0,
        state: (0..flows).map(|_| State::NotStarted).collect(),
        bins: vec![vec![0; flows]; nbins],
        cap: sc.node_cap_bps.map(NodeCap::new),
        sc: sc.clone(),
    };
    for (i, f) in sc.flows.iter().take(flows).enumerate() {
        r.push(Instant::ZERO + f.start, Ev::Pace(i));
    }
    let end = Instant::ZERO + sc.duration;
    while let Some(Reverse((t, _, ev))) = r.events.pop() {
        if t > end {
            break;
        }
        r.now = t;
        r.handle(ev);
    }
    let qd = r.link.queue_delay();
    MultiResult {
        bins: r.bins,
        flows: sc.flows.iter().take(flows).copied().collect(),
        link_bps: sc.link_bps,
        queue_mean: qd.mean(),
        queue_p99: qd.percentile(99.0),
    }
}

impl Run {
    fn push(&mut self, at: Instant, ev: Ev) {
        if self.events.len() < MAX_EVENTS {
            self.order += 1;
            self.events.push(Reverse((at, self.order, ev)));
        }
    }

    fn one_way(&self, i: usize) -> Duration {
        self.sc.flows[i].rtt.div(2)
    }

    fn handle(&mut self, ev: Ev) {
        match ev {
            Ev::Pace(i) => self.on_pace(i),
            Ev::Arrive(i, sent_ns) => self.on_arrive(i, sent_ns),
            Ev::FbTick(i) => self.on_fb_tick(i),
            Ev::Feedback(i, bytes, count, owd_min, echo) => {
                self.on_feedback(i, bytes, count, owd_min, echo);
            }
            Ev::Ack(i) => self.on_ack(i, false),
            Ev::LossSeen(i) => self.on_ack(i, true),
        }
    }

    fn start(&mut self, i: usize) {
        let f = self.sc.flows[i];
        self.state[i] = match f.kind {
            FlowKind::Haul { policy, target_bps } => {
                let share =
                    if f.capped { self.cap.as_ref().and_then(|c| c.join().ok()) } else { None };
                self.push(self.now + FEEDBACK_INTERVAL, Ev::FbTick(i));
                State::Haul(Box::new(HaulState {
                    ctrl: controller_for(policy, RateLimits { min_bps: 0, target_bps }),
                    share,
                    credit_bits: 0,
                    rx_bytes: 0,
                    rx_count: 0,
                    rx_owd_min: u64::MAX,
                    rx_newest_sent: 0,
                    srtt: None,
                    rtt_min: Duration::MAX,
                    base_owd: None,
                    last_fb: None,
                }))
            }
            FlowKind::Tcp => State::Tcp(TcpState {
                cwnd: 10.0,
                ssthresh: f64::MAX,
                in_flight: 0,
                recover_until: Instant::ZERO,
            }),
        };
    }

    /// Put one datagram of flow `i` on the link; returns false if it was lost.
    fn send(&mut self, i: usize) -> bool {
        let fate = self.link.send(self.now, PACKET_BYTES as usize, 0);
        let one_way = self.one_way(i);
        match fate {
            Fate::Delivered { first, .. } => {
                let at = first.at + one_way;
                self.push(at, Ev::Arrive(i, self.now.as_nanos()));
                true
            }
            Fate::Dropped(_) => false,
        }
    }

    fn on_pace(&mut self, i: usize) {
        if matches!(self.state[i], State::NotStarted) {
            self.start(i);
        }
        let now = self.now;
        let sends = match &mut self.state[i] {
            State::Haul(h) => {
                let mut rate = h.ctrl.rate_bps();
                if let Some(s) = &h.share {
                    rate = s.allowed_bps(rate);
                }
                let add =
                    (u128::from(rate) * u128::from(PACE_BATCH.as_nanos()) / 1_000_000_000) as u64;
                h.credit_bits = (h.credit_bits + add).min(add.max(PACKET_BYTES * 8) * 2);
                let n = h.credit_bits / (PACKET_BYTES * 8);
                h.credit_bits -= n * PACKET_BYTES * 8;
                h.ctrl.on_send(now, n * PACKET_BYTES);
                self.push(now + PACE_BATCH, Ev::Pace(i));
                n
            }
            State::Tcp(_) => return self.tcp_fill(i),
            State::NotStarted => 0,
        };
        for _ in 0..sends {
            self.send(i);
        }
    }

    fn on_arrive(&mut self, i: usize, sent_ns: u64) {
        let bin = (self.now.as_nanos() / BIN.as_nanos()) as usize;
        if let Some(b) = self.bins.get_mut(bin) {
            b[i] += PACKET_BYTES;
        }
        let one_way = self.one_way(i);
        let now = self.now;
        match &mut self.state[i] {
            State::Haul(h) => {
                h.rx_bytes += PACKET_BYTES;
                h.rx_count += 1;
                h.rx_owd_min = h.rx_owd_min.min(now.as_nanos() - sent_ns);
                h.rx_newest_sent = h.rx_newest_sent.max(sent_ns);
            }
            State::Tcp(_) => self.push(now + one_way, Ev::Ack(i)),
            State::NotStarted => {}
        }
    }

    fn on_fb_tick(&mut self, i: usize) {
        let at = self.now + self.one_way(i);
        self.push(self.now + FEEDBACK_INTERVAL, Ev::FbTick(i));
        let State::Haul(h) = &mut self.state[i] else { return };
        if h.rx_count == 0 {
            return;
        }
        let ev = Ev::Feedback(i, h.rx_bytes, h.rx_count, h.rx_owd_min, h.rx_newest_sent);
        h.rx_bytes = 0;
        h.rx_count = 0;
        h.rx_owd_min = u64::MAX;
        self.push(at, ev);
    }

    /// As `SenderShard::on_feedback`: smoothed RTT, queuing delay over the smallest one-way
    /// delay seen, receive rate since the previous feedback.
    fn on_feedback(&mut self, i: usize, bytes: u64, _count: u64, owd_min: u64, echo_ns: u64) {
        let now = self.now;
        let State::Haul(h) = &mut self.state[i] else { return };
        let rtt = Duration::from_nanos(now.as_nanos().saturating_sub(echo_ns));
        let srtt =
            h.srtt.map_or(rtt, |s| Duration::from_nanos((s.as_nanos() * 7 + rtt.as_nanos()) / 8));
        h.srtt = Some(srtt);
        h.rtt_min = h.rtt_min.min(rtt);
        let base = h.base_owd.map_or(owd_min, |b| b.min(owd_min));
        h.base_owd = Some(base);
        let recv_rate_bps = match h.last_fb {
            Some(t) if now > t => {
                (u128::from(bytes) * 8 * 1_000_000_000
                    / u128::from(now.saturating_since(t).as_nanos())) as u64
            }
            _ => 0,
        };
        h.last_fb = Some(now);
        let sample = FeedbackSample {
            rtt: srtt,
            rtt_min: h.rtt_min,
            queuing_delay: Duration::from_nanos(owd_min - base),
            recv_rate_bps,
            loss_fraction: 0.0,
        };
        h.ctrl.on_feedback(now, &sample);
    }

    /// TCP: an ack (or a loss seen): open or cut the window, then send what it allows.
    fn on_ack(&mut self, i: usize, loss: bool) {
        let now = self.now;
        let rtt = self.sc.flows[i].rtt;
        let State::Tcp(t) = &mut self.state[i] else { return };
        t.in_flight = t.in_flight.saturating_sub(1);
        if loss {
            if now >= t.recover_until {
                t.cwnd = (t.cwnd / 2.0).max(2.0);
                t.ssthresh = t.cwnd;
                t.recover_until = now + rtt;
            }
        } else if t.cwnd < t.ssthresh {
            t.cwnd += 1.0;
        } else {
            t.cwnd += 1.0 / t.cwnd;
        }
        self.tcp_fill(i);
    }

    fn tcp_fill(&mut self, i: usize) {
        let rtt = self.sc.flows[i].rtt;
        loop {
            let State::Tcp(t) = &mut self.state[i] else { return };
            if t.in_flight as f64 >= t.cwnd {
                return;
            }
            t.in_flight += 1;
            if !self.send(i) {
                // Detected by duplicate acks about one RTT later.
                self.push(self.now + rtt, Ev::LossSeen(i));
            }
        }
    }
}

/// Jain's fairness index of `xs` (1 = equal).
pub fn jain(xs: &[f64]) -> f64 {
    let s: f64 = xs.iter().sum();
    let sq: f64 = xs.iter().map(|x| x * x).sum();
    if sq <= 0.0 { 1.0 } else { s * s / (xs.len() as f64 * sq) }
}

impl MultiResult {
    /// Mean rate of each flow over `[from, to)`, bits per second.
    pub fn rates_bps(&self, from: Duration, to: Duration) -> Vec<f64> {
        let a = (from.as_nanos() / BIN.as_nanos()) as usize;
        let b = ((to.as_nanos() / BIN.as_nanos()) as usize).min(self.bins.len());
        let secs = (b.saturating_sub(a)) as f64 * BIN.as_secs_f64();
        (0..self.flows.len())
            .map(|f| {
                let bytes: u64 = self.bins[a.min(b)..b].iter().map(|bin| bin[f]).sum();
                if secs > 0.0 { bytes as f64 * 8.0 / secs } else { 0.0 }
            })
            .collect()
    }
}
