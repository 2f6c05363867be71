//! Users and their restrictions as values: names, CIDR allow-lists, SSH public keys, and the
//! checks a transfer must pass; and each user's storage root, DATA_DIR/storage/NAME. SQL lives
//! in `store::users`; the only I/O here is creating a storage root.
//!
//! Invariants:
//! - A [`UserName`] is safe as one path component (it names DATA_DIR/storage/NAME): ASCII
//!   letters, digits, `_`, `-`, `.`, starting with a letter or digit, at most
//!   [`MAX_USER_NAME`] bytes. Only [`UserName::parse`] builds one.
//! - Every list has a limit ([`MAX_CIDRS_PER_LIST`], [`MAX_SSH_KEYS`]); parsing user input
//!   returns a typed error, never panics.
//! - An empty allow-list means "any address"; a non-empty one admits only its networks.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
use sha2::{Digest, Sha256};
use thiserror::Error;

/// Longest user name in bytes.
pub const MAX_USER_NAME: usize = 64;
/// Most networks in one allow-list.
pub const MAX_CIDRS_PER_LIST: usize = 64;
/// Most SSH keys one user has.
pub const MAX_SSH_KEYS: usize = 16;
/// Longest SSH public key line we accept (a 16384-bit RSA key is about 2.8 KiB).
pub const MAX_SSH_KEY_LINE: usize = 8192;

/// Bad user input to a user command or the console (the caller's fault, said plainly).
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum UserInputError {
    #[error(
        "user name {0:?} is not allowed: use 1 to {MAX_USER_NAME} ASCII letters, digits, '_', '-' or '.', starting with a letter or digit"
    )]
    BadName(String),
    #[error("{0:?} is not a network: write it as ADDRESS/PREFIX, e.g. 10.0.0.0/8 or 2001:db8::/32")]
    BadCidr(String),
    #[error("an allow-list holds at most {MAX_CIDRS_PER_LIST} networks")]
    TooManyCidrs,
    #[error("{0:?} is not a date: use YYYY-MM-DD or YYYY-MM-DDTHH:MM:SSZ (UTC), or 'never'")]
    BadDate(String),
    #[error("SSH public key line {line}: {why}")]
    BadSshKey { line: usize, why: String },
    #[error("a user has at most {MAX_SSH_KEYS} SSH keys")]
    TooManySshKeys,
    #[error("upload-only and download-only cannot both be set")]
    BothOnly,
}

/// A validated user name.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UserName(String);

impl UserName {
    pub fn parse(name: &str) -> Result<UserName, UserInputError> {
        let ok_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.');
        let starts_ok = name.chars().next().is_some_and(|c| c.is_ascii_alphanumeric());
        if starts_ok && name.len() <= MAX_USER_NAME && name.chars().all(ok_char) {
            Ok(UserName(name.to_owned()))
        } else {
            Err(UserInputError::BadName(name.chars().take(MAX_USER_NAME + 8).collect()))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for UserName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A network: an address and a prefix length, with the host bits cleared.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Cidr {
    net: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// Whether `ip` is inside this network. An IPv4-mapped IPv6 address (`::ffff:a.b.c.d`)
    /// matches as its IPv4 address, so a dual-stack listener does not bypass an IPv4 list.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match (self.net, ip) {
            (IpAddr::V4(n), IpAddr::V4(a)) => mask_v4(u32::from(a), self.prefix) == u32::from(n),
            (IpAddr::V6(n), IpAddr::V6(a)) => mask_v6(u128::from(a), self.prefix) == u128::from(n),
            _ => false,
        }
    }
}

fn mask_v4(a: u32, prefix: u8) -> u32 {
    if prefix == 0 { 0 } else { a & (u32::MAX << (32 - u32::from(prefix))) }
}

fn mask_v6(a: u128, prefix: u8) -> u128 {
    if prefix == 0 { 0 } else { a & (u128::MAX << (128 - u32::from(prefix))) }
}

impl FromStr for Cidr {
    type Err = UserInputError;

    /// `ADDR/PREFIX`, or a bare address (a /32 or /128). Host bits are cleared.
    fn from_str(s: &str) -> Result<Cidr, UserInputError> {
        let bad = || UserInputError::BadCidr(s.chars().take(64).collect());
        let (addr, prefix) = match s.trim().split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s.trim(), None),
        };
        let ip: IpAddr = addr.parse().map_err(|_| bad())?;
        let max = if ip.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p.parse::<u8>().ok().filter(|p| *p <= max).ok_or_else(bad)?,
        };
        let net = match ip {
            IpAddr::V4(a) => IpAddr::V4(mask_v4(u32::from(a), prefix).into()),
            IpAddr::V6(a) => IpAddr::V6(mask_v6(u128::from(a), prefix).into()),
        };
        Ok(Cidr { net, prefix })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.net, self.prefix)
    }
}

