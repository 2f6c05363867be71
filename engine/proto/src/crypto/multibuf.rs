//! Multi-buffer AES-128 modes: CFB128 and AES-CMAC over up to [`MAX_BATCH`] datagrams at once.
//!
//! CFB encryption and CMAC are serial within one message: block `j` needs the cipher output of
//! block `j - 1`. One datagram at a time, every AES call waits out the full AES latency. Here
//! each datagram is a *lane*: at every 16-byte step the chaining block of every active lane is
//! gathered into one array and encrypted with one multi-block call, so AES-NI/VAES pipelines
//! stay full. Lanes are sorted once by descending block count (and their buffers put in that
//! order), so the lanes still active at any step are a prefix, they drop out as they finish,
//! and the chaining blocks stay in one contiguous array that is encrypted in place.
//!
//! CFB decryption is parallel within a message (the keystream is `E(IV), E(C_0), E(C_1), ...`),
//! so [`cfb_decrypt_lanes`] streams the blocks of all lanes through large multi-block calls.
//!
//! Invariants: no heap allocation (stack arrays sized by [`MAX_BATCH`] and [`DECRYPT_CHUNK`]);
//! output is byte-identical to SP 800-38A CFB128 and RFC 4493 CMAC (KATs below, and the
//! property tests in `tests.rs` against RustCrypto `cfb-mode` + `cmac`).

use super::MAX_BATCH;
use super::keys::Key128;
use aes::Aes128;
use aes::Block;
use aes::cipher::{BlockCipherEncrypt, KeyInit};
use arrayvec::ArrayVec;
use zeroize::Zeroize;

/// The AES block length.
pub(crate) const BLOCK_LEN: usize = 16;
/// Blocks per multi-block call on the CFB decryption path: a multiple of the widest backend's
/// parallel width (64 blocks with VAES-512), small enough to stay on the stack (2 KiB).
const DECRYPT_CHUNK: usize = 128;

/// Lanes sorted by descending block count: lanes active at step `s` are the prefix with
/// `blocks > s`.
struct LaneOrder {
    lane: [u8; MAX_BATCH],
    blocks: [usize; MAX_BATCH],
    len: usize,
}

impl LaneOrder {
    /// Sort `counts` (one per lane, at most [`MAX_BATCH`]) by descending value; stable.
    fn new(counts: impl ExactSizeIterator<Item = usize>) -> Self {
        assert!(counts.len() <= MAX_BATCH, "multibuf: more than MAX_BATCH lanes");
        let mut order = LaneOrder { lane: [0; MAX_BATCH], blocks: [0; MAX_BATCH], len: 0 };
        for (lane, count) in counts.enumerate() {
            // Insertion sort: at most 64 lanes, usually already ordered.
            let mut at = order.len;
            while at > 0 && order.blocks[at - 1] < count {
                order.lane[at] = order.lane[at - 1];
                order.blocks[at] = order.blocks[at - 1];
                at -= 1;
            }
            order.lane[at] = lane as u8;
            order.blocks[at] = count;
            order.len += 1;
        }
        order
    }

    /// Shrink `active` to the lanes that still have a block at `step`.
    fn retire(&self, step: usize, active: &mut usize) {
        while *active > 0 && self.blocks[*active - 1] <= step {
            *active -= 1;
        }
    }

    /// Enter `step`: `active` becomes the lanes with a block at `step`, `inner` those that also
    /// have a block after it (`inner <= active`). False once no lane is active.
    fn advance(&self, step: usize, active: &mut usize, inner: &mut usize) -> bool {
        self.retire(step, active);
        self.retire(step + 1, inner);
        *active > 0
    }

    fn lane(&self, k: usize) -> usize {
        usize::from(self.lane[k])
    }
}

/// XOR `src` into the first `dst.len()` (at most 16) bytes of a block-sized `dst`.
#[inline(always)]
fn xor_into(dst: &mut [u8], src: &Block) {
    if let Some(d) = dst.first_chunk_mut::<BLOCK_LEN>() {
        *d = (u128::from_ne_bytes(*d) ^ u128::from_ne_bytes(src.0)).to_ne_bytes();
    } else {
        for (d, s) in dst.iter_mut().zip(src.iter()) {
            *d ^= s;
        }
    }
}

