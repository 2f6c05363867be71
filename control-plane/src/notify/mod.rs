//! E-mail notifications (issue 6): on package send (to recipients; external ones get their
//! link) and on download (to the sender).
//!
//! - With the SMTP settings' host set, messages go over SMTP (lettre; STARTTLS when the setting
//!   asks for it, plain SMTP otherwise, as for a relay on the same host).
//! - With no host (the default), the development outbox: each message is written to
//!   `DATA_DIR/outbox/` as an `.eml` file (mode 0600), named by time and a random suffix.
//!
//! Invariants:
//! - A notification failure never fails the action that caused it: callers log it (without
//!   the message body, which may carry a link id) and go on.
//! - Message bodies are the only place a link id is written; it is never logged.
//! - Input limits: addresses at most [`MAX_ADDRESS`] bytes, subjects [`MAX_SUBJECT`], bodies
//!   [`MAX_BODY`]; the outbox holds at most [`MAX_OUTBOX_FILES`] messages (older ones are
//!   not deleted: new ones are refused with [`NotifyError::OutboxFull`]).

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use lettre::message::{Mailbox, header::ContentType};
use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

use crate::store::web_settings::SmtpSettings;

/// The outbox folder inside the data directory.
pub const OUTBOX_DIR: &str = "outbox";
/// Longest e-mail address accepted.
pub const MAX_ADDRESS: usize = 254;
/// Longest subject and body sent.
pub const MAX_SUBJECT: usize = 200;
pub const MAX_BODY: usize = 16 * 1024;
/// Most `.eml` files kept in the outbox.
pub const MAX_OUTBOX_FILES: usize = 10_000;
/// How long one SMTP conversation may take.
pub const SMTP_TIMEOUT: Duration = Duration::from_secs(30);
/// The sender address used when the settings give none.
pub const DEFAULT_FROM: &str = "haul@localhost";

/// Why a message was not delivered, and whose fault it is.
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    #[error("notification address {0:?} is not a valid e-mail address (sender's input)")]
    BadAddress(String),
    #[error("notification message could not be built: {0}")]
    Build(String),
    #[error("notification outbox {path}: {source} (operator: check the data directory)")]
    Outbox { path: PathBuf, source: std::io::Error },
    #[error("notification outbox holds {MAX_OUTBOX_FILES} messages (operator: empty it)")]
    OutboxFull,
    #[error("SMTP delivery failed (operator: check the SMTP settings or the server): {0}")]
    Smtp(String),
}

/// One message to send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mail {
    pub to: String,
    pub subject: String,
    pub body: String,
}

/// Where messages go.
#[derive(Clone, Debug)]
pub enum Mailer {
    /// Development mode: `.eml` files in this folder.
    Outbox(PathBuf),
    /// A real SMTP server.
    Smtp(SmtpSettings),
}

impl Mailer {
    /// SMTP when `smtp.host` is set, else the outbox in `data_dir`.
    pub fn from_settings(smtp: &SmtpSettings, data_dir: &Path) -> Mailer {
        if smtp.host.trim().is_empty() {
            Mailer::Outbox(data_dir.join(OUTBOX_DIR))
        } else {
            Mailer::Smtp(smtp.clone())
        }
    }

    fn sender_address(&self) -> &str {
        match self {
            Mailer::Smtp(s) if !s.from.trim().is_empty() => s.from.trim(),
            _ => DEFAULT_FROM,
        }
    }

    /// Builds and delivers `mail`.
    pub async fn send(&self, mail: &Mail) -> Result<(), NotifyError> {
        let msg = build(self.sender_address(), mail)?;
        match self {
            Mailer::Outbox(dir) => {
                let (dir, bytes) = (dir.clone(), msg.formatted());
                tokio::task::spawn_blocking(move || write_outbox(&dir, &bytes))
                    .await
                    .map_err(|e| NotifyError::Build(format!("outbox task: {e}")))?
            }
            Mailer::Smtp(s) => send_smtp(s, msg).await,
        }
    }
}

