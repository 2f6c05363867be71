//! Key schedule (docs/protocol/03-crypto.md §4): HKDF-SHA256 from the session secret to the
//! per-direction, per-shard, per-purpose keys every suite uses.
//!
//! - Extract runs once, in [`KeySchedule::new`]: IKM = the 32-byte [`SessionSecret`], salt =
//!   `client_random ‖ server_random`. The PRK lives in the `KeySchedule` and is zeroized on drop.
//! - Expand runs once per (direction, shard, purpose), with
//!   `info = "haul/1" ‖ suite ‖ direction ‖ purpose ‖ session_id (u64 LE) ‖ shard`
//!   ([`KeySchedule::expand`]), so no two keys of a session share an info string.
//!
//! Invariants: the CFB key, the IV-derivation key and the CMAC key are expanded under distinct
//! purposes and are therefore independent; every key type here zeroizes on drop and has a
//! `Debug` that prints no key bytes (tested below).

use super::{Direction, SuiteId};
use hkdf::Hkdf;
use sha2::Sha256;
use zeroize::{Zeroize, ZeroizeOnDrop};

/// The label every expand's info string starts with; the digit is the protocol major version.
const INFO_LABEL: &[u8; 6] = b"haul/1";
/// Length of the info string: label, suite, direction, purpose, session id, shard.
const INFO_LEN: usize = INFO_LABEL.len() + 3 + 8 + 1;

/// What an expanded key is for; the byte is the `purpose` field of the info string.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum KeyPurpose {
    /// AES-128-CFB body encryption key (16 bytes).
    Encryption = 1,
    /// AES-128 key that turns a sequence number into a secret CFB IV (16 bytes).
    IvDerivation = 2,
    /// AES-CMAC key (16 bytes).
    Mac = 3,
    /// AES-128-GCM key (16 bytes).
    AeadKey = 4,
    /// AES-128-GCM nonce salt (12 bytes), XORed with the sequence number.
    AeadNonceSalt = 5,
}

impl KeyPurpose {
    pub const ALL: [KeyPurpose; 5] = [
        KeyPurpose::Encryption,
        KeyPurpose::IvDerivation,
        KeyPurpose::Mac,
        KeyPurpose::AeadKey,
        KeyPurpose::AeadNonceSalt,
    ];
}

/// The input keying material both ends agree on over the set-up channel.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct SessionSecret(pub [u8; 32]);

impl core::fmt::Debug for SessionSecret {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("SessionSecret(<redacted>)")
    }
}

/// A 16-byte AES-128 key. Zeroized on drop; `Debug` redacts it.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub(crate) struct Key128(pub(crate) [u8; 16]);

impl core::fmt::Debug for Key128 {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("Key128(<redacted>)")
    }
}

/// The 12-byte GCM nonce salt. Zeroized on drop; `Debug` redacts it.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub(crate) struct NonceSalt(pub(crate) [u8; 12]);

impl core::fmt::Debug for NonceSalt {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("NonceSalt(<redacted>)")
    }
}

/// HKDF-SHA256 state for one session: the PRK of the single extract.
#[derive(Zeroize, ZeroizeOnDrop)]
pub struct KeySchedule {
    #[zeroize(skip)]
    suite: SuiteId,
    #[zeroize(skip)]
    session_id: u64,
    prk: [u8; 32],
}

impl core::fmt::Debug for KeySchedule {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("KeySchedule")
            .field("suite", &self.suite)
            .field("session_id", &self.session_id)
            .finish_non_exhaustive()
    }
}

impl KeySchedule {
    /// HKDF-Extract(salt = client_random ‖ server_random, IKM = secret).
    pub fn new(
        secret: &SessionSecret,
        client_random: &[u8; 32],
        server_random: &[u8; 32],
        suite: SuiteId,
        session_id: u64,
    ) -> Self {
        let mut salt = [0u8; 64];
        salt[..32].copy_from_slice(client_random);
        salt[32..].copy_from_slice(server_random);
        let (mut prk_out, hkdf) = Hkdf::<Sha256>::extract(Some(&salt), &secret.0);
        // The returned `Hkdf` holds the PRK as HMAC state; it is dropped (and, with the `zeroize`
        // features of sha2/hmac, wiped) here. We keep only the bytes, which we wipe ourselves.
        drop(hkdf);
        let mut prk = [0u8; 32];
        prk.copy_from_slice(&prk_out);
        prk_out.zeroize();
        KeySchedule { suite, session_id, prk }
    }

    pub fn suite(&self) -> SuiteId {
        self.suite
    }

    pub fn session_id(&self) -> u64 {
        self.session_id
    }

