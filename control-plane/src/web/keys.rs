//! The console's keys and the values signed with them: session and pre-session cookies, CSRF
//! tokens, random identifiers.
//!
//! Invariants:
//! - Cookie and CSRF keys are separate sub-keys of the server secret (`secret::Purpose::Cookie`,
//!   `Purpose::Csrf`), each with the secret's key id written into every value it signs; a value
//!   naming an unknown or retired key id is refused, and after a rotation values signed under
//!   the previous secret stay valid for its grace period only.
//! - Every MAC is compared in constant time (`hmac`'s `verify_truncated_left`).
//! - A session id is 256 random bits; the store keeps only its SHA-256, so a copy of the database
//!   does not hold usable cookies.
//! - Decoding a cookie or token from a request never panics; anything malformed is `None`.

use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};

use crate::secret::{Keyring, Purpose, SubKey};

type HmacSha256 = Hmac<Sha256>;

/// Bytes of a random identifier (session ids, pre-session ids, API token secrets).
pub const ID_BYTES: usize = 32;
/// Bytes of a MAC kept in a cookie or CSRF token (128 bits).
pub const MAC_BYTES: usize = 16;
/// Longest cookie or CSRF value parsed.
pub const MAX_SIGNED_LEN: usize = 128;

/// Fills a fresh random id from the OS.
pub fn random_id() -> Result<[u8; ID_BYTES], getrandom::Error> {
    let mut id = [0u8; ID_BYTES];
    getrandom::fill(&mut id)?;
    Ok(id)
}

/// The SHA-256 of an id: what the store keeps instead of the id.
pub fn id_hash(id: &[u8]) -> [u8; 32] {
    Sha256::digest(id).into()
}

fn mac(key: &SubKey, label: &[u8], data: &[u8]) -> HmacSha256 {
    // HMAC takes keys of any length, so this cannot fail; the fallback keeps clippy's
    // no-expect rule without changing behaviour.
    let mut m = <HmacSha256 as KeyInit>::new_from_slice(key.as_bytes())
        .unwrap_or_else(|_| <HmacSha256 as KeyInit>::new(&Default::default()));
    m.update(&key.key_id().to_be_bytes());
    m.update(label);
    m.update(data);
    m
}

/// The sub-key a value names by its key id, if that secret is still valid at `now_s`.
fn key_named(ring: &Keyring, purpose: Purpose, kid: &str, now_s: i64) -> Option<SubKey> {
    let kid = u32::from_str_radix(kid, 16).ok()?;
    ring.subkey_for(purpose, kid, now_s).ok()
}

/// `KID.ID.MAC` (hex), signing a random id under `label` with the current cookie key.
pub fn sign_id(ring: &Keyring, label: &[u8], id: &[u8; ID_BYTES]) -> String {
    let key = ring.subkey(Purpose::Cookie);
    let tag = mac(&key, label, id).finalize().into_bytes();
    format!("{:x}.{}.{}", key.key_id(), hex::encode(id), hex::encode(&tag[..MAC_BYTES]))
}

/// The id inside a value made by [`sign_id`] with the same label, if it verifies under a
/// cookie key still valid at `now_s`.
pub fn verify_id(ring: &Keyring, label: &[u8], value: &str, now_s: i64) -> Option<[u8; ID_BYTES]> {
    if value.len() > MAX_SIGNED_LEN {
        return None;
    }
    let mut parts = value.split('.');
    let (kid, id, tag) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    let key = key_named(ring, Purpose::Cookie, kid, now_s)?;
    let id: [u8; ID_BYTES] = hex::decode(id).ok()?.try_into().ok()?;
    let tag = hex::decode(tag).ok()?;
    if tag.len() != MAC_BYTES {
        return None;
    }
    mac(&key, label, &id).verify_truncated_left(&tag).ok()?;
    Some(id)
}

/// The CSRF token bound to an anchor id (a session or pre-session id): `KID.MAC`.
pub fn csrf_token(ring: &Keyring, anchor: &[u8; ID_BYTES]) -> String {
    let key = ring.subkey(Purpose::Csrf);
    let tag = mac(&key, b"haul-csrf-v1", anchor).finalize().into_bytes();
    format!("{:x}.{}", key.key_id(), hex::encode(&tag[..MAC_BYTES]))
}

/// Whether `token` is the CSRF token for `anchor` under a CSRF key valid at `now_s`
/// (constant-time).
pub fn is_csrf_valid(ring: &Keyring, anchor: &[u8; ID_BYTES], token: &str, now_s: i64) -> bool {
    let check = || -> Option<()> {
        if token.len() > MAX_SIGNED_LEN {
            return None;
        }
        let (kid, tag) = token.split_once('.')?;
        let key = key_named(ring, Purpose::Csrf, kid, now_s)?;
        let tag = hex::decode(tag).ok()?;
        (tag.len() == MAC_BYTES).then_some(())?;
        mac(&key, b"haul-csrf-v1", anchor).verify_truncated_left(&tag).ok()
    };
    check().is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_800_000_000;

    #[test]
    fn signed_ids_round_trip_and_refuse_tampering() {
        let k = Keyring::generate(NOW).unwrap();
        let id = random_id().unwrap();
        let v = sign_id(&k, b"session", &id);
        assert_eq!(verify_id(&k, b"session", &v, NOW), Some(id));
        assert_eq!(verify_id(&k, b"pre", &v, NOW), None, "label binds the use");
        let other = Keyring::generate(NOW).unwrap();
        assert_eq!(verify_id(&other, b"session", &v, NOW), None, "another server's key");
        let mut bad = v.clone().into_bytes();
        let last = bad.len() - 1;
        bad[last] = if bad[last] == b'0' { b'1' } else { b'0' };
        assert_eq!(verify_id(&k, b"session", &String::from_utf8(bad).unwrap(), NOW), None);
        for junk in ["", ".", "..", "3..", "zz.00.00", &"a".repeat(500)] {
            assert_eq!(verify_id(&k, b"session", junk, NOW), None);
        }
    }

    #[test]
    fn rotation_keeps_old_cookies_for_the_grace_period_only() {
        let k = Keyring::generate(NOW).unwrap();
        let id = random_id().unwrap();
        let v = sign_id(&k, b"session", &id);
        let t = csrf_token(&k, &id);
        let rotated = k.rotated(NOW, 100).unwrap();
        assert_eq!(verify_id(&rotated, b"session", &v, NOW + 50), Some(id));
        assert!(is_csrf_valid(&rotated, &id, &t, NOW + 50));
        assert_eq!(verify_id(&rotated, b"session", &v, NOW + 100), None);
        assert!(!is_csrf_valid(&rotated, &id, &t, NOW + 100));
    }

    #[test]
    fn csrf_tokens_bind_to_their_anchor() {
        let k = Keyring::generate(NOW).unwrap();
        let a = random_id().unwrap();
        let b = random_id().unwrap();
        let t = csrf_token(&k, &a);
        assert!(is_csrf_valid(&k, &a, &t, NOW));
        assert!(!is_csrf_valid(&k, &b, &t, NOW));
        assert!(!is_csrf_valid(&Keyring::generate(NOW).unwrap(), &a, &t, NOW));
        assert!(!is_csrf_valid(&k, &a, "", NOW));
    }
}
