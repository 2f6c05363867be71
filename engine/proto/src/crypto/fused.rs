//! The seal of `aes128-cfb-cmac` in one pass: CFB128 encryption and AES-CMAC over the same
//! bytes, interleaved over up to [`MAX_BATCH`] datagrams (docs/protocol/03-crypto.md §3.1).
//!
//! The tag is the CMAC of `header ‖ ciphertext`. Done in two passes (all of CFB, then all of
//! CMAC), every byte of a batch is read twice, the second time from L2 (64 datagrams of 1472
//! bytes are more than L1). Here each lane (datagram) advances one 16-byte step at a time in
//! both modes at once, and each step makes two wide AES calls over the active lanes, one per
//! key; the CMAC reads each ciphertext block while it is still in L1.
//!
//! Alignment: CMAC blocks start at offset 0 of `header ‖ body`, CFB blocks at the header's
//! end. With `d` = [`prologue_blocks`] (`(h - 1) / 16`, so `16 d <= h - 1` for a header of
//! `h >= 1` bytes), CMAC block `d + t` ends at or before byte `h + 16 (t + 1)`, the end of CFB
//! block `t`. So step `t` encrypts body block `t`, then absorbs CMAC block `d + t`, whose
//! bytes are all header or ciphertext written at this step or before. The `d` header-only
//! blocks are absorbed first (the prologue); they are never a message's last block
//! (`h + b > 16 d`), so the subkey always falls in the main loop.
//!
//! Lanes are sorted by descending body length: both counts a step depends on (CFB blocks,
//! CMAC steps) grow with the body length, so the lanes still active in each mode are a
//! prefix, and they drop out as they finish (as in `multibuf.rs`). One call handles lanes of
//! one header length; the suite groups a batch by header length (data-plane headers are all
//! 24 bytes, so that is one group).
//!
//! Open stays two passes (interleaved CMAC, then wide CFB decryption of what verified): a
//! one-pass open was built and measured slower, see docs/DATAPLANE.md ("CFB and CMAC in one
//! pass").
//!
//! Invariants: no heap allocation (stack arrays of [`MAX_BATCH`] blocks); output is
//! byte-identical to CFB128 followed by CMAC (property tests in `tests.rs` against the serial
//! reference; SP 800-38A and RFC 4493 vectors below).

use super::MAX_BATCH;
use super::multibuf::{BLOCK_LEN, CmacKey, LaneOrder, xor_into};
use aes::cipher::BlockCipherEncrypt;
use aes::{Aes128, Block};
use arrayvec::ArrayVec;

/// Number of header-only blocks CMAC absorbs before the first CFB step, for a header of
/// `header_len` bytes: `(header_len - 1) / 16`, 0 for an empty header. They lie inside the
/// header, and none ends the message (`16 d < header_len`).
pub(crate) const fn prologue_blocks(header_len: usize) -> usize {
    header_len.saturating_sub(1) / BLOCK_LEN
}

/// CMAC steps after the prologue for a message of `header_len + body_len` bytes: the
/// message's CMAC blocks (at least one: the empty message is one padded block) less `d`.
const fn mac_steps(header_len: usize, body_len: usize) -> usize {
    let blocks = (header_len + body_len).div_ceil(BLOCK_LEN);
    let blocks = if blocks == 0 { 1 } else { blocks };
    blocks - prologue_blocks(header_len)
}

/// A per-lane step count in lane order (descending), and the prefix of lanes whose count is
/// above the last step asked for. Steps must be asked for in increasing order.
struct Prefix {
    count: [usize; MAX_BATCH],
    active: usize,
}

impl Prefix {
    fn new(order: &LaneOrder, count: impl Fn(usize) -> usize) -> Self {
        let mut p = Prefix { count: [0; MAX_BATCH], active: order.len };
        for (k, c) in p.count.iter_mut().enumerate().take(order.len) {
            *c = count(order.key(k));
        }
        p
    }

