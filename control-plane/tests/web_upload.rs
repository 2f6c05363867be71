//! Resumable browser uploads (`web::upload`) against a real HTTPS server: a chunked upload cut
//! off mid-chunk resumes from `HEAD` and ends byte-identical in the package; wrong offsets,
//! oversize files and chunks, bad checksums, quotas, other users' ids and abandoned uploads.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod web_support;

use std::io::Write;
use std::sync::Arc;

use base64::Engine as _;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use web_support::{Browser, Server};

const CHUNK: usize = 1 << 20;

/// A new API token for the signed-in browser `b`.
async fn token(b: &mut Browser, scopes: &[&str]) -> String {
    b.get("/").await;
    let csrf = b.csrf.clone().unwrap();
    let body = json!({ "name": "uploader", "scopes": scopes });
    let r = b.request(Method::POST, "/api/v1/tokens", &[("x-csrf-token", &csrf)], Some(body)).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let v: Value = serde_json::from_str(&r.body).unwrap();
    format!("Bearer {}", v["token"].as_str().unwrap())
}

struct Client {
    http: reqwest::Client,
    base: String,
    auth: String,
}

struct Answer {
    status: StatusCode,
    offset: Option<u64>,
    body: Value,
}

impl Client {
    fn new(srv: &Server, auth: String) -> Client {
        let b = srv.browser();
        Client { http: b.client, base: b.base, auth }
    }

    async fn send(&self, req: reqwest::RequestBuilder) -> Answer {
        let res = req.header("authorization", &self.auth).send().await.unwrap();
        let status = res.status();
        let offset =
            res.headers().get("upload-offset").map(|v| v.to_str().unwrap().parse().unwrap());
        let text = res.text().await.unwrap();
        let body = if text.is_empty() { Value::Null } else { serde_json::from_str(&text).unwrap() };
        Answer { status, offset, body }
    }

    async fn json(&self, method: Method, path: &str, body: Value) -> Answer {
        self.send(self.http.request(method, format!("{}{path}", self.base)).json(&body)).await
    }

    async fn head(&self, upload: &str) -> Answer {
        self.send(self.http.head(format!("{}{upload}", self.base))).await
    }

    async fn patch(&self, upload: &str, at: u64, chunk: &[u8], checksum: Option<&[u8]>) -> Answer {
        let mut req = self
            .http
            .patch(format!("{}{upload}", self.base))
            .header("content-type", "application/offset+octet-stream")
            .header("upload-offset", at.to_string())
            .body(chunk.to_vec());
        if let Some(of) = checksum {
            let sum = base64::engine::general_purpose::STANDARD.encode(Sha256::digest(of));
            req = req.header("upload-checksum", format!("sha256 {sum}"));
        }
        self.send(req).await
    }

    async fn start(&self, pkg: i64, name: &str, data: &[u8], with_sum: bool) -> Answer {
        let mut body = json!({ "name": name, "size": data.len() });
        if with_sum {
            body["sha256"] = json!(hex::encode(Sha256::digest(data)));
        }
        self.json(Method::POST, &format!("/api/v1/packages/{pkg}/uploads"), body).await
    }
}

