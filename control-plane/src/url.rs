//! The `haul://` transfer URL (docs/URL.md):
//! `haul://host[:port]/path?token=...&hostkey=SHA256:...&policy=...&rate=...&minrate=...&cipher=...`
//!
//! Invariants: parsing never panics on any input and bounds it ([`MAX_URL_LEN`]); the token is
//! held as a [`SecretToken`] (zeroized, redacted `Debug`) from the moment it is decoded, and
//! [`TransferUrl`]'s `Debug` never shows it; `cipher=`, `rate=`, `minrate=` and `policy=` are
//! requests that the gate checks and clamps; `hostkey=` is what the client pins.

use std::fmt::{self, Write as _};

use haul_proto::crypto::SuiteId;
use haul_proto::rate::Policy;
use zeroize::Zeroizing;

use crate::authz::SecretToken;

/// The SSH port of `haul serve` when a URL names none.
pub const DEFAULT_SSH_PORT: u16 = 33001;
/// Longest URL accepted (tokens are a few hundred bytes; paths at most 4096).
pub const MAX_URL_LEN: usize = 16 * 1024;

/// What is wrong with a URL: always the user's (or the minting server's) input.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum UrlError {
    #[error("not a haul:// URL")]
    Scheme,
    #[error("the URL is longer than {MAX_URL_LEN} bytes")]
    TooLong,
    #[error("the URL has no host")]
    NoHost,
    #[error("bad port in the URL")]
    Port,
    #[error("bad percent-encoding in the URL")]
    Encoding,
    #[error("the URL has no token=")]
    NoToken,
    #[error("the URL's {0}= is given twice")]
    Repeated(&'static str),
    #[error("the URL's {0}= value is not valid: {1}")]
    Value(&'static str, String),
}

/// A parsed transfer URL.
pub struct TransferUrl {
    pub host: String,
    pub port: u16,
    /// Decoded path, as the URL gives it (the gate confines it).
    pub path: String,
    pub token: SecretToken,
    /// `SHA256:...` pin of the server's host key.
    pub hostkey: Option<String>,
    pub policy: Option<Policy>,
    pub rate_bps: Option<u64>,
    pub min_rate_bps: Option<u64>,
    pub suite: Option<SuiteId>,
}

impl fmt::Debug for TransferUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TransferUrl")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("path", &self.path)
            .field("token", &self.token)
            .field("hostkey", &self.hostkey)
            .finish_non_exhaustive()
    }
}

fn hex_val(c: u8) -> Option<u8> {
    (c as char).to_digit(16).map(|d| d as u8)
}

/// Percent-decode (`+` stays `+`: base64 pins and tokens contain it).
fn decode(s: &str) -> Result<String, UrlError> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hi = b.get(i + 1).copied().and_then(hex_val).ok_or(UrlError::Encoding)?;
            let lo = b.get(i + 2).copied().and_then(hex_val).ok_or(UrlError::Encoding)?;
            out.push(hi << 4 | lo);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| UrlError::Encoding)
}

/// Percent-encode everything but unreserved characters (and `/` when `keep_slash`).
fn encode(s: &str, keep_slash: bool, out: &mut String) {
    for &c in s.as_bytes() {
        let plain = c.is_ascii_alphanumeric()
            || matches!(c, b'-' | b'_' | b'.' | b'~' | b':')
            || (keep_slash && c == b'/');
        if plain {
            out.push(c as char);
        } else {
            let _ = write!(out, "%{c:02X}");
        }
    }
}

/// A rate with an optional k/M/G suffix (powers of 1000), bits per second.
pub fn parse_rate(s: &str) -> Option<u64> {
    let (num, mul) = match s.as_bytes().last()? {
        b'k' | b'K' => (&s[..s.len() - 1], 1_000),
        b'm' | b'M' => (&s[..s.len() - 1], 1_000_000),
        b'g' | b'G' => (&s[..s.len() - 1], 1_000_000_000),
        _ => (s, 1),
    };
    num.parse::<u64>().ok()?.checked_mul(mul).filter(|v| *v > 0)
}

fn set<T>(slot: &mut Option<T>, name: &'static str, v: T) -> Result<(), UrlError> {
    if slot.replace(v).is_some() { Err(UrlError::Repeated(name)) } else { Ok(()) }
}

