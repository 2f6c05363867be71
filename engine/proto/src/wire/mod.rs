//! The wire format (docs/protocol/02-wire.md, docs/PROTOCOL.md §2): a fixed, versioned header, a
//! typed body, a tag.
//!
//! ```text
//! datagram = header (HEADER_LEN) ‖ body (sealed) ‖ tag (crypto::TAG_LEN)
//! ```
//!
//! Decoding never panics on any bytes and never allocates; it returns [`WireError`] saying what
//! was wrong. Decoding the header happens before authentication (to find the session, shard and
//! sequence number); decoding the body happens only after the tag has verified.
//!
//! Invariants (docs/protocol/02-wire.md):
//! - Every integer is little-endian; every body has an exact length for its type (a data body
//!   carries at least one payload byte, a NAK exactly `2 + 16·count` bytes).
//! - What decodes re-encodes to the same bytes, and what encodes decodes to the same value
//!   ([`fuzz_check_decode`] asserts both; the proptests and the fuzz target call it).
//! - Encoding never writes past `out`: it returns `None` when `out` is too small.

mod codec;
mod fuzz;
#[cfg(test)]
mod tests;

pub use codec::{encode_data_prefix, encode_nak};
pub use fuzz::fuzz_check_decode;

use thiserror::Error;

/// The protocol version this build speaks. A datagram with another version is rejected.
pub const VERSION: u8 = 1;
/// Bytes in the fixed header.
pub const HEADER_LEN: usize = 24;
/// Bytes in a data body before its payload: file (u32) and offset (u64).
pub const DATA_PREFIX_LEN: usize = 12;
/// Bytes of a probe body before its padding: the probe id (u32).
pub const PROBE_PREFIX_LEN: usize = 4;
/// Bytes of a probe-ack body: probe id (u32) and the size that arrived (u16).
pub const PROBE_ACK_LEN: usize = 6;
/// Most NAK ranges one NAK datagram carries.
pub const MAX_NAK_RANGES: usize = 64;
/// Bytes of one NAK range on the wire: `start u64, end u64`.
pub const NAK_PAIR_LEN: usize = 16;

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
    /// Sender → receiver: a path-MTU probe, padded to the size it tests; carries no file data.
    Probe = 10,
    /// Receiver → sender: this probe arrived, at this size. Small and fixed, so a probe can
    /// never be turned into an amplifier.
    ProbeAck = 11,
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
    Data {
        file: u32,
        offset: u64,
        payload: &'a [u8],
    },
    Nak {
        ranges: NakRanges<'a>,
    },
    Feedback(Feedback),
    Window(Window),
    FileDone {
        file: u32,
        size: u64,
        hash: [u8; 32],
    },
    FileAck {
        file: u32,
        status: FileStatus,
    },
    Complete,
    Abort {
        reason: u16,
    },
    Keepalive,
    /// A path-MTU probe: its id, then `pad` zero bytes that bring it to the probed size.
    Probe {
        id: u32,
        pad: usize,
    },
    /// A probe arrived: its id and its whole datagram length as received.
    ProbeAck {
        id: u32,
        size: u16,
    },
}

/// The ranges of a NAK, as `(start, end)` half-open pairs with `start < end`, read lazily from
/// the buffer. Decoding has already checked the count and that every pair is well formed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NakRanges<'a> {
    raw: &'a [u8],
}

impl<'a> NakRanges<'a> {
    pub fn len(&self) -> usize {
        self.raw.len() / NAK_PAIR_LEN
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    pub fn iter(&self) -> impl Iterator<Item = (u64, u64)> + 'a {
        let (pairs, _) = self.raw.as_chunks::<NAK_PAIR_LEN>();
        pairs.iter().map(codec::nak_pair)
    }
}

impl Body<'_> {
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
            Body::Probe { .. } => PacketType::Probe,
            Body::ProbeAck { .. } => PacketType::ProbeAck,
        }
    }
}

impl PacketType {
    /// Every packet type, in wire order.
    pub const ALL: [PacketType; 11] = [
        PacketType::Data,
        PacketType::Nak,
        PacketType::Feedback,
        PacketType::Window,
        PacketType::FileDone,
        PacketType::FileAck,
        PacketType::Complete,
        PacketType::Abort,
        PacketType::Keepalive,
        PacketType::Probe,
        PacketType::ProbeAck,
    ];

    /// The type with wire value `v`, if there is one.
    pub const fn from_u8(v: u8) -> Option<PacketType> {
        match v {
            1 => Some(PacketType::Data),
            2 => Some(PacketType::Nak),
            3 => Some(PacketType::Feedback),
            4 => Some(PacketType::Window),
            5 => Some(PacketType::FileDone),
            6 => Some(PacketType::FileAck),
            7 => Some(PacketType::Complete),
            8 => Some(PacketType::Abort),
            9 => Some(PacketType::Keepalive),
            10 => Some(PacketType::Probe),
            11 => Some(PacketType::ProbeAck),
            _ => None,
        }
    }
}

impl FileStatus {
    /// The status with wire value `v`, if there is one.
    pub const fn from_u8(v: u8) -> Option<FileStatus> {
        match v {
            1 => Some(FileStatus::Verified),
            2 => Some(FileStatus::ChecksumMismatch),
            _ => None,
        }
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
