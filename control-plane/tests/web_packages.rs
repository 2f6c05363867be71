//! Packages over real HTTPS: create, the `haul put` URL, send (files delivered by hard link),
//! inbox and sent, `haul get` URLs per recipient, direction restrictions, IDOR, and the gate's
//! package check.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod web_support;

use haul_control::authorize::PackageCheck;
use haul_control::authz::{Authorizer, Outcome, SecretToken};
use haul_control::authz::{Direction, RefusalCode};
use haul_control::store::web_audit::AuditFilter;
use haul_control::token;
use haul_control::web::package_files::StorePackages;
use haul_control::web::package_limits::sweep_once;
use reqwest::StatusCode;
use web_support::{Server, T0, between, download_ask, gate_ledger};

/// The token inside a `haul://` URL on a page, opened with the server's keys.
fn claims_in(srv: &Server, page: &str, marker: &str) -> token::claims::Claims {
    // The page is HTML: undo its escaping as a browser does when showing the text.
    let url = between(page, marker, "'").replace("&#x2f;", "/").replace("&amp;", "&");
    assert!(url.starts_with("haul://localhost:2222/") && url.contains("&hostkey=SHA256:"), "{url}");
    let tok = between(&url, "token=", "&");
    token::open(&srv.keys, tok, T0).unwrap().claims().clone()
}

