//! Passwords: argon2id hashing, the strong-password policy, and one-time passwords.
//!
//! Invariants:
//! - Only PHC-format argon2id hashes are stored; verifying a malformed stored hash is a failed
//!   login, not a panic.
//! - Password input is bounded ([`MAX_PASSWORD_BYTES`]) before it reaches the hash, so a huge
//!   form field cannot buy CPU time.
//! - The policy is a pure function of the password and the setting; the error says what is
//!   missing, never what was typed.

use argon2::password_hash::{Output, ParamsString, PasswordHash, SaltString};
use argon2::{Algorithm, Argon2, Block, Params, Version};

/// Longest password accepted, in bytes.
pub const MAX_PASSWORD_BYTES: usize = 256;
/// Minimum length even when the strong-password setting is off.
pub const MIN_PASSWORD_FLOOR: usize = 8;
/// Random characters in a one-time password (shown in groups of five joined by '-').
pub const ONE_TIME_PASSWORD_CHARS: usize = 20;
/// Salt bytes (16 is argon2's recommendation).
const SALT_BYTES: usize = 16;

/// Why a password was refused (the user's to fix).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum WeakPassword {
    #[error("the password must be at least {0} characters long")]
    TooShort(usize),
    #[error("the password must be at most {MAX_PASSWORD_BYTES} bytes long")]
    TooLong,
    #[error("the password must contain at least one letter, one number and one symbol")]
    MissingClass,
}

/// Failures of the hashing machinery itself (ours or the OS's, never the user's).
#[derive(Debug, thiserror::Error)]
pub enum HashError {
    #[error("no OS randomness for a salt: {0}")]
    Random(getrandom::Error),
    #[error("argon2: {0}")]
    Argon2(String),
}

/// The password policy in force (from the admin settings).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PasswordPolicy {
    /// The "strong passwords" setting: a letter, a number and a symbol.
    pub is_strong: bool,
    /// Minimum length in characters (never below [`MIN_PASSWORD_FLOOR`]).
    pub min_len: usize,
}

impl PasswordPolicy {
    /// Checks a candidate password against the policy.
    pub fn check(&self, password: &str) -> Result<(), WeakPassword> {
        if password.len() > MAX_PASSWORD_BYTES {
            return Err(WeakPassword::TooLong);
        }
        let min = self.min_len.max(MIN_PASSWORD_FLOOR);
        if password.chars().count() < min {
            return Err(WeakPassword::TooShort(min));
        }
        if self.is_strong {
            let letter = password.chars().any(char::is_alphabetic);
            let digit = password.chars().any(|c| c.is_ascii_digit());
            let symbol = password.chars().any(|c| !c.is_alphanumeric() && !c.is_whitespace());
            if !(letter && digit && symbol) {
                return Err(WeakPassword::MissingClass);
            }
        }
        Ok(())
    }
}

/// At most this many argon2 computations run at once; the others wait for a work area.
pub const MAX_HASHES_AT_ONCE: usize = 2;
/// Largest work area a stored hash may ask for (64 MiB of 1 KiB blocks): a hash with a larger
/// `m` does not verify.
pub const MAX_BLOCKS: usize = 64 * 1024;
/// Length of the hashes this build writes.
const OUTPUT_BYTES: usize = 32;
/// Longest decoded salt accepted from a stored hash (PHC allows 64 bytes).
const MAX_SALT_BYTES: usize = 64;

/// argon2id with the crate's defaults (19 MiB, t=2, p=1: OWASP's recommended minimum).
fn params() -> Params {
    Params::default()
}

/// Work areas for argon2, reused. Allocating 19 MiB per hash let glibc keep each one (its
/// dynamic mmap threshold moves such blocks onto the heap): the load bench's server grew by
/// 19 MiB per user created, to ~400 MiB. A fixed pool bounds it to MAX_HASHES_AT_ONCE areas.
struct Pool {
    free: std::sync::Mutex<(Vec<Vec<Block>>, usize)>,
    returned: std::sync::Condvar,
}

static POOL: Pool =
    Pool { free: std::sync::Mutex::new((Vec::new(), 0)), returned: std::sync::Condvar::new() };

