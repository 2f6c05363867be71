#![allow(clippy::unwrap_used, clippy::expect_used)]
//! External recipients and notifications (issue 6 items 7 and 8): a link works the allowed
//! number of times and then answers 410; an expired link is 410; aborted downloads and Range
//! requests cannot drain a one-download link beyond one full copy; only senders with the
//! permission (and the admin setting on) add external recipients; link ids and tokens stay out
//! of the logs; notifications reach the outbox and a local SMTP sink.

mod web_support;

use std::path::Path;
use std::time::{Duration, Instant};

use haul_control::authz::{Authorizer, Outcome, RefusalCode, SecretToken};
use haul_control::store::external::LinkBytes;
use haul_control::store::web_audit::AuditFilter;
use haul_control::store::web_settings::WebSettings;
use reqwest::{Method, StatusCode};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use web_support::{Browser, Server, T0, between, download_ask, gate_ledger, log_buffer};

const WAIT: Duration = Duration::from_secs(30);

fn settings(srv: &Server, f: impl FnOnce(&mut WebSettings)) {
    let mut s = srv.store.web_settings().unwrap();
    f(&mut s);
    srv.store.set_web_settings(&s, T0).unwrap();
}

/// A user with the external permission on (or off), e-mail `NAME@example.com`.
async fn sender(srv: &Server, admin: &mut Browser, name: &str, external: bool) -> Browser {
    let (id, b) = srv.user(admin, name, "user").await;
    let path = format!("/admin/users/{id}");
    admin.get(&path).await;
    let mut form = vec![
        ("role", "user"),
        ("direction", "both"),
        ("expires", ""),
        ("ip_login", ""),
        ("ip_upload", ""),
        ("ip_download", ""),
    ];
    if external {
        form.push(("may_send_external", "on"));
    }
    assert_eq!(admin.post_form(&path, &form).await.status, StatusCode::SEE_OTHER);
    srv.store.set_web_profile(id, false, &format!("{name}@example.com"), "").unwrap();
    b
}

/// A sent package with `files`, from `b` (user `name`) to `to`; returns its page path.
async fn sent_package(
    srv: &Server,
    b: &mut Browser,
    name: &str,
    to: &str,
    files: &[(&str, &[u8])],
) -> String {
    b.get("/packages/new").await;
    let r = b
        .post_form(
            "/packages",
            &[("title", "Rushes"), ("note", "Day 3"), ("users", to), ("workgroups", "")],
        )
        .await;
    let page = r.location().to_owned();
    assert!(page.starts_with("/packages/"), "{}", r.body);
    let pid = srv.store.sent_packages(srv.store.user(name).unwrap().unwrap().id).unwrap()[0]
        .public_id
        .clone();
    let outbox = srv.data_dir().join("storage").join(name).join("outbox").join(&pid);
    for (n, data) in files {
        std::fs::write(outbox.join(n), data).unwrap();
    }
    b.get(&page).await;
    assert_eq!(b.post_form(&format!("{page}/send"), &[]).await.location(), page);
    page
}

