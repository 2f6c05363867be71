//! Multi-buffer AES-128 modes: CFB128 and AES-CMAC over up to [`MAX_BATCH`] datagrams at once.
//!
//! CFB encryption and CMAC are serial within one message: block `j` needs the cipher output of
//! block `j - 1`. One datagram at a time, every AES call waits out the full AES latency. Here
//! each datagram is a *lane*: at every 16-byte step the chaining block of every active lane is
//! gathered into one array and encrypted with one multi-block call, so AES-NI/VAES pipelines
//! stay full. Lanes are sorted once by descending block count, so the lanes still active at any
//! step are a prefix of that order and drop out as they finish, with no gathering at all.
//!
//! CFB decryption is parallel within a message (the keystream is `E(IV), E(C_0), E(C_1), ...`),
//! so [`cfb_decrypt_lanes`] streams the blocks of all lanes through large multi-block calls.
//!
//! Invariants: no heap allocation (stack arrays sized by [`MAX_BATCH`] and [`DECRYPT_CHUNK`]);
//! output is byte-identical to SP 800-38A CFB128 and RFC 4493 CMAC (KATs below, and the
//! property tests in `cfb_cmac.rs` against RustCrypto `cfb-mode` + `cmac`).

use super::MAX_BATCH;
use super::keys::Key128;
use aes::Aes128;
use aes::Block;
use aes::cipher::{BlockCipherEncrypt, KeyInit};
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
pub(crate) fn cfb_encrypt_lanes(cipher: &Aes128, ivs: &[Block], bodies: &mut [&mut [u8]]) {
    assert_eq!(ivs.len(), bodies.len(), "multibuf: one IV per lane");
    let order = LaneOrder::new(bodies.iter().map(|b| b.len().div_ceil(BLOCK_LEN)));
    // Feedback registers, in lane order: the IV, then each ciphertext block.
    let mut feedback = [Block::default(); MAX_BATCH];
    for (k, fb) in feedback.iter_mut().enumerate().take(order.len) {
        *fb = ivs[order.lane(k)];
    }
    let mut active = order.len;
    let mut step = 0;
    loop {
        order.retire(step, &mut active);
        if active == 0 {
            return;
        }
        cipher.encrypt_blocks(&mut feedback[..active]);
        let at = step * BLOCK_LEN;
        for (k, fb) in feedback.iter_mut().enumerate().take(active) {
            let body = &mut bodies[order.lane(k)][at..];
            if let Some(c) = body.first_chunk_mut::<BLOCK_LEN>() {
                let x = u128::from_ne_bytes(*c) ^ u128::from_ne_bytes(fb.0);
                *c = x.to_ne_bytes();
                fb.0 = *c;
            } else {
                // The partial last block: its feedback is never used again.
                xor_into(body, fb);
            }
        }
        step += 1;
    }
}

/// CFB128-decrypt every body in place, lane `i` under IV `ivs[i]`.
///
/// Blocks are taken last to first within each lane, and each keystream input (the previous
/// ciphertext block) is copied out before the chunk that overwrites it is flushed, so in-place
/// decryption needs no carry between chunks.
pub(crate) fn cfb_decrypt_lanes(cipher: &Aes128, ivs: &[Block], bodies: &mut [&mut [u8]]) {
    assert_eq!(ivs.len(), bodies.len(), "multibuf: one IV per lane");
    let mut keystream = [Block::default(); DECRYPT_CHUNK];
    let mut at = [(0usize, 0usize); DECRYPT_CHUNK];
    let mut filled = 0;
    for lane in 0..bodies.len() {
        let blocks = bodies[lane].len().div_ceil(BLOCK_LEN);
        for j in (0..blocks).rev() {
            keystream[filled] = if j == 0 {
                ivs[lane]
            } else {
                let prev = &bodies[lane][(j - 1) * BLOCK_LEN..j * BLOCK_LEN];
                let mut b = Block::default();
                b.copy_from_slice(prev);
                b
            };
            at[filled] = (lane, j);
            filled += 1;
            if filled == DECRYPT_CHUNK {
                flush_keystream(cipher, &mut keystream, &at, bodies);
                filled = 0;
            }
        }
    }
    flush_keystream(cipher, &mut keystream[..filled], &at[..filled], bodies);
}

/// Encrypt the gathered keystream inputs and XOR each into its (lane, block).
fn flush_keystream(
    cipher: &Aes128,
    keystream: &mut [Block],
    at: &[(usize, usize)],
    bodies: &mut [&mut [u8]],
) {
    cipher.encrypt_blocks(keystream);
    for (ks, &(lane, j)) in keystream.iter().zip(at) {
        let body = &mut bodies[lane][j * BLOCK_LEN..];
        let len = body.len().min(BLOCK_LEN);
        xor_into(&mut body[..len], ks);
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

/// Doubling in GF(2^128) with the CMAC polynomial (RFC 4493 §2.3).
fn dbl(b: &Block) -> Block {
    let x = u128::from_be_bytes(b.0);
    let carry = if x >> 127 == 1 { 0x87 } else { 0 };
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
    pub(crate) fn tag_lanes(&self, msgs: &[&[u8]], tags: &mut [Block]) {
        assert_eq!(msgs.len(), tags.len(), "multibuf: one tag per message");
        // A message has max(1, ceil(len / 16)) blocks; the empty message is one padded block.
        let order = LaneOrder::new(msgs.iter().map(|m| m.len().div_ceil(BLOCK_LEN).max(1)));
        let mut state = [Block::default(); MAX_BATCH];
        let mut active = order.len;
        let mut step = 0;
        loop {
            order.retire(step, &mut active);
            if active == 0 {
                break;
            }
            for (k, x) in state.iter_mut().enumerate().take(active) {
                let last = order.blocks[k] - 1;
                self.absorb(x, msgs[order.lane(k)], step, step == last);
            }
            self.cipher.encrypt_blocks(&mut state[..active]);
            step += 1;
        }
        for (k, x) in state.iter().enumerate().take(order.len) {
            tags[order.lane(k)] = *x;
        }
    }

    /// XOR block `step` of `msg` into the chaining value; the last block gets its subkey.
    #[inline(always)]
    fn absorb(&self, x: &mut Block, msg: &[u8], step: usize, is_last: bool) {
        let rest = &msg[step * BLOCK_LEN..];
        if !is_last {
            xor_into(&mut x.0, &block_at(rest));
        } else if rest.len() == BLOCK_LEN {
            xor_into(&mut x.0, &block_at(rest));
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

/// The first 16 bytes of `rest` (which the caller knows holds a full block) as a block.
#[inline(always)]
fn block_at(rest: &[u8]) -> Block {
    let mut b = Block::default();
    b.copy_from_slice(&rest[..BLOCK_LEN]);
    b
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
