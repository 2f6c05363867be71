//! The two ways a set-up message travels (docs/protocol/09-setup.md §9.4): sealed under the
//! direct-mode control keys, or as-is inside a channel that is already encrypted (SSH, issue 5).
//!
//! Invariant: under [`SealedChannel`], a (key, nonce) pair never repeats: each direction has its
//! own key, derived from fresh randoms per connection, and the nonce is a 64-bit frame counter
//! that only goes up. The receiving side expects the next counter exactly, so a dropped,
//! replayed or reordered frame fails to open.

use super::{Message, SetupError};
use aes_gcm::aead::AeadInOut;
use aes_gcm::{Aes128Gcm, KeyInit, Nonce, Tag};
use zeroize::{Zeroize, ZeroizeOnDrop};

/// Bytes of the GCM tag at the end of a sealed frame.
const TAG_LEN: usize = 16;
/// Additional data bound into every sealed frame.
const AAD: &[u8] = b"haul/1 direct control";

/// A 16-byte control key. Zeroized on drop; `Debug` redacts it.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct ControlKey(pub(crate) [u8; 16]);

impl core::fmt::Debug for ControlKey {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("ControlKey(<redacted>)")
    }
}

/// How set-up messages are turned into frame bodies and back, after the hellos.
pub trait Channel: Send + core::fmt::Debug {
    fn seal(&mut self, msg: &Message) -> Result<Vec<u8>, SetupError>;
    fn open(&mut self, frame: &[u8]) -> Result<Message, SetupError>;
}

/// SSH mode: the transport already encrypts and authenticates; messages travel as encoded.
#[derive(Debug, Default)]
pub struct PlainChannel;

impl Channel for PlainChannel {
    fn seal(&mut self, msg: &Message) -> Result<Vec<u8>, SetupError> {
        Ok(msg.encode())
    }
    fn open(&mut self, frame: &[u8]) -> Result<Message, SetupError> {
        Message::decode(frame)
    }
}

/// Direct mode: AES-128-GCM per direction, nonce = 4 zero bytes ‖ frame counter (u64 BE).
pub struct SealedChannel {
    tx: Aes128Gcm,
    rx: Aes128Gcm,
    tx_count: u64,
    rx_count: u64,
}

impl core::fmt::Debug for SealedChannel {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("SealedChannel")
            .field("tx_count", &self.tx_count)
            .field("rx_count", &self.rx_count)
            .finish_non_exhaustive()
    }
}

fn nonce(count: u64) -> Nonce<aes_gcm::aead::consts::U12> {
    let mut n = [0u8; 12];
    n[4..].copy_from_slice(&count.to_be_bytes());
    Nonce::from(n)
}

impl SealedChannel {
    /// `tx` seals what this end sends, `rx` opens what it receives.
    pub fn new(tx: &ControlKey, rx: &ControlKey) -> Self {
        SealedChannel {
            tx: Aes128Gcm::new(&tx.0.into()),
            rx: Aes128Gcm::new(&rx.0.into()),
            tx_count: 0,
            rx_count: 0,
        }
    }
}

impl Channel for SealedChannel {
    fn seal(&mut self, msg: &Message) -> Result<Vec<u8>, SetupError> {
        let mut buf = msg.encode();
        let n = nonce(self.tx_count);
        self.tx_count = self.tx_count.checked_add(1).ok_or(SetupError::CounterExhausted)?;
        let tag = self
            .tx
            .encrypt_inout_detached(&n, AAD, buf.as_mut_slice().into())
            .map_err(|_| SetupError::FrameTooLong(buf.len()))?;
        buf.extend_from_slice(&tag);
        Ok(buf)
    }

    fn open(&mut self, frame: &[u8]) -> Result<Message, SetupError> {
        let Some(body_len) = frame.len().checked_sub(TAG_LEN) else {
            return Err(SetupError::Unauthenticated);
        };
        let (body, tag) = frame.split_at(body_len);
        let tag = Tag::try_from(tag).map_err(|_| SetupError::Unauthenticated)?;
        let mut buf = body.to_vec();
        let n = nonce(self.rx_count);
        self.rx
            .decrypt_inout_detached(&n, AAD, buf.as_mut_slice().into(), &tag)
            .map_err(|_| SetupError::Unauthenticated)?;
        self.rx_count = self.rx_count.checked_add(1).ok_or(SetupError::CounterExhausted)?;
        Message::decode(&buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair() -> (SealedChannel, SealedChannel) {
        let (a, b) = (ControlKey([1; 16]), ControlKey([2; 16]));
        (SealedChannel::new(&a, &b), SealedChannel::new(&b, &a))
    }

    #[test]
    fn sealed_frames_open_in_order_only() {
        let (mut c, mut s) = pair();
        let f1 = c.seal(&Message::Bye).unwrap();
        let f2 = c.seal(&Message::Bye).unwrap();
        assert_ne!(f1, f2, "the counter changes the nonce");
        assert_eq!(s.open(&f2), Err(SetupError::Unauthenticated), "reordered");
        assert_eq!(s.open(&f1), Ok(Message::Bye));
        assert_eq!(s.open(&f1), Err(SetupError::Unauthenticated), "replayed");
        assert_eq!(s.open(&f2), Ok(Message::Bye));
    }

    #[test]
    fn tampered_or_short_frames_do_not_open() {
        let (mut c, mut s) = pair();
        let mut f = c.seal(&Message::Bye).unwrap();
        f[0] ^= 1;
        assert_eq!(s.open(&f), Err(SetupError::Unauthenticated));
        assert_eq!(s.open(&[0u8; 5]), Err(SetupError::Unauthenticated));
    }

    #[test]
    fn debug_redacts_keys() {
        let k = ControlKey([0xab; 16]);
        assert!(!format!("{k:?}").contains("171"));
        assert!(!format!("{:?}", pair().0).contains("171"));
    }
}