    /// HKDF-Expand for one (direction, shard, purpose) into `out` (at most 32 bytes).
    ///
    /// Panics if `out` is longer than 32 bytes: our bug, every key here is 12 or 16 bytes.
    pub fn expand(&self, dir: Direction, shard: u8, purpose: KeyPurpose, out: &mut [u8]) {
        assert!(out.len() <= 32, "key schedule: keys are at most 32 bytes");
        let mut info = [0u8; INFO_LEN];
        info[..6].copy_from_slice(INFO_LABEL);
        info[6] = self.suite as u8;
        info[7] = dir as u8;
        info[8] = purpose as u8;
        info[9..17].copy_from_slice(&self.session_id.to_le_bytes());
        info[17] = shard;
        // `from_prk` only fails for a PRK shorter than 32 bytes, and `expand` only for more than
        // 255 * 32 bytes of output; both are excluded by the types and the assert above.
        if let Ok(hkdf) = Hkdf::<Sha256>::from_prk(&self.prk)
            && hkdf.expand(&info, out).is_ok()
        {
            return;
        }
        unreachable!("HKDF-SHA256 with a 32-byte PRK expands up to 8160 bytes");
    }

    fn key128(&self, dir: Direction, shard: u8, purpose: KeyPurpose) -> Key128 {
        let mut k = Key128([0u8; 16]);
        self.expand(dir, shard, purpose, &mut k.0);
        k
    }

    /// The keys of `dir` on `shard`, for this session's suite (only those the suite uses).
    pub fn direction_keys(&self, dir: Direction, shard: u8) -> DirectionKeys {
        let material = match self.suite {
            SuiteId::Aes128CfbCmac => SuiteKeys::CfbCmac {
                enc: self.key128(dir, shard, KeyPurpose::Encryption),
                iv: self.key128(dir, shard, KeyPurpose::IvDerivation),
                mac: self.key128(dir, shard, KeyPurpose::Mac),
            },
            SuiteId::Aes128Gcm => {
                let mut salt = NonceSalt([0u8; 12]);
                self.expand(dir, shard, KeyPurpose::AeadNonceSalt, &mut salt.0);
                SuiteKeys::Gcm { key: self.key128(dir, shard, KeyPurpose::AeadKey), salt }
            }
            SuiteId::IntegrityCmac => {
                SuiteKeys::Integrity { mac: self.key128(dir, shard, KeyPurpose::Mac) }
            }
        };
        DirectionKeys { suite: self.suite, material }
    }
}

/// The key material of one suite. Every field zeroizes itself on drop.
#[derive(Clone, Debug)]
pub(crate) enum SuiteKeys {
    CfbCmac { enc: Key128, iv: Key128, mac: Key128 },
    Gcm { key: Key128, salt: NonceSalt },
    Integrity { mac: Key128 },
}

/// Keys for one direction of one shard. Zeroized on drop (each key is); `Debug` redacts.
#[derive(Clone)]
pub struct DirectionKeys {
    suite: SuiteId,
    material: SuiteKeys,
}

impl core::fmt::Debug for DirectionKeys {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("DirectionKeys").field("suite", &self.suite).finish_non_exhaustive()
    }
}

impl DirectionKeys {
    pub fn suite(&self) -> SuiteId {
        self.suite
    }

    pub(crate) fn material(&self) -> &SuiteKeys {
        &self.material
    }

