//! `aes128-cfb-cmac`, the default suite (docs/protocol/03-crypto.md §3.1).
//!
//! - IV for datagram `seq` = AES-128(iv_key, seq as u64 LE ‖ 8 zero bytes): secret, and unique
//!   per sequence number, which never repeats under one key.
//! - Body = AES-128-CFB128(enc_key, IV), full-block feedback, partial last block.
//! - Tag = AES-CMAC(mac_key, header ‖ ciphertext), i.e. over `buf[..len - 16]`, written at
//!   `buf[len - 16..]`. Encrypt-then-MAC on seal; open verifies (constant time) before it
//!   accepts anything.
//!
//! Batches run through the one-pass paths in `fused.rs`: per chunk of [`MAX_BATCH`] jobs and
//! per header length among them (one group on the data plane, whose headers are all 24
//! bytes), one multi-block call derives the IVs, then CFB and CMAC step through all the
//! group's datagrams together, block by block.
//!
//! Open decrypts in the same pass that computes the tag, so a datagram's body holds plaintext
//! before its tag is compared. A job whose tag does not match has its body zeroed before
//! `open_batch` returns (header and tag stay as received; `ok` is false), so no plaintext of
//! an unauthenticated datagram is left for anything to read (§3, "Rules common to all
//! suites"). Tested by `any_flipped_bit_fails_and_leaves_no_plaintext` in `tests.rs`.

use super::fused::{open_lanes, seal_lanes};
use super::keys::Key128;
use super::multibuf::{CmacKey, iv_input};
use super::{Job, MAX_BATCH, Suite, SuiteId};
use aes::cipher::{BlockCipherEncrypt, KeyInit};
use aes::{Aes128, Block};
use arrayvec::ArrayVec;
use ctutils::CtEq;

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
        for header_len in header_lens(jobs) {
            let select = |j: &Job<'_>| j.header_len == header_len;
            let ivs = self.derive_ivs(jobs, select);
            let mut tags = [Block::default(); MAX_BATCH];
            let mut msgs = messages(jobs, select);
            let n = msgs.len();
            seal_lanes(&self.enc, &self.mac, header_len, &ivs, &mut msgs, &mut tags[..n]);
            drop(msgs);
            for (job, tag) in jobs.iter_mut().filter(|j| select(j)).zip(&tags) {
                let at = job.tag_at();
                job.buf[at..].copy_from_slice(tag);
            }
        }
    }

    fn open_chunk(&self, jobs: &mut [Job<'_>]) {
        jobs.iter_mut().for_each(|j| j.ok = false);
        for header_len in header_lens(jobs) {
            let select = |j: &Job<'_>| j.is_well_formed() && j.header_len == header_len;
            let ivs = self.derive_ivs(jobs, select);
            let mut tags = [Block::default(); MAX_BATCH];
            let mut msgs = messages(jobs, select);
            let n = msgs.len();
            open_lanes(&self.enc, &self.mac, header_len, &ivs, &mut msgs, &mut tags[..n]);
            drop(msgs);
            for (job, tag) in jobs.iter_mut().filter(|j| select(j)).zip(&tags) {
                let at = job.tag_at();
                job.ok = tag.0[..].ct_eq(&job.buf[at..]).to_bool();
                if !job.ok {
                    // Decrypted before its tag was known: leave no plaintext behind.
                    job.body_mut().fill(0);
                }
            }
        }
    }
}

/// The distinct header lengths of the well-formed jobs, in order of first appearance.
fn header_lens(jobs: &[Job<'_>]) -> ArrayVec<usize, MAX_BATCH> {
    let mut lens = ArrayVec::new();
    for job in jobs.iter().filter(|j| j.is_well_formed()) {
        if !lens.contains(&job.header_len) {
            lens.push(job.header_len);
        }
    }
    lens
}

/// `header ‖ body` of every job `select` picks, in job order.
fn messages<'j>(
    jobs: &'j mut [Job<'_>],
    select: impl Fn(&Job<'_>) -> bool,
) -> ArrayVec<&'j mut [u8], MAX_BATCH> {
    jobs.iter_mut()
        .filter(|j| select(j))
        .map(|j| {
            let at = j.tag_at();
            &mut j.buf[..at]
        })
        .collect()
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