/// The IV-derivation input for `seq`: `seq as u64 LE ‖ 8 zero bytes` (§3.1).
pub(crate) fn iv_input(seq: u64) -> Block {
    let mut b = Block::default();
    b[..8].copy_from_slice(&seq.to_le_bytes());
    b
}

/// CFB128-encrypt every body in place, lane `i` under IV `ivs[i]`, all lanes interleaved.
///
/// The bodies are moved into lane order once (`bodies` is left holding empty slices), so the
/// hot loop walks feedback registers and bodies side by side. At each step, lanes with a block
/// beyond this one (a prefix) take the full-block path; the rest, whose last block this is,
/// take the general one.
pub(crate) fn cfb_encrypt_lanes(cipher: &Aes128, ivs: &[Block], bodies: &mut [&mut [u8]]) {
    assert_eq!(ivs.len(), bodies.len(), "multibuf: one IV per lane");
    let order = LaneOrder::new(bodies.iter().map(|b| b.len().div_ceil(BLOCK_LEN)));
    let mut lanes: ArrayVec<&mut [u8], MAX_BATCH> = ArrayVec::new();
    // Feedback registers, in lane order: the IV, then each ciphertext block.
    let mut feedback = [Block::default(); MAX_BATCH];
    for (k, fb) in feedback.iter_mut().enumerate().take(order.len) {
        *fb = ivs[order.lane(k)];
        lanes.push(core::mem::take(&mut bodies[order.lane(k)]));
    }
    let (mut active, mut inner) = (order.len, order.len);
    let mut step = 0;
    loop {
        if !order.advance(step, &mut active, &mut inner) {
            return;
        }
        cipher.encrypt_blocks(&mut feedback[..active]);
        let at = step * BLOCK_LEN;
        for (fb, body) in feedback[..inner].iter_mut().zip(&mut lanes[..inner]) {
            // Lanes before `inner` have more blocks after this one: this one is full.
            if let Some(c) = body[at..].first_chunk_mut::<BLOCK_LEN>() {
                fb.0 = (u128::from_ne_bytes(*c) ^ u128::from_ne_bytes(fb.0)).to_ne_bytes();
                *c = fb.0;
            }
        }
        for (fb, body) in feedback[inner..active].iter_mut().zip(&mut lanes[inner..active]) {
            // The last block of its lane, full or partial: its feedback is never used again.
            xor_into(&mut body[at..], fb);
        }
        step += 1;
    }
}

/// CFB128-decrypt every body in place, lane `i` under IV `ivs[i]`.
///
/// The keystream input of block `j` is `C_{j-1}` (the IV for `j = 0`), so a run of blocks
/// `[lo, hi)` needs the ciphertext bytes of blocks `[lo - 1, hi - 1)`: one copy. Each lane is
/// cut into runs from its end towards its start, and a run's inputs are copied out before the
/// chunk holding it is flushed; the run below it, flushed later, never needs bytes that an
/// earlier flush overwrote. So in-place decryption needs no carry between chunks.
pub(crate) fn cfb_decrypt_lanes(cipher: &Aes128, ivs: &[Block], bodies: &mut [&mut [u8]]) {
    assert_eq!(ivs.len(), bodies.len(), "multibuf: one IV per lane");
    let mut keystream = [Block::default(); DECRYPT_CHUNK];
    // (lane, first block, end block, position in `keystream`) of every run in the chunk.
    let mut runs = [(0usize, 0usize, 0usize, 0usize); DECRYPT_CHUNK];
    let (mut filled, mut nruns) = (0, 0);
    for lane in 0..bodies.len() {
        let mut hi = bodies[lane].len().div_ceil(BLOCK_LEN);
        while hi > 0 {
            if filled == DECRYPT_CHUNK {
                flush_keystream(cipher, &mut keystream, &runs[..nruns], bodies);
                (filled, nruns) = (0, 0);
            }
            let lo = hi.saturating_sub(DECRYPT_CHUNK - filled);
            let inputs = &mut keystream[filled..filled + (hi - lo)];
            let copy_from = if lo == 0 {
                inputs[0] = ivs[lane];
                0
            } else {
                lo - 1
            };
            let dst = Block::slice_as_flattened_mut(&mut inputs[usize::from(lo == 0)..]);
            dst.copy_from_slice(&bodies[lane][copy_from * BLOCK_LEN..(hi - 1) * BLOCK_LEN]);
            runs[nruns] = (lane, lo, hi, filled);
            nruns += 1;
            filled += hi - lo;
            hi = lo;
        }
    }
    flush_keystream(cipher, &mut keystream[..filled], &runs[..nruns], bodies);
}

