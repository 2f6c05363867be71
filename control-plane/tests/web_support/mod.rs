//! Shared harness for the web console's HTTP tests: a real HTTPS server on 127.0.0.1 port 0,
//! with a manual clock, and a small "browser" that keeps cookies and reads CSRF tokens from
//! pages. The client trusts exactly the self-signed certificate the server generated in its data
//! directory (no "accept any certificate" client).

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use haul_control::authorize::TokenAuthorizer;
use haul_control::authz::{Direction, SecretToken, TransferAsk};
use haul_control::secret::Keyring;
use haul_control::store::Store;
use haul_control::users::Cidr;
use haul_control::web::gate_ledger::GateLedger;
use haul_control::web::package_files::StorePackages;
use haul_control::web::state::Clock as _;
use haul_control::web::{self, ManualClock, WebConfig, WebHandle};
use reqwest::header::{HeaderMap, SET_COOKIE};
use reqwest::{Method, StatusCode};

pub const T0: i64 = 1_800_000_000;
/// A password that passes the default (strong) policy.
pub const GOOD_PASSWORD: &str = "c0rrect-Horse-battery!";

pub struct Server {
    pub dir: tempfile::TempDir,
    pub addr: SocketAddr,
    pub clock: Arc<ManualClock>,
    pub store: Arc<Store>,
    pub keys: Arc<Keyring>,
    pub handle: Option<WebHandle>,
}

impl Server {
    pub async fn start() -> Server {
        Server::start_with(Vec::new()).await
    }

    pub async fn start_with(trusted_proxies: Vec<Cidr>) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let clock = Arc::new(ManualClock::new(T0));
        let store = Arc::new(Store::open(dir.path()).unwrap());
        // Written to the data directory, so a test can build the gate's authorizer over the
        // same secret (`secret::load`).
        haul_control::secret::ensure_data_dir(dir.path()).unwrap();
        let keys = Arc::new(haul_control::secret::load_or_create(dir.path(), T0).unwrap());
        let mut config = WebConfig::new("127.0.0.1:0".parse().unwrap(), dir.path().to_path_buf());
        config.clock = clock.clone();
        config.trusted_proxies = trusted_proxies;
        let handle = web::spawn(config, store.clone(), keys.clone()).await.unwrap();
        Server { addr: handle.local_addr(), dir, clock, store, keys, handle: Some(handle) }
    }

    pub fn url(&self, path: &str) -> String {
        format!("https://localhost:{}{}", self.addr.port(), path)
    }

    /// The gate's host key, which transfer URLs pin (the gate creates it in production).
    pub fn host_key(&self) {
        let key = self.dir.path().join(haul_control::token::hostkey_pin::HOST_KEY_FILE);
        let ok = std::process::Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-C", "test", "-f"])
            .arg(&key)
            .status()
            .expect("ssh-keygen (openssh-client) is needed for this test");
        assert!(ok.success());
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }

    pub fn browser(&self) -> Browser {
        let cert = std::fs::read(self.dir.path().join(web::tls::SELF_SIGNED_CERT)).unwrap();
        let client = reqwest::Client::builder()
            .add_root_certificate(reqwest::Certificate::from_pem(&cert).unwrap())
            .resolve("localhost", self.addr)
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(60))
            .build()
            .unwrap();
        Browser { client, base: self.url(""), cookies: BTreeMap::new(), csrf: None }
    }

    /// Signs in as the first admin with the one-time password, and changes it.
    pub async fn admin(&self) -> Browser {
        let otp = std::fs::read_to_string(
            self.dir.path().join(web::first_admin::INITIAL_ADMIN_PASSWORD_FILE),
        )
        .unwrap();
        let mut b = self.browser();
        b.login("admin", otp.trim()).await;
        b.get("/account/password").await;
        let r = b
            .post_form(
                "/account/password",
                &[("current", otp.trim()), ("new", GOOD_PASSWORD), ("confirm", GOOD_PASSWORD)],
            )
            .await;
        assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
        // The change started a new session: load a page for its CSRF token.
        assert_eq!(b.get("/").await.status, StatusCode::OK);
        b
    }

    /// As `admin`, creates a user with `role` and returns (id, one-time password).
    pub async fn create_user(&self, admin: &mut Browser, name: &str, role: &str) -> (i64, String) {
        admin.get("/admin/users").await;
        let r = admin
            .post_form(
                "/admin/users",
                &[("name", name), ("role", role), ("full_name", ""), ("email", "")],
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        let pw = between(&r.body, "id=\"one-time-password\">", "<").to_owned();
        let id: i64 = between(&r.body, "href=\"/admin/users/", "\"").parse().unwrap();
        (id, pw)
    }

    /// A signed-in user `name` (created by `admin`) with their own password set.
    pub async fn user(&self, admin: &mut Browser, name: &str, role: &str) -> (i64, Browser) {
        let (id, otp) = self.create_user(admin, name, role).await;
        let mut b = self.browser();
        b.login(name, &otp).await;
        b.get("/account/password").await;
        let r = b
            .post_form(
                "/account/password",
                &[("current", &otp), ("new", GOOD_PASSWORD), ("confirm", GOOD_PASSWORD)],
            )
            .await;
        assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
        assert_eq!(b.get("/").await.status, StatusCode::OK);
        (id, b)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(h) = self.handle.take() {
            drop(h);
        }
    }
}

