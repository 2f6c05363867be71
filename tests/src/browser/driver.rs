//! Chromium and chromedriver: finding them (installing Debian's `chromium` and
//! `chromium-driver` with apt-get when missing), starting chromedriver on a free loopback
//! port, and a WebDriver [`Session`] with the two chromedriver extensions the checks need:
//! the browser log (console errors) and Chrome DevTools Protocol commands (viewport width,
//! full-page screenshots).
//!
//! Invariants: chromedriver listens on 127.0.0.1 only and runs in its own process group, which
//! is killed when the [`Driver`] drops; Chromium runs headless with a throwaway profile and
//! accepts exactly one certificate key (the console's), never any certificate.

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use fantoccini::wd::WebDriverCompatibleCommand;
use serde_json::{Value as Json, json};

use super::COMMAND_TIMEOUT;

/// The Debian packages that provide the browser and its driver.
pub const APT_PACKAGES: [&str; 2] = ["chromium", "chromium-driver"];
/// Deadline for chromedriver to say it listens (nominally well under a second).
const DRIVER_START_TIMEOUT: Duration = Duration::from_secs(60);
/// Attempts at a free port for chromedriver (another process may take the one we picked).
const DRIVER_START_ATTEMPTS: usize = 3;
/// Browser log entries kept per read (a page that logs more is failing anyway).
const MAX_LOG_ENTRIES: usize = 200;

/// The browser and driver binaries.
#[derive(Debug, Clone)]
pub struct Tools {
    pub chromium: PathBuf,
    pub chromedriver: PathBuf,
}

impl Tools {
    /// Finds both, installing them with apt-get when missing. When they cannot be had, prints a
    /// loud banner and returns `None` (the caller skips) — except under CI (`CI` set), where a
    /// missing browser fails the test: CI's `scripts/test` installs it.
    pub fn or_skip(test: &str) -> Option<Tools> {
        match Tools::find().or_else(|_| Tools::install()) {
            Ok(t) => Some(t),
            Err(why) if std::env::var_os("CI").is_some() => {
                panic!("{test}: the browser is required under CI and could not be had: {why}")
            }
            Err(why) => {
                let bar = "!".repeat(78);
                eprintln!(
                    "\n{bar}\n!! SKIPPED {test}: no headless Chromium.\n!! {why}\n!! \
                     Install it with: apt-get install -y {}\n{bar}\n",
                    APT_PACKAGES.join(" ")
                );
                None
            }
        }
    }

    fn find() -> Result<Tools, String> {
        let chromium = on_path("chromium").ok_or("chromium is not on PATH")?;
        let chromedriver = on_path("chromedriver").ok_or("chromedriver is not on PATH")?;
        Ok(Tools { chromium, chromedriver })
    }

    /// `apt-get install`, and once more after `apt-get update` if the lists were stale.
    fn install() -> Result<Tools, String> {
        eprintln!("browser tests: installing {} with apt-get", APT_PACKAGES.join(" "));
        let install = || {
            Command::new("apt-get")
                .args(["install", "-y", "--no-install-recommends"])
                .args(APT_PACKAGES)
                .env("DEBIAN_FRONTEND", "noninteractive")
                .stdout(Stdio::null())
                .status()
        };
        let ok = matches!(install(), Ok(s) if s.success())
            || (matches!(
                Command::new("apt-get").arg("update").stdout(Stdio::null()).status(),
                Ok(s) if s.success()
            ) && matches!(install(), Ok(s) if s.success()));
        if !ok {
            return Err(format!("apt-get install {} failed", APT_PACKAGES.join(" ")));
        }
        Tools::find()
    }
}

fn on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|d| d.join(name)).find(|p| p.is_file())
}

/// A running chromedriver (its process group is killed on drop).
#[derive(Debug)]
pub struct Driver {
    child: Child,
    port: u16,
    tools: Tools,
    profile: tempfile::TempDir,
}

impl Driver {
    /// Starts chromedriver on a free loopback port and waits until it listens.
    pub fn start(tools: &Tools) -> Driver {
        let mut last = String::new();
        for _ in 0..DRIVER_START_ATTEMPTS {
            match Driver::try_start(tools) {
                Ok(d) => return d,
                Err(e) => last = e,
            }
        }
        panic!("chromedriver did not start: {last}");
    }

