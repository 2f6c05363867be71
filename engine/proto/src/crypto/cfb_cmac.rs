//! `aes128-cfb-cmac`, the default suite (docs/protocol/03-crypto.md §3.1).
//!
//! - IV for datagram `seq` = AES-128(iv_key, seq as u64 LE ‖ 8 zero bytes): secret, and unique
//!   per sequence number, which never repeats under one key.
//! - Body = AES-128-CFB128(enc_key, IV), full-block feedback, partial last block.
//! - Tag = AES-CMAC(mac_key, header ‖ ciphertext), i.e. over `buf[..len - 16]`, written at
//!   `buf[len - 16..]`. Encrypt-then-MAC on seal; open verifies (constant time) before it
//!   decrypts and decrypts only what verified; a failed job's body is left untouched.
//!
//! Batches run through the multi-buffer paths in `multibuf.rs`: per chunk of [`MAX_BATCH`]
//! jobs, one multi-block call derives all IVs; on seal, CFB encryption interleaves the jobs
//! block by block, then CMAC does; on open, the interleaved CMAC verifies all jobs, then CFB
//! decryption streams the verified bodies through wide calls.

use super::keys::Key128;
use super::multibuf::{CmacKey, cfb_decrypt_lanes, cfb_encrypt_lanes, iv_input};
use super::{Job, MAX_BATCH, Suite, SuiteId, integrity};
use aes::cipher::{BlockCipherEncrypt, KeyInit};
use aes::{Aes128, Block};
use arrayvec::ArrayVec;

/// The default suite, keyed for one direction of one shard.
pub(crate) struct CfbCmac {
    enc: Aes128,
    iv: Aes128,
    mac: CmacKey,
}

impl core::fmt::Debug for CfbCmac {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("CfbCmac(<redacted>)")
    }
}

impl CfbCmac {
    pub(crate) fn new(enc: &Key128, iv: &Key128, mac: &Key128) -> Self {
        CfbCmac {
            enc: Aes128::new(&enc.0.into()),
            iv: Aes128::new(&iv.0.into()),
            mac: CmacKey::new(mac),
        }
    }

    /// The secret IV of every job whose `select` is true, in job order, in one AES call.
    fn derive_ivs(
        &self,
        jobs: &[Job<'_>],
        select: impl Fn(&Job<'_>) -> bool,
    ) -> ArrayVec<Block, MAX_BATCH> {
        let mut ivs: ArrayVec<Block, MAX_BATCH> =
            jobs.iter().filter(|j| select(j)).map(|j| iv_input(j.seq)).collect();
        self.iv.encrypt_blocks(&mut ivs);
        ivs
    }

    fn seal_chunk(&self, jobs: &mut [Job<'_>]) {
        jobs.iter().for_each(Job::assert_sealable);
        let ivs = self.derive_ivs(jobs, |_| true);
        let mut bodies: ArrayVec<&mut [u8], MAX_BATCH> =
            jobs.iter_mut().map(Job::body_mut).collect();
        cfb_encrypt_lanes(&self.enc, &ivs, &mut bodies);
        drop(bodies);
        integrity::seal_tags(&self.mac, jobs);
    }

    fn open_chunk(&self, jobs: &mut [Job<'_>]) {
        integrity::verify_tags(&self.mac, jobs);
        let ivs = self.derive_ivs(jobs, |j| j.ok);
        let mut bodies: ArrayVec<&mut [u8], MAX_BATCH> =
            jobs.iter_mut().filter(|j| j.ok).map(Job::body_mut).collect();
        cfb_decrypt_lanes(&self.enc, &ivs, &mut bodies);
    }
}

impl Suite for CfbCmac {
    fn id(&self) -> SuiteId {
        SuiteId::Aes128CfbCmac
    }

    fn seal_batch(&mut self, jobs: &mut [Job<'_>]) {
        for chunk in jobs.chunks_mut(MAX_BATCH) {
            self.seal_chunk(chunk);
        }
    }

    fn open_batch(&mut self, jobs: &mut [Job<'_>]) {
        for chunk in jobs.chunks_mut(MAX_BATCH) {
            self.open_chunk(chunk);
        }
    }
}