/// The gate's authorizer over the server's store and secret, inside the gate's ledger, at the
/// server's clock.
pub fn gate_ledger(srv: &Server) -> GateLedger<TokenAuthorizer> {
    let keys = haul_control::secret::load(&srv.data_dir()).unwrap();
    let packages = Box::new(StorePackages { store: srv.store.clone() });
    let (c1, c2) = (srv.clock.clone(), srv.clock.clone());
    let inner = TokenAuthorizer::new(srv.store.clone(), keys, &srv.data_dir())
        .unwrap()
        .with_clock(move || c1.now_s())
        .with_packages(packages);
    GateLedger::new(inner, srv.store.clone(), &srv.data_dir()).with_clock(move || c2.now_s())
}

pub fn download_ask<'a>(token: &'a SecretToken, path: &'a str) -> TransferAsk<'a> {
    TransferAsk {
        token,
        direction: Direction::Download,
        path,
        client_ip: "127.0.0.1".parse().unwrap(),
        suite: None,
        rate_bps: None,
        min_rate_bps: None,
        policy: None,
    }
}

/// The text between `a` and the next `b` (panics if absent: the test fails).
pub fn between<'s>(s: &'s str, a: &str, b: &str) -> &'s str {
    let start = s.find(a).unwrap_or_else(|| panic!("{a:?} not in page:\n{s}")) + a.len();
    let end = s[start..].find(b).unwrap() + start;
    &s[start..end]
}

pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: String,
}

impl Reply {
    pub fn location(&self) -> &str {
        self.headers.get("location").and_then(|v| v.to_str().ok()).unwrap_or("")
    }
    pub fn header(&self, name: &str) -> &str {
        self.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or("")
    }
}

/// A cookie-keeping client that reads the CSRF token from each page it loads.
pub struct Browser {
    pub client: reqwest::Client,
    pub base: String,
    pub cookies: BTreeMap<String, String>,
    pub csrf: Option<String>,
}

impl Browser {
    fn cookie_header(&self) -> String {
        self.cookies.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("; ")
    }

    pub async fn send(&mut self, req: reqwest::RequestBuilder) -> Reply {
        let req =
            if self.cookies.is_empty() { req } else { req.header("cookie", self.cookie_header()) };
        let res = req.send().await.unwrap();
        let status = res.status();
        let headers = res.headers().clone();
        for v in headers.get_all(SET_COOKIE) {
            let v = v.to_str().unwrap();
            let (kv, attrs) = v.split_once(';').unwrap_or((v, ""));
            let (k, val) = kv.split_once('=').unwrap();
            if attrs.contains("Max-Age=0") {
                self.cookies.remove(k);
            } else {
                self.cookies.insert(k.to_owned(), val.to_owned());
            }
        }
        let body = res.text().await.unwrap();
        if let Some(i) = body.find("name=\"csrf\" value=\"") {
            let rest = &body[i + 19..];
            self.csrf = Some(rest[..rest.find('"').unwrap()].to_owned());
        }
        Reply { status, headers, body }
    }

    pub async fn get(&mut self, path: &str) -> Reply {
        let req = self.client.get(format!("{}{path}", self.base));
        self.send(req).await
    }

    /// POSTs a form with the current CSRF token added.
    pub async fn post_form(&mut self, path: &str, fields: &[(&str, &str)]) -> Reply {
        let mut all: Vec<(&str, &str)> = fields.to_vec();
        let csrf = self.csrf.clone().unwrap_or_default();
        all.push(("csrf", &csrf));
        let req = self.client.post(format!("{}{path}", self.base)).form(&all);
        self.send(req).await
    }

    /// POSTs a form without any CSRF token.
    pub async fn post_form_no_csrf(&mut self, path: &str, fields: &[(&str, &str)]) -> Reply {
        let req = self.client.post(format!("{}{path}", self.base)).form(fields);
        self.send(req).await
    }

    pub async fn request(
        &mut self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        json: Option<serde_json::Value>,
    ) -> Reply {
        let mut req = self.client.request(method, format!("{}{path}", self.base));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        if let Some(j) = json {
            req = req.json(&j);
        }
        self.send(req).await
    }

    pub async fn login(&mut self, name: &str, password: &str) -> Reply {
        self.get("/login").await;
        self.post_form("/login", &[("name", name), ("password", password)]).await
    }
}

/// Everything the server logs in this test binary.
pub fn log_buffer() -> Arc<Mutex<Vec<u8>>> {
    static BUF: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    BUF.get_or_init(|| {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let writer = buf.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_writer(move || LogWriter(writer.clone()))
            .finish();
        tracing::subscriber::set_global_default(subscriber).unwrap();
        buf
    })
    .clone()
}

struct LogWriter(Arc<Mutex<Vec<u8>>>);

impl Write for LogWriter {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
