//! Token sealing and opening: round trips, every refusal of `open`, and totality on any bytes.
#![allow(clippy::unwrap_used)]

use std::net::IpAddr;

use haul_proto::crypto::SuiteId;
use haul_proto::rate::Policy;
use proptest::prelude::*;

use super::*;
use crate::authz::Direction;
use crate::users::UserName;

pub(crate) fn sample_claims(now_s: i64) -> Claims {
    Claims {
        token_id: [7; 16],
        user: UserName::parse("alice").unwrap(),
        direction: Direction::Download,
        package_id: Some("pkg-1".into()),
        paths: vec!["pkg/one".into(), "f.bin".into()],
        issued_at_s: now_s,
        expires_at_s: now_s + 600,
        client_ip: Some("192.0.2.7".parse::<IpAddr>().unwrap()),
        min_suite: SuiteId::Aes128CfbCmac,
        rate_cap_bps: 1_000_000_000,
        policy_cap: Policy::High,
        single_use: true,
        extensions: vec![Extension { kind: 900, is_critical: false, value: vec![1, 2, 3] }],
    }
}

#[test]
fn mint_then_open_round_trips() {
    let ring = Keyring::generate(0).unwrap();
    let c = sample_claims(1000);
    let t = mint(&ring, &c).unwrap();
    assert!(t.expose().bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
    let opened = open(&ring, t.expose(), 1000).unwrap();
    assert_eq!(opened.claims(), &c);
    assert_eq!(opened.key_id(), ring.current_id());
    let t2 = mint(&ring, &c).unwrap();
    assert_ne!(t.expose(), t2.expose(), "fresh nonce each time");
    assert_eq!(format!("{t:?}"), "MintedToken(<redacted>)");
}

#[test]
fn expired_tokens_are_refused() {
    let ring = Keyring::generate(0).unwrap();
    let t = mint(&ring, &sample_claims(1000)).unwrap();
    assert!(open(&ring, t.expose(), 1599).is_ok());
    let e = open(&ring, t.expose(), 1600).unwrap_err();
    assert!(matches!(e, TokenError::Expired { expires_at_s: 1600 }), "{e}");
    assert_eq!(e.refusal().code, RefusalCode::Expired);
}

#[test]
fn every_single_bit_flip_is_refused() {
    let ring = Keyring::generate(0).unwrap();
    let t = mint(&ring, &sample_claims(1000)).unwrap();
    let raw = URL_SAFE_NO_PAD.decode(t.expose()).unwrap();
    for bit in 0..raw.len() * 8 {
        let mut r = raw.clone();
        r[bit / 8] ^= 1 << (bit % 8);
        let e = open(&ring, &URL_SAFE_NO_PAD.encode(&r), 1000).unwrap_err();
        let want = match bit {
            0..8 => RefusalCode::Malformed,   // the version byte
            8..40 => RefusalCode::UnknownKey, // the key id
            _ => RefusalCode::Tampered,       // nonce, ciphertext, tag
        };
        assert_eq!(e.refusal().code, want, "bit {bit}: {e}");
    }
}

#[test]
fn another_servers_secret_is_an_unknown_key() {
    let ours = Keyring::generate(0).unwrap();
    let theirs = Keyring::generate(0).unwrap();
    let t = mint(&theirs, &sample_claims(1000)).unwrap();
    let e = open(&ours, t.expose(), 1000).unwrap_err();
    assert!(matches!(e, TokenError::UnknownKey(_)), "{e}");
    assert_eq!(e.refusal().code, RefusalCode::UnknownKey);
}

#[test]
fn a_token_under_the_previous_secret_opens_inside_the_grace_period_only() {
    let ring = Keyring::generate(0).unwrap();
    let t = mint(&ring, &sample_claims(1000)).unwrap();
    let rotated = ring.rotated(1100, 200).unwrap();
    assert!(open(&rotated, t.expose(), 1299).is_ok());
    let e = open(&rotated, t.expose(), 1300).unwrap_err();
    assert!(matches!(e, TokenError::RetiredKey { grace_ended_at_s: 1300, .. }), "{e}");
    assert_eq!(e.refusal().code, RefusalCode::UnknownKey);
    assert!(e.to_string().contains("grace period ended"), "{e}");
}

#[test]
fn a_cross_purpose_key_does_not_open_a_token() {
    // A blob sealed with the cookie sub-key, in token layout, must not open as a token.
    let ring = Keyring::generate(0).unwrap();
    let key = ring.subkey(Purpose::Cookie);
    let mut header = [0u8; HEADER_LEN];
    header[0] = TOKEN_VERSION;
    header[1..5].copy_from_slice(&key.key_id().to_be_bytes());
    let aead = Aes256Gcm::new(&(*key.as_bytes()).into());
    let plain = sample_claims(0).encode();
    let ct = aead.encrypt(&nonce_of(&header), Payload { msg: &plain, aad: &header }).unwrap();
    let text = URL_SAFE_NO_PAD.encode([&header[..], &ct].concat());
    assert!(matches!(open(&ring, &text, 0), Err(TokenError::Tampered)));
}

#[test]
fn unknown_critical_extensions_refuse_and_unknown_optional_ones_pass() {
    let ring = Keyring::generate(0).unwrap();
    let mut c = sample_claims(0);
    c.extensions.push(Extension { kind: 7, is_critical: true, value: vec![] });
    assert!(matches!(mint(&ring, &c), Err(TokenError::Claims(ClaimsError::UnknownCritical(7)))));
    // A newer server could mint one: this build must refuse it when opening.
    let plain = c.encode();
    assert_eq!(Claims::decode(&plain), Err(ClaimsError::UnknownCritical(7)));
}

#[test]
fn mint_refuses_claims_it_could_not_open() {
    let ring = Keyring::generate(0).unwrap();
    let mut c = sample_claims(0);
    c.paths = vec!["../etc".into()];
    assert!(mint(&ring, &c).is_err());
    c.paths = vec![];
    assert!(mint(&ring, &c).is_err());
    c.paths = vec!["x".into(); claims::MAX_PATHS + 1];
    assert!(mint(&ring, &c).is_err());
    c = sample_claims(0);
    c.expires_at_s = c.issued_at_s;
    assert!(mint(&ring, &c).is_err());
}

#[test]
fn garbage_is_malformed() {
    let ring = Keyring::generate(0).unwrap();
    for text in ["", "!!!", "AAAA", &"A".repeat(MAX_TOKEN_LEN + 1)] {
        let e = open(&ring, text, 0).unwrap_err();
        assert_eq!(e.refusal().code, RefusalCode::Malformed, "{text:.20}: {e}");
    }
    let t = mint(&ring, &sample_claims(0)).unwrap();
    let mut raw = URL_SAFE_NO_PAD.decode(t.expose()).unwrap();
    raw[0] = 2;
    let e = open(&ring, &URL_SAFE_NO_PAD.encode(&raw), 0).unwrap_err();
    assert!(matches!(e, TokenError::Malformed("unknown token version")), "{e}");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn open_never_panics_on_any_text(text in ".{0,400}") {
        let ring = Keyring::generate(0).unwrap();
        let _ = open(&ring, &text, 0);
    }

    #[test]
    fn open_never_panics_on_any_bytes_behind_a_valid_header(body in proptest::collection::vec(any::<u8>(), 0..300)) {
        let ring = Keyring::generate(0).unwrap();
        let mut raw = vec![TOKEN_VERSION];
        raw.extend_from_slice(&ring.current_id().to_be_bytes());
        raw.extend_from_slice(&body);
        let r = open(&ring, &URL_SAFE_NO_PAD.encode(&raw), 0);
        prop_assert!(r.is_err());
    }

    #[test]
    fn claims_decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
        let _ = Claims::decode(&bytes);
    }

    #[test]
    fn claims_decode_survives_mutation_of_a_valid_encoding(at in 0usize..200, val in any::<u8>(), cut in 0usize..200) {
        let mut enc = sample_claims(5).encode();
        let i = at % enc.len();
        enc[i] = val;
        enc.truncate(enc.len() - cut % enc.len());
        let _ = Claims::decode(&enc);
    }
}
