//! Transfer tokens: sealing claims under the server secret, and opening them again.
//!
//! Layout (docs/TOKENS.md): `version u8 ‖ key id u32 ‖ nonce [12] ‖ AES-256-GCM(claims) ‖ tag
//! [16]`, base64url without padding. The key is the server secret's [`Purpose::Token`] sub-key
//! for that key id; the 17-byte header is the AEAD's associated data, so neither the version
//! nor the key id can be changed without the tag failing.
//!
//! Invariants:
//! - [`open`] is total: any string gives an [`OpenedToken`] or a [`TokenError`], never a
//!   panic (a property test feeds it arbitrary bytes). Length is checked before decoding.
//! - An [`OpenedToken`] is only built by [`open`]: authentic (AEAD), under a secret still valid,
//!   with well-formed claims, not expired at the time given. The authorizer then checks the
//!   rest (direction, user, paths, single use) and builds the `Grant`.
//! - Token text never reaches `Debug` or a log: [`MintedToken`] and `authz::SecretToken` are
//!   redacted; errors name the reason, never the token.
//! - Nonces are 96 random bits from the OS; with at most 2^32 tokens per secret (rotate well
//!   before), a repeat is negligible.

pub mod claims;
pub mod hostkey_pin;
pub mod minter;
pub mod path;

use std::fmt;

use aes_gcm::aead::{Aead, Payload};
use aes_gcm::{Aes256Gcm, KeyInit, Nonce};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use thiserror::Error;
use zeroize::Zeroizing;

use crate::authz::{Refusal, RefusalCode};
use crate::secret::{KeyLookup, Keyring, Purpose};
pub use claims::{Claims, ClaimsError, Extension};
pub use minter::{MintError, MintRequest, Minter, transfer_url};

/// The layout version this build writes and reads.
pub const TOKEN_VERSION: u8 = 1;
/// version + key id + nonce.
pub const HEADER_LEN: usize = 1 + 4 + NONCE_LEN;
const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;
/// Longest token text accepted (base64url characters); far above any token we mint.
pub const MAX_TOKEN_LEN: usize = 16 * 1024;