    fn try_start(tools: &Tools) -> Result<Driver, String> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| format!("no free port: {e}"))?
            .port();
        let mut child = Command::new(&tools.chromedriver)
            .arg(format!("--port={port}"))
            .arg("--allowed-ips=127.0.0.1")
            .arg("--log-level=WARNING")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .process_group(0)
            .spawn()
            .map_err(|e| format!("spawning {}: {e}", tools.chromedriver.display()))?;
        let stdout = child.stdout.take().ok_or("chromedriver stdout")?;
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if line.contains("started successfully") {
                    let _ = tx.send(());
                }
            }
        });
        let profile = tempfile::tempdir().map_err(|e| format!("profile dir: {e}"))?;
        let driver = Driver { child, port, tools: tools.clone(), profile };
        match rx.recv_timeout(DRIVER_START_TIMEOUT) {
            Ok(()) => Ok(driver),
            Err(_) => Err(format!("no start-up line on port {port}")),
        }
    }

    /// Opens a headless Chromium session that trusts the certificate key `spki_sha256_b64`.
    pub async fn session(&self, spki_sha256_b64: &str) -> Session {
        let args = vec![
            "--headless=new".to_owned(),
            // Chromium refuses to start its sandbox as root (CI runs as root).
            "--no-sandbox".to_owned(),
            "--disable-gpu".to_owned(),
            "--disable-dev-shm-usage".to_owned(),
            "--no-first-run".to_owned(),
            "--disable-extensions".to_owned(),
            "--disable-background-networking".to_owned(),
            "--disable-component-update".to_owned(),
            "--disable-sync".to_owned(),
            "--lang=en-US".to_owned(),
            "--hide-scrollbars".to_owned(),
            "--window-size=1280,900".to_owned(),
            format!("--user-data-dir={}", self.profile.path().display()),
            // Trust exactly this key (the flag needs --user-data-dir).
            format!("--ignore-certificate-errors-spki-list={spki_sha256_b64}"),
        ];
        let caps = json!({
            "browserName": "chrome",
            "acceptInsecureCerts": false,
            "goog:chromeOptions": { "binary": self.tools.chromium, "args": args },
            "goog:loggingPrefs": { "browser": "ALL" },
            "timeouts": { "script": COMMAND_TIMEOUT.as_millis() as u64,
                          "pageLoad": COMMAND_TIMEOUT.as_millis() as u64, "implicit": 0 },
        });
        let Json::Object(caps) = caps else { unreachable!("a JSON object literal") };
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let client = tokio::time::timeout(
            COMMAND_TIMEOUT,
            fantoccini::ClientBuilder::new(connector)
                .capabilities(caps)
                .connect(&format!("http://127.0.0.1:{}", self.port)),
        )
        .await
        .expect("chromedriver session timed out")
        .expect("chromedriver session");
        Session { client, log: std::sync::Mutex::new(Vec::new()) }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        // Chromium is chromedriver's child, in the same group: end the group we created.
        let pgid = self.child.id();
        let _ = Command::new("kill").args(["-KILL", "--", &format!("-{pgid}")]).status();
        let _ = self.child.wait();
    }
}

/// One WebDriver session.
#[derive(Debug)]
pub struct Session {
    pub client: fantoccini::Client,
    /// Browser log entries read but not yet taken by [`Session::drain_log`].
    log: std::sync::Mutex<Vec<LogEntry>>,
}

/// One browser log entry.
#[derive(Debug, Clone)]
pub struct LogEntry {
    pub level: String,
    pub message: String,
}

impl Session {
    /// Loads `url` and waits for the load event.
    pub async fn goto(&self, url: &str) {
        tokio::time::timeout(COMMAND_TIMEOUT, self.client.goto(url))
            .await
            .unwrap_or_else(|_| panic!("loading {url} timed out"))
            .unwrap_or_else(|e| panic!("loading {url}: {e}"));
        self.settle_log().await;
    }

    /// Moves the browser log into the session's buffer, minus the line Chromium writes for
    /// the document's own HTTP status ("<document URL> - Failed to load resource: ... 404"):
    /// an error page or a refused form (401, 403, 404, 422) is the console answering, and the
    /// tests check those statuses by what the page says. Call it once each new document has
    /// loaded; a failing asset, script, fetch or CSP violation stays in.
    pub async fn settle_log(&self) {
        let doc = self.execute("return document.URL;", vec![]).await;
        let own = format!("{} - Failed to load resource:", doc.as_str().unwrap_or(""));
        let fresh = self.read_log().await;
        let mut log = self.log.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        for e in fresh.into_iter().filter(|e| !e.message.starts_with(&own)) {
            if log.len() < MAX_LOG_ENTRIES {
                log.push(e);
            }
        }
    }