/// Parses `CIDR,CIDR,...` (empty: the empty list, i.e. any address).
pub fn parse_cidr_list(s: &str) -> Result<Vec<Cidr>, UserInputError> {
    let list: Vec<Cidr> = s
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(Cidr::from_str)
        .collect::<Result<_, _>>()?;
    if list.len() > MAX_CIDRS_PER_LIST {
        return Err(UserInputError::TooManyCidrs);
    }
    Ok(list)
}

/// Whether an allow-list admits `ip` (an empty list admits everyone).
pub fn is_allowed(list: &[Cidr], ip: IpAddr) -> bool {
    list.is_empty() || list.iter().any(|c| c.contains(ip))
}

/// What an allow-list restricts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum IpPurpose {
    Login,
    Upload,
    Download,
}

impl IpPurpose {
    pub const ALL: [IpPurpose; 3] = [IpPurpose::Login, IpPurpose::Upload, IpPurpose::Download];

    pub const fn name(self) -> &'static str {
        match self {
            IpPurpose::Login => "login",
            IpPurpose::Upload => "upload",
            IpPurpose::Download => "download",
        }
    }
}

/// Which directions a user may transfer in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum DirectionLimit {
    #[default]
    Both,
    UploadOnly,
    DownloadOnly,
}

/// An SSH public key as an authorized_keys line holds it, checked: the blob is base64 and
/// its first field names the same algorithm.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SshPublicKey {
    pub algorithm: String,
    /// The blob, standard base64 (as in authorized_keys).
    pub key_base64: String,
    pub comment: String,
}

impl SshPublicKey {
    /// `SHA256:<base64 without padding>` of the blob, as `ssh-keygen -l` prints it.
    pub fn fingerprint(&self) -> String {
        let blob = STANDARD.decode(&self.key_base64).unwrap_or_default();
        format!("SHA256:{}", STANDARD_NO_PAD.encode(Sha256::digest(&blob)))
    }

    /// The authorized_keys form: `ALGORITHM BASE64 [COMMENT]`.
    pub fn to_line(&self) -> String {
        if self.comment.is_empty() {
            format!("{} {}", self.algorithm, self.key_base64)
        } else {
            format!("{} {} {}", self.algorithm, self.key_base64, self.comment)
        }
    }
}

/// Parses an authorized_keys-style text: one key a line; blank lines and `#` comments are
/// skipped; options before the key type are refused (they would be silently ignored).
pub fn parse_ssh_keys(text: &str) -> Result<Vec<SshPublicKey>, UserInputError> {
    let mut keys = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let key = parse_ssh_key_line(line)
            .map_err(|why| UserInputError::BadSshKey { line: i + 1, why })?;
        if keys.len() == MAX_SSH_KEYS {
            return Err(UserInputError::TooManySshKeys);
        }
        keys.push(key);
    }
    Ok(keys)
}

fn parse_ssh_key_line(line: &str) -> Result<SshPublicKey, String> {
    if line.len() > MAX_SSH_KEY_LINE {
        return Err(format!("longer than {MAX_SSH_KEY_LINE} bytes"));
    }
    let mut fields = line.split_whitespace();
    let algorithm = fields.next().unwrap_or_default();
    let b64 = fields.next().ok_or("expected 'TYPE BASE64 [COMMENT]'")?;
    let comment = fields.collect::<Vec<_>>().join(" ");
    let blob = STANDARD.decode(b64).map_err(|_| "the key is not valid base64".to_owned())?;
    // The blob starts with the algorithm name as an SSH string (u32 length, bytes).
    let named = blob
        .get(..4)
        .map(|l| u32::from_be_bytes([l[0], l[1], l[2], l[3]]) as usize)
        .and_then(|n| blob.get(4..4usize.checked_add(n)?));
    if named != Some(algorithm.as_bytes()) {
        return Err(format!(
            "not an SSH public key of type {algorithm:?} (options before the type are not supported)"
        ));
    }
    Ok(SshPublicKey { algorithm: algorithm.to_owned(), key_base64: b64.to_owned(), comment })
}

/// The directory under the data directory that holds every user's storage root.
pub const STORAGE_DIR: &str = "storage";

/// DATA_DIR/storage/NAME: the directory a user's transfers are confined to.
pub fn storage_root(data_dir: &std::path::Path, name: &UserName) -> std::path::PathBuf {
    data_dir.join(STORAGE_DIR).join(name.as_str())
}