    /// Keys built from raw parts, for tests of the suites against fixed key bytes.
    #[cfg(test)]
    pub(crate) fn from_material(material: SuiteKeys) -> Self {
        let suite = match material {
            SuiteKeys::CfbCmac { .. } => SuiteId::Aes128CfbCmac,
            SuiteKeys::Gcm { .. } => SuiteId::Aes128Gcm,
            SuiteKeys::Integrity { .. } => SuiteId::IntegrityCmac,
        };
        DirectionKeys { suite, material }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::*;
    use std::collections::HashSet;

    fn schedule(suite: SuiteId, session_id: u64) -> KeySchedule {
        KeySchedule::new(&SessionSecret([7u8; 32]), &[1u8; 32], &[2u8; 32], suite, session_id)
    }

    #[test]
    fn distinct_direction_shard_purpose_give_distinct_keys() {
        let ks = schedule(SuiteId::Aes128CfbCmac, 42);
        let mut seen = HashSet::new();
        for dir in [Direction::ClientToServer, Direction::ServerToClient] {
            for shard in [0u8, 1, 2, 3, 255] {
                for purpose in KeyPurpose::ALL {
                    let mut k = [0u8; 16];
                    ks.expand(dir, shard, purpose, &mut k);
                    assert!(seen.insert(k), "{dir:?} {shard} {purpose:?} repeats a key");
                }
            }
        }
        assert_eq!(seen.len(), 2 * 5 * 5);
    }

    #[test]
    fn cfb_enc_iv_and_mac_keys_differ() {
        let keys = schedule(SuiteId::Aes128CfbCmac, 9).direction_keys(Direction::ClientToServer, 0);
        let SuiteKeys::CfbCmac { enc, iv, mac } = keys.material() else {
            panic!("wrong material for the CFB suite");
        };
        assert_ne!(enc.0, mac.0);
        assert_ne!(enc.0, iv.0);
        assert_ne!(iv.0, mac.0);
    }

    #[test]
    fn same_inputs_same_keys_and_every_input_matters() {
        let a = schedule(SuiteId::Aes128CfbCmac, 5);
        let b = schedule(SuiteId::Aes128CfbCmac, 5);
        let other_session = schedule(SuiteId::Aes128CfbCmac, 6);
        let other_suite = schedule(SuiteId::IntegrityCmac, 5);
        let other_random = KeySchedule::new(
            &SessionSecret([7; 32]),
            &[2; 32],
            &[1; 32],
            SuiteId::Aes128CfbCmac,
            5,
        );
        let key = |ks: &KeySchedule| {
            let mut k = [0u8; 16];
            ks.expand(Direction::ServerToClient, 1, KeyPurpose::Mac, &mut k);
            k
        };
        assert_eq!(key(&a), key(&b));
        assert_ne!(key(&a), key(&other_session));
        assert_ne!(key(&a), key(&other_suite));
        assert_ne!(key(&a), key(&other_random));
    }

    /// The info string and salt follow the spec byte for byte (checked against plain HKDF).
    #[test]
    fn expand_matches_spec_layout() {
        let secret = [0x11u8; 32];
        let (cr, sr) = ([0x22u8; 32], [0x33u8; 32]);
        let ks = KeySchedule::new(&SessionSecret(secret), &cr, &sr, SuiteId::Aes128Gcm, 0x0102);
        let mut ours = [0u8; 12];
        ks.expand(Direction::ServerToClient, 3, KeyPurpose::AeadNonceSalt, &mut ours);

        let salt: Vec<u8> = cr.iter().chain(sr.iter()).copied().collect();
        let mut info = b"haul/1".to_vec();
        info.extend_from_slice(&[2, 1, 5]);
        info.extend_from_slice(&0x0102u64.to_le_bytes());
        info.push(3);
        let mut theirs = [0u8; 12];
        Hkdf::<Sha256>::new(Some(&salt), &secret).expand(&info, &mut theirs).unwrap();
        assert_eq!(ours, theirs);
    }

    fn assert_redacted(debug: &str, key: &[u8]) {
        let hex_lower: String = key.iter().map(|b| format!("{b:02x}")).collect();
        let hex_upper = hex_lower.to_uppercase();
        let decimal = format!("{key:?}");
        let decimal_inner = decimal.trim_start_matches('[').trim_end_matches(']');
        for needle in [&hex_lower, &hex_upper, &decimal, &decimal_inner.to_string()] {
            assert!(!debug.contains(needle.as_str()), "Debug leaks key bytes: {debug}");
        }
    }

    #[test]
    fn debug_prints_no_key_bytes() {
        for suite in SuiteId::ALL {
            let ks = schedule(suite, 77);
            let keys = ks.direction_keys(Direction::ClientToServer, 2);
            let printed = [
                format!("{keys:?}"),
                format!("{keys:#?}"),
                format!("{ks:?}"),
                format!("{:?}", keys.material()),
                format!("{:?}", SessionSecret([7u8; 32])),
                format!("{:?}", crate::crypto::new_suite(&keys)),
            ];
            let mut secrets: Vec<Vec<u8>> = vec![vec![7u8; 32], ks.prk.to_vec()];
            match keys.material() {
                SuiteKeys::CfbCmac { enc, iv, mac } => {
                    secrets.extend([enc.0.to_vec(), iv.0.to_vec(), mac.0.to_vec()]);
                }
                SuiteKeys::Gcm { key, salt } => secrets.extend([key.0.to_vec(), salt.0.to_vec()]),
                SuiteKeys::Integrity { mac } => secrets.push(mac.0.to_vec()),
            }
            for p in &printed {
                for s in &secrets {
                    assert_redacted(p, s);
                }
            }
        }
    }

    #[test]
    fn direction_keys_carry_the_suite() {
        for suite in SuiteId::ALL {
            let keys = schedule(suite, 1).direction_keys(Direction::ServerToClient, 0);
            assert_eq!(keys.suite(), suite);
        }
    }
}
