//! Codec tests: exact layouts and every rejection by name, then bounded properties (round trips
//! both ways, no panic on any bytes) through the same [`fuzz_check_decode`] the fuzz target runs.

// Tests: a panic is the failure report, so unwrap says "this must hold" most plainly.
#![allow(clippy::unwrap_used)]

use super::*;
use crate::crypto::TAG_LEN;
use proptest::prelude::*;

fn header(ptype: PacketType) -> Header {
    Header {
        ptype,
        shard: 3,
        session_id: 0x0102_0304_0506_0708,
        seq: 0x0300_0000_0000_00ff,
        timestamp_us: 0xdead_beef,
    }
}

#[test]
fn header_layout_is_little_endian_and_exact() {
    let mut buf = [0xaau8; HEADER_LEN + TAG_LEN];
    header(PacketType::Nak).encode(&mut buf);
    assert_eq!(
        &buf[..HEADER_LEN],
        &[1, 2, 3, 0, 8, 7, 6, 5, 4, 3, 2, 1, 0xff, 0, 0, 0, 0, 0, 0, 3, 0xef, 0xbe, 0xad, 0xde]
    );
    assert_eq!(Header::decode(&buf), Ok(header(PacketType::Nak)));
}

#[test]
fn header_rejections_name_the_fault() {
    let mut buf = [0u8; HEADER_LEN + TAG_LEN];
    header(PacketType::Data).encode(&mut buf);
    assert_eq!(Header::decode(&buf[..HEADER_LEN + TAG_LEN - 1]), Err(WireError::TooShort));
    assert_eq!(Header::decode(&[]), Err(WireError::TooShort));
    let mut bad = buf;
    bad[0] = 2;
    assert_eq!(Header::decode(&bad), Err(WireError::BadVersion(2)));
    for t in [0u8, 12, 255] {
        let mut bad = buf;
        bad[1] = t;
        assert_eq!(Header::decode(&bad), Err(WireError::BadType(t)));
    }
    let mut bad = buf;
    bad[3] = 0x80;
    assert_eq!(Header::decode(&bad), Err(WireError::BadFlags));
}

#[test]
fn fixed_bodies_have_exact_lengths() {
    let cases: [(PacketType, usize); 8] = [
        (PacketType::ProbeAck, 6),
        (PacketType::Feedback, 28),
        (PacketType::Window, 16),
        (PacketType::FileDone, 44),
        (PacketType::FileAck, 5),
        (PacketType::Complete, 0),
        (PacketType::Keepalive, 0),
        (PacketType::Abort, 2),
    ];
    // All-ones is valid for every fixed type except FileAck (status 255), so use a valid fill.
    let mut valid = [0u8; 64];
    valid[4] = 1; // FileAck status Verified
    valid[12] = 1; // and Window limit == cum_ack
    for (ptype, len) in cases {
        assert!(Body::decode(ptype, &valid[..len]).is_ok(), "{ptype:?} at {len}");
        assert_eq!(Body::decode(ptype, &valid[..len + 1]), Err(WireError::BadLength), "{ptype:?}");
        if len > 0 {
            let short = Body::decode(ptype, &valid[..len - 1]);
            assert_eq!(short, Err(WireError::BadLength), "{ptype:?}");
        }
    }
}

#[test]
fn body_field_rejections() {
    // Data: the prefix alone (zero-length payload) or less.
    assert_eq!(Body::decode(PacketType::Data, &[0; 12]), Err(WireError::BadLength));
    assert_eq!(Body::decode(PacketType::Data, &[0; 5]), Err(WireError::BadLength));
    assert!(Body::decode(PacketType::Data, &[0; 13]).is_ok());
    // FileAck status must be 1 or 2.
    for status in [0u8, 3, 255] {
        let body = [0, 0, 0, 0, status];
        assert_eq!(Body::decode(PacketType::FileAck, &body), Err(WireError::BadField));
    }
    // Window: cum_ack > limit.
    let mut win = [0u8; 16];
    win[0] = 2;
    win[8] = 1;
    assert_eq!(Body::decode(PacketType::Window, &win), Err(WireError::BadField));
    win[8] = 2;
    assert!(Body::decode(PacketType::Window, &win).is_ok());
}

