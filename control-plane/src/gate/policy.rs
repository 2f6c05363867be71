//! What the gate accepts, as pure functions the SSH adapter (`gate/mod.rs`) calls: one exec of
//! exactly `haul-transfer`, and nothing else (docs/GATE.md, "What the gate refuses").
//!
//! Invariants: the command must equal [`TRANSFER_COMMAND`] byte for byte: no arguments, no
//! whitespace, no shell metacharacters (there is no shell to interpret them; the exact match
//! makes that plain). Every refusal has a stable name (logs and counters), a message for the
//! client's stderr, and an exit status.

use crate::session::TRANSFER_COMMAND;

/// Exit status of a refused request or command (as a shell's "cannot execute").
pub const EXIT_REFUSED: u32 = 126;
/// Exit status of a refusal by limit (EX_TEMPFAIL: try later).
pub const EXIT_LIMIT: u32 = 75;
/// Exit status of a transfer that was unauthorized or failed.
pub const EXIT_FAILED: u32 = 1;

/// Why the gate refused something. The names are stable (logs, counters, tests).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RefusalKind {
    Shell,
    Pty,
    Subsystem,
    Env,
    X11,
    AgentForwarding,
    TcpForwarding,
    Command,
    SecondExec,
    Auth,
    ConnectionLimit,
    SessionLimit,
    IdleTimeout,
    Token,
    AuthLimit,
}

impl RefusalKind {
    pub const ALL: [RefusalKind; 15] = [
        RefusalKind::Shell,
        RefusalKind::Pty,
        RefusalKind::Subsystem,
        RefusalKind::Env,
        RefusalKind::X11,
        RefusalKind::AgentForwarding,
        RefusalKind::TcpForwarding,
        RefusalKind::Command,
        RefusalKind::SecondExec,
        RefusalKind::Auth,
        RefusalKind::ConnectionLimit,
        RefusalKind::SessionLimit,
        RefusalKind::IdleTimeout,
        RefusalKind::Token,
        RefusalKind::AuthLimit,
    ];

    pub const fn name(self) -> &'static str {
        match self {
            RefusalKind::Shell => "shell",
            RefusalKind::Pty => "pty",
            RefusalKind::Subsystem => "subsystem",
            RefusalKind::Env => "env",
            RefusalKind::X11 => "x11-forwarding",
            RefusalKind::AgentForwarding => "agent-forwarding",
            RefusalKind::TcpForwarding => "tcp-forwarding",
            RefusalKind::Command => "command",
            RefusalKind::SecondExec => "second-exec",
            RefusalKind::Auth => "auth",
            RefusalKind::ConnectionLimit => "connection-limit",
            RefusalKind::SessionLimit => "session-limit",
            RefusalKind::IdleTimeout => "idle-timeout",
            RefusalKind::Token => "token",
            RefusalKind::AuthLimit => "auth-limit",
        }
    }

    /// The line the client sees on stderr.
    pub const fn message(self) -> &'static str {
        match self {
            RefusalKind::Shell => {
                "haul gate: refused: no shell here; this server runs only haul transfers"
            }
            RefusalKind::Pty => {
                "haul gate: refused: no terminal (pty) here; this server runs only haul transfers"
            }
            RefusalKind::Subsystem => {
                "haul gate: refused: no subsystems (sftp included) here; this server runs only haul transfers"
            }
            RefusalKind::Env => {
                "haul gate: refused: environment variables (SendEnv/SetEnv) are not accepted"
            }
            RefusalKind::X11 => "haul gate: refused: X11 forwarding is not accepted",
            RefusalKind::AgentForwarding => "haul gate: refused: agent forwarding is not accepted",
            RefusalKind::TcpForwarding => "haul gate: refused: port forwarding is not accepted",
            RefusalKind::Command => {
                "haul gate: refused: this server runs only the haul transfer command, with no arguments"
            }
            RefusalKind::SecondExec => "haul gate: refused: one transfer per connection",
            RefusalKind::Auth => "haul gate: refused: this key is not accepted for this account",
            RefusalKind::ConnectionLimit => {
                "haul gate: refused: too many connections from your address; try later"
            }
            RefusalKind::SessionLimit => {
                "haul gate: refused: too many concurrent transfers; try later"
            }
            RefusalKind::IdleTimeout => "haul gate: closed: idle for too long",
            RefusalKind::Token => "haul gate: unauthorized to transfer",
            RefusalKind::AuthLimit => {
                "haul gate: refused: too many failed authentication attempts from your address; try later"
            }
        }
    }

    pub const fn exit_status(self) -> u32 {
        match self {
            RefusalKind::ConnectionLimit | RefusalKind::SessionLimit | RefusalKind::AuthLimit => {
                EXIT_LIMIT
            }
            RefusalKind::Token => EXIT_FAILED,
            _ => EXIT_REFUSED,
        }
    }
}

/// Whether an exec command is the transfer command: an exact match, nothing more.
pub fn is_transfer_command(command: &[u8]) -> bool {
    command == TRANSFER_COMMAND.as_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_exact_command_passes() {
        assert!(is_transfer_command(b"haul-transfer"));
        for bad in [
            &b"haul-transfer "[..],
            b" haul-transfer",
            b"haul-transfer x",
            b"haul-transfer;ls",
            b"haul-transfer; ls",
            b"haul-transfer $(id)",
            b"haul-transfer `id`",
            b"haul-transfer\n",
            b"haul-transfer\0",
            b"HAUL-TRANSFER",
            b"ls",
            b"",
            b"/usr/bin/haul-transfer",
            b"scp -t /",
        ] {
            assert!(!is_transfer_command(bad), "{bad:?}");
        }
    }

    #[test]
    fn names_are_unique_and_messages_say_refused_or_closed() {
        let mut names: Vec<_> = RefusalKind::ALL.iter().map(|k| k.name()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), RefusalKind::ALL.len());
        for k in RefusalKind::ALL {
            assert!(k.message().starts_with("haul gate: "));
            assert_ne!(k.exit_status(), 0);
        }
    }
}
