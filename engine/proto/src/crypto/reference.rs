//! The serial reference implementations (tests and benches only; feature `reference`): one
//! datagram at a time on the RustCrypto building blocks, written straight from the spec
//! (docs/protocol/03-crypto.md §3) and independent of the batch paths they check.
//!
//! - `aes128-cfb-cmac`: `cfb-mode` (CFB128) + `cmac`.
//! - `integrity-cmac`: `cmac`.
//! - `aes128-gcm`: `aes-gcm`, one datagram per call.
//!
//! [`cfb_cmac_seal`]/[`cfb_cmac_open`] key the ciphers on every call; [`Reference`] keeps them
//! keyed, so a benchmark measures the per-datagram work and not the key set-up: CFB borrows the
//! keyed AES and CMAC is reset after each datagram, so no key schedule is copied (and wiped)
//! per datagram.

use super::keys::SuiteKeys;
use super::{DirectionKeys, SuiteId, TAG_LEN};
use aes::Aes128;
use aes::cipher::{BlockCipherEncrypt, InnerIvInit, KeyInit};
use aes_gcm::Aes128Gcm;
use aes_gcm::aead::AeadInOut;
use cmac::{Cmac, Mac};

/// The keyed reference for one suite, direction and shard.
pub struct Reference {
    inner: Inner,
}

#[expect(clippy::large_enum_variant, reason = "built once per test or benchmark, never moved")]
enum Inner {
    CfbCmac { enc: Aes128, iv: Aes128, mac: Cmac<Aes128> },
    Gcm { aead: Aes128Gcm, salt: [u8; 12] },
    Integrity { mac: Cmac<Aes128> },
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Inner::Gcm { salt, .. } = self {
            zeroize::Zeroize::zeroize(salt);
        }
    }
}

impl core::fmt::Debug for Reference {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("Reference(<redacted>)")
    }
}

fn cmac(key: &[u8; 16]) -> Cmac<Aes128> {
    <Cmac<Aes128> as KeyInit>::new(&(*key).into())
}

impl Reference {
    pub fn new(keys: &DirectionKeys) -> Self {
        let inner = match keys.material() {
            SuiteKeys::CfbCmac { enc, iv, mac } => Inner::CfbCmac {
                enc: Aes128::new(&enc.0.into()),
                iv: Aes128::new(&iv.0.into()),
                mac: cmac(&mac.0),
            },
            SuiteKeys::Gcm { key, salt } => {
                Inner::Gcm { aead: Aes128Gcm::new(&key.0.into()), salt: salt.0 }
            }
            SuiteKeys::Integrity { mac } => Inner::Integrity { mac: cmac(&mac.0) },
        };
        Reference { inner }
    }

    /// Seal one datagram `header ‖ body ‖ tag space` in place. Panics (it is test code) if
    /// `buf` cannot hold the header and a tag.
    pub fn seal(&mut self, seq: u64, header_len: usize, buf: &mut [u8]) {
        let end = buf.len() - TAG_LEN;
        let tag: [u8; 16] = match &mut self.inner {
            Inner::CfbCmac { enc, iv, mac } => {
                let iv = derive_iv(iv, seq);
                cfb_mode::Encryptor::<&Aes128>::inner_iv_init(enc, &iv)
                    .encrypt(&mut buf[header_len..end]);
                mac.update(&buf[..end]);
                mac.finalize_reset().into_bytes().into()
            }
            Inner::Integrity { mac } => {
                mac.update(&buf[..end]);
                mac.finalize_reset().into_bytes().into()
            }
            Inner::Gcm { aead, salt } => {
                let (header, rest) = buf.split_at_mut(header_len);
                let body = &mut rest[..end - header_len];
                let nonce = gcm_nonce(salt, seq);
                let t = aead.encrypt_inout_detached(&nonce.into(), header, body.into());
                t.map(Into::into).unwrap_or_else(|_| panic!("reference: GCM length limit"))
            }
        };
        buf[end..].copy_from_slice(&tag);
    }

    /// Verify and, if it verified, decrypt one datagram in place. Never panics on any bytes.
    pub fn open(&mut self, seq: u64, header_len: usize, buf: &mut [u8]) -> bool {
        if buf.len() < header_len.saturating_add(TAG_LEN) {
            return false;
        }
        let end = buf.len() - TAG_LEN;
        match &mut self.inner {
            Inner::CfbCmac { enc, iv, mac } => {
                mac.update(&buf[..end]);
                if mac.verify_slice_reset(&buf[end..]).is_err() {
                    return false;
                }
                let iv = derive_iv(iv, seq);
                cfb_mode::Decryptor::<&Aes128>::inner_iv_init(enc, &iv)
                    .decrypt(&mut buf[header_len..end]);
                true
            }
            Inner::Integrity { mac } => {
                mac.update(&buf[..end]);
                mac.verify_slice_reset(&buf[end..]).is_ok()
            }
            Inner::Gcm { aead, salt } => {
                let (header, rest) = buf.split_at_mut(header_len);
                let (body, tag) = rest.split_at_mut(end - header_len);
                let Ok(tag) = aes_gcm::Tag::try_from(&*tag) else { return false };
                let nonce = gcm_nonce(salt, seq);
                aead.decrypt_inout_detached(&nonce.into(), header, body.into(), &tag).is_ok()
            }
        }
    }
}

/// IV = AES-128(iv_key, seq as u64 LE ‖ 8 zero bytes).
fn derive_iv(iv: &Aes128, seq: u64) -> aes::Block {
    let mut block = [0u8; 16];
    block[..8].copy_from_slice(&seq.to_le_bytes());
    let mut block = aes::Block::from(block);
    iv.encrypt_block(&mut block);
    block
}

/// nonce = salt XOR (4 zero bytes ‖ seq as u64 BE).
fn gcm_nonce(salt: &[u8; 12], seq: u64) -> [u8; 12] {
    let mut pad = [0u8; 12];
    pad[4..].copy_from_slice(&seq.to_be_bytes());
    core::array::from_fn(|i| salt[i] ^ pad[i])
}

fn expect_cfb(keys: &DirectionKeys) -> Reference {
    assert_eq!(keys.suite(), SuiteId::Aes128CfbCmac, "reference: not aes128-cfb-cmac keys");
    Reference::new(keys)
}

/// Seal one `aes128-cfb-cmac` datagram in place with `cfb-mode` + `cmac`.
pub fn cfb_cmac_seal(keys: &DirectionKeys, seq: u64, header_len: usize, buf: &mut [u8]) {
    expect_cfb(keys).seal(seq, header_len, buf);
}

/// Verify, then decrypt, one `aes128-cfb-cmac` datagram in place; true if it verified.
pub fn cfb_cmac_open(keys: &DirectionKeys, seq: u64, header_len: usize, buf: &mut [u8]) -> bool {
    expect_cfb(keys).open(seq, header_len, buf)
}
