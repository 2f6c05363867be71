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
//!
//! Deferred open (`Job::defer`, the receiver's data path): only the body's first block is
//! decrypted in place, and the first ciphertext block is kept in the (verified, now unused)
//! tag field. The rest of the body is CFB under that block as IV, so it can be decrypted
//! later from any offset straight into the write buffer ([`Suite::open_deferred_into`]),
//! instead of in place and then copied.

use super::keys::Key128;
use super::multibuf::{
    CmacKey, IntoLane, cfb_decrypt_into_lanes, cfb_decrypt_lanes, cfb_encrypt_lanes, iv_input,
};
use super::{DEFER_PLAIN_LEN, Job, MAX_BATCH, PayloadOpen, Suite, SuiteId, TAG_LEN, integrity};
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
        // A deferred job keeps its first ciphertext block (the IV of the rest of its body) in
        // its tag field, which is no longer needed once the tag has verified.
        for job in jobs.iter_mut().filter(|j| j.ok && j.defer) {
            let (_, body, tag) = job.parts_mut();
            if let Some(first) = body.first_chunk::<DEFER_PLAIN_LEN>() {
                tag.copy_from_slice(first);
            }
        }
        let mut bodies: ArrayVec<&mut [u8], MAX_BATCH> = jobs
            .iter_mut()
            .filter(|j| j.ok)
            .map(|j| {
                let defer = j.defer;
                let body = j.body_mut();
                let n = if defer { body.len().min(DEFER_PLAIN_LEN) } else { body.len() };
                &mut body[..n]
            })
            .collect();
        cfb_decrypt_lanes(&self.enc, &ivs, &mut bodies);
    }

    /// The IV of a deferred body's rest (its first ciphertext block, kept in the tag field)
    /// and that rest, still ciphertext.
    fn deferred_rest(buf: &[u8], header_len: usize) -> (Block, &[u8]) {
        let (head, tag) = buf.split_at(buf.len() - TAG_LEN);
        let mut iv = Block::default();
        iv.copy_from_slice(tag);
        (iv, head.get(header_len + DEFER_PLAIN_LEN..).unwrap_or(&[]))
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

    fn open_deferred_into(&self, header_len: usize, items: &mut [PayloadOpen<'_>]) {
        for chunk in items.chunks_mut(MAX_BATCH) {
            let mut lanes: ArrayVec<IntoLane<'_>, MAX_BATCH> = ArrayVec::new();
            for item in chunk.iter_mut() {
                let (buf, payload) = (item.buf, item.payload.clone());
                assert!(
                    header_len <= payload.start
                        && payload.end + TAG_LEN <= buf.len()
                        && payload.len() == item.dst.len(),
                    "open_deferred_into: payload outside the body, or dst of another length"
                );
                // The first block is plaintext already; the rest is CFB under the kept block.
                let from = payload.start - header_len;
                let plain = DEFER_PLAIN_LEN.saturating_sub(from).min(payload.len());
                let (head, rest) = item.dst.split_at_mut(plain);
                head.copy_from_slice(&buf[payload.start..payload.start + plain]);
                if !rest.is_empty() {
                    let (iv, src) = Self::deferred_rest(buf, header_len);
                    let skip = from + plain - DEFER_PLAIN_LEN;
                    lanes.push(IntoLane { iv, src, skip, dst: rest });
                }
            }
            cfb_decrypt_into_lanes(&self.enc, &mut lanes);
        }
    }

    fn open_deferred_in_place(&self, buf: &mut [u8], header_len: usize) {
        let (iv, _) = Self::deferred_rest(buf, header_len);
        let end = buf.len() - TAG_LEN;
        if let Some(rest) = buf.get_mut(header_len + DEFER_PLAIN_LEN..end) {
            cfb_decrypt_lanes(&self.enc, &[iv], &mut [rest]);
        }
    }
}