#[tokio::test]
async fn a_package_goes_from_sender_to_users_and_workgroup_members() {
    let srv = Server::start().await;
    srv.host_key();
    let mut admin = srv.admin().await;
    let (_, mut alice) = srv.user(&mut admin, "alice", "user").await;
    let (_, mut bob) = srv.user(&mut admin, "bob", "user").await;
    let (_, mut carol) = srv.user(&mut admin, "carol", "user").await;
    let (_, mut dave) = srv.user(&mut admin, "dave", "user").await;
    admin.get("/workgroups").await;
    let g = admin
        .post_form("/workgroups", &[("name", "colour"), ("description", "")])
        .await
        .location()
        .to_owned();
    for who in ["alice", "carol"] {
        admin.get(&g).await;
        admin.post_form(&format!("{g}/members"), &[("name", who)]).await;
    }
    alice.get("/packages/new").await;
    let r = alice
        .post_form(
            "/packages",
            &[
                ("title", "Reel 4"),
                ("note", "Final grade"),
                ("users", "bob, nobody"),
                ("workgroups", "colour"),
            ],
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(r.body.contains("no user named nobody"));
    let r = alice
        .post_form(
            "/packages",
            &[
                ("title", "Reel 4"),
                ("note", "Final grade"),
                ("users", "bob"),
                ("workgroups", "colour"),
            ],
        )
        .await;
    let page_path = r.location().to_owned();
    assert!(page_path.starts_with("/packages/"), "{}", r.body);
    let page = alice.get(&page_path).await.body;
    let up = claims_in(&srv, &page, "haul put '");
    assert_eq!(up.direction, Direction::Upload);
    assert_eq!(up.user.as_str(), "alice");
    let pid = up.package_id.clone().unwrap();
    assert_eq!(up.paths, vec![format!("outbox/{pid}")]);
    let check = StorePackages { store: srv.store.clone() };
    let user = |n: &str| srv.store.user(n).unwrap().unwrap();
    assert!(check.check(&pid, &user("alice"), Direction::Upload).is_ok());
    assert_eq!(
        check.check(&pid, &user("bob"), Direction::Upload).unwrap_err().code,
        RefusalCode::NotEntitled
    );
    assert_eq!(
        check.check(&pid, &user("bob"), Direction::Download).unwrap_err().code,
        RefusalCode::NotEntitled
    );
    // Sending with nothing uploaded is refused; recipients see nothing yet.
    let r = alice.post_form(&format!("{page_path}/send"), &[]).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(bob.get(&page_path).await.status, StatusCode::NOT_FOUND);
    // "Upload" (what haul put does through the gate) and send.
    let outbox = srv.data_dir().join("storage/alice/outbox").join(&pid);
    std::fs::write(outbox.join("reel4.mov"), b"frames").unwrap();
    alice.get(&page_path).await;
    assert_eq!(alice.post_form(&format!("{page_path}/send"), &[]).await.location(), page_path);
    assert!(alice.get("/packages/sent").await.body.contains("Reel 4"));
    // Bob (direct) and Carol (through the workgroup) have it, each with their own URL.
    for (b, name) in [(&mut bob, "bob"), (&mut carol, "carol")] {
        assert!(b.get("/packages/inbox").await.body.contains("Reel 4"), "{name}");
        let page = b.get(&page_path).await.body;
        assert!(page.contains("Final grade") && page.contains("reel4.mov"));
        let down = claims_in(&srv, &page, "haul get '");
        assert_eq!((down.direction, down.user.as_str()), (Direction::Download, name));
        assert_eq!(down.paths, vec![format!("inbox/{pid}/reel4.mov")]);
        let delivered =
            srv.data_dir().join("storage").join(name).join("inbox").join(&pid).join("reel4.mov");
        assert_eq!(std::fs::read(delivered).unwrap(), b"frames");
        assert!(check.check(&pid, &user(name), Direction::Download).is_ok());
    }
    // The HTTPS fallback: whole file, a range, an unsatisfiable range, names not in the package.
    let file = format!("{page_path}/files/reel4.mov");
    let r = bob.get(&file).await;
    assert_eq!((r.status, r.body.as_str()), (StatusCode::OK, "frames"));
    assert_eq!(r.header("accept-ranges"), "bytes");
    assert!(r.header("content-disposition").contains("reel4.mov"));
    let r = bob.request(reqwest::Method::GET, &file, &[("range", "bytes=2-")], None).await;
    assert_eq!((r.status, r.body.as_str()), (StatusCode::PARTIAL_CONTENT, "ames"));
    assert_eq!(r.header("content-range"), "bytes 2-5/6");
    let r = bob.request(reqwest::Method::GET, &file, &[("range", "bytes=6-")], None).await;
    assert_eq!(r.status, StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(r.header("content-range"), "bytes */6");
    for bad in ["nothere.mov", "..%2F..%2F..%2Fhaul.db", "%2E%2E"] {
        assert_eq!(
            bob.get(&format!("{page_path}/files/{bad}")).await.status,
            StatusCode::NOT_FOUND,
            "{bad}"
        );
    }
    assert_eq!(dave.get(&file).await.status, StatusCode::NOT_FOUND);
    // Dave is no recipient: 404 on the page and on send, and the gate refuses him too.
    assert_eq!(dave.get(&page_path).await.status, StatusCode::NOT_FOUND);
    dave.get("/").await;
    assert_eq!(
        dave.post_form(&format!("{page_path}/send"), &[]).await.status,
        StatusCode::NOT_FOUND
    );
    assert!(!dave.get("/packages/inbox").await.body.contains("Reel 4"));
    assert_eq!(
        check.check(&pid, &user("dave"), Direction::Download).unwrap_err().code,
        RefusalCode::NotEntitled
    );
    // Once sent, no more uploads into it.
    assert_eq!(
        check.check(&pid, &user("alice"), Direction::Upload).unwrap_err().code,
        RefusalCode::NotEntitled
    );
    assert_eq!(
        check
            .check("0123456789abcdef0123456789abcdef", &user("alice"), Direction::Upload)
            .unwrap_err()
            .code,
        RefusalCode::PackageGone
    );
}

#[tokio::test]
async fn download_only_users_cannot_send_and_upload_only_users_get_no_download_url() {
    let srv = Server::start().await;
    srv.host_key();
    let mut admin = srv.admin().await;
    let (_, mut sender) = srv.user(&mut admin, "sender", "user").await;
    let (down_id, mut down) = srv.user(&mut admin, "downonly", "user").await;
    let (up_id, mut up) = srv.user(&mut admin, "uponly", "user").await;
    for (id, dir) in [(down_id, "download_only"), (up_id, "upload_only")] {
        let path = format!("/admin/users/{id}");
        admin.get(&path).await;
        let form = [
            ("role", "user"),
            ("direction", dir),
            ("expires", ""),
            ("ip_login", ""),
            ("ip_upload", ""),
            ("ip_download", ""),
        ];
        assert_eq!(admin.post_form(&path, &form).await.status, StatusCode::SEE_OTHER);
    }
    assert_eq!(down.get("/packages/new").await.status, StatusCode::FORBIDDEN);
    down.get("/").await;
    let r = down.post_form("/packages", &[("title", "x"), ("users", "sender")]).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert!(r.body.contains("download-only"));
    // The upload-only user receives a package but is given no download URL.
    sender.get("/packages/new").await;
    let p = sender
        .post_form("/packages", &[("title", "Stems"), ("users", "uponly, downonly")])
        .await
        .location()
        .to_owned();
    let page = sender.get(&p).await.body;
    let pid = claims_in(&srv, &page, "haul put '").package_id.unwrap();
    std::fs::write(srv.data_dir().join("storage/sender/outbox").join(&pid).join("a.wav"), b"x")
        .unwrap();
    sender.post_form(&format!("{p}/send"), &[]).await;
    let page = up.get(&p).await.body;
    assert!(page.contains("upload-only") && !page.contains("haul get"), "{page}");
    assert_eq!(up.get(&format!("{p}/files/a.wav")).await.status, StatusCode::FORBIDDEN);
    let page = down.get(&p).await.body;
    assert!(page.contains("haul get '"), "{page}");
}

#[tokio::test]
async fn recipients_forward_only_with_the_permission() {
    let srv = Server::start().await;
    srv.host_key();
    let mut admin = srv.admin().await;
    let (_, mut sender) = srv.user(&mut admin, "sender", "user").await;
    let (fwd_id, mut fwd) = srv.user(&mut admin, "forwarder", "user").await;
    let (_, mut plain) = srv.user(&mut admin, "plain", "user").await;
    let (_, mut third) = srv.user(&mut admin, "third", "user").await;
    sender.get("/packages/new").await;
    let p = sender
        .post_form("/packages", &[("title", "Dailies"), ("users", "forwarder, plain")])
        .await
        .location()
        .to_owned();
    let page = sender.get(&p).await.body;
    let pid = claims_in(&srv, &page, "haul put '").package_id.unwrap();
    std::fs::write(srv.data_dir().join("storage/sender/outbox").join(&pid).join("d.mov"), b"day")
        .unwrap();
    sender.post_form(&format!("{p}/send"), &[]).await;
    // Without the permission: no form, and 403.
    assert!(!plain.get(&p).await.body.contains("/forward"));
    let r =
        plain.post_form(&format!("{p}/forward"), &[("users", "third"), ("workgroups", "")]).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(third.get(&p).await.status, StatusCode::NOT_FOUND);
    // With it: the new recipient gets the package and the file.
    let path = format!("/admin/users/{fwd_id}");
    admin.get(&path).await;
    let form = [
        ("role", "user"),
        ("direction", "both"),
        ("may_forward", "on"),
        ("expires", ""),
        ("ip_login", ""),
        ("ip_upload", ""),
        ("ip_download", ""),
    ];
    assert_eq!(admin.post_form(&path, &form).await.status, StatusCode::SEE_OTHER);
    assert!(fwd.get(&p).await.body.contains("/forward"));
    let r = fwd.post_form(&format!("{p}/forward"), &[("users", "third"), ("workgroups", "")]).await;
    assert_eq!(r.location(), p);
    let page = third.get(&p).await.body;
    assert!(page.contains("forwarded by forwarder") && page.contains("haul get '"), "{page}");
    assert_eq!(third.get(&format!("{p}/files/d.mov")).await.body, "day");
    // The sender cannot forward their own package (they send it).
    sender.get(&p).await;
    assert_eq!(
        sender.post_form(&format!("{p}/forward"), &[("users", "third")]).await.status,
        StatusCode::NOT_FOUND
    );
}

/// Alice's package to bob and carol with the limits given on the form; returns its page path
/// and the file's size. The file is written where `haul put` puts it.
async fn limited_package(
    srv: &Server,
    alice: &mut web_support::Browser,
    title: &str,
    limits: &[(&str, &str)],
) -> String {
    alice.get("/packages/new").await;
    let mut form =
        vec![("title", title), ("note", ""), ("users", "bob, carol"), ("workgroups", "")];
    form.extend_from_slice(limits);
    let r = alice.post_form("/packages", &form).await;
    let page = r.location().to_owned();
    assert!(page.starts_with("/packages/"), "{}", r.body);
    let id: i64 = page.trim_start_matches("/packages/").parse().unwrap();
    let pid = public_id(srv, id);
    let outbox = srv.data_dir().join("storage/alice/outbox").join(&pid);
    std::fs::write(outbox.join("a.bin"), vec![7u8; 4096]).unwrap();
    alice.get(&page).await;
    assert_eq!(alice.post_form(&format!("{page}/send"), &[]).await.location(), page);
    page
}

fn public_id(srv: &Server, id: i64) -> String {
    let alice = srv.store.user("alice").unwrap().unwrap().id;
    srv.store.package_for(id, alice).unwrap().unwrap().public_id
}

/// The `haul get` URL for a.bin on a recipient's page: (path asked of the gate, token).
fn get_url(page: &str) -> (String, SecretToken) {
    let url = between(page, "haul get '", "'").replace("&#x2f;", "/").replace("&amp;", "&");
    let rest = url.split_once("://").unwrap().1;
    let path = rest[rest.find('/').unwrap()..rest.find('?').unwrap()].to_owned();
    (path, SecretToken(between(&url, "token=", "&").to_owned().into()))
}

#[tokio::test]
async fn package_limits_hold_at_the_console_https_and_gate_and_the_sweeper_removes_files() {
    let srv = Server::start().await;
    srv.host_key();
    let mut ws = srv.store.web_settings().unwrap();
    ws.package_downloads_max = 3;
    srv.store.set_web_settings(&ws, T0).unwrap();
    let mut admin = srv.admin().await;
    let (_, mut alice) = srv.user(&mut admin, "alice", "user").await;
    let (_, mut bob) = srv.user(&mut admin, "bob", "user").await;
    let (_, mut carol) = srv.user(&mut admin, "carol", "user").await;
    // Above the admin maximum: a validation message.
    alice.get("/packages/new").await;
    let r =
        alice.post_form("/packages", &[("title", "X"), ("users", "bob"), ("downloads", "4")]).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(r.body.contains("from 1 to 3"), "{}", r.body);

    let limits = [("downloads", "1"), ("delete_after_download", "on"), ("expires_days", "")];
    let page = limited_package(&srv, &mut alice, "Once", &limits).await;
    let pkg: i64 = page.trim_start_matches("/packages/").parse().unwrap();
    let gate = gate_ledger(&srv);
    // Bob's one download, with haul through the gate.
    let (path, token) = get_url(&bob.get(&page).await.body);
    let grant = gate.authorize(&download_ask(&token, &path)).unwrap();
    gate.on_bytes_sent(&grant, Outcome::Complete, Some(4096));
    gate.finish(&grant, Outcome::Complete);
    // Used up: no URL on his page, 410 over HTTPS, `download-limit` at the gate.
    let body = bob.get(&page).await.body;
    assert!(body.contains("as many times as the sender allows") && !body.contains("haul get '"));
    assert_eq!(bob.get(&format!("{page}/files/a.bin")).await.status, StatusCode::GONE);
    let again = gate.authorize(&download_ask(&token, &path)).unwrap_err();
    assert_eq!(again.code, RefusalCode::DownloadLimit);
    // Carol has not downloaded yet: the files stay.
    assert_eq!(sweep_once(&srv.store, &srv.data_dir(), T0).unwrap(), 0);
    assert_eq!(carol.get(&format!("{page}/files/a.bin")).await.body.len(), 4096);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while srv.store.package_receipts(pkg).unwrap().len() < 2 {
        assert!(std::time::Instant::now() < deadline, "carol's receipt never came");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    // Both have it: the sweeper removes the sender's and the recipients' copies.
    assert_eq!(sweep_once(&srv.store, &srv.data_dir(), T0).unwrap(), 1);
    for dir in ["alice/outbox", "bob/inbox", "carol/inbox"] {
        let pid = public_id(&srv, pkg);
        assert!(!srv.data_dir().join("storage").join(dir).join(pid).exists(), "{dir} kept");
    }
    let receipts = alice.get(&page).await.body;
    assert!(receipts.contains("Files removed"), "{receipts}");

    // Expiry: refused everywhere after the date, then swept.
    let page2 = limited_package(&srv, &mut alice, "Soon", &[("expires_days", "1")]).await;
    let (path2, token2) = get_url(&bob.get(&page2).await.body);
    srv.clock.advance(86_400);
    // A day later bob's session has timed out: he signs in again.
    bob.login("bob", web_support::GOOD_PASSWORD).await;
    let body = bob.get(&page2).await.body;
    assert!(body.contains("This package has expired.") && !body.contains("haul get '"));
    assert_eq!(bob.get(&format!("{page2}/files/a.bin")).await.status, StatusCode::GONE);
    let late = gate.authorize(&download_ask(&token2, &path2)).unwrap_err();
    assert!(matches!(late.code, RefusalCode::Expired), "{late:?}");
    assert_eq!(sweep_once(&srv.store, &srv.data_dir(), T0 + 86_400).unwrap(), 1);
    let entries = srv
        .store
        .audit_entries(&AuditFilter {
            action_prefix: Some("package.files_removed".into()),
            limit: 10,
            ..Default::default()
        })
        .unwrap();
    assert_eq!(entries.len(), 2, "{entries:?}");
}