/// Creates DATA_DIR/storage (0700) and the user's storage root (0700) if missing, and sets
/// an existing root to 0700. Refuses a storage root that is a symlink.
pub fn create_storage_root(
    data_dir: &std::path::Path,
    name: &UserName,
) -> std::io::Result<std::path::PathBuf> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    let storage = data_dir.join(STORAGE_DIR);
    let root = storage_root(data_dir, name);
    for dir in [&storage, &root] {
        match std::fs::symlink_metadata(dir) {
            Ok(m) if m.file_type().is_dir() => {}
            Ok(_) => {
                return Err(std::io::Error::other(format!(
                    "{} exists and is not a directory (a symlink is not accepted)",
                    dir.display()
                )));
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                std::fs::DirBuilder::new().mode(0o700).create(dir)?;
            }
            Err(e) => return Err(e),
        }
    }
    std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o700))?;
    Ok(root)
}

/// A user as the store holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct User {
    pub id: i64,
    pub name: UserName,
    pub is_disabled: bool,
    /// Unix seconds; `None`: never expires.
    pub expires_at_s: Option<i64>,
    pub direction_limit: DirectionLimit,
    pub may_send_external: bool,
    pub may_forward: bool,
    pub is_workgroup_admin: bool,
    pub ip_allow_login: Vec<Cidr>,
    pub ip_allow_upload: Vec<Cidr>,
    pub ip_allow_download: Vec<Cidr>,
    pub ssh_keys: Vec<SshPublicKey>,
}

impl User {
    /// Whether the account has expired at `now_s` (unix seconds).
    pub fn is_expired(&self, now_s: i64) -> bool {
        self.expires_at_s.is_some_and(|t| now_s >= t)
    }

    /// The allow-list for one purpose.
    pub fn ip_allow(&self, purpose: IpPurpose) -> &[Cidr] {
        match purpose {
            IpPurpose::Login => &self.ip_allow_login,
            IpPurpose::Upload => &self.ip_allow_upload,
            IpPurpose::Download => &self.ip_allow_download,
        }
    }
}

/// A change to a user: `None` leaves an attribute as it is; a list replaces the whole list.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UserChange {
    pub is_disabled: Option<bool>,
    /// `Some(None)`: never expires.
    pub expires_at_s: Option<Option<i64>>,
    pub direction_limit: Option<DirectionLimit>,
    pub may_send_external: Option<bool>,
    pub may_forward: Option<bool>,
    pub is_workgroup_admin: Option<bool>,
    pub ip_allow_login: Option<Vec<Cidr>>,
    pub ip_allow_upload: Option<Vec<Cidr>>,
    pub ip_allow_download: Option<Vec<Cidr>>,
    pub ssh_keys: Option<Vec<SshPublicKey>>,
}

/// Parses an account expiry: `never`, `YYYY-MM-DD` (that day's 00:00:00 UTC) or
/// `YYYY-MM-DDTHH:MM:SSZ`. Returns unix seconds (`None` for never).
pub fn parse_date(s: &str) -> Result<Option<i64>, UserInputError> {
    let bad = || UserInputError::BadDate(s.chars().take(40).collect());
    let s = s.trim();
    if s.eq_ignore_ascii_case("never") {
        return Ok(None);
    }
    let (date, time) = match s.split_once('T') {
        Some((d, t)) => (d, Some(t.strip_suffix('Z').ok_or_else(bad)?)),
        None => (s, None),
    };
    let num = |p: &str, len: usize| {
        (p.len() == len && p.bytes().all(|b| b.is_ascii_digit()))
            .then(|| p.parse::<i64>().ok())
            .flatten()
            .ok_or_else(bad)
    };
    let d: Vec<&str> = date.split('-').collect();
    let [y, m, dd] = d.as_slice() else { return Err(bad()) };
    let (y, m, dd) = (num(y, 4)?, num(m, 2)?, num(dd, 2)?);
    if !(1..=12).contains(&m) || dd < 1 || dd > days_in_month(y, m) {
        return Err(bad());
    }
    let secs = match time {
        None => 0,
        Some(t) => {
            let p: Vec<&str> = t.split(':').collect();
            let [h, mi, se] = p.as_slice() else { return Err(bad()) };
            let (h, mi, se) = (num(h, 2)?, num(mi, 2)?, num(se, 2)?);
            if h > 23 || mi > 59 || se > 59 {
                return Err(bad());
            }
            h * 3600 + mi * 60 + se
        }
    };
    Ok(Some(days_from_civil(y, m, dd) * 86_400 + secs))
}