/// Sends `mail` on a task of runtime `rt`, through the mailer the store's settings choose;
/// a failure is logged (never the body) and dropped. For callers outside a request (the
/// gate's ledger), which have a runtime handle but no web state.
pub fn spawn_send_with(
    rt: &tokio::runtime::Handle,
    store: std::sync::Arc<crate::store::Store>,
    data_dir: PathBuf,
    mail: Mail,
) {
    rt.spawn(async move {
        let settings = tokio::task::spawn_blocking(move || store.web_settings()).await;
        let smtp = match settings {
            Ok(Ok(s)) => s.smtp,
            Ok(Err(e)) => {
                return tracing::warn!(target: "haul::notify", "notification not sent: settings: {e}");
            }
            Err(e) => {
                return tracing::warn!(target: "haul::notify", "notification not sent: {e}");
            }
        };
        let mailer = Mailer::from_settings(&smtp, &data_dir);
        if let Err(e) = mailer.send(&mail).await {
            tracing::warn!(target: "haul::notify", "notification not sent: {e}");
        }
    });
}

/// Parses an e-mail address (at most [`MAX_ADDRESS`] bytes).
pub fn parse_address(s: &str) -> Result<Mailbox, NotifyError> {
    let s = s.trim();
    if s.is_empty() || s.len() > MAX_ADDRESS || s.chars().any(char::is_control) {
        return Err(NotifyError::BadAddress(s.chars().take(MAX_ADDRESS).collect()));
    }
    s.parse::<Mailbox>().map_err(|_| NotifyError::BadAddress(s.to_owned()))
}

fn build(from: &str, mail: &Mail) -> Result<Message, NotifyError> {
    let subject: String =
        mail.subject.chars().filter(|c| !c.is_control()).take(MAX_SUBJECT).collect();
    let body: String = mail.body.chars().take(MAX_BODY).collect();
    Message::builder()
        .from(parse_address(from)?)
        .to(parse_address(&mail.to)?)
        .subject(subject)
        .header(ContentType::TEXT_PLAIN)
        .body(body)
        .map_err(|e| NotifyError::Build(e.to_string()))
}

fn write_outbox(dir: &Path, bytes: &[u8]) -> Result<(), NotifyError> {
    let io = |source| NotifyError::Outbox { path: dir.to_owned(), source };
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(io)?;
    if std::fs::read_dir(dir).map_err(io)?.take(MAX_OUTBOX_FILES).count() >= MAX_OUTBOX_FILES {
        return Err(NotifyError::OutboxFull);
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let mut rnd = [0u8; 6];
    getrandom::fill(&mut rnd).map_err(|e| NotifyError::Build(format!("random name: {e}")))?;
    let path = dir.join(format!("{now}-{}.eml", hex::encode(rnd)));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .map_err(io)?;
    f.write_all(bytes).map_err(io)?;
    f.sync_all().map_err(io)
}

async fn send_smtp(s: &SmtpSettings, msg: Message) -> Result<(), NotifyError> {
    let host = s.host.trim();
    let builder = if s.starttls {
        AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(host)
            .map_err(|e| NotifyError::Smtp(e.to_string()))?
    } else {
        AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host)
    };
    let mut builder = builder.port(s.port).timeout(Some(SMTP_TIMEOUT));
    if !s.user.is_empty() {
        builder = builder.credentials(Credentials::new(s.user.clone(), s.password.clone()));
    }
    builder.build().send(msg).await.map(|_| ()).map_err(|e| NotifyError::Smtp(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_checked() {
        assert!(parse_address("partner@example.com").is_ok());
        assert!(parse_address("not an address").is_err());
        assert!(parse_address("").is_err());
        assert!(parse_address(&format!("{}@example.com", "a".repeat(300))).is_err());
        assert!(parse_address("a@example.com\r\nBcc: x@example.com").is_err());
    }

    #[tokio::test]
    async fn the_outbox_gets_one_eml_per_message() {
        let dir = tempfile::tempdir().unwrap();
        let m = Mailer::from_settings(
            &crate::store::web_settings::WebSettings::default().smtp,
            dir.path(),
        );
        let mail =
            Mail { to: "b@example.com".into(), subject: "Hi".into(), body: "Body text".into() };
        m.send(&mail).await.unwrap();
        let files: Vec<_> = std::fs::read_dir(dir.path().join(OUTBOX_DIR)).unwrap().collect();
        assert_eq!(files.len(), 1);
        let text = std::fs::read_to_string(files[0].as_ref().unwrap().path()).unwrap();
        assert!(text.contains("To: b@example.com"), "{text}");
        assert!(text.contains("Body text"));
    }
}