/// Encrypt the gathered keystream inputs and XOR each run into its lane.
fn flush_keystream(
    cipher: &Aes128,
    keystream: &mut [Block],
    runs: &[(usize, usize, usize, usize)],
    bodies: &mut [&mut [u8]],
) {
    cipher.encrypt_blocks(keystream);
    let keystream = Block::slice_as_flattened(keystream);
    for &(lane, lo, hi, at) in runs {
        let body = &mut *bodies[lane];
        let end = (hi * BLOCK_LEN).min(body.len());
        let run = &mut body[lo * BLOCK_LEN..end];
        let ks = &keystream[at * BLOCK_LEN..at * BLOCK_LEN + run.len()];
        for (d, k) in run.iter_mut().zip(ks) {
            *d ^= k;
        }
    }
}

/// An AES-CMAC key (RFC 4493): the cipher and the subkeys K1, K2, computed once at
/// construction. Zeroized on drop (the `aes` crate wipes its round keys, we wipe K1/K2).
pub(crate) struct CmacKey {
    cipher: Aes128,
    k1: Block,
    k2: Block,
}

impl core::fmt::Debug for CmacKey {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("CmacKey(<redacted>)")
    }
}

impl Drop for CmacKey {
    fn drop(&mut self) {
        self.k1.0.zeroize();
        self.k2.0.zeroize();
    }
}

/// Doubling in GF(2^128) with the CMAC polynomial (RFC 4493 §2.3), without a branch on the
/// (secret) top bit.
fn dbl(b: &Block) -> Block {
    let x = u128::from_be_bytes(b.0);
    let carry = 0u128.wrapping_sub(x >> 127) & 0x87;
    Block::from(((x << 1) ^ carry).to_be_bytes())
}

impl CmacKey {
    pub(crate) fn new(key: &Key128) -> Self {
        let cipher = Aes128::new(&key.0.into());
        let mut l = Block::default();
        cipher.encrypt_block(&mut l);
        let k1 = dbl(&l);
        let k2 = dbl(&k1);
        l.0.zeroize();
        CmacKey { cipher, k1, k2 }
    }

    /// The CMAC of every message, lane `i` into `tags[i]`, all lanes interleaved.
    ///
    /// As in [`cfb_encrypt_lanes`], the messages are put in lane order once; lanes with blocks
    /// after this step's (a prefix) take the plain XOR path, the rest get their subkey.
    pub(crate) fn tag_lanes(&self, msgs: &[&[u8]], tags: &mut [Block]) {
        assert_eq!(msgs.len(), tags.len(), "multibuf: one tag per message");
        // A message has max(1, ceil(len / 16)) blocks; the empty message is one padded block.
        let order = LaneOrder::new(msgs.iter().map(|m| m.len().div_ceil(BLOCK_LEN).max(1)));
        let lanes: ArrayVec<&[u8], MAX_BATCH> =
            (0..order.len).map(|k| msgs[order.lane(k)]).collect();
        let mut state = [Block::default(); MAX_BATCH];
        let (mut active, mut inner) = (order.len, order.len);
        let mut step = 0;
        loop {
            if !order.advance(step, &mut active, &mut inner) {
                break;
            }
            let at = step * BLOCK_LEN;
            for (x, msg) in state[..inner].iter_mut().zip(&lanes[..inner]) {
                if let Some(m) = msg[at..].first_chunk::<BLOCK_LEN>() {
                    x.0 = (u128::from_ne_bytes(x.0) ^ u128::from_ne_bytes(*m)).to_ne_bytes();
                }
            }
            for (x, msg) in state[inner..active].iter_mut().zip(&lanes[inner..active]) {
                self.absorb_last(x, &msg[at..]);
            }
            self.cipher.encrypt_blocks(&mut state[..active]);
            step += 1;
        }
        for (k, x) in state.iter().enumerate().take(order.len) {
            tags[order.lane(k)] = *x;
        }
    }