fn days_in_month(y: i64, m: i64) -> i64 {
    let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    match m {
        2 if leap => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Formats unix seconds as `YYYY-MM-DDTHH:MM:SSZ`.
pub fn format_utc(t_s: i64) -> String {
    let days = t_s.div_euclid(86_400);
    let secs = t_s.rem_euclid(86_400);
    // Inverse of days_from_civil.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z", secs / 3600, secs % 3600 / 60, secs % 60)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn names() {
        for ok in ["alice", "a", "Bob_2", "x.y-z", &"a".repeat(MAX_USER_NAME)] {
            assert!(UserName::parse(ok).is_ok(), "{ok}");
        }
        for bad in ["", ".", "..", ".hidden", "-x", "a/b", "a b", "é", &"a".repeat(65), "a\0"] {
            assert!(UserName::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn cidrs_match_and_refuse() {
        let c: Cidr = "10.1.2.3/8".parse().unwrap();
        assert_eq!(c.to_string(), "10.0.0.0/8");
        assert!(c.contains("10.200.0.1".parse().unwrap()));
        assert!(c.contains("::ffff:10.9.9.9".parse().unwrap()), "v4-mapped matches");
        assert!(!c.contains("11.0.0.1".parse().unwrap()));
        assert!(!c.contains("::1".parse().unwrap()));
        let any: Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(any.contains("1.2.3.4".parse().unwrap()));
        let host: Cidr = "127.0.0.1".parse().unwrap();
        assert_eq!(host.to_string(), "127.0.0.1/32");
        let v6: Cidr = "2001:db8::1/32".parse().unwrap();
        assert_eq!(v6.to_string(), "2001:db8::/32");
        assert!(v6.contains("2001:db8:ffff::2".parse().unwrap()));
        for bad in ["10.0.0.0/33", "10.0.0/8", "x", "::/129", "1.2.3.4/-1", "1.2.3.4/"] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad}");
        }
        assert_eq!(parse_cidr_list(" 10.0.0.0/8, ,192.168.0.0/16").unwrap().len(), 2);
        assert_eq!(parse_cidr_list("").unwrap(), vec![]);
        let many = vec!["1.1.1.1"; MAX_CIDRS_PER_LIST + 1].join(",");
        assert_eq!(parse_cidr_list(&many), Err(UserInputError::TooManyCidrs));
        assert!(is_allowed(&[], "8.8.8.8".parse().unwrap()));
    }

    #[test]
    fn dates_round_trip() {
        assert_eq!(parse_date("1970-01-01").unwrap(), Some(0));
        assert_eq!(parse_date("2000-03-01T00:00:01Z").unwrap(), Some(951_868_801));
        assert_eq!(parse_date("never").unwrap(), None);
        for t in [0, 951_868_801, 1_709_251_199, 4_102_444_800] {
            assert_eq!(parse_date(&format_utc(t)).unwrap(), Some(t), "{}", format_utc(t));
        }
        for bad in ["2024-02-30", "2023-02-29", "24-01-01", "2024-1-01", "2024-01-01T25:00:00Z"] {
            assert!(parse_date(bad).is_err(), "{bad}");
        }
        assert!(parse_date("2024-02-29").is_ok());
    }

    #[test]
    fn ssh_keys_parse_and_fingerprint() {
        // ssh-keygen -t ed25519 public key (a throwaway test key).
        let line = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIImHtiLu4/ui8qSx74NU3l8zibip/LD64hCAmlHx21Ru test@host";
        let keys = parse_ssh_keys(&format!("# comment\n\n{line}\n")).unwrap();
        assert_eq!(keys.len(), 1);
        assert_eq!(keys[0].algorithm, "ssh-ed25519");
        assert_eq!(keys[0].comment, "test@host");
        // As `ssh-keygen -lf` prints it.
        assert_eq!(keys[0].fingerprint(), "SHA256:dVzo5XtUKS/rOBIDbYwWRdQK69lvjgtaXWh0LDoJDXE");
        assert_eq!(keys[0].to_line(), line);
        let wrong_type = line.replacen("ssh-ed25519", "ssh-rsa", 1);
        assert!(matches!(
            parse_ssh_keys(&wrong_type),
            Err(UserInputError::BadSshKey { line: 1, .. })
        ));
        assert!(parse_ssh_keys("ssh-ed25519 !!!").is_err());
        assert!(parse_ssh_keys("from=\"x\" ssh-ed25519 AAAA").is_err());
    }
}
