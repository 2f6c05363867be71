//! `integrity-cmac` (docs/protocol/03-crypto.md §3.3): tag = AES-CMAC(mac_key, header ‖ body),
//! the body travels in the clear. Only for when an admin has turned encryption off.
//!
//! Also home of the job-level CMAC passes that `aes128-cfb-cmac` shares: [`seal_tags`] writes
//! the tag of every job, [`verify_tags`] checks them in constant time; both interleave up to
//! [`MAX_BATCH`] datagrams through [`CmacKey::tag_lanes`].
//!
//! Invariants: `open` changes nothing but `Job::ok`; a job too short for its header and a tag
//! is never `ok` and never read past its end.

use super::keys::Key128;
use super::multibuf::CmacKey;
use super::{Job, MAX_BATCH, Suite, SuiteId};
use aes::Block;
use arrayvec::ArrayVec;
use ctutils::CtEq;

/// Compute and write the CMAC tag of every job (at most [`MAX_BATCH`]), over
/// `buf[..len - TAG_LEN]`. Panics on a job that cannot hold its header and a tag (caller bug).
pub(crate) fn seal_tags(mac: &CmacKey, jobs: &mut [Job<'_>]) {
    let mut tags = [Block::default(); MAX_BATCH];
    let msgs: ArrayVec<&[u8], MAX_BATCH> = jobs
        .iter()
        .map(|j| {
            j.assert_sealable();
            &j.buf[..j.tag_at()]
        })
        .collect();
    let n = msgs.len();
    mac.tag_lanes(&msgs, &mut tags[..n]);
    drop(msgs);
    for (job, tag) in jobs.iter_mut().zip(&tags) {
        let at = job.tag_at();
        job.buf[at..].copy_from_slice(tag);
    }
}

/// Verify the tag of every job (at most [`MAX_BATCH`]) in constant time and set `ok`.
pub(crate) fn verify_tags(mac: &CmacKey, jobs: &mut [Job<'_>]) {
    let mut tags = [Block::default(); MAX_BATCH];
    let msgs: ArrayVec<&[u8], MAX_BATCH> =
        jobs.iter().filter(|j| j.is_well_formed()).map(|j| &j.buf[..j.tag_at()]).collect();
    let n = msgs.len();
    mac.tag_lanes(&msgs, &mut tags[..n]);
    drop(msgs);
    let mut tags = tags.iter();
    for job in jobs.iter_mut() {
        job.ok = false;
        if !job.is_well_formed() {
            continue;
        }
        if let Some(expected) = tags.next() {
            let at = job.tag_at();
            job.ok = expected.0[..].ct_eq(&job.buf[at..]).to_bool();
        }
    }
}

/// The integrity-only suite, keyed for one direction of one shard.
pub(crate) struct IntegrityCmac {
    mac: CmacKey,
}

impl core::fmt::Debug for IntegrityCmac {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("IntegrityCmac(<redacted>)")
    }
}

impl IntegrityCmac {
    pub(crate) fn new(mac: &Key128) -> Self {
        IntegrityCmac { mac: CmacKey::new(mac) }
    }
}

impl Suite for IntegrityCmac {
    fn id(&self) -> SuiteId {
        SuiteId::IntegrityCmac
    }

    fn seal_batch(&mut self, jobs: &mut [Job<'_>]) {
        for chunk in jobs.chunks_mut(MAX_BATCH) {
            seal_tags(&self.mac, chunk);
        }
    }

    fn open_batch(&mut self, jobs: &mut [Job<'_>]) {
        for chunk in jobs.chunks_mut(MAX_BATCH) {
            verify_tags(&self.mac, chunk);
        }
    }
}
