//! TOTP (RFC 6238: HMAC-SHA1, 30-second steps, 6 digits) for the optional second factor.
//!
//! Invariants: pure (time is an argument); a code is accepted for the current step or one step
//! either side (clock drift), and only for a step later than the last one accepted, so a code
//! seen over someone's shoulder cannot be replayed; codes are compared in constant time.

use hmac::{Hmac, KeyInit, Mac};
use sha1::Sha1;

/// Secret length in bytes (RFC 4226 recommends 160 bits).
pub const SECRET_BYTES: usize = 20;
/// The step, in seconds.
pub const STEP_S: u64 = 30;
/// Digits per code.
pub const DIGITS: u32 = 6;
/// Steps of drift accepted either side of now.
pub const DRIFT_STEPS: u64 = 1;

/// The HOTP value of `secret` at counter `step` (RFC 4226 section 5.3).
fn hotp(secret: &[u8], step: u64) -> u32 {
    let mut m = <Hmac<Sha1> as KeyInit>::new_from_slice(secret)
        .unwrap_or_else(|_| <Hmac<Sha1> as KeyInit>::new(&Default::default()));
    m.update(&step.to_be_bytes());
    let h = m.finalize().into_bytes();
    let off = usize::from(h[h.len() - 1] & 0x0f);
    let bin = u32::from_be_bytes([h[off] & 0x7f, h[off + 1], h[off + 2], h[off + 3]]);
    bin % 10u32.pow(DIGITS)
}

/// The code for `now_s`, zero-padded (used by tests and by the set-up page's check).
pub fn code_at(secret: &[u8], now_s: u64) -> String {
    format!("{:0width$}", hotp(secret, now_s / STEP_S), width = DIGITS as usize)
}

/// If `code` is valid at `now_s` for a step after `last_step`, the step it matched.
pub fn verify(secret: &[u8], code: &str, now_s: u64, last_step: Option<u64>) -> Option<u64> {
    let code = code.trim();
    if code.len() != DIGITS as usize || !code.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let now_step = now_s / STEP_S;
    let mut matched = None;
    for step in now_step.saturating_sub(DRIFT_STEPS)..=now_step + DRIFT_STEPS {
        let expect = code_at(secret, step * STEP_S);
        // Constant time over the digits; every candidate step is computed.
        let same = expect.bytes().zip(code.bytes()).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0;
        if same && last_step.is_none_or(|l| step > l) && matched.is_none() {
            matched = Some(step);
        }
    }
    matched
}

/// RFC 4648 base32 without padding: how authenticator apps take the secret.
pub fn base32(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let mut out = String::with_capacity(bytes.len().div_ceil(5) * 8);
    for chunk in bytes.chunks(5) {
        let mut buf = [0u8; 5];
        buf[..chunk.len()].copy_from_slice(chunk);
        let v = buf.iter().fold(0u64, |acc, &b| (acc << 8) | u64::from(b));
        let chars = (chunk.len() * 8).div_ceil(5);
        for i in 0..chars {
            out.push(char::from(ALPHABET[((v >> (35 - 5 * i)) & 31) as usize]));
        }
    }
    out
}

/// The `otpauth://` URI an authenticator app imports.
pub fn otpauth_uri(secret: &[u8], issuer: &str, account: &str) -> String {
    let enc = super::views::percent_encode;
    format!(
        "otpauth://totp/{}:{}?secret={}&issuer={}&algorithm=SHA1&digits={DIGITS}&period={STEP_S}",
        enc(issuer),
        enc(account),
        base32(secret),
        enc(issuer)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const RFC_SECRET: &[u8] = b"12345678901234567890";

    #[test]
    fn rfc6238_sha1_vectors() {
        // RFC 6238 appendix B, SHA1, last six digits of the eight-digit values.
        for (t, code) in [
            (59, "287082"),
            (1_111_111_109, "081804"),
            (1_234_567_890, "005924"),
            (2_000_000_000, "279037"),
        ] {
            assert_eq!(code_at(RFC_SECRET, t), code, "t={t}");
        }
    }

    #[test]
    fn drift_and_replay() {
        let now = 1_234_567_890;
        let code = code_at(RFC_SECRET, now - STEP_S);
        let step = verify(RFC_SECRET, &code, now, None).unwrap();
        assert_eq!(verify(RFC_SECRET, &code, now, Some(step)), None, "replayed");
        assert_eq!(verify(RFC_SECRET, &code_at(RFC_SECRET, now - 3 * STEP_S), now, None), None);
        assert_eq!(verify(RFC_SECRET, "12345", now, None), None);
        assert_eq!(verify(RFC_SECRET, "abcdef", now, None), None);
    }

    #[test]
    fn base32_matches_rfc4648() {
        assert_eq!(base32(b"foobar"), "MZXW6YTBOI");
        assert_eq!(base32(b"f"), "MY");
        assert_eq!(base32(b""), "");
    }
}
