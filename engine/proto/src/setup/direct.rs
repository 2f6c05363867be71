//! Direct mode's greeting and key derivation (docs/protocol/09-setup.md §9.2): a 32-byte
//! pre-shared key, two plaintext hellos, then HKDF-SHA256 to the control keys and the data
//! plane's session secret.
//!
//! Invariants: the randoms are arguments (sans-IO); the PSK, the control keys and the session
//! secret zeroize on drop and never print (redacting `Debug`); the client-to-server and
//! server-to-client control keys differ, so the two directions never share a (key, nonce).

use super::channel::{ControlKey, SealedChannel};
use super::{Hello, Message, SETUP_VERSION, SetupError};
use crate::crypto::SessionSecret;
use hkdf::Hkdf;
use sha2::{Digest, Sha256};
use zeroize::{Zeroize, ZeroizeOnDrop};

const INFO_C2S: &[u8] = b"haul/1 direct control c2s";
const INFO_S2C: &[u8] = b"haul/1 direct control s2c";
const INFO_SESSION: &[u8] = b"haul/1 direct session";

/// The pre-shared key of direct mode. Zeroized on drop; `Debug` redacts it.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct Psk([u8; 32]);

impl core::fmt::Debug for Psk {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("Psk(<redacted>)")
    }
}

impl Psk {
    pub fn new(bytes: [u8; 32]) -> Self {
        Psk(bytes)
    }

    /// Parse the key file format: 64 hex digits, optionally followed by one newline.
    pub fn from_hex(text: &str) -> Result<Psk, SetupError> {
        let text = text.strip_suffix('\n').unwrap_or(text);
        if text.len() != 64 {
            return Err(SetupError::BadKey("expected 64 hex digits and a newline"));
        }
        let mut key = [0u8; 32];
        for (i, pair) in text.as_bytes().chunks_exact(2).enumerate() {
            let hi = hex_digit(pair[0]);
            let lo = hex_digit(pair[1]);
            match (hi, lo) {
                (Some(h), Some(l)) => key[i] = h << 4 | l,
                _ => {
                    key.zeroize();
                    return Err(SetupError::BadKey("a character is not a hex digit"));
                }
            }
        }
        Ok(Psk(key))
    }

    /// The key file format: 64 lowercase hex digits and a newline.
    pub fn to_hex(&self) -> String {
        let mut s = String::with_capacity(65);
        for b in self.0 {
            s.push(char::from(b"0123456789abcdef"[usize::from(b >> 4)]));
            s.push(char::from(b"0123456789abcdef"[usize::from(b & 15)]));
        }
        s.push('\n');
        s
    }
}

