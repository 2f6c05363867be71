//! The byte-level codec for [`Header`] and [`Body`] (docs/protocol/02-wire.md).
//!
//! Decoding reads through a [`Reader`] that returns `BadLength` when it runs out and never
//! indexes out of bounds, so no input can panic it; every body must be consumed exactly.
//! Encoding writes through a [`Writer`] that returns `None` when `out` is too small.

use super::{
    Body, DATA_PREFIX_LEN, Feedback, FileStatus, HEADER_LEN, Header, MAX_NAK_RANGES, NAK_PAIR_LEN,
    NakRanges, PacketType, VERSION, Window, WireError,
};
use crate::crypto::TAG_LEN;

/// Reads little-endian fields off the front of a byte slice.
struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Reader { rest: bytes }
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], WireError> {
        let (head, rest) = self.rest.split_first_chunk::<N>().ok_or(WireError::BadLength)?;
        self.rest = rest;
        Ok(*head)
    }

    fn u8(&mut self) -> Result<u8, WireError> {
        self.array::<1>().map(|[b]| b)
    }

    fn u16(&mut self) -> Result<u16, WireError> {
        self.array().map(u16::from_le_bytes)
    }

    fn u32(&mut self) -> Result<u32, WireError> {
        self.array().map(u32::from_le_bytes)
    }

    fn u64(&mut self) -> Result<u64, WireError> {
        self.array().map(u64::from_le_bytes)
    }

    /// Everything left, consuming it.
    fn remaining(&mut self) -> &'a [u8] {
        core::mem::take(&mut self.rest)
    }

    /// The body must end exactly here.
    fn finish(self) -> Result<(), WireError> {
        if self.rest.is_empty() { Ok(()) } else { Err(WireError::BadLength) }
    }
}

/// Writes little-endian fields into a byte slice, refusing to run past its end.
struct Writer<'o> {
    out: &'o mut [u8],
    len: usize,
}

impl<'o> Writer<'o> {
    fn new(out: &'o mut [u8]) -> Self {
        Writer { out, len: 0 }
    }

    fn put(&mut self, bytes: &[u8]) -> Option<()> {
        let end = self.len.checked_add(bytes.len())?;
        self.out.get_mut(self.len..end)?.copy_from_slice(bytes);
        self.len = end;
        Some(())
    }
}

/// One NAK pair from its 16 wire bytes.
pub(super) fn nak_pair(pair: &[u8; NAK_PAIR_LEN]) -> (u64, u64) {
    let (start, end) = pair.split_at(8);
    let mut s = [0u8; 8];
    let mut e = [0u8; 8];
    s.copy_from_slice(start);
    e.copy_from_slice(end);
    (u64::from_le_bytes(s), u64::from_le_bytes(e))
}

impl Header {
    /// Decode the header of a datagram (the whole datagram, tag included). Checks the version,
    /// type, flags, and that the datagram is long enough for header + tag.
    pub fn decode(datagram: &[u8]) -> Result<Header, WireError> {
        if datagram.len() < HEADER_LEN + TAG_LEN {
            return Err(WireError::TooShort);
        }
        let mut r = Reader::new(datagram);
        // The length check above covers every read below; `TooShort` keeps the error honest.
        let [version, ptype, shard, flags] = r.array::<4>().map_err(|_| WireError::TooShort)?;
        if version != VERSION {
            return Err(WireError::BadVersion(version));
        }
        let ptype = PacketType::from_u8(ptype).ok_or(WireError::BadType(ptype))?;
        if flags != 0 {
            return Err(WireError::BadFlags);
        }
        let session_id = r.u64().map_err(|_| WireError::TooShort)?;
        let seq = r.u64().map_err(|_| WireError::TooShort)?;
        let timestamp_us = r.u32().map_err(|_| WireError::TooShort)?;
        Ok(Header { ptype, shard, session_id, seq, timestamp_us })
    }

    /// Write the header into `out[..HEADER_LEN]`, flags 0. Panics if `out` is shorter (caller
    /// bug: every datagram buffer is sized for header + body + tag before it is filled).
    pub fn encode(&self, out: &mut [u8]) {
        let out = &mut out[..HEADER_LEN];
        out[0] = VERSION;
        out[1] = self.ptype as u8;
        out[2] = self.shard;
        out[3] = 0;
        out[4..12].copy_from_slice(&self.session_id.to_le_bytes());
        out[12..20].copy_from_slice(&self.seq.to_le_bytes());
        out[20..24].copy_from_slice(&self.timestamp_us.to_le_bytes());
    }
}

