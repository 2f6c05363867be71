//! The set-up protocol (docs/protocol/09-setup.md): what the two ends say over a byte stream
//! before the first UDP datagram, and after the last.
//!
//! ```text
//! client                                   server
//!   Hello { version, client_random }  ─►           (plaintext)
//!                                     ◄─  Hello { version, server_random }
//!   ── both derive keys (direct mode: HKDF from the PSK) ──
//!   Offer { transcript, params, manifest, prefs } ─►   (sealed)
//!                                     ◄─  Accept { session_id, ports, resume } | Refuse
//!   ── data over UDP (haul-io's transfer runtime) ──
//!                                     ◄─  Summary { outcome, per-file BLAKE3 }
//!   Bye                               ─►
//! ```
//!
//! - [`frame`]: `u32 LE length ‖ bytes`, capped at 16 MiB.
//! - [`message`]: the messages and their versioned binary encoding (total decoding).
//! - [`direct`]: the PSK, the hellos and the HKDF key derivation of direct mode.
//! - [`channel`]: how messages after the hellos travel: sealed (direct mode) or plain inside an
//!   already encrypted channel (SSH mode, issue 5). This is the seam between the two modes.
//! - [`validate`]: the server's check of an Offer, which yields a proof type.
//!
//! Sans-IO like the rest of the crate: no sockets, no clock, randomness is an argument.

pub mod channel;
pub mod direct;
pub mod frame;
pub mod message;
pub mod validate;

pub use channel::{Channel, ControlKey, PlainChannel, SealedChannel};
pub use direct::{ClientHello, Established, Psk, server_handle_hello};
pub use frame::{FrameDecoder, MAX_FRAME_LEN, encode_frame, parse_frame_len};
pub use message::{
    Accept, FileAttrs, Hello, MAX_FILE_XATTRS, MAX_NAME_LEN, MAX_XATTR_NAME_LEN,
    MAX_XATTR_VALUE_LEN, Message, Offer, OverwritePref, Refuse, RefuseCode, ResumePref,
    SETUP_VERSION, Summary,
};
pub use validate::{ValidOffer, check_name, validate_offer};

use thiserror::Error;

/// The block size the client proposes unless told otherwise: 1 MiB.
pub const DEFAULT_BLOCK_SIZE_LOG2: u8 = 20;
/// `Summary::outcome` for a transfer that completed and verified.
pub const OUTCOME_COMPLETE: u16 = 0;

/// Set-up failures. Each says whose fault: the peer's bytes, the key, or the stream.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum SetupError {
    /// The peer's fault: a frame announces more than the cap.
    #[error("peer sent a frame of {0} bytes (at most {MAX_FRAME_LEN})")]
    FrameTooLong(usize),
    /// The peer's fault: bytes that are not a message.
    #[error("peer sent a malformed message: {0} ({1})")]
    Malformed(&'static str, u64),
    /// The peer speaks another version.
    #[error("peer speaks set-up version {0}, this build speaks {SETUP_VERSION}")]
    Version(u8),
    /// The peer sent a message out of turn.
    #[error("peer sent {got} where {expected} was expected")]
    Unexpected { expected: &'static str, got: &'static str },
    /// A sealed frame did not open: the two ends hold different keys, or someone altered it.
    #[error("key mismatch or tampered set-up")]
    Unauthenticated,
    /// Our limit: 2^64 frames on one connection.
    #[error("control frame counter exhausted")]
    CounterExhausted,
    /// The user's key file content.
    #[error("bad key: {0}")]
    BadKey(&'static str),
}