/// Runs `f` with a zeroed work area of `blocks` blocks, waiting while MAX_HASHES_AT_ONCE are
/// in use. The area is zeroed again before it goes back (it held password-derived state).
fn with_memory<T>(blocks: usize, f: impl FnOnce(&mut [Block]) -> T) -> Result<T, HashError> {
    if blocks > MAX_BLOCKS {
        return Err(HashError::Argon2(format!("a work area of {blocks} KiB is over the limit")));
    }
    let mut area = {
        // A poisoned lock only means another hash panicked; the pool's data is still sound.
        let mut g = POOL.free.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        loop {
            if let Some(a) = g.0.pop() {
                break a;
            }
            if g.1 < MAX_HASHES_AT_ONCE {
                g.1 += 1;
                break Vec::new();
            }
            g = POOL.returned.wait(g).unwrap_or_else(std::sync::PoisonError::into_inner);
        }
    };
    area.resize(blocks, Block::new());
    let out = f(&mut area[..blocks]);
    area.iter_mut().for_each(|b| *b = Block::new());
    let mut g = POOL.free.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    g.0.push(area);
    POOL.returned.notify_one();
    Ok(out)
}

/// Hashes a password into a PHC string (`$argon2id$...`).
pub fn hash_password(password: &str) -> Result<String, HashError> {
    let mut salt = [0u8; SALT_BYTES];
    getrandom::fill(&mut salt).map_err(HashError::Random)?;
    let err = |e: &dyn std::fmt::Display| HashError::Argon2(e.to_string());
    let params = params();
    let argon = Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone());
    let mut out = [0u8; OUTPUT_BYTES];
    with_memory(params.block_count(), |mem| {
        argon.hash_password_into_with_memory(password.as_bytes(), &salt, &mut out, mem)
    })?
    .map_err(|e| err(&e))?;
    let salt = SaltString::encode_b64(&salt).map_err(|e| err(&e))?;
    let phc = PasswordHash {
        algorithm: argon2::ARGON2ID_IDENT,
        version: Some(Version::V0x13.into()),
        params: ParamsString::try_from(&params).map_err(|e| err(&e))?,
        salt: Some(salt.as_salt()),
        hash: Some(Output::new(&out).map_err(|e| err(&e))?),
    };
    Ok(phc.to_string())
}

/// A hash of a random password, verified against when a sign-in names no account, so an
/// unknown name costs the same argon2 time as a known one (no user enumeration by timing).
pub fn dummy_hash() -> &'static str {
    static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DUMMY.get_or_init(|| {
        // If the OS has no randomness the server cannot sign anyone in anyway; the fixed
        // fallback is still a valid hash that no password matches by design.
        one_time_password()
            .ok()
            .and_then(|p| hash_password(&p).ok())
            .unwrap_or_else(|| "$argon2id$v=19$m=19456,t=2,p=1$AAAAAAAAAAAAAAAAAAAAAA$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA".into())
    })
}

/// Whether `password` matches the stored PHC hash (constant-time inside argon2).
pub fn is_password_valid(password: &str, stored: &str) -> bool {
    if password.len() > MAX_PASSWORD_BYTES {
        return false;
    }
    let Ok(parsed) = PasswordHash::new(stored) else { return false };
    verify(password.as_bytes(), &parsed).unwrap_or(false)
}

/// Recomputes an argon2id PHC hash in a pooled work area and compares in constant time.
fn verify(password: &[u8], parsed: &PasswordHash<'_>) -> Option<bool> {
    if parsed.algorithm != argon2::ARGON2ID_IDENT {
        return None;
    }
    let version = Version::try_from(parsed.version.unwrap_or(Version::V0x13.into())).ok()?;
    let params = Params::try_from(parsed).ok()?;
    let (salt, expected) = (parsed.salt?, parsed.hash?);
    let mut salt_buf = [0u8; MAX_SALT_BYTES];
    let salt = salt.decode_b64(&mut salt_buf).ok()?;
    let argon = Argon2::new(Algorithm::Argon2id, version, params.clone());
    let mut out = vec![0u8; expected.len()];
    with_memory(params.block_count(), |mem| {
        argon.hash_password_into_with_memory(password, salt, &mut out, mem)
    })
    .ok()?
    .ok()?;
    // `Output`'s equality is constant-time.
    Some(Output::new(&out).ok()? == expected)
}