/// The `.eml` files in the outbox whose text contains `needle`, waiting up to [`WAIT`].
async fn outbox_mail(dir: &Path, needle: &str) -> String {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Ok(rd) = std::fs::read_dir(dir.join(haul_control::notify::OUTBOX_DIR)) {
            for e in rd {
                let raw = std::fs::read_to_string(e.unwrap().path()).unwrap();
                // Undo quoted-printable soft line breaks and '=' escapes.
                let text = raw.replace("=\r\n", "").replace("=\n", "").replace("=3D", "=");
                if text.contains(needle) {
                    return text;
                }
            }
        }
        assert!(Instant::now() < deadline, "no message with {needle:?} in the outbox");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Adds external recipient `email` and returns the link path (`/x/ID`) from their e-mail.
async fn add_external(
    srv: &Server,
    b: &mut Browser,
    page: &str,
    email: &str,
    downloads: &str,
) -> String {
    let ext = format!("{page}/external");
    assert_eq!(b.get(&ext).await.status, StatusCode::OK);
    let r = b
        .post_form(&ext, &[("email", email), ("expires_days", "2"), ("downloads", downloads)])
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    let mail = outbox_mail(&srv.data_dir(), &format!("To: {email}")).await;
    let id = between(&mail, "/x/", "\n").trim().to_owned();
    assert_eq!(id.len(), 43, "{mail}");
    format!("/x/{id}")
}

async fn setup(downloads: &str, files: &[(&str, &[u8])]) -> (Server, Browser, String, String) {
    let srv = Server::start().await;
    settings(&srv, |s| s.external_sending = true);
    let mut admin = srv.admin().await;
    let mut alice = sender(&srv, &mut admin, "alice", true).await;
    srv.user(&mut admin, "bob", "user").await;
    let page = sent_package(&srv, &mut alice, "alice", "bob", files).await;
    let link = add_external(&srv, &mut alice, &page, "partner@example.org", downloads).await;
    (srv, alice, page, link)
}

#[tokio::test]
async fn a_link_works_the_allowed_number_of_times_then_answers_410() {
    let (srv, _alice, _, link) = setup("2", &[("a.txt", b"alpha"), ("b.txt", b"bravo!")]).await;
    let mut x = srv.browser();
    let page = x.get(&link).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.body.contains("a.txt") && page.body.contains("b.txt"), "{}", page.body);
    // Page views do not count.
    assert_eq!(x.get(&link).await.status, StatusCode::OK);
    for _ in 0..2 {
        assert_eq!(x.get(&format!("{link}/files/a.txt")).await.body, "alpha");
        assert_eq!(x.get(&format!("{link}/files/b.txt")).await.body, "bravo!");
    }
    // The sender hears of each counted download.
    outbox_mail(&srv.data_dir(), "(download 2 of 2)").await;
    let deadline = Instant::now() + WAIT;
    loop {
        let r = x.get(&format!("{link}/files/a.txt")).await;
        if r.status == StatusCode::GONE {
            break;
        }
        // The second download's accounting may still be settling: never more bytes, though.
        assert_ne!(r.status, StatusCode::OK, "a third copy was served");
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let gone = x.get(&link).await;
    assert_eq!(gone.status, StatusCode::GONE);
    assert!(gone.body.contains("used as many times as it allows"), "{}", gone.body);
    assert_eq!(x.get(&format!("{link}/files/b.txt")).await.status, StatusCode::GONE);
    // A made-up id of the right shape is 404, not 410.
    let fake = format!("/x/{}", "A".repeat(43));
    assert_eq!(x.get(&fake).await.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn an_expired_link_answers_410() {
    let (srv, _alice, _, link) = setup("5", &[("a.txt", b"alpha")]).await;
    let mut x = srv.browser();
    assert_eq!(x.get(&format!("{link}/files/a.txt")).await.body, "alpha");
    srv.clock.advance(2 * 86_400);
    let r = x.get(&link).await;
    assert_eq!(r.status, StatusCode::GONE);
    assert!(r.body.contains("expired"), "{}", r.body);
    assert_eq!(x.get(&format!("{link}/files/a.txt")).await.status, StatusCode::GONE);
}

/// Waits until no response of `link_id` holds a reservation.
async fn settled(srv: &Server, link_id: i64, file: &str) -> u64 {
    let deadline = Instant::now() + WAIT;
    loop {
        let b = srv.store.link_bytes(link_id, file).unwrap();
        if b.reserved == 0 {
            return b.sent;
        }
        assert!(Instant::now() < deadline, "reservation never released");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn aborts_and_range_requests_cannot_drain_a_one_download_link_beyond_one_copy() {
    const SIZE: usize = 8 << 20;
    let data: Vec<u8> = (0..SIZE).map(|i| (i * 7 % 251) as u8).collect();
    let (srv, _alice, page, link) = setup("1", &[("big.bin", &data)]).await;
    let pkg: i64 = page.trim_start_matches("/packages/").parse().unwrap();
    let link_id = srv.store.external_links(pkg).unwrap()[0].id;
    let x = srv.browser();
    let url = format!("{}{link}/files/big.bin", x.base);
    let mut received = 0u64;
    // Aborted downloads: read a little, then drop the connection.
    for _ in 0..3 {
        let mut res = x.client.get(&url).send().await.unwrap();
        // After an abort that sent part of the file, a whole copy no longer fits: 409.
        match res.status() {
            StatusCode::OK => {
                received += res.chunk().await.unwrap().map_or(0, |c| c.len() as u64);
            }
            StatusCode::CONFLICT => {}
            other => panic!("unexpected {other}"),
        }
        drop(res);
        settled(&srv, link_id, "big.bin").await;
    }
    let after_aborts = settled(&srv, link_id, "big.bin").await;
    assert!(after_aborts < SIZE as u64, "aborts were charged as a whole copy: {after_aborts}");
    // Range requests, 1 MiB at a time over the whole file, again and again, until refused.
    let mut refused = 0;
    for i in 0..40u64 {
        let start = (i % 8) << 20;
        let range = format!("bytes={start}-{}", start + (1 << 20) - 1);
        let res = x.client.get(&url).header("range", range).send().await.unwrap();
        match res.status() {
            StatusCode::PARTIAL_CONTENT => {
                let body = res.bytes().await.unwrap();
                let s = usize::try_from(start).unwrap();
                assert_eq!(&body[..], &data[s..s + body.len()]);
                received += body.len() as u64;
            }
            StatusCode::GONE | StatusCode::CONFLICT => refused += 1,
            other => panic!("unexpected {other}"),
        }
        settled(&srv, link_id, "big.bin").await;
    }
    assert!(refused > 0, "the link never refused");
    assert!(received <= SIZE as u64, "the client got {received} bytes of a {SIZE}-byte file");
    let b = srv.store.link_bytes(link_id, "big.bin").unwrap();
    assert!(b.sent <= SIZE as u64, "{b:?}");
    // A whole-file request after that is refused before sending.
    let res = x.client.get(&url).send().await.unwrap();
    assert!(matches!(res.status(), StatusCode::GONE | StatusCode::CONFLICT), "{}", res.status());
}

#[tokio::test]
async fn only_permitted_senders_add_external_recipients() {
    let srv = Server::start().await;
    let mut admin = srv.admin().await;
    let mut plain = sender(&srv, &mut admin, "plain", false).await;
    let mut ext = sender(&srv, &mut admin, "ext", true).await;
    srv.user(&mut admin, "bob", "user").await;
    let p1 = sent_package(&srv, &mut plain, "plain", "bob", &[("a", b"a")]).await;
    let p2 = sent_package(&srv, &mut ext, "ext", "bob", &[("b", b"b")]).await;
    settings(&srv, |s| s.external_sending = true);
    // Without the permission: a validation error on the form, 403 on the API.
    plain.get(&format!("{p1}/external")).await;
    let r = plain.post_form(&format!("{p1}/external"), &[("email", "x@example.org")]).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(r.body.contains("may not send to external addresses"), "{}", r.body);
    let token = api_token(&mut plain).await;
    let api = format!("/api/v1{p1}/external");
    let body = serde_json::json!({ "email": "x@example.org" });
    let auth = format!("Bearer {token}");
    // API calls carry the token only (a cookie on an API POST is refused for CSRF).

    let r = srv
        .browser()
        .request(Method::POST, &api, &[("authorization", &auth)], Some(body.clone()))
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.body);
    assert!(
        srv.store
            .external_links(p1.trim_start_matches("/packages/").parse().unwrap())
            .unwrap()
            .is_empty()
    );
    // Another sender's package is 404.
    let token = api_token(&mut ext).await;
    let other = format!("Bearer {token}");
    let r = srv.browser().request(Method::GET, &api, &[("authorization", &other)], None).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    // With the permission, but the admin setting off: 403 too; on: 201, limits clamped.
    let (auth, api) = (format!("Bearer {token}"), format!("/api/v1{p2}/external"));
    settings(&srv, |s| s.external_sending = false);
    let r = srv
        .browser()
        .request(Method::POST, &api, &[("authorization", &auth)], Some(body.clone()))
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    settings(&srv, |s| s.external_sending = true);
    let too_many = serde_json::json!({ "email": "x@example.org", "downloads": 1000 });
    let r = srv
        .browser()
        .request(Method::POST, &api, &[("authorization", &auth)], Some(too_many))
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.body);
    let r =
        srv.browser().request(Method::POST, &api, &[("authorization", &auth)], Some(body)).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(v["max_downloads"], 1);
    assert!(!r.body.contains("/x/"), "the API never returns the link id");
}

async fn api_token(b: &mut Browser) -> String {
    b.get("/account/tokens").await;
    let r = b
        .post_form(
            "/account/tokens",
            &[("name", "t"), ("scope_read", "on"), ("scope_write", "on"), ("expires_days", "1")],
        )
        .await;
    between(&r.body, "id=\"new-token\">", "<").to_owned()
}

#[tokio::test]
async fn link_ids_and_tokens_never_reach_the_logs() {
    let logs = log_buffer();
    let (srv, mut alice, page, link) = setup("1", &[("a.txt", b"alpha")]).await;
    let id = link.trim_start_matches("/x/").to_owned();
    let mut x = srv.browser();
    x.get(&link).await;
    x.get(&format!("{link}/files/a.txt")).await;
    x.get(&format!("{link}/files/a.txt")).await;
    x.get(&format!("{link}/files/nothing?id={id}")).await;
    let token = api_token(&mut alice).await;
    let auth = format!("Bearer {token}");
    alice
        .request(Method::GET, &format!("/api/v1{page}/external"), &[("authorization", &auth)], None)
        .await;
    outbox_mail(&srv.data_dir(), "(download 1 of 1)").await;
    let text = String::from_utf8(logs.lock().unwrap().clone()).unwrap();
    assert!(text.contains("GET /x/{link}/files/{name}"), "routes are logged by template:\n{text}");
    assert!(!text.contains(&id), "link id in log:\n{text}");
    assert!(!text.contains(&token), "token in log:\n{text}");
    let audit = srv
        .store
        .audit_entries(&haul_control::store::web_audit::AuditFilter {
            limit: 200,
            ..Default::default()
        })
        .unwrap();
    assert!(audit.iter().any(|e| e.action == "external.download"));
    assert!(audit.iter().all(|e| !e.detail.contains(&id) && !e.target.contains(&id)));
}

/// A one-message-at-a-time SMTP sink on 127.0.0.1 port 0; returns its port and the messages.
async fn smtp_sink() -> (u16, tokio::sync::mpsc::Receiver<String>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    tokio::spawn(async move {
        loop {
            let (sock, _) = listener.accept().await.unwrap();
            let tx = tx.clone();
            tokio::spawn(async move {
                let (r, mut w) = sock.into_split();
                let mut lines = BufReader::new(r).lines();
                w.write_all(b"220 sink ESMTP\r\n").await.unwrap();
                let mut data: Option<String> = None;
                while let Ok(Some(line)) = lines.next_line().await {
                    if let Some(d) = data.as_mut() {
                        if line == "." {
                            tx.send(data.take().unwrap()).await.unwrap();
                            w.write_all(b"250 queued\r\n").await.unwrap();
                        } else {
                            d.push_str(&line);
                            d.push('\n');
                        }
                        continue;
                    }
                    let verb = line.get(..4).unwrap_or("").to_ascii_uppercase();
                    let reply: &[u8] = match verb.as_str() {
                        "EHLO" | "HELO" => b"250 sink\r\n",
                        "DATA" => {
                            data = Some(String::new());
                            b"354 go on\r\n"
                        }
                        "QUIT" => {
                            w.write_all(b"221 bye\r\n").await.unwrap();
                            break;
                        }
                        _ => b"250 ok\r\n",
                    };
                    w.write_all(reply).await.unwrap();
                }
            });
        }
    });
    (port, rx)
}

#[tokio::test]
async fn notifications_reach_the_outbox_and_an_smtp_server() {
    // Outbox mode (no SMTP host): sending to bob e-mails bob.
    let srv = Server::start().await;
    let mut admin = srv.admin().await;
    let mut alice = sender(&srv, &mut admin, "alice", false).await;
    let bob = srv.store.user("bob").unwrap();
    assert!(bob.is_none());
    let (bob_id, mut bob_b) = srv.user(&mut admin, "bob", "user").await;
    srv.store.set_web_profile(bob_id, false, "bob@example.com", "").unwrap();
    let page = sent_package(&srv, &mut alice, "alice", "bob", &[("a", b"a")]).await;
    let mail = outbox_mail(&srv.data_dir(), "To: bob@example.com").await;
    assert!(mail.contains("Package from alice: Rushes"), "{mail}");
    assert!(mail.contains(&page), "{mail}");
    // SMTP mode: the next package goes to the sink, not the outbox.
    let (port, mut rx) = smtp_sink().await;
    settings(&srv, |s| {
        s.smtp.host = "127.0.0.1".into();
        s.smtp.port = port;
        s.smtp.starttls = false;
        s.smtp.from = "haul@example.com".into();
    });
    let before = std::fs::read_dir(srv.data_dir().join("outbox")).unwrap().count();
    let mut b2 = alice;
    b2.get("/packages/new").await;
    let r = b2
        .post_form(
            "/packages",
            &[("title", "Second"), ("note", ""), ("users", "bob"), ("workgroups", "")],
        )
        .await;
    let page2 = r.location().to_owned();
    let pid = srv
        .store
        .sent_packages(srv.store.user("alice").unwrap().unwrap().id)
        .unwrap()
        .into_iter()
        .find(|p| p.title == "Second")
        .unwrap()
        .public_id;
    std::fs::write(srv.data_dir().join("storage/alice/outbox").join(&pid).join("b"), b"bb")
        .unwrap();
    b2.get(&page2).await;
    b2.post_form(&format!("{page2}/send"), &[]).await;
    let msg = tokio::time::timeout(WAIT, rx.recv()).await.unwrap().unwrap();
    assert!(msg.contains("Package from alice: Second"), "{msg}");
    assert!(msg.contains("bob@example.com"), "{msg}");
    // Bob downloads: a part (no mail), then the whole file over HTTPS: alice is told, through
    // the sink, and the package page shows the delivery.
    let file = format!("{page2}/files/b");
    let part = bob_b.request(Method::GET, &file, &[("range", "bytes=0-0")], None).await;
    assert_eq!(part.status, StatusCode::PARTIAL_CONTENT);
    assert_eq!(bob_b.get(&file).await.body, "bb");
    let msg = tokio::time::timeout(WAIT, rx.recv()).await.unwrap().unwrap();
    assert!(msg.contains("Downloaded: Second") && msg.contains("alice@example.com"), "{msg}");
    assert!(msg.contains("bob downloaded b from your package Second"), "{msg}");
    let receipts = b2.get(&page2).await.body;
    let receipts = between(&receipts, "id=\"receipts\"", "</table>").to_owned();
    assert_eq!(receipts.matches("<tr><td>bob").count(), 1, "one receipt, by HTTPS: {receipts}");
    assert_eq!(std::fs::read_dir(srv.data_dir().join("outbox")).unwrap().count(), before);
}

/// The `haul get` URL for `file` on a link page: (path asked of the gate, token).
fn link_url(page: &str, file: &str) -> (String, String) {
    let cmd = between(page, &format!("<strong>{file}</strong>"), "</code>");
    let url = between(cmd, "haul get '", "'").replace("&#x2f;", "/").replace("&amp;", "&");
    assert!(url.starts_with("haul://"), "no haul get URL for {file}: {cmd}");
    let rest = url.split_once("://").unwrap().1;
    let path = &rest[rest.find('/').unwrap()..rest.find('?').unwrap()];
    (path.to_owned(), between(&url, "token=", "&").to_owned())
}

#[tokio::test]
async fn haul_get_on_a_link_shares_the_https_accounting_and_is_audited() {
    const SIZE: usize = 1 << 20;
    let data: Vec<u8> = (0..SIZE).map(|i| (i * 13 % 251) as u8).collect();
    let srv = Server::start().await;
    srv.host_key();
    settings(&srv, |s| s.external_sending = true);
    let mut admin = srv.admin().await;
    let mut alice = sender(&srv, &mut admin, "alice", true).await;
    srv.user(&mut admin, "bob", "user").await;
    let page = sent_package(&srv, &mut alice, "alice", "bob", &[("big.bin", &data)]).await;
    let link = add_external(&srv, &mut alice, &page, "partner@example.org", "1").await;
    let pkg: i64 = page.trim_start_matches("/packages/").parse().unwrap();
    let link_id = srv.store.external_links(pkg).unwrap()[0].id;
    let mut x = srv.browser();
    let (path, token) = link_url(&x.get(&link).await.body, "big.bin");
    let token = SecretToken(token.into());
    let gate = gate_ledger(&srv);

    // haul get starts: the whole file is reserved, so neither a second haul get nor a whole
    // HTTPS download fits beside it.
    let grant = gate.authorize(&download_ask(&token, &path)).unwrap();
    assert_eq!(srv.store.link_bytes(link_id, "big.bin").unwrap().reserved, SIZE as u64);
    let second = gate.authorize(&download_ask(&token, &path)).unwrap_err();
    assert_eq!(second.code, RefusalCode::DownloadLimit);
    let url = format!("{}{link}/files/big.bin", x.base);
    assert_eq!(x.client.get(&url).send().await.unwrap().status(), StatusCode::CONFLICT);
    // It is interrupted halfway: only the half it sent is charged.
    let half = (SIZE / 2) as u64;
    gate.on_bytes_sent(&grant, Outcome::Interrupted, Some(half));
    gate.finish(&grant, Outcome::Interrupted);
    assert_eq!(
        srv.store.link_bytes(link_id, "big.bin").unwrap(),
        LinkBytes { sent: half, reserved: 0 }
    );
    // The rest over HTTPS with Range completes the one download allowed...
    let res = x.client.get(&url).header("range", format!("bytes={half}-")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(&res.bytes().await.unwrap()[..], &data[SIZE / 2..]);
    assert_eq!(settled(&srv, link_id, "big.bin").await, SIZE as u64);
    // ...after which haul get is refused, and the link is gone.
    let third = gate.authorize(&download_ask(&token, &path)).unwrap_err();
    assert_eq!(third.code, RefusalCode::DownloadLimit);
    assert_eq!(x.get(&link).await.status, StatusCode::GONE);
    let b = srv.store.link_bytes(link_id, "big.bin").unwrap();
    assert_eq!(b, LinkBytes { sent: SIZE as u64, reserved: 0 }, "never more than one copy");

    // The sender's page shows the delivery; the audit log has the mint, use and refusals, and
    // neither the token nor the link id.
    let deadline = Instant::now() + WAIT;
    while srv.store.package_receipts(pkg).unwrap().is_empty() {
        assert!(Instant::now() < deadline, "no receipt");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let body = alice.get(&page).await.body;
    let receipts = between(&body, "id=\"receipts\"", "</table>");
    assert!(receipts.contains("partner@example.org") && receipts.contains("HTTPS"), "{receipts}");
    let entries =
        srv.store.audit_entries(&AuditFilter { limit: 500, ..Default::default() }).unwrap();
    let has = |action: &str, detail: &str| {
        entries.iter().any(|e| e.action == action && e.detail.contains(detail))
    };
    assert!(has("token.mint", &format!("external_link={link_id}")), "{entries:#?}");
    assert!(has("token.use", &format!("external_link={link_id}")), "{entries:#?}");
    assert!(has("token.refused", "code=download-limit"), "{entries:#?}");
    let link_secret = link.trim_start_matches("/x/");
    for e in &entries {
        let text = format!("{e:?}");
        assert!(!text.contains(link_secret) && !text.contains(token.0.as_str()), "{text}");
    }
}