#[test]
fn nak_rejections() {
    let mut buf = [0u8; 2 + 16 * (MAX_NAK_RANGES + 1)];
    let n = encode_nak(&[(1, 2), (5, 9)], &mut buf).unwrap();
    assert_eq!(n, 34);
    let ok = Body::decode(PacketType::Nak, &buf[..n]).unwrap();
    let Body::Nak { ranges } = ok else { panic!("not a NAK: {ok:?}") };
    assert_eq!(ranges.iter().collect::<Vec<_>>(), vec![(1, 2), (5, 9)]);
    // Count 0, count too large, length not 2 + 16·count, empty or inverted range.
    assert_eq!(Body::decode(PacketType::Nak, &[0, 0]), Err(WireError::BadField));
    assert_eq!(Body::decode(PacketType::Nak, &[65, 0]), Err(WireError::BadField));
    assert_eq!(Body::decode(PacketType::Nak, &[1]), Err(WireError::BadLength));
    assert_eq!(Body::decode(PacketType::Nak, &buf[..n - 1]), Err(WireError::BadLength));
    assert_eq!(Body::decode(PacketType::Nak, &buf[..n + 1]), Err(WireError::BadLength));
    let mut inverted = buf;
    inverted[2 + 16 + 8] = 5; // second range becomes 5..5
    assert_eq!(Body::decode(PacketType::Nak, &inverted[..n]), Err(WireError::BadField));
    // The encoder refuses what the decoder would reject, and caps the count.
    assert_eq!(encode_nak(&[], &mut buf), None);
    assert_eq!(encode_nak(&[(3, 3)], &mut buf), None);
    assert_eq!(encode_nak(&[(1, 2)], &mut buf[..17]), None);
    let many: Vec<(u64, u64)> = (0..100).map(|i| (i * 2, i * 2 + 1)).collect();
    assert_eq!(encode_nak(&many, &mut buf), Some(2 + 16 * MAX_NAK_RANGES));
}

#[test]
fn probe_padding_must_be_zero_and_is_written() {
    let mut buf = [0xffu8; 64];
    let body = Body::Probe { id: 9, pad: 40 };
    assert_eq!(body.encode(&mut buf), Some(44));
    assert_eq!(&buf[..4], &9u32.to_le_bytes());
    assert!(buf[4..44].iter().all(|&b| b == 0));
    assert_eq!(Body::decode(PacketType::Probe, &buf[..44]), Ok(body));
    buf[30] = 1;
    assert_eq!(Body::decode(PacketType::Probe, &buf[..44]), Err(WireError::BadField));
    assert_eq!(Body::decode(PacketType::Probe, &buf[..3]), Err(WireError::BadLength));
    assert_eq!(body.encode(&mut buf[..43]), None);
}

#[test]
fn data_prefix_matches_body_encoding() {
    let mut a = [0u8; 16];
    let mut b = [0u8; 16];
    encode_data_prefix(7, 1 << 40, &mut a);
    a[12..].copy_from_slice(b"abcd");
    let body = Body::Data { file: 7, offset: 1 << 40, payload: b"abcd" };
    assert_eq!(body.encode(&mut b), Some(16));
    assert_eq!(a, b);
}

/// A body with owned storage, so proptest can generate it.
#[derive(Clone, Debug)]
enum Owned {
    Data { file: u32, offset: u64, payload: Vec<u8> },
    Nak(Vec<(u64, u64)>),
    Feedback(Feedback),
    Window(Window),
    FileDone { file: u32, size: u64, hash: [u8; 32] },
    FileAck { file: u32, status: FileStatus },
    Complete,
    Abort(u16),
    Keepalive,
    Probe { id: u32, pad: usize },
    ProbeAck { id: u32, size: u16 },
}

fn owned_body() -> impl Strategy<Value = Owned> {
    let range = (any::<u64>(), 1..=u64::MAX).prop_map(|(s, len)| (s, s.saturating_add(len)));
    prop_oneof![
        (any::<u32>(), any::<u64>(), prop::collection::vec(any::<u8>(), 1..300))
            .prop_map(|(file, offset, payload)| Owned::Data { file, offset, payload }),
        prop::collection::vec(range, 1..=MAX_NAK_RANGES)
            .prop_map(|v| Owned::Nak(v.into_iter().filter(|(s, e)| s < e).collect()))
            .prop_filter("non-empty", |o| matches!(o, Owned::Nak(v) if !v.is_empty())),
        any::<(u64, u32, u32, u32, u32, u32)>().prop_map(|(b, t, d, m, l, n)| {
            Owned::Feedback(Feedback {
                recv_bytes: b,
                ts_echo_us: t,
                echo_delay_us: d,
                owd_us_min: m,
                owd_us_last: l,
                datagrams: n,
            })
        }),
        (any::<u64>(), any::<u64>())
            .prop_map(|(a, b)| Owned::Window(Window { cum_ack: a.min(b), limit: a.max(b) })),
        (any::<u32>(), any::<u64>(), any::<[u8; 32]>())
            .prop_map(|(file, size, hash)| Owned::FileDone { file, size, hash }),
        (any::<u32>(), any::<bool>()).prop_map(|(file, ok)| Owned::FileAck {
            file,
            status: if ok { FileStatus::Verified } else { FileStatus::ChecksumMismatch },
        }),
        Just(Owned::Complete),
        any::<u16>().prop_map(Owned::Abort),
        Just(Owned::Keepalive),
        (any::<u32>(), 0usize..1500).prop_map(|(id, pad)| Owned::Probe { id, pad }),
        any::<(u32, u16)>().prop_map(|(id, size)| Owned::ProbeAck { id, size }),
    ]
}