/// A random one-time password that satisfies the strong policy: groups of letters and digits
/// separated by '-' (so it always holds a symbol), with at least one letter and one digit.
pub fn one_time_password() -> Result<String, HashError> {
    const ALPHABET: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz23456789";
    // Rejection sampling keeps the distribution uniform; 64 rounds of 64 bytes cannot all
    // fail to produce a letter and a digit in practice, and the loop is bounded anyway.
    for _ in 0..64 {
        let mut bytes = [0u8; 64];
        getrandom::fill(&mut bytes).map_err(HashError::Random)?;
        let limit = 256 - 256 % ALPHABET.len();
        let chars: Vec<char> = bytes
            .iter()
            .filter(|&&b| usize::from(b) < limit)
            .map(|&b| char::from(ALPHABET[usize::from(b) % ALPHABET.len()]))
            .take(ONE_TIME_PASSWORD_CHARS)
            .collect();
        let has_digit = chars.iter().any(char::is_ascii_digit);
        let has_letter = chars.iter().any(char::is_ascii_alphabetic);
        if chars.len() == ONE_TIME_PASSWORD_CHARS && has_digit && has_letter {
            let groups: Vec<String> = chars.chunks(5).map(|c| c.iter().collect()).collect();
            return Ok(groups.join("-"));
        }
    }
    Err(HashError::Argon2("could not draw a one-time password".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strong_policy_wants_letter_number_symbol_and_length() {
        let p = PasswordPolicy { is_strong: true, min_len: 12 };
        assert_eq!(p.check("short1!"), Err(WeakPassword::TooShort(12)));
        assert_eq!(p.check("longpasswordonly"), Err(WeakPassword::MissingClass));
        assert_eq!(p.check("longpassword123"), Err(WeakPassword::MissingClass));
        assert_eq!(p.check("longpassword!!!"), Err(WeakPassword::MissingClass));
        assert_eq!(p.check("l0ng-passw0rd!"), Ok(()));
        assert_eq!(p.check(&"a1!".repeat(100)), Err(WeakPassword::TooLong));
        let lax = PasswordPolicy { is_strong: false, min_len: 0 };
        assert_eq!(lax.check("abcdefgh"), Ok(()));
        assert_eq!(lax.check("abc"), Err(WeakPassword::TooShort(MIN_PASSWORD_FLOOR)));
    }

    #[test]
    fn hashes_verify_and_are_argon2id() {
        let h = hash_password("c0rrect-horse!").unwrap();
        assert!(h.starts_with("$argon2id$"));
        assert!(is_password_valid("c0rrect-horse!", &h));
        assert!(!is_password_valid("c0rrect-horse?", &h));
        assert!(!is_password_valid("c0rrect-horse!", "not a hash"));
    }

    #[test]
    fn one_time_passwords_pass_the_strong_policy() {
        let p = PasswordPolicy { is_strong: true, min_len: 16 };
        for _ in 0..20 {
            let pw = one_time_password().unwrap();
            assert_eq!(p.check(&pw), Ok(()), "{pw}");
        }
    }

    #[test]
    fn pooled_hashes_match_the_crates_own_phc_hashes_both_ways() {
        use argon2::password_hash::{PasswordHasher as _, PasswordVerifier as _};
        let standard = Argon2::new(Algorithm::Argon2id, Version::V0x13, params());
        let salt = SaltString::encode_b64(&[7u8; SALT_BYTES]).unwrap();
        let theirs = standard.hash_password(b"Correct-horse-9", &salt).unwrap().to_string();
        assert!(is_password_valid("Correct-horse-9", &theirs));
        assert!(!is_password_valid("Correct-horse-8", &theirs));
        let ours = hash_password("Correct-horse-9").unwrap();
        let parsed = PasswordHash::new(&ours).unwrap();
        assert!(standard.verify_password(b"Correct-horse-9", &parsed).is_ok());
        // A stored hash asking for more memory than the limit does not verify.
        let huge = theirs.replace("m=19456", "m=1048576");
        assert!(!is_password_valid("Correct-horse-9", &huge));
    }

    #[test]
    fn concurrent_hashes_share_a_bounded_pool() {
        let threads: Vec<_> = (0..6)
            .map(|i| std::thread::spawn(move || hash_password(&format!("Pw-{i}-long!")).unwrap()))
            .collect();
        for (i, t) in threads.into_iter().enumerate() {
            let h = t.join().unwrap();
            assert!(is_password_valid(&format!("Pw-{i}-long!"), &h));
        }
        let g = POOL.free.lock().unwrap();
        assert!(g.1 <= MAX_HASHES_AT_ONCE, "{} work areas", g.1);
    }
}