fn hex_digit(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// The client before the server's hello.
#[derive(Debug)]
pub struct ClientHello {
    psk: Psk,
    random: [u8; 32],
    hello: Vec<u8>,
}

impl ClientHello {
    pub fn new(psk: Psk, client_random: [u8; 32]) -> Self {
        let hello =
            Message::Hello(Hello { version: SETUP_VERSION, random: client_random }).encode();
        ClientHello { psk, random: client_random, hello }
    }

    /// The frame body to send first (plaintext).
    pub fn hello_frame(&self) -> &[u8] {
        &self.hello
    }

    /// Take the server's hello; derive the keys.
    pub fn handle_server_hello(self, frame: &[u8]) -> Result<Established, SetupError> {
        let server_random = parse_hello(frame)?;
        Ok(Established::derive(&self.psk, self.random, server_random, &self.hello, frame, true))
    }
}

/// The server's side of the greeting: check the client's hello, answer with ours, derive keys.
/// Returns the established state and the frame body to send back (plaintext).
pub fn server_handle_hello(
    psk: &Psk,
    server_random: [u8; 32],
    frame: &[u8],
) -> Result<(Established, Vec<u8>), SetupError> {
    let client_random = parse_hello(frame)?;
    let reply = Message::Hello(Hello { version: SETUP_VERSION, random: server_random }).encode();
    let est = Established::derive(psk, client_random, server_random, frame, &reply, false);
    Ok((est, reply))
}

fn parse_hello(frame: &[u8]) -> Result<[u8; 32], SetupError> {
    match Message::decode(frame)? {
        Message::Hello(h) if h.version == SETUP_VERSION => Ok(h.random),
        Message::Hello(h) => Err(SetupError::Version(h.version)),
        other => Err(SetupError::Unexpected { expected: "Hello", got: other.name() }),
    }
}

/// Both hellos exchanged: the sealed control channel and the data plane's key material.
#[derive(Debug)]
pub struct Established {
    pub channel: SealedChannel,
    secret: SessionSecret,
    pub client_random: [u8; 32],
    pub server_random: [u8; 32],
    /// SHA-256(client hello ‖ server hello): the Offer carries it (§9.3.2).
    pub transcript: [u8; 32],
}

impl Established {
    fn derive(
        psk: &Psk,
        client_random: [u8; 32],
        server_random: [u8; 32],
        client_hello: &[u8],
        server_hello: &[u8],
        is_client: bool,
    ) -> Self {
        let mut salt = [0u8; 64];
        salt[..32].copy_from_slice(&client_random);
        salt[32..].copy_from_slice(&server_random);
        let hk = Hkdf::<Sha256>::new(Some(&salt), &psk.0);
        let mut c2s = ControlKey([0; 16]);
        let mut s2c = ControlKey([0; 16]);
        let mut secret = SessionSecret([0; 32]);
        // Expand refuses only outputs over 255 * 32 bytes; ours are 16 and 32.
        for (info, out) in [
            (INFO_C2S, &mut c2s.0[..]),
            (INFO_S2C, &mut s2c.0[..]),
            (INFO_SESSION, &mut secret.0[..]),
        ] {
            if hk.expand(info, out).is_err() {
                unreachable!("HKDF-SHA256 expands up to 8160 bytes");
            }
        }
        let channel =
            if is_client { SealedChannel::new(&c2s, &s2c) } else { SealedChannel::new(&s2c, &c2s) };
        let mut h = Sha256::new();
        h.update(client_hello);
        h.update(server_hello);
        let transcript: [u8; 32] = h.finalize().into();
        Established { channel, secret, client_random, server_random, transcript }
    }

    /// The data plane's IKM for `KeySchedule::new`.
    pub fn secret(&self) -> &SessionSecret {
        &self.secret
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::setup::Channel;

    fn handshake(client_psk: [u8; 32], server_psk: [u8; 32]) -> (Established, Established) {
        let c = ClientHello::new(Psk::new(client_psk), [1; 32]);
        let (s, reply) =
            server_handle_hello(&Psk::new(server_psk), [2; 32], c.hello_frame()).unwrap();
        (c.handle_server_hello(&reply).unwrap(), s)
    }

    #[test]
    fn same_psk_same_keys_and_transcript() {
        let (mut c, mut s) = handshake([7; 32], [7; 32]);
        assert_eq!(c.transcript, s.transcript);
        assert_eq!(c.secret().0, s.secret().0);
        let f = c.channel.seal(&Message::Bye).unwrap();
        assert_eq!(s.channel.open(&f), Ok(Message::Bye));
        let f = s.channel.seal(&Message::Bye).unwrap();
        assert_eq!(c.channel.open(&f), Ok(Message::Bye));
    }

    #[test]
    fn wrong_psk_fails_to_open_the_first_sealed_frame() {
        let (mut c, mut s) = handshake([7; 32], [8; 32]);
        assert_ne!(c.secret().0, s.secret().0);
        let f = c.channel.seal(&Message::Bye).unwrap();
        assert_eq!(s.channel.open(&f), Err(SetupError::Unauthenticated));
    }

    #[test]
    fn fresh_randoms_give_fresh_keys() {
        let a = ClientHello::new(Psk::new([7; 32]), [1; 32]);
        let b = ClientHello::new(Psk::new([7; 32]), [3; 32]);
        let (s1, r1) = server_handle_hello(&Psk::new([7; 32]), [2; 32], a.hello_frame()).unwrap();
        let (s2, _) = server_handle_hello(&Psk::new([7; 32]), [2; 32], b.hello_frame()).unwrap();
        assert_ne!(s1.secret().0, s2.secret().0);
        assert_ne!(s1.transcript, s2.transcript);
        assert!(a.handle_server_hello(&r1).is_ok());
    }

    #[test]
    fn hello_of_another_version_is_refused() {
        let mut hello = Message::Hello(Hello { version: 2, random: [0; 32] }).encode();
        assert_eq!(
            server_handle_hello(&Psk::new([0; 32]), [0; 32], &hello).map(|_| ()),
            Err(SetupError::Version(2))
        );
        hello[1] = 6; // a Bye with trailing bytes
        assert!(server_handle_hello(&Psk::new([0; 32]), [0; 32], &hello).is_err());
    }

    #[test]
    fn psk_hex_round_trip_and_refusals() {
        let k = Psk::new([0xa5; 32]);
        let hex = k.to_hex();
        assert_eq!(hex.len(), 65);
        assert_eq!(Psk::from_hex(&hex).unwrap().0, [0xa5; 32]);
        assert_eq!(Psk::from_hex(&hex.to_uppercase()).unwrap().0, [0xa5; 32]);
        assert!(Psk::from_hex(&hex[..64]).is_ok(), "the newline is optional");
        assert!(Psk::from_hex(&hex[..62]).is_err());
        assert!(Psk::from_hex(&format!("{}zz\n", &hex[..62])).is_err());
        assert!(Psk::from_hex(&format!("{hex}\n")).is_err());
        assert_eq!(format!("{k:?}"), "Psk(<redacted>)");
    }
}
