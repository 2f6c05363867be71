//! The wire format (docs/PROTOCOL.md §2): a fixed, versioned header, a typed body, a tag.
//!
//! ```text
//! datagram = header (HEADER_LEN) ‖ body (sealed) ‖ tag (crypto::TAG_LEN)
//! ```
//!
//! Decoding never panics on any bytes and never allocates; it returns [`WireError`] saying what
//! was wrong. Decoding the header happens before authentication (to find the session, shard and
//! sequence number); decoding the body happens only after the tag has verified.
//!
//! STUB: the codec bodies are filled in by the wire work; the types are the contract.

#![allow(clippy::todo)]

use thiserror::Error;

/// The protocol version this build speaks. A datagram with another version is rejected.
pub const VERSION: u8 = 1;
/// Bytes in the fixed header.
pub const HEADER_LEN: usize = 24;
/// Bytes in a data body before its payload: file (u32) and offset (u64).
pub const DATA_PREFIX_LEN: usize = 12;
/// Most NAK ranges one NAK datagram carries.
pub const MAX_NAK_RANGES: usize = 64;

/// Packet types. Every type is sealed and replay-checked, not only data.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum PacketType {
    /// Sender → receiver: a run of file bytes.
    Data = 1,
    /// Receiver → sender: ranges of the shard's stream that were lost.
    Nak = 2,
    /// Receiver → sender: delay and receive-rate samples for rate control.
    Feedback = 3,
    /// Receiver → sender: cumulative acknowledgement and the flow-control limit.
    Window = 4,
    /// Sender → receiver: a file has been sent whole; carries its size and checksum.
    FileDone = 5,
    /// Receiver → sender: a file's checksum was verified (or not).
    FileAck = 6,
    /// Either way: the session is complete.
    Complete = 7,
    /// Either way: the session is over, for the reason given.
    Abort = 8,
    /// Either way: I am alive (sent when otherwise idle).
    Keepalive = 9,
}

/// The fixed header. Authenticated, never encrypted.
///
/// ```text
/// 0  version      u8
/// 1  type         u8
/// 2  shard        u8
/// 3  flags        u8   (must be 0 in version 1)
/// 4  session_id   u64  little-endian
/// 12 seq          u64  little-endian (top 8 bits = shard, docs/PROTOCOL.md §5)
/// 20 timestamp_us u32  sender's clock, microseconds, wrapping
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    pub ptype: PacketType,
    pub shard: u8,
    pub session_id: u64,
    pub seq: u64,
    pub timestamp_us: u32,
}

/// Status in a [`Body::FileAck`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum FileStatus {
    Verified = 1,
    ChecksumMismatch = 2,
}

/// Delay and receive-rate feedback (receiver → sender).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Feedback {
    /// Total payload bytes this shard's receiver has accepted so far (the sender takes
    /// differences to get the receive rate).
    pub recv_bytes: u64,
    /// The `timestamp_us` of the newest data datagram the receiver accepted.
    pub ts_echo_us: u32,
    /// How long the receiver held that timestamp before sending this feedback, microseconds.
    pub echo_delay_us: u32,
    /// Smallest one-way delay (receiver clock − sender timestamp, wrapping) over the interval.
    pub owd_us_min: u32,
    /// One-way delay of the newest datagram in the interval.
    pub owd_us_last: u32,
    /// Data datagrams accepted in the interval.
    pub datagrams: u32,
}

/// Cumulative acknowledgement and flow-control limit (receiver → sender), in positions of the
/// shard's stream (docs/PROTOCOL.md §6).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Window {
    /// Every position below this has been written to disk.
    pub cum_ack: u64,
    /// The sender must not send data at or beyond this position.
    pub limit: u64,
}

/// A decoded body. Borrowed from the datagram buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Body<'a> {
    Data { file: u32, offset: u64, payload: &'a [u8] },
    Nak { ranges: NakRanges<'a> },
    Feedback(Feedback),
    Window(Window),
    FileDone { file: u32, size: u64, hash: [u8; 32] },
    FileAck { file: u32, status: FileStatus },
    Complete,
    Abort { reason: u16 },
    Keepalive,
}

/// The ranges of a NAK, as `(start, end)` half-open pairs with `start < end`, read lazily from
/// the buffer. Decoding has already checked the count and that every pair is well formed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NakRanges<'a> {
    raw: &'a [u8],
}

impl<'a> NakRanges<'a> {
    pub fn len(&self) -> usize {
        todo!()
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    pub fn iter(&self) -> impl Iterator<Item = (u64, u64)> + 'a {
        let _ = self.raw;
        core::iter::empty()
    }
}

/// Why a datagram could not be decoded. All of these are the peer's (or an attacker's) fault.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Error)]
pub enum WireError {
    #[error("datagram shorter than its header and tag")]
    TooShort,
    #[error("unknown protocol version {0}")]
    BadVersion(u8),
    #[error("unknown packet type {0}")]
    BadType(u8),
    #[error("reserved flags set")]
    BadFlags,
    #[error("body length does not fit its packet type")]
    BadLength,
    #[error("malformed field in body")]
    BadField,
}

impl Header {
    /// Decode the header of a datagram (the whole datagram, tag included). Checks the version,
    /// type, flags, and that the datagram is long enough for header + tag.
    pub fn decode(datagram: &[u8]) -> Result<Header, WireError> {
        let _ = datagram;
        todo!()
    }

    /// Write the header into `out[..HEADER_LEN]`. Panics if `out` is shorter (caller bug).
    pub fn encode(&self, out: &mut [u8]) {
        let _ = out;
        todo!()
    }
}

impl<'a> Body<'a> {
    /// Decode a body of type `ptype` from `body` (the bytes between header and tag, already
    /// authenticated and decrypted).
    pub fn decode(ptype: PacketType, body: &'a [u8]) -> Result<Body<'a>, WireError> {
        let _ = (ptype, body);
        todo!()
    }

    /// Encode into `out`, returning the body length; `None` if `out` is too small.
    /// For `Data`, this copies the payload; the data path uses [`encode_data_prefix`] and writes
    /// the payload in place instead.
    pub fn encode(&self, out: &mut [u8]) -> Option<usize> {
        let _ = out;
        todo!()
    }

    pub fn packet_type(&self) -> PacketType {
        match self {
            Body::Data { .. } => PacketType::Data,
            Body::Nak { .. } => PacketType::Nak,
            Body::Feedback(_) => PacketType::Feedback,
            Body::Window(_) => PacketType::Window,
            Body::FileDone { .. } => PacketType::FileDone,
            Body::FileAck { .. } => PacketType::FileAck,
            Body::Complete => PacketType::Complete,
            Body::Abort { .. } => PacketType::Abort,
            Body::Keepalive => PacketType::Keepalive,
        }
    }
}

/// Write a NAK body with the given ranges (at most [`MAX_NAK_RANGES`]; more are ignored) into
/// `out`; returns the body length, or `None` if `out` is too small.
pub fn encode_nak(ranges: &[(u64, u64)], out: &mut [u8]) -> Option<usize> {
    let _ = (ranges, out);
    todo!()
}

/// Write the data prefix (file, offset) into `out[..DATA_PREFIX_LEN]`.
pub fn encode_data_prefix(file: u32, offset: u64, out: &mut [u8]) {
    let _ = (file, offset, out);
    todo!()
}