/// Deterministic bytes that are not all alike.
fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// Sends a PATCH that declares `declared` bytes but sends only `sent` of them, then drops the
/// connection: a network error in the middle of a chunk.
fn cut_off_patch(
    cert: &std::path::Path,
    addr: std::net::SocketAddr,
    auth: &str,
    upload: &str,
    at: u64,
    declared: usize,
    sent: &[u8],
) {
    let cert = std::fs::read(cert).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    use rustls_pki_types::pem::PemObject;
    roots.add(rustls_pki_types::CertificateDer::from_pem_slice(&cert).unwrap()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    let conn = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
    let tcp = std::net::TcpStream::connect(addr).unwrap();
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    let head = format!(
        "PATCH {upload} HTTP/1.1\r\nHost: localhost\r\nAuthorization: {auth}\r\n\
         Content-Type: application/offset+octet-stream\r\nUpload-Offset: {at}\r\n\
         Content-Length: {declared}\r\n\r\n"
    );
    tls.write_all(head.as_bytes()).unwrap();
    tls.write_all(sent).unwrap();
    tls.flush().unwrap();
    tls.conn.send_close_notify();
    let _ = tls.flush();
    tls.sock.shutdown(std::net::Shutdown::Both).unwrap();
}

/// An admin with an API token, a user "ann" with one, and a draft package of Ann's.
async fn setup(srv: &Server) -> (Client, Client, Browser, Browser, i64) {
    let mut admin = srv.admin().await;
    let (_, mut ann) = srv.user(&mut admin, "ann", "user").await;
    let root = Client::new(srv, token(&mut admin, &["read", "write", "admin"]).await);
    let me = Client::new(srv, token(&mut ann, &["read", "write"]).await);
    let r = me
        .json(Method::POST, "/api/v1/packages", json!({ "title": "Rushes", "users": ["ann"] }))
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    (root, me, ann, admin, r.body["id"].as_i64().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_cut_off_mid_chunk_resumes_from_head_and_is_byte_identical() {
    let srv = Server::start().await;
    let (_, me, _, _, pkg) = setup(&srv).await;
    let data = pattern(3 * CHUNK + 12_345, 7);
    let r = me.start(pkg, "reel.mov", &data, true).await;
    assert_eq!((r.status, r.offset), (StatusCode::CREATED, Some(0)), "{}", r.body);
    let up = r.body["location"].as_str().unwrap().to_owned();
    let r = me.patch(&up, 0, &data[..CHUNK], Some(&data[..CHUNK])).await;
    assert_eq!((r.status, r.offset), (StatusCode::NO_CONTENT, Some(CHUNK as u64)));
    // The next chunk is cut off half-way: none of it counts.
    let (auth, up2, half) = (me.auth.clone(), up.clone(), data[CHUNK..CHUNK + CHUNK / 2].to_vec());
    let (cert, addr) = (srv.dir.path().join(haul_control::web::tls::SELF_SIGNED_CERT), srv.addr);
    tokio::task::spawn_blocking(move || {
        cut_off_patch(&cert, addr, &auth, &up2, CHUNK as u64, CHUNK, &half);
    })
    .await
    .unwrap();
    let mut at = 0;
    for _ in 0..100 {
        let r = me.head(&up).await;
        assert_eq!(r.status, StatusCode::OK);
        at = r.offset.unwrap();
        if at == CHUNK as u64 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(at, CHUNK as u64, "the cut-off chunk left no bytes behind");
    // A stale offset (the client thinks the cut-off chunk arrived) is refused with the real one.
    let r = me.patch(&up, (CHUNK + CHUNK / 2) as u64, &data[CHUNK..2 * CHUNK], None).await;
    assert_eq!((r.status, r.offset), (StatusCode::CONFLICT, Some(CHUNK as u64)), "{}", r.body);
    // A chunk damaged on the way is refused and nothing is written.
    let mut bad = data[CHUNK..2 * CHUNK].to_vec();
    bad[100] ^= 1;
    let r = me.patch(&up, CHUNK as u64, &bad, Some(&data[CHUNK..2 * CHUNK])).await;
    assert_eq!(r.status.as_u16(), 460, "{}", r.body);
    assert_eq!(me.head(&up).await.offset, Some(CHUNK as u64));
    // Resume from HEAD to the end.
    let mut at = me.head(&up).await.offset.unwrap() as usize;
    while at < data.len() {
        let end = (at + CHUNK).min(data.len());
        let r = me.patch(&up, at as u64, &data[at..end], Some(&data[at..end])).await;
        assert_eq!((r.status, r.offset), (StatusCode::NO_CONTENT, Some(end as u64)), "{}", r.body);
        at = end;
    }
    // Finished: the upload is gone and the file is in the package, byte-identical.
    assert_eq!(me.head(&up).await.status, StatusCode::NOT_FOUND);
    let r = me.json(Method::GET, &format!("/api/v1/packages/{pkg}"), json!(null)).await;
    assert_eq!(r.body["files"][0]["name"], "reel.mov", "{}", r.body);
    let public_id = srv.store.package_for(pkg, 2).unwrap().unwrap().public_id;
    let file = srv.data_dir().join("storage/ann/outbox").join(public_id).join("reel.mov");
    assert!(std::fs::read(file).unwrap() == data);
    let left: Vec<_> = std::fs::read_dir(srv.data_dir().join("uploads")).unwrap().collect();
    assert!(left.is_empty(), "no partial files remain: {left:?}");
    let r = me.json(Method::POST, &format!("/api/v1/packages/{pkg}/send"), json!(null)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
}

#[tokio::test]
async fn limits_checksums_and_other_users_ids_are_refused() {
    let srv = Server::start().await;
    let (root, me, mut ann, mut admin, pkg) = setup(&srv).await;
    let limits = json!({ "max_bytes": 3 * CHUNK, "per_user": 2 });
    let r = root.json(Method::PUT, "/api/v1/admin/upload-settings", limits).await;
    assert_eq!((r.status, r.body["per_user"].as_u64()), (StatusCode::OK, Some(2)), "{}", r.body);
    let r = me.json(Method::PUT, "/api/v1/admin/upload-settings", json!({})).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "a user cannot change the limits");
    // Oversize: declared beyond the setting, or a chunk beyond the declared size.
    let big = pattern(3 * CHUNK + 1, 1);
    assert_eq!(me.start(pkg, "big.bin", &big, false).await.status, StatusCode::PAYLOAD_TOO_LARGE);
    let small = pattern(1000, 2);
    let r = me.start(pkg, "small.bin", &small, true).await;
    let up = r.body["location"].as_str().unwrap().to_owned();
    let r = me.patch(&up, 0, &pattern(1001, 2), None).await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE, "{}", r.body);
    let r = me.patch(&up, 0, &vec![0u8; 8 * CHUNK + 1], None).await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE, "{}", r.body);
    // Bad names, and not a chunk.
    for name in ["../x", ".hidden", "a/b"] {
        let r = me.start(pkg, name, &small, false).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{name}");
    }
    let r = me
        .send(
            me.http
                .patch(format!("{}{up}", me.base))
                .header("upload-offset", "0")
                .body(small.clone()),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    // Quota: two unfinished uploads; a third waits until one is cancelled.
    let r2 = me.start(pkg, "two.bin", &small, false).await;
    assert_eq!(r2.status, StatusCode::CREATED);
    let r = me.start(pkg, "three.bin", &small, false).await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS, "{}", r.body);
    let two = r2.body["location"].as_str().unwrap().to_owned();
    assert_eq!(
        me.send(me.http.delete(format!("{}{two}", me.base))).await.status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(me.head(&two).await.status, StatusCode::NOT_FOUND);
    let r = me.start(pkg, "three.bin", &small, false).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    // Another user: the upload and the package are 404, and nothing changes.
    let (_, mut bob) = srv.user(&mut admin, "bob", "user").await;
    let other = Client::new(&srv, token(&mut bob, &["read", "write"]).await);
    assert_eq!(other.head(&up).await.status, StatusCode::NOT_FOUND);
    assert_eq!(other.patch(&up, 0, &small, None).await.status, StatusCode::NOT_FOUND);
    let r = other.send(other.http.delete(format!("{}{up}", other.base))).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(other.start(pkg, "x.bin", &small, false).await.status, StatusCode::NOT_FOUND);
    assert_eq!(other.head("/api/v1/uploads/nothex").await.status, StatusCode::NOT_FOUND);
    // A whole-file checksum that does not match: the file never joins the package.
    let mut wrong = small.clone();
    wrong[0] ^= 0xff;
    let r = me.patch(&up, 0, &wrong, None).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.body);
    assert_eq!(me.head(&up).await.status, StatusCode::NOT_FOUND);
    let r = me.json(Method::GET, &format!("/api/v1/packages/{pkg}"), json!(null)).await;
    assert_eq!(r.body["files"], json!([]), "{}", r.body);
    // A cookie caller needs the CSRF token on PATCH too.
    ann.get("/").await;
    let r = ann
        .request(Method::DELETE, "/api/v1/uploads/00000000000000000000000000000000", &[], None)
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn abandoned_uploads_are_removed_and_sent_packages_take_no_more() {
    let srv = Server::start().await;
    let (_, me, _, _, pkg) = setup(&srv).await;
    let data = pattern(5000, 3);
    let r = me.start(pkg, "old.bin", &data, false).await;
    let old = r.body["location"].as_str().unwrap().to_owned();
    assert_eq!(me.patch(&old, 0, &data[..100], None).await.status, StatusCode::NO_CONTENT);
    srv.clock.advance(haul_control::web::upload::UPLOAD_IDLE_S + 1);
    let r = me.start(pkg, "new.bin", &data, false).await;
    assert_eq!(r.status, StatusCode::CREATED);
    assert_eq!(me.head(&old).await.status, StatusCode::NOT_FOUND, "swept");
    let parts = std::fs::read_dir(srv.data_dir().join("uploads")).unwrap().count();
    assert_eq!(parts, 2, "only the new upload's partial and metadata remain");
    // Sending with an upload open: the upload cannot finish into a sent package.
    let new = r.body["location"].as_str().unwrap().to_owned();
    let public_id = srv.store.package_for(pkg, 2).unwrap().unwrap().public_id;
    let outbox = srv.data_dir().join("storage/ann/outbox").join(&public_id);
    std::fs::write(outbox.join("first.bin"), b"x").unwrap();
    let r = me.json(Method::POST, &format!("/api/v1/packages/{pkg}/send"), json!(null)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let r = me.patch(&new, 0, &data, None).await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.body);
    assert!(!outbox.join("new.bin").exists());
    assert_eq!(me.start(pkg, "late.bin", &data, false).await.status, StatusCode::NOT_FOUND);
}
