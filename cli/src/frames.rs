//! Blocking frame I/O for the set-up channel over a TCP stream (docs/protocol/09-setup.md
//! §9.1). The framing rules and the length cap live in `haul_proto::setup::frame`.

use anyhow::{Context, Result, bail};
use haul_proto::setup::{Channel, Message, SetupError, encode_frame, parse_frame_len};
use std::io::{ErrorKind, Read, Write};

pub fn write_frame(stream: &mut impl Write, body: &[u8]) -> Result<()> {
    let frame = encode_frame(body)?;
    stream.write_all(&frame).and_then(|()| stream.flush()).context("writing to the set-up channel")
}

/// The next frame body; `None` if the peer closed the stream between frames.
pub fn read_frame(stream: &mut impl Read) -> Result<Option<Vec<u8>>> {
    let mut header = [0u8; 4];
    match stream.read_exact(&mut header) {
        Ok(()) => {}
        Err(e) if e.kind() == ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
            bail!("the peer said nothing on the set-up channel in time")
        }
        Err(e) => return Err(e).context("reading the set-up channel"),
    }
    let len = parse_frame_len(header)?;
    let mut body = vec![0u8; len];
    stream.read_exact(&mut body).context("reading the set-up channel (frame cut short)")?;
    Ok(Some(body))
}

/// Read, open and return the next message; `what` names it for errors.
pub fn read_message(
    stream: &mut impl Read,
    channel: &mut dyn Channel,
    what: &str,
) -> Result<Message> {
    match read_frame(stream)? {
        Some(frame) => Ok(channel.open(&frame)?),
        None => bail!("the peer closed the set-up channel before its {what}"),
    }
}

pub fn send_message(
    stream: &mut impl Write,
    channel: &mut dyn Channel,
    msg: &Message,
) -> Result<()> {
    let body = channel.seal(msg)?;
    write_frame(stream, &body)
}

/// Whether an error chain holds a sealed frame that failed to open.
pub fn is_unauthenticated(e: &anyhow::Error) -> bool {
    e.chain().any(|c| c.downcast_ref::<SetupError>() == Some(&SetupError::Unauthenticated))
}
