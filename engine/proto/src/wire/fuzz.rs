//! The codec's shared property check: the fuzz target `decode` (fuzz/), the corpus replay test
//! (tests/fuzz_corpus.rs) and the proptests (wire/tests.rs) all call [`fuzz_check_decode`], so
//! a finding in one is a finding in all (STYLE.md rule 5).
//!
//! It panics only on a real bug: a round-trip mismatch, or an encoder that overruns or
//! misreports its length. Bytes that do not decode are fine; that is what decoding is for.

use super::{Body, HEADER_LEN, Header, PacketType};
use crate::crypto::TAG_LEN;

/// Decode `bytes` every way the codec allows and check that whatever decodes round-trips.
///
/// - `Header::decode(bytes)`; if it decodes, re-encoding gives back `bytes[..HEADER_LEN]`, and
///   the body between header and tag is decoded as the header's type.
/// - `Body::decode(t, bytes)` for every packet type `t` over the whole input.
///
/// For every body that decodes: it encodes to exactly the input bytes, re-decodes to an equal
/// value, reports its own type, and refuses (`None`) a buffer one byte too small.
pub fn fuzz_check_decode(bytes: &[u8]) {
    if let Ok(header) = Header::decode(bytes) {
        let mut again = [0u8; HEADER_LEN];
        header.encode(&mut again);
        assert_eq!(&again[..], &bytes[..HEADER_LEN], "header re-encodes differently");
        // Header::decode guarantees bytes.len() >= HEADER_LEN + TAG_LEN.
        let body = &bytes[HEADER_LEN..bytes.len() - TAG_LEN];
        check_body(header.ptype, body);
    }
    for ptype in PacketType::ALL {
        check_body(ptype, bytes);
    }
}

/// Round-trip one body if it decodes; panics on a mismatch.
fn check_body(ptype: PacketType, bytes: &[u8]) {
    let Ok(body) = Body::decode(ptype, bytes) else {
        return;
    };
    assert_eq!(body.packet_type(), ptype, "body reports another type");
    if let Body::Nak { ranges } = body {
        assert!(!ranges.is_empty(), "a decoded NAK has no ranges");
        assert_eq!(ranges.iter().count(), ranges.len(), "NAK iterator and len disagree");
        assert!(ranges.iter().all(|(start, end)| start < end), "a decoded NAK range is empty");
    }
    let mut out = vec![0u8; bytes.len()];
    let len = body.encode(&mut out);
    assert_eq!(len, Some(bytes.len()), "body re-encodes to another length");
    assert_eq!(&out[..], bytes, "body re-encodes to other bytes");
    assert_eq!(Body::decode(ptype, &out), Ok(body), "re-encoded body decodes differently");
    if let Some(short) = bytes.len().checked_sub(1) {
        assert_eq!(body.encode(&mut out[..short]), None, "encode overran a short buffer");
    }
}