    /// Runs `script` (a function body; `arguments` holds `args`) and returns its value.
    pub async fn execute(&self, script: &str, args: Vec<Json>) -> Json {
        tokio::time::timeout(COMMAND_TIMEOUT, self.client.execute(script, args))
            .await
            .expect("script timed out")
            .unwrap_or_else(|e| panic!("script failed: {e}\n{}", head(script)))
    }

    /// Runs an async script (its last argument is the callback) and returns what it passed.
    pub async fn execute_async(&self, script: &str, args: Vec<Json>) -> Json {
        tokio::time::timeout(COMMAND_TIMEOUT, self.client.execute_async(script, args))
            .await
            .expect("async script timed out")
            .unwrap_or_else(|e| panic!("async script failed: {e}\n{}", head(script)))
    }

    /// A Chrome DevTools Protocol command, through chromedriver.
    pub async fn cdp(&self, cmd: &str, params: Json) -> Json {
        let c =
            Extension { path: "goog/cdp/execute", body: json!({ "cmd": cmd, "params": params }) };
        self.issue(c).await.unwrap_or_else(|e| panic!("CDP {cmd}: {e}"))
    }

    /// The browser log entries since the last call (console messages, uncaught exceptions,
    /// failed loads, CSP violations), at most [`MAX_LOG_ENTRIES`], without the documents'
    /// own statuses (see [`Session::settle_log`]).
    pub async fn drain_log(&self) -> Vec<LogEntry> {
        self.settle_log().await;
        std::mem::take(&mut *self.log.lock().unwrap_or_else(std::sync::PoisonError::into_inner))
    }

    async fn read_log(&self) -> Vec<LogEntry> {
        let c = Extension { path: "se/log", body: json!({ "type": "browser" }) };
        let v = self.issue(c).await.unwrap_or_else(|e| panic!("reading the browser log: {e}"));
        let entries = v.as_array().cloned().unwrap_or_default();
        entries
            .iter()
            .take(MAX_LOG_ENTRIES)
            .map(|e| LogEntry {
                level: e["level"].as_str().unwrap_or("").to_owned(),
                message: e["message"].as_str().unwrap_or("").to_owned(),
            })
            .collect()
    }

    async fn issue(&self, c: Extension) -> Result<Json, String> {
        match tokio::time::timeout(COMMAND_TIMEOUT, self.client.issue_cmd(c)).await {
            Ok(r) => r.map_err(|e| e.to_string()),
            Err(_) => Err("timed out".into()),
        }
    }

    /// Ends the session (Chromium exits).
    pub async fn close(self) {
        let _ = tokio::time::timeout(COMMAND_TIMEOUT, self.client.close()).await;
    }
}

fn head(s: &str) -> &str {
    &s[..s.char_indices().nth(200).map_or(s.len(), |(i, _)| i)]
}

/// A chromedriver-specific POST under the session (`/session/{id}/{path}`).
#[derive(Debug)]
struct Extension {
    path: &'static str,
    body: Json,
}

impl WebDriverCompatibleCommand for Extension {
    fn endpoint(
        &self,
        base_url: &url::Url,
        session_id: Option<&str>,
    ) -> Result<url::Url, url::ParseError> {
        base_url.join(&format!("session/{}/{}", session_id.unwrap_or(""), self.path))
    }

    fn method_and_body(&self, _request_url: &url::Url) -> (http::Method, Option<String>) {
        (http::Method::POST, Some(self.body.to_string()))
    }
}

/// The base64 SHA-256 of a PEM certificate's SubjectPublicKeyInfo: what Chromium's
/// `--ignore-certificate-errors-spki-list` takes.
pub fn spki_sha256_b64(cert_pem: &Path) -> String {
    use base64::Engine as _;
    use sha2::Digest as _;
    let pem = std::fs::read(cert_pem).unwrap();
    let (_, pem) = x509_parser::pem::parse_x509_pem(&pem).expect("PEM certificate");
    let cert = pem.parse_x509().expect("X.509 certificate");
    let spki = cert.tbs_certificate.subject_pki.raw;
    base64::engine::general_purpose::STANDARD.encode(sha2::Sha256::digest(spki))
}