    /// XOR the last block `rest` (0 to 16 bytes) into the chaining value, with its subkey:
    /// K1 for a full block, K2 for a padded one (RFC 4493 §2.4).
    fn absorb_last(&self, x: &mut Block, rest: &[u8]) {
        if let Some(m) = rest.first_chunk::<BLOCK_LEN>() {
            xor_into(&mut x.0, &Block::from(*m));
            xor_into(&mut x.0, &self.k1);
        } else {
            let mut padded = Block::default();
            padded[..rest.len()].copy_from_slice(rest);
            padded[rest.len()] = 0x80;
            xor_into(&mut x.0, &padded);
            xor_into(&mut x.0, &self.k2);
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests")]
pub(crate) mod tests {
    use super::*;
    use hex::decode;

    pub(crate) fn key(hex: &str) -> Key128 {
        let mut k = [0u8; 16];
        k.copy_from_slice(&decode(hex).unwrap());
        Key128(k)
    }

    fn block(hex: &str) -> Block {
        let mut b = Block::default();
        b.copy_from_slice(&decode(hex).unwrap());
        b
    }

    // NIST SP 800-38A, F.3.13 (CFB128-AES128.Encrypt) and F.3.14 (Decrypt).
    const SP_KEY: &str = "2b7e151628aed2a6abf7158809cf4f3c";
    const SP_IV: &str = "000102030405060708090a0b0c0d0e0f";
    const SP_PT: &str = "6bc1bee22e409f96e93d7e117393172aae2d8a571e03ac9c9eb76fac45af8e51\
                         30c81c46a35ce411e5fbc1191a0a52eff69f2445df4f9b17ad2b417be66c3710";
    const SP_CT: &str = "3b3fd92eb72dad20333449f8e83cfb4ac8a64537a0b3a93fcde3cdad9f1ce58b\
                         26751f67a3cbb140b1808cf187a4f4dfc04b05357c5d1c0eeac4c66f9ff7f2e6";

    fn sp_cipher() -> Aes128 {
        Aes128::new(&key(SP_KEY).0.into())
    }

    #[test]
    fn cfb128_aes128_sp800_38a_encrypt() {
        let mut buf = decode(SP_PT).unwrap();
        cfb_encrypt_lanes(&sp_cipher(), &[block(SP_IV)], &mut [&mut buf[..]]);
        assert_eq!(buf, decode(SP_CT).unwrap());
    }

    #[test]
    fn cfb128_aes128_sp800_38a_decrypt() {
        let mut buf = decode(SP_CT).unwrap();
        cfb_decrypt_lanes(&sp_cipher(), &[block(SP_IV)], &mut [&mut buf[..]]);
        assert_eq!(buf, decode(SP_PT).unwrap());
    }

    /// Many lanes of different (also partial) lengths through both CFB paths: each lane must
    /// equal the SP 800-38A vector truncated to its length (CFB is a prefix-preserving mode).
    #[test]
    fn cfb_multibuffer_lanes_match_sp800_38a_prefixes() {
        let (pt, ct) = (decode(SP_PT).unwrap(), decode(SP_CT).unwrap());
        let lens: Vec<usize> = (0..MAX_BATCH).map(|i| (i * 7) % (pt.len() + 1)).collect();
        let mut bufs: Vec<Vec<u8>> = lens.iter().map(|&n| pt[..n].to_vec()).collect();
        let ivs = vec![block(SP_IV); lens.len()];
        let mut bodies: Vec<&mut [u8]> = bufs.iter_mut().map(|b| &mut b[..]).collect();
        cfb_encrypt_lanes(&sp_cipher(), &ivs, &mut bodies);
        for (b, &n) in bufs.iter().zip(&lens) {
            assert_eq!(b[..], ct[..n], "encrypt, lane of {n} bytes");
        }
        let mut bodies: Vec<&mut [u8]> = bufs.iter_mut().map(|b| &mut b[..]).collect();
        cfb_decrypt_lanes(&sp_cipher(), &ivs, &mut bodies);
        for (b, &n) in bufs.iter().zip(&lens) {
            assert_eq!(b[..], pt[..n], "decrypt, lane of {n} bytes");
        }
    }

    /// Decryption streams blocks through chunks of DECRYPT_CHUNK: a lane far longer than a
    /// chunk must still round-trip (in place, across chunk boundaries).
    #[test]
    fn cfb_decrypt_crosses_chunk_boundaries() {
        let cipher = sp_cipher();
        let orig: Vec<u8> = (0..(DECRYPT_CHUNK * 3 + 5) * BLOCK_LEN + 9).map(|i| i as u8).collect();
        let mut a = orig.clone();
        let mut b = orig[..100].to_vec();
        let ivs = [block(SP_IV), block(SP_KEY)];
        cfb_encrypt_lanes(&cipher, &ivs, &mut [&mut b[..], &mut a[..]]);
        cfb_decrypt_lanes(&cipher, &ivs, &mut [&mut b[..], &mut a[..]]);
        assert_eq!(a, orig);
        assert_eq!(b[..], orig[..100]);
    }

    // RFC 4493 §4, examples 1-4 (key 2b7e1516..., messages of 0, 16, 40 and 64 bytes).
    const RFC4493: [(usize, &str); 4] = [
        (0, "bb1d6929e95937287fa37d129b756746"),
        (16, "070a16b46b4d4144f79bdd9dd04a287c"),
        (40, "dfa66747de9ae63030ca32611497c827"),
        (64, "51f0bebf7e3b9d92fc49741779363cfe"),
    ];

    #[test]
    fn cmac_rfc4493_examples_1_to_4() {
        let mac = CmacKey::new(&key(SP_KEY));
        assert_eq!(mac.k1, block("fbeed618357133667c85e08f7236a8de"));
        assert_eq!(mac.k2, block("f7ddac306ae266ccf90bc11ee46d513b"));
        let msg = decode(SP_PT).unwrap();
        for (len, tag) in RFC4493 {
            let mut out = [Block::default()];
            mac.tag_lanes(&[&msg[..len]], &mut out);
            assert_eq!(out[0], block(tag), "example with {len} bytes");
        }
    }

    /// All four RFC 4493 examples in one interleaved call, repeated to fill the batch.
    #[test]
    fn cmac_multibuffer_lanes_match_rfc4493() {
        let mac = CmacKey::new(&key(SP_KEY));
        let msg = decode(SP_PT).unwrap();
        let msgs: Vec<&[u8]> = (0..MAX_BATCH).map(|i| &msg[..RFC4493[i % 4].0]).collect();
        let mut tags = vec![Block::default(); MAX_BATCH];
        mac.tag_lanes(&msgs, &mut tags);
        for (i, t) in tags.iter().enumerate() {
            assert_eq!(*t, block(RFC4493[i % 4].1), "lane {i}");
        }
    }

    #[test]
    fn debug_redacts_cmac_key() {
        let mac = CmacKey::new(&key(SP_KEY));
        let s = format!("{mac:?}");
        assert!(!s.contains("2b7e") && !s.contains("fbee"), "{s}");
    }

    #[test]
    fn lane_order_is_descending_and_stable() {
        let order = LaneOrder::new([3usize, 9, 0, 9, 1].into_iter());
        assert_eq!(&order.lane[..5], &[1, 3, 0, 4, 2]);
        assert_eq!(&order.blocks[..5], &[9, 9, 3, 1, 0]);
        let mut active = order.len;
        order.retire(1, &mut active);
        assert_eq!(active, 3);
    }
}
