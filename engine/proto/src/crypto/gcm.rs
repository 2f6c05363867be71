//! `aes128-gcm` (docs/protocol/03-crypto.md §3.2), on RustCrypto `aes-gcm`.
//!
//! - nonce = nonce_salt XOR (4 zero bytes ‖ seq as u64 BE); unique because `seq` never repeats
//!   under one key.
//! - AAD = header; the body is encrypted in place; the 16-byte tag is detached, at the end.
//! - open: `aes-gcm` checks the tag (constant time) before it decrypts, and leaves the body
//!   untouched when the tag fails.
//!
//! Why `aes-gcm` and not ring: `aes-gcm` (with its `zeroize` feature) wipes its AES and GHASH
//! key schedules on drop; ring's `LessSafeKey` does not. The batch path is a loop: `aes-gcm`
//! already runs CTR and GHASH several blocks wide inside one datagram.

use super::keys::{Key128, NonceSalt};
use super::{Job, Suite, SuiteId};
use aes_gcm::aead::AeadInOut;
use aes_gcm::{Aes128Gcm, KeyInit, Nonce, Tag};

/// The GCM suite, keyed for one direction of one shard.
pub(crate) struct Gcm {
    aead: Aes128Gcm,
    salt: NonceSalt,
}

impl core::fmt::Debug for Gcm {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("Gcm(<redacted>)")
    }
}

/// The nonce for `seq`: the salt with the sequence number XORed into its last 8 bytes.
pub(crate) fn nonce(salt: &NonceSalt, seq: u64) -> Nonce<aes_gcm::aead::consts::U12> {
    let mut n = salt.0;
    for (b, s) in n[4..].iter_mut().zip(seq.to_be_bytes()) {
        *b ^= s;
    }
    Nonce::from(n)
}

impl Gcm {
    pub(crate) fn new(key: &Key128, salt: &NonceSalt) -> Self {
        Gcm { aead: Aes128Gcm::new(&key.0.into()), salt: salt.clone() }
    }

    fn seal_one(&self, job: &mut Job<'_>) {
        job.assert_sealable();
        let nonce = nonce(&self.salt, job.seq);
        let (header, body, tag) = job.parts_mut();
        // aes-gcm refuses only plaintexts over 2^36 bytes or AAD over 2^61: no datagram.
        #[expect(clippy::expect_used, reason = "a datagram is far below GCM's length limits")]
        let t = self
            .aead
            .encrypt_inout_detached(&nonce, header, body.into())
            .expect("datagram within GCM length limits");
        tag.copy_from_slice(&t);
    }

    fn open_one(&self, job: &mut Job<'_>) {
        job.ok = false;
        if !job.is_well_formed() {
            return;
        }
        let nonce = nonce(&self.salt, job.seq);
        let (header, body, tag) = job.parts_mut();
        let Ok(tag) = Tag::try_from(&*tag) else { return };
        job.ok = self.aead.decrypt_inout_detached(&nonce, header, body.into(), &tag).is_ok();
    }
}

impl Suite for Gcm {
    fn id(&self) -> SuiteId {
        SuiteId::Aes128Gcm
    }

    fn seal_batch(&mut self, jobs: &mut [Job<'_>]) {
        for job in jobs {
            self.seal_one(job);
        }
    }

    fn open_batch(&mut self, jobs: &mut [Job<'_>]) {
        for job in jobs {
            self.open_one(job);
        }
    }
}