/// Encode `owned` into `buf` (via `encode_nak` for NAKs), returning the length and the type.
fn encode_owned(owned: &Owned, buf: &mut [u8]) -> (usize, PacketType) {
    let body = match owned {
        Owned::Data { file, offset, payload } => {
            Body::Data { file: *file, offset: *offset, payload }
        }
        Owned::Nak(v) => return (encode_nak(v, buf).unwrap(), PacketType::Nak),
        Owned::Feedback(f) => Body::Feedback(*f),
        Owned::Window(w) => Body::Window(*w),
        Owned::FileDone { file, size, hash } => {
            Body::FileDone { file: *file, size: *size, hash: *hash }
        }
        Owned::FileAck { file, status } => Body::FileAck { file: *file, status: *status },
        Owned::Complete => Body::Complete,
        Owned::Abort(r) => Body::Abort { reason: *r },
        Owned::Keepalive => Body::Keepalive,
        Owned::Probe { id, pad } => Body::Probe { id: *id, pad: *pad },
        Owned::ProbeAck { id, size } => Body::ProbeAck { id: *id, size: *size },
    };
    (body.encode(buf).unwrap(), body.packet_type())
}

/// Does the decoded body carry exactly the values of `owned`?
fn same(owned: &Owned, body: &Body<'_>) -> bool {
    match (owned, body) {
        (Owned::Data { file, offset, payload }, Body::Data { file: f, offset: o, payload: p }) => {
            file == f && offset == o && payload.as_slice() == *p
        }
        (Owned::Nak(v), Body::Nak { ranges }) => ranges.iter().eq(v.iter().copied()),
        (Owned::Feedback(a), Body::Feedback(b)) => a == b,
        (Owned::Window(a), Body::Window(b)) => a == b,
        (Owned::FileDone { file, size, hash }, Body::FileDone { file: f, size: s, hash: h }) => {
            file == f && size == s && hash == h
        }
        (Owned::FileAck { file, status }, Body::FileAck { file: f, status: s }) => {
            file == f && status == s
        }
        (Owned::Complete, Body::Complete) | (Owned::Keepalive, Body::Keepalive) => true,
        (Owned::Abort(a), Body::Abort { reason }) => a == reason,
        (Owned::Probe { id, pad }, Body::Probe { id: i, pad: p }) => id == i && pad == p,
        (Owned::ProbeAck { id, size }, Body::ProbeAck { id: i, size: s }) => id == i && size == s,
        _ => false,
    }
}

fn any_header() -> impl Strategy<Value = Header> {
    (prop::sample::select(PacketType::ALL.to_vec()), any::<(u8, u64, u64, u32)>()).prop_map(
        |(ptype, (shard, session_id, seq, timestamp_us))| Header {
            ptype,
            shard,
            session_id,
            seq,
            timestamp_us,
        },
    )
}

proptest! {
    #[test]
    fn header_round_trips(h in any_header(), tail in 0usize..64) {
        let mut buf = vec![0u8; HEADER_LEN + TAG_LEN + tail];
        h.encode(&mut buf);
        prop_assert_eq!(Header::decode(&buf), Ok(h));
        fuzz_check_decode(&buf);
    }

    #[test]
    fn body_round_trips(owned in owned_body()) {
        let mut buf = vec![0u8; 2048];
        let (len, ptype) = encode_owned(&owned, &mut buf);
        let decoded = Body::decode(ptype, &buf[..len]);
        prop_assert!(matches!(&decoded, Ok(b) if same(&owned, b)), "{:?} -> {:?}", owned, decoded);
        fuzz_check_decode(&buf[..len]);
    }

    #[test]
    fn whole_datagram_round_trips(h in any_header(), owned in owned_body()) {
        let mut buf = vec![0u8; 2048];
        let (len, ptype) = encode_owned(&owned, &mut buf[HEADER_LEN..]);
        let h = Header { ptype, ..h };
        h.encode(&mut buf);
        let datagram = &buf[..HEADER_LEN + len + TAG_LEN];
        prop_assert_eq!(Header::decode(datagram), Ok(h));
        let body = Body::decode(ptype, &datagram[HEADER_LEN..HEADER_LEN + len]);
        prop_assert!(matches!(&body, Ok(b) if same(&owned, b)));
        fuzz_check_decode(datagram);
    }

    #[test]
    fn any_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..160)) {
        fuzz_check_decode(&bytes);
    }

    #[test]
    fn mutated_valid_bodies_never_panic(
        owned in owned_body(),
        flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
        cut in any::<prop::sample::Index>(),
    ) {
        let mut buf = vec![0u8; 2048];
        let (len, _) = encode_owned(&owned, &mut buf);
        let body = &mut buf[..len];
        if !body.is_empty() {
            for (at, x) in flips {
                body[at.index(len)] ^= x;
            }
        }
        fuzz_check_decode(body);
        fuzz_check_decode(&body[..cut.index(len + 1)]);
    }
}
