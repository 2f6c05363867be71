//! Framing of the set-up byte stream (docs/protocol/09-setup.md §9.1): every message is
//! `u32 LE length ‖ bytes`, the length at most [`MAX_FRAME_LEN`].
//!
//! Invariant: a length over the cap is an error as soon as its 4 bytes arrive, before any byte
//! of the body is waited for, so a peer cannot make a reader reserve more than the cap.

use super::SetupError;

/// The largest frame body, in bytes (16 MiB): a manifest of about 100,000 long names fits.
pub const MAX_FRAME_LEN: usize = 16 << 20;
/// Bytes of the length prefix.
pub const FRAME_HEADER_LEN: usize = 4;

/// Prefix `payload` with its length. Errors if it exceeds the cap (our caller's bug or an
/// oversize manifest: the user's).
pub fn encode_frame(payload: &[u8]) -> Result<Vec<u8>, SetupError> {
    if payload.len() > MAX_FRAME_LEN {
        return Err(SetupError::FrameTooLong(payload.len()));
    }
    let mut out = Vec::with_capacity(FRAME_HEADER_LEN + payload.len());
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(payload);
    Ok(out)
}

/// The body length a frame header announces, checked against the cap.
pub fn parse_frame_len(header: [u8; FRAME_HEADER_LEN]) -> Result<usize, SetupError> {
    let len = u32::from_le_bytes(header) as usize;
    if len > MAX_FRAME_LEN {
        return Err(SetupError::FrameTooLong(len));
    }
    Ok(len)
}

/// Sans-IO frame reassembly: push whatever bytes the stream gave, poll whole frames out.
#[derive(Debug, Default)]
pub struct FrameDecoder {
    buf: Vec<u8>,
}

impl FrameDecoder {
    pub fn new() -> Self {
        FrameDecoder::default()
    }

    /// Append bytes read from the stream. Errors (and keeps nothing) once the buffered frame
    /// announces a length over the cap.
    pub fn handle_bytes(&mut self, bytes: &[u8]) -> Result<(), SetupError> {
        self.buf.extend_from_slice(bytes);
        self.check_header()
    }

    /// The next whole frame body, if one has arrived.
    pub fn poll_frame(&mut self) -> Result<Option<Vec<u8>>, SetupError> {
        let Some(len) = self.announced_len()? else { return Ok(None) };
        if self.buf.len() < FRAME_HEADER_LEN + len {
            return Ok(None);
        }
        let body = self.buf[FRAME_HEADER_LEN..FRAME_HEADER_LEN + len].to_vec();
        self.buf.drain(..FRAME_HEADER_LEN + len);
        self.check_header()?;
        Ok(Some(body))
    }

    /// Bytes buffered and not yet returned as a frame.
    pub fn buffered_len(&self) -> usize {
        self.buf.len()
    }

    fn announced_len(&self) -> Result<Option<usize>, SetupError> {
        match self.buf.first_chunk::<FRAME_HEADER_LEN>() {
            Some(h) => parse_frame_len(*h).map(Some),
            None => Ok(None),
        }
    }

    fn check_header(&mut self) -> Result<(), SetupError> {
        if let Err(e) = self.announced_len() {
            self.buf.clear();
            return Err(e);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn over_cap_length_is_refused_before_the_body() {
        let mut d = FrameDecoder::new();
        let header = ((MAX_FRAME_LEN + 1) as u32).to_le_bytes();
        assert_eq!(d.handle_bytes(&header), Err(SetupError::FrameTooLong(MAX_FRAME_LEN + 1)));
        assert_eq!(d.buffered_len(), 0);
        assert!(encode_frame(&vec![0u8; MAX_FRAME_LEN + 1]).is_err());
    }

    proptest! {
        #[test]
        fn frames_round_trip_whatever_the_split(
            bodies in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..300), 0..8),
            split in 1usize..64,
        ) {
            let mut stream = Vec::new();
            for b in &bodies {
                stream.extend(encode_frame(b).unwrap());
            }
            let mut d = FrameDecoder::new();
            let mut out = Vec::new();
            for chunk in stream.chunks(split) {
                d.handle_bytes(chunk).unwrap();
                while let Some(f) = d.poll_frame().unwrap() {
                    out.push(f);
                }
            }
            prop_assert_eq!(out, bodies);
            prop_assert_eq!(d.buffered_len(), 0);
        }

        #[test]
        fn decoder_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
            let mut d = FrameDecoder::new();
            if d.handle_bytes(&bytes).is_ok() {
                while let Ok(Some(_)) = d.poll_frame() {}
            }
        }
    }
}
