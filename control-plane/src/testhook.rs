//! The test hook that exposes secrets, so the "no secrets in logs" test knows what to search
//! for: when `HAUL_TEST_EXPOSE_SECRETS` names a file, each transfer appends its session secret,
//! both randoms and the token to it, in hex, one `name hex` line each.
//!
//! Invariant: without the variable this does nothing; the variable is read per call, so it
//! cannot be switched on by anything but the environment the operator (or the test) started
//! the process with. Production units never set it (systemd/haul.service clears the
//! environment). The file is created with mode 0600.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;

use crate::authz::SecretToken;
use crate::session::SessionKeys;

/// The environment variable that names the exposure file.
pub const EXPOSE_ENV: &str = "HAUL_TEST_EXPOSE_SECRETS";

/// Append `name hex` lines for these secrets, if the test hook is on.
pub fn expose(items: &[(&str, &[u8])]) {
    let Some(path) = std::env::var_os(EXPOSE_ENV) else { return };
    let file = std::fs::OpenOptions::new().append(true).create(true).mode(0o600).open(path);
    if let Ok(mut f) = file {
        for (name, bytes) in items {
            let _ = writeln!(f, "{name} {}", hex_of(bytes));
        }
    }
}

fn hex_of(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// The session's keys and the token it came with.
pub fn expose_keys(keys: &SessionKeys, token: &SecretToken) {
    expose(&[
        ("session_secret", &keys.secret.0),
        ("client_random", &keys.client_random),
        ("server_random", &keys.server_random),
        ("token", token.0.as_bytes()),
    ]);
}