    /// The number of lanes whose count is above `step`.
    fn above(&mut self, step: usize) -> usize {
        while self.active > 0 && self.count[self.active - 1] <= step {
            self.active -= 1;
        }
        self.active
    }
}

/// The counts one fused call steps by, in lane order.
struct Counts {
    /// Lanes with a CFB block at the step (`blocks > t`) and beyond it (`blocks > t + 1`).
    cfb: Prefix,
    cfb_inner: Prefix,
    /// The same for CMAC steps (after the prologue).
    mac: Prefix,
    mac_inner: Prefix,
}

impl Counts {
    fn new(order: &LaneOrder, header_len: usize) -> Self {
        let blocks = |body: usize| body.div_ceil(BLOCK_LEN);
        let steps = |body: usize| mac_steps(header_len, body);
        Counts {
            cfb: Prefix::new(order, blocks),
            cfb_inner: Prefix::new(order, blocks),
            mac: Prefix::new(order, steps),
            mac_inner: Prefix::new(order, steps),
        }
    }
}

/// What a seal sets up before its steps: the lanes in order, the keystream (E(IV) for block
/// 0), the CMAC state after the prologue, and the step counts.
struct Pass<'a> {
    order: LaneOrder,
    lanes: ArrayVec<&'a mut [u8], MAX_BATCH>,
    /// `keystream[k]`: E(previous ciphertext block of lane k), starting with E(IV).
    keystream: [Block; MAX_BATCH],
    /// CMAC chaining value of lane k.
    state: [Block; MAX_BATCH],
    counts: Counts,
    header_len: usize,
}