/// Why a token could not be minted or opened.
#[derive(Debug, Error)]
pub enum TokenError {
    /// Not a token: wrong encoding, length or version (the presenter's fault).
    #[error("malformed token: {0}")]
    Malformed(&'static str),
    /// Sealed under a secret this server does not know (another server, or long rotated out).
    #[error("token sealed under an unknown server secret (key id {0:08x})")]
    UnknownKey(u32),
    /// Sealed under the previous secret, whose grace period has ended.
    #[error("token sealed under a retired server secret (key id {key_id:08x}); its grace period ended at {}", crate::users::format_utc(*grace_ended_at_s))]
    RetiredKey { key_id: u32, grace_ended_at_s: i64 },
    /// The AEAD tag does not verify: altered, or forged.
    #[error("token does not verify (altered or forged)")]
    Tampered,
    #[error("token expired at {}", crate::users::format_utc(*expires_at_s))]
    Expired { expires_at_s: i64 },
    /// Authentic, but the claims do not parse or carry a requirement this build lacks.
    #[error("token claims refused: {0}")]
    Claims(#[from] ClaimsError),
    #[error("reading the OS random generator: {0}")]
    Random(getrandom::Error),
}

impl TokenError {
    /// The refusal the gate shows (code) and logs (detail).
    pub fn refusal(&self) -> Refusal {
        let code = match self {
            TokenError::Malformed(_) | TokenError::Claims(_) | TokenError::Random(_) => {
                RefusalCode::Malformed
            }
            TokenError::UnknownKey(_) | TokenError::RetiredKey { .. } => RefusalCode::UnknownKey,
            TokenError::Tampered => RefusalCode::Tampered,
            TokenError::Expired { .. } => RefusalCode::Expired,
        };
        Refusal { code, detail: self.to_string() }
    }
}

/// A freshly minted token. Its text is only reachable through [`MintedToken::expose`];
/// `Debug` is redacted and the text is zeroized on drop.
pub struct MintedToken(Zeroizing<String>);

impl MintedToken {
    /// The token text, to put in a URL.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for MintedToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MintedToken(<redacted>)")
    }
}

/// Seals `claims` under the keyring's current token sub-key.
pub fn mint(keyring: &Keyring, claims: &Claims) -> Result<MintedToken, TokenError> {
    claims.check()?;
    let key = keyring.subkey(Purpose::Token);
    let mut header = [0u8; HEADER_LEN];
    header[0] = TOKEN_VERSION;
    header[1..5].copy_from_slice(&key.key_id().to_be_bytes());
    getrandom::fill(&mut header[5..]).map_err(TokenError::Random)?;
    let aead = Aes256Gcm::new(&(*key.as_bytes()).into());
    let nonce = nonce_of(&header);
    let plain = Zeroizing::new(claims.encode());
    let sealed = aead
        .encrypt(&nonce, Payload { msg: &plain, aad: &header })
        .map_err(|_| TokenError::Malformed("claims too long to seal"))?;
    let mut raw = Vec::with_capacity(HEADER_LEN + sealed.len());
    raw.extend_from_slice(&header);
    raw.extend_from_slice(&sealed);
    Ok(MintedToken(Zeroizing::new(URL_SAFE_NO_PAD.encode(raw))))
}

fn nonce_of(header: &[u8; HEADER_LEN]) -> Nonce<aes_gcm::aead::consts::U12> {
    let mut n = [0u8; NONCE_LEN];
    n.copy_from_slice(&header[5..]);
    Nonce::from(n)
}

/// A token that opened: authentic, under a valid secret, well-formed, not expired at the
/// time given to [`open`]. Only [`open`] builds one.
#[derive(Debug)]
pub struct OpenedToken {
    claims: Claims,
    key_id: u32,
}

impl OpenedToken {
    pub fn claims(&self) -> &Claims {
        &self.claims
    }
    /// The id of the secret it was sealed under.
    pub fn key_id(&self) -> u32 {
        self.key_id
    }
}

/// Opens a token at `now_s` (unix seconds).
pub fn open(keyring: &Keyring, text: &str, now_s: i64) -> Result<OpenedToken, TokenError> {
    if text.len() > MAX_TOKEN_LEN {
        return Err(TokenError::Malformed("too long"));
    }
    let raw = Zeroizing::new(
        URL_SAFE_NO_PAD.decode(text.trim()).map_err(|_| TokenError::Malformed("not base64url"))?,
    );
    if raw.len() < HEADER_LEN + TAG_LEN {
        return Err(TokenError::Malformed("too short"));
    }
    let mut header = [0u8; HEADER_LEN];
    header.copy_from_slice(&raw[..HEADER_LEN]);
    if header[0] != TOKEN_VERSION {
        return Err(TokenError::Malformed("unknown token version"));
    }
    let key_id = u32::from_be_bytes([header[1], header[2], header[3], header[4]]);
    let key = keyring.subkey_for(Purpose::Token, key_id, now_s).map_err(|e| match e {
        KeyLookup::Unknown => TokenError::UnknownKey(key_id),
        KeyLookup::Retired { grace_ended_at_s } => {
            TokenError::RetiredKey { key_id, grace_ended_at_s }
        }
    })?;
    let aead = Aes256Gcm::new(&(*key.as_bytes()).into());
    let plain = Zeroizing::new(
        aead.decrypt(&nonce_of(&header), Payload { msg: &raw[HEADER_LEN..], aad: &header })
            .map_err(|_| TokenError::Tampered)?,
    );
    let claims = Claims::decode(&plain)?;
    if now_s >= claims.expires_at_s {
        return Err(TokenError::Expired { expires_at_s: claims.expires_at_s });
    }
    Ok(OpenedToken { claims, key_id })
}

/// A fresh random token id.
pub fn new_token_id() -> Result<[u8; 16], TokenError> {
    let mut id = [0u8; 16];
    getrandom::fill(&mut id).map_err(TokenError::Random)?;
    Ok(id)
}

#[cfg(test)]
mod tests;