impl TransferUrl {
    pub fn parse(text: &str) -> Result<TransferUrl, UrlError> {
        let text = text.trim();
        if text.len() > MAX_URL_LEN {
            return Err(UrlError::TooLong);
        }
        let rest = text.strip_prefix("haul://").ok_or(UrlError::Scheme)?;
        let (authority, rest) = rest.split_at(rest.find(['/', '?']).unwrap_or(rest.len()));
        let (host, port) = split_host_port(authority)?;
        let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
        let mut u = TransferUrl {
            host,
            port,
            path: decode(path)?,
            token: SecretToken(Zeroizing::new(String::new())),
            hostkey: None,
            policy: None,
            rate_bps: None,
            min_rate_bps: None,
            suite: None,
        };
        let mut token = None;
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let v = Zeroizing::new(decode(v)?);
            let bad = |name: &'static str| UrlError::Value(name, v.chars().take(64).collect());
            match k {
                "token" => set(&mut token, "token", Zeroizing::new(v.to_string()))?,
                "hostkey" if v.starts_with("SHA256:") => {
                    set(&mut u.hostkey, "hostkey", v.to_string())?
                }
                "hostkey" => return Err(bad("hostkey")),
                "policy" => set(
                    &mut u.policy,
                    "policy",
                    Policy::from_name(&v).ok_or_else(|| bad("policy"))?,
                )?,
                "cipher" => set(
                    &mut u.suite,
                    "cipher",
                    SuiteId::from_name(&v).ok_or_else(|| bad("cipher"))?,
                )?,
                "rate" => set(&mut u.rate_bps, "rate", parse_rate(&v).ok_or_else(|| bad("rate"))?)?,
                "minrate" => set(
                    &mut u.min_rate_bps,
                    "minrate",
                    parse_rate(&v).ok_or_else(|| bad("minrate"))?,
                )?,
                // Unknown keys are ignored so later servers can add requests.
                _ => {}
            }
        }
        u.token = SecretToken(token.filter(|t| !t.is_empty()).ok_or(UrlError::NoToken)?);
        Ok(u)
    }

    /// The URL text; the token is in it, so this is for printing to the user who asked for it.
    pub fn to_url_string(&self) -> Zeroizing<String> {
        let mut s = String::from("haul://");
        if self.host.contains(':') {
            let _ = write!(s, "[{}]", self.host);
        } else {
            s.push_str(&self.host);
        }
        if self.port != DEFAULT_SSH_PORT {
            let _ = write!(s, ":{}", self.port);
        }
        if !self.path.starts_with('/') {
            s.push('/');
        }
        encode(&self.path, true, &mut s);
        s.push_str("?token=");
        encode(&self.token.0, false, &mut s);
        if let Some(h) = &self.hostkey {
            s.push_str("&hostkey=");
            encode(h, false, &mut s);
        }
        if let Some(p) = self.policy {
            let _ = write!(s, "&policy={}", p.name());
        }
        if let Some(r) = self.rate_bps {
            let _ = write!(s, "&rate={r}");
        }
        if let Some(r) = self.min_rate_bps {
            let _ = write!(s, "&minrate={r}");
        }
        if let Some(c) = self.suite {
            let _ = write!(s, "&cipher={}", c.name());
        }
        Zeroizing::new(s)
    }
}

fn split_host_port(authority: &str) -> Result<(String, u16), UrlError> {
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (h, after) = v6.split_once(']').ok_or(UrlError::NoHost)?;
        (h, after.strip_prefix(':'))
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        }
    };
    if host.is_empty() || host.contains(['@', ' ']) {
        return Err(UrlError::NoHost);
    }
    let port = match port {
        None => DEFAULT_SSH_PORT,
        Some(p) => p.parse::<u16>().ok().filter(|p| *p != 0).ok_or(UrlError::Port)?,
    };
    Ok((host.to_string(), port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_with_every_field() {
        let text = "haul://example.org:2222/pkg/a%20b.bin?token=AbC-_%2B%2F%3D&hostkey=SHA256:x%2By%2Fz&policy=low&rate=100M&minrate=1000&cipher=aes128-gcm";
        let u = TransferUrl::parse(text).unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.path.as_str()),
            ("example.org", 2222, "/pkg/a b.bin")
        );
        assert_eq!(u.token.0.as_str(), "AbC-_+/=");
        assert_eq!(u.hostkey.as_deref(), Some("SHA256:x+y/z"));
        assert_eq!(
            (u.policy, u.rate_bps, u.min_rate_bps),
            (Some(Policy::Low), Some(100_000_000), Some(1000))
        );
        assert_eq!(u.suite, Some(SuiteId::Aes128Gcm));
        let again = TransferUrl::parse(&u.to_url_string()).unwrap();
        assert_eq!(again.token.0.as_str(), "AbC-_+/=");
        assert_eq!(again.path, u.path);
        assert_eq!(again.hostkey, u.hostkey);
        assert!(!format!("{u:?}").contains("AbC"), "Debug hides the token");
    }

    #[test]
    fn defaults_and_ipv6() {
        let u = TransferUrl::parse("haul://[::1]/x?token=t").unwrap();
        assert_eq!((u.host.as_str(), u.port), ("::1", DEFAULT_SSH_PORT));
        assert!(u.to_url_string().starts_with("haul://[::1]/x?"));
    }

    #[test]
    fn refusals() {
        for (bad, want) in [
            ("http://h/x?token=t", UrlError::Scheme),
            ("haul:///x?token=t", UrlError::NoHost),
            ("haul://h:0/x?token=t", UrlError::Port),
            ("haul://h:99999/x?token=t", UrlError::Port),
            ("haul://h/x", UrlError::NoToken),
            ("haul://h/x?token=", UrlError::NoToken),
            ("haul://h/x?token=a&token=b", UrlError::Repeated("token")),
            ("haul://h/%zz?token=a", UrlError::Encoding),
        ] {
            assert_eq!(TransferUrl::parse(bad).map(|_| ()), Err(want), "{bad}");
        }
        assert!(TransferUrl::parse("haul://h/x?token=a&cipher=rot13").is_err());
        assert!(TransferUrl::parse("haul://h/x?token=a&hostkey=MD5:aa").is_err());
        assert!(TransferUrl::parse(&"haul://h/".repeat(5000)).is_err());
    }

    #[test]
    fn any_bytes_never_panic() {
        let seeds = [
            "haul://",
            "haul://[",
            "haul://[::1",
            "haul://h:/",
            "haul://h/%",
            "haul://h/%4",
            "haul://h?&&=&",
        ];
        for s in seeds {
            for cut in 0..=s.len() {
                let _ = TransferUrl::parse(&s[..cut]);
            }
        }
    }
}