impl<'a> Body<'a> {
    /// Decode a body of type `ptype` from `body` (the bytes between header and tag, already
    /// authenticated and decrypted).
    pub fn decode(ptype: PacketType, body: &'a [u8]) -> Result<Body<'a>, WireError> {
        let mut r = Reader::new(body);
        let decoded = match ptype {
            PacketType::Data => {
                let file = r.u32()?;
                let offset = r.u64()?;
                let payload = r.remaining();
                if payload.is_empty() {
                    return Err(WireError::BadLength);
                }
                Body::Data { file, offset, payload }
            }
            PacketType::Nak => Body::Nak { ranges: decode_nak(&mut r)? },
            PacketType::Feedback => Body::Feedback(Feedback {
                recv_bytes: r.u64()?,
                ts_echo_us: r.u32()?,
                echo_delay_us: r.u32()?,
                owd_us_min: r.u32()?,
                owd_us_last: r.u32()?,
                datagrams: r.u32()?,
            }),
            PacketType::Window => {
                let window = Window { cum_ack: r.u64()?, limit: r.u64()? };
                if window.cum_ack > window.limit {
                    return Err(WireError::BadField);
                }
                Body::Window(window)
            }
            PacketType::FileDone => {
                Body::FileDone { file: r.u32()?, size: r.u64()?, hash: r.array()? }
            }
            PacketType::FileAck => {
                let file = r.u32()?;
                let status = FileStatus::from_u8(r.u8()?).ok_or(WireError::BadField)?;
                Body::FileAck { file, status }
            }
            PacketType::Complete => Body::Complete,
            PacketType::Abort => Body::Abort { reason: r.u16()? },
            PacketType::Keepalive => Body::Keepalive,
            PacketType::Probe => {
                let id = r.u32()?;
                let pad = r.remaining();
                // Zero padding only: a probe carries nothing but its size.
                if pad.iter().any(|&b| b != 0) {
                    return Err(WireError::BadField);
                }
                Body::Probe { id, pad: pad.len() }
            }
            PacketType::ProbeAck => Body::ProbeAck { id: r.u32()?, size: r.u16()? },
        };
        r.finish()?;
        Ok(decoded)
    }

    /// Encode into `out`, returning the body length; `None` if `out` is too small.
    /// For `Data`, this copies the payload; the data path uses [`encode_data_prefix`] and writes
    /// the payload in place instead.
    pub fn encode(&self, out: &mut [u8]) -> Option<usize> {
        let mut w = Writer::new(out);
        match self {
            Body::Data { file, offset, payload } => {
                w.put(&file.to_le_bytes())?;
                w.put(&offset.to_le_bytes())?;
                w.put(payload)?;
            }
            Body::Nak { ranges } => {
                // `ranges` came from `decode_nak`, so its count fits in a u16.
                w.put(&(ranges.len() as u16).to_le_bytes())?;
                w.put(ranges.raw)?;
            }
            Body::Feedback(f) => {
                w.put(&f.recv_bytes.to_le_bytes())?;
                w.put(&f.ts_echo_us.to_le_bytes())?;
                w.put(&f.echo_delay_us.to_le_bytes())?;
                w.put(&f.owd_us_min.to_le_bytes())?;
                w.put(&f.owd_us_last.to_le_bytes())?;
                w.put(&f.datagrams.to_le_bytes())?;
            }
            Body::Window(win) => {
                w.put(&win.cum_ack.to_le_bytes())?;
                w.put(&win.limit.to_le_bytes())?;
            }
            Body::FileDone { file, size, hash } => {
                w.put(&file.to_le_bytes())?;
                w.put(&size.to_le_bytes())?;
                w.put(hash)?;
            }
            Body::FileAck { file, status } => {
                w.put(&file.to_le_bytes())?;
                w.put(&[*status as u8])?;
            }
            Body::Complete | Body::Keepalive => {}
            Body::Abort { reason } => w.put(&reason.to_le_bytes())?,
            Body::Probe { id, pad } => {
                w.put(&id.to_le_bytes())?;
                let end = w.len.checked_add(*pad)?;
                w.out.get_mut(w.len..end)?.fill(0);
                w.len = end;
            }
            Body::ProbeAck { id, size } => {
                w.put(&id.to_le_bytes())?;
                w.put(&size.to_le_bytes())?;
            }
        }
        Some(w.len)
    }
}

/// The NAK body: `count u16` in `1..=MAX_NAK_RANGES`, then exactly `count` well-formed pairs.
fn decode_nak<'a>(r: &mut Reader<'a>) -> Result<NakRanges<'a>, WireError> {
    let count = usize::from(r.u16()?);
    if count == 0 || count > MAX_NAK_RANGES {
        return Err(WireError::BadField);
    }
    let raw = r.remaining();
    if raw.len() != count * NAK_PAIR_LEN {
        return Err(WireError::BadLength);
    }
    let (pairs, _) = raw.as_chunks::<NAK_PAIR_LEN>();
    if pairs.iter().map(nak_pair).any(|(start, end)| start >= end) {
        return Err(WireError::BadField);
    }
    Ok(NakRanges { raw })
}

/// Write a NAK body with the given ranges (at most [`MAX_NAK_RANGES`]; more are ignored) into
/// `out`; returns the body length, or `None` if `out` is too small.
///
/// Also `None`, writing nothing the peer would reject, if `ranges` is empty or holds a pair
/// with `start >= end`: such a NAK does not decode (docs/protocol/02-wire.md), so asking for
/// one is a caller bug.
pub fn encode_nak(ranges: &[(u64, u64)], out: &mut [u8]) -> Option<usize> {
    let ranges = &ranges[..ranges.len().min(MAX_NAK_RANGES)];
    if ranges.is_empty() || ranges.iter().any(|&(start, end)| start >= end) {
        return None;
    }
    let mut w = Writer::new(out);
    // At most MAX_NAK_RANGES (64), which fits in a u16.
    w.put(&(ranges.len() as u16).to_le_bytes())?;
    for &(start, end) in ranges {
        w.put(&start.to_le_bytes())?;
        w.put(&end.to_le_bytes())?;
    }
    Some(w.len)
}

/// Write the data prefix (file, offset) into `out[..DATA_PREFIX_LEN]`. Panics if `out` is
/// shorter (caller bug: the data path sizes its buffers for prefix + payload).
pub fn encode_data_prefix(file: u32, offset: u64, out: &mut [u8]) {
    let out = &mut out[..DATA_PREFIX_LEN];
    out[..4].copy_from_slice(&file.to_le_bytes());
    out[4..].copy_from_slice(&offset.to_le_bytes());
}