impl<'a> Pass<'a> {
    /// Panics (a caller bug) if the slices differ in length, there are more than
    /// [`MAX_BATCH`] messages, or a message is shorter than its header.
    fn new(
        enc: &Aes128,
        mac: &CmacKey,
        header_len: usize,
        ivs: &[Block],
        msgs: &mut [&'a mut [u8]],
        tags: &[Block],
    ) -> Self {
        assert!(ivs.len() == msgs.len() && tags.len() == msgs.len(), "fused: one IV, tag per lane");
        assert!(msgs.iter().all(|m| m.len() >= header_len), "fused: message shorter than header");
        let order = LaneOrder::new(msgs.iter().map(|m| m.len() - header_len));
        let n = order.len;
        let lanes = (0..n).map(|k| core::mem::take(&mut msgs[order.lane(k)])).collect();
        let mut keystream = [Block::default(); MAX_BATCH];
        for (k, ks) in keystream.iter_mut().enumerate().take(n) {
            *ks = ivs[order.lane(k)];
        }
        enc.encrypt_blocks(&mut keystream[..n]);
        let mut pass = Pass {
            counts: Counts::new(&order, header_len),
            order,
            lanes,
            keystream,
            state: [Block::default(); MAX_BATCH],
            header_len,
        };
        pass.absorb_prologue(mac);
        pass
    }

    /// Absorb the `d` header-only blocks of every lane (full, never last) into a zero state.
    fn absorb_prologue(&mut self, mac: &CmacKey) {
        let state = &mut self.state[..self.order.len];
        for s in 0..prologue_blocks(self.header_len) {
            let at = s * BLOCK_LEN;
            for (x, msg) in state.iter_mut().zip(&self.lanes) {
                if let Some(m) = msg[at..].first_chunk::<BLOCK_LEN>() {
                    xor_into(&mut x.0, &Block::from(*m));
                }
            }
            mac.cipher().encrypt_blocks(state);
        }
    }

    /// Absorb CMAC block `d + step` of the first `active` lanes: the plain XOR for the first
    /// `inner` (which have a block after it), with the subkey for the rest. No AES call.
    fn absorb_step(&mut self, mac: &CmacKey, step: usize, (inner, active): (usize, usize)) {
        let at = (prologue_blocks(self.header_len) + step) * BLOCK_LEN;
        let (state, lanes) = (&mut self.state, &self.lanes);
        for (x, msg) in state[..inner].iter_mut().zip(&lanes[..inner]) {
            if let Some(m) = msg[at..].first_chunk::<BLOCK_LEN>() {
                x.0 = (u128::from_ne_bytes(x.0) ^ u128::from_ne_bytes(*m)).to_ne_bytes();
            }
        }
        for (x, msg) in state[inner..active].iter_mut().zip(&lanes[inner..active]) {
            mac.absorb_last(x, &msg[at..]);
        }
    }

    /// Write every lane's CMAC into `tags`, in the callers' order.
    fn finish(&self, tags: &mut [Block]) {
        for (k, x) in self.state.iter().enumerate().take(self.order.len) {
            tags[self.order.lane(k)] = *x;
        }
    }
}

/// Seal: CFB128-encrypt the body of every message (`header ‖ body`, all with a header of
/// `header_len` bytes) in place under IV `ivs[i]`, and write the CMAC of `header ‖
/// ciphertext` into `tags[i]`, in one interleaved pass.
///
/// Panics (a caller bug) if the slices differ in length, there are more than [`MAX_BATCH`]
/// messages, or a message is shorter than its header.
pub(crate) fn seal_lanes(
    enc: &Aes128,
    mac: &CmacKey,
    header_len: usize,
    ivs: &[Block],
    msgs: &mut [&mut [u8]],
    tags: &mut [Block],
) {
    let mut p = Pass::new(enc, mac, header_len, ivs, msgs, tags);
    for step in 0.. {
        let (cfb, cfb_inner) = (p.counts.cfb.above(step), p.counts.cfb_inner.above(step + 1));
        let (mac_n, mac_inner) = (p.counts.mac.above(step), p.counts.mac_inner.above(step + 1));
        if cfb == 0 && mac_n == 0 {
            break;
        }
        let at = header_len + step * BLOCK_LEN;
        let (keystream, lanes) = (&mut p.keystream, &mut p.lanes);
        for (ks, msg) in keystream[..cfb_inner].iter_mut().zip(&mut lanes[..cfb_inner]) {
            // Not the lane's last block: a full one, and its ciphertext is the next input.
            if let Some(c) = msg[at..].first_chunk_mut::<BLOCK_LEN>() {
                ks.0 = (u128::from_ne_bytes(*c) ^ u128::from_ne_bytes(ks.0)).to_ne_bytes();
                *c = ks.0;
            }
        }
        for (ks, msg) in keystream[cfb_inner..cfb].iter_mut().zip(&mut lanes[cfb_inner..cfb]) {
            xor_into(&mut msg[at..], ks);
        }
        p.absorb_step(mac, step, (mac_inner, mac_n));
        enc.encrypt_blocks(&mut p.keystream[..cfb_inner]);
        mac.cipher().encrypt_blocks(&mut p.state[..mac_n]);
    }
    p.finish(tags);
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::*;
    use crate::crypto::multibuf::tests::{RFC4493, SP_CT, SP_IV, SP_KEY, SP_PT, block, key};
    use aes::cipher::{InnerIvInit, KeyInit};
    use hex::decode;

    fn keys() -> (Aes128, CmacKey) {
        (Aes128::new(&key(SP_KEY).0.into()), CmacKey::new(&key(SP_KEY)))
    }

    /// `seal_lanes` over copies of `msgs`, all under IV `SP_IV`: the sealed messages and tags.
    fn seal(header_len: usize, msgs: &[&[u8]]) -> (Vec<Vec<u8>>, Vec<Block>) {
        let (enc, mac) = keys();
        let mut bufs: Vec<Vec<u8>> = msgs.iter().map(|m| m.to_vec()).collect();
        let ivs = vec![block(SP_IV); msgs.len()];
        let mut tags = vec![Block::default(); msgs.len()];
        let mut lanes: Vec<&mut [u8]> = bufs.iter_mut().map(|b| &mut b[..]).collect();
        seal_lanes(&enc, &mac, header_len, &ivs, &mut lanes, &mut tags);
        (bufs, tags)
    }

    /// Many lanes of different (also partial) lengths, no header: each body must equal the
    /// SP 800-38A vector truncated to its length (CFB is prefix-preserving).
    #[test]
    fn fused_cfb_lanes_match_sp800_38a_prefixes() {
        let (pt, ct) = (decode(SP_PT).unwrap(), decode(SP_CT).unwrap());
        let lens: Vec<usize> = (0..MAX_BATCH).map(|i| (i * 7) % (pt.len() + 1)).collect();
        let plain: Vec<&[u8]> = lens.iter().map(|&n| &pt[..n]).collect();
        let (sealed, _) = seal(0, &plain);
        for (s, &n) in sealed.iter().zip(&lens) {
            assert_eq!(s[..], ct[..n], "lane of {n} bytes");
        }
    }

    /// The tag covers `header ‖ ciphertext` whatever the split: each RFC 4493 message, cut
    /// into a header and a body at every offset, with the body chosen so that its ciphertext
    /// is the message's rest, gives RFC 4493's tag. The headers go through the prologue (0 to
    /// 3 blocks) and every alignment of CMAC blocks against CFB blocks.
    #[test]
    fn fused_cmac_matches_rfc4493_at_every_header_split() {
        let (enc, _) = keys();
        let msg = decode(SP_PT).unwrap();
        for header_len in 0..=msg.len() {
            let cases: Vec<(usize, &str)> =
                RFC4493.into_iter().filter(|&(len, _)| len >= header_len).collect();
            let plain: Vec<Vec<u8>> = cases
                .iter()
                .map(|&(len, _)| {
                    let mut m = msg[..len].to_vec();
                    cfb_mode::Decryptor::<&Aes128>::inner_iv_init(&enc, &block(SP_IV))
                        .decrypt(&mut m[header_len..]);
                    m
                })
                .collect();
            let refs: Vec<&[u8]> = plain.iter().map(|p| &p[..]).collect();
            let (sealed, tags) = seal(header_len, &refs);
            for (i, &(len, tag)) in cases.iter().enumerate() {
                assert_eq!(sealed[i][..], msg[..len], "{len}-byte message, header {header_len}");
                assert_eq!(tags[i], block(tag), "{len}-byte message, header {header_len}");
            }
        }
    }

    /// At header lengths around every block boundary, in one batch of many body lengths: the
    /// body is what `cfb-mode` makes of it and the tag what `tag_lanes` (RFC 4493-tested)
    /// makes of `header ‖ ciphertext`.
    #[test]
    fn fused_seal_matches_cfb_mode_and_tag_lanes_at_every_split() {
        let msg: Vec<u8> = (0..200u8).collect();
        let (enc, mac) = keys();
        for header_len in [0, 1, 15, 16, 17, 24, 31, 32, 33, 40, 48] {
            let lens: Vec<usize> = (header_len..msg.len()).step_by(13).collect();
            let msgs: Vec<&[u8]> = lens.iter().map(|&n| &msg[..n]).collect();
            let (sealed, tags) = seal(header_len, &msgs);
            let mut expect_tags = vec![Block::default(); lens.len()];
            let sealed_refs: Vec<&[u8]> = sealed.iter().map(|s| &s[..]).collect();
            mac.tag_lanes(&sealed_refs, &mut expect_tags);
            assert_eq!(tags, expect_tags, "header {header_len}");
            for (s, &n) in sealed.iter().zip(&lens) {
                let mut body = msg[header_len..n].to_vec();
                cfb_mode::Encryptor::<&Aes128>::inner_iv_init(&enc, &block(SP_IV))
                    .encrypt(&mut body);
                assert_eq!(s[..header_len], msg[..header_len], "header {header_len}");
                assert_eq!(s[header_len..], body[..], "header {header_len}, {n} bytes");
            }
        }
    }
}
