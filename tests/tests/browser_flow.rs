#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The console's main flow in headless Chromium, as far as the console has it today (issue 6,
//! acceptance "Browser test", step 1): the first admin signs in with the one-time password
//! from the data directory, is made to change it (a weak choice is refused with a message),
//! creates two users and a workgroup with both in it, and sets restrictions, which the pages
//! then show and the console enforces at sign-in. The users then sign in, change their own
//! one-time passwords and see what the admin set.
//!
//! Then, as far as packages exist (steps 2 and 3): with the SSH gate running over the same
//! data directory, alice creates a package for bob and the workgroup, uploads its file with
//! the release `haul put` and the URL from the package page, and sends it; bob opens it from
//! his inbox and gets the file byte for byte both with `haul get` and the URL from his package
//! page, and over the HTTPS fallback link on it. Alice also sends the package to an external
//! address allowed two downloads (step 2); the partner opens the e-mailed link, downloads with
//! `haul get` (URL from the link page) and over HTTPS, is refused a third copy by the gate, and
//! then sees the 410 page (step 4). Alice's package page lists every delivery. Last, the admin
//! expires bob's account: his earlier `haul get` URL is refused (`user-expired`) and he cannot
//! sign in.

use std::path::Path;

use haul_tests::browser::pages::Restrictions;
use haul_tests::browser::{GOOD_PASSWORD, Look, Rig, run};

const TEST: &str = "admin_first_sign_in_users_workgroup_and_restrictions";

#[test]
fn admin_first_sign_in_users_workgroup_and_restrictions() {
    run(TEST, async |rig| {
        let mut look = Look::new(TEST);
        first_sign_in(rig).await;
        let s = &rig.session;
        let c = &rig.console;
        let (alice, alice_otp) = s.create_user(c, "alice", "alice@example.test", "user").await;
        let (bob, bob_otp) = s.create_user(c, "bob", "bob@example.test", "user").await;
        let group = s.create_workgroup(c, "editors", "Picture editors").await;
        s.add_member(c, group, "alice").await;
        s.add_member(c, group, "bob").await;
        let members = s.text("main table tbody").await;
        assert!(members.contains("alice") && members.contains("bob"), "members: {members}");

        let alice_rules = Restrictions {
            expires: "2099-12-31".into(),
            direction: "both".into(),
            may_send_external: true,
            may_forward: true,
            ip_download: "127.0.0.0/8".into(),
            ..Restrictions::default()
        };
        s.set_restrictions(c, alice, &alice_rules).await;
        assert_eq!(s.path().await, format!("/admin/users/{alice}?notice=saved"));
        assert_saved(rig, alice, &alice_rules).await;
        let bob_rules = Restrictions { direction: "download_only".into(), ..Default::default() };
        s.set_restrictions(c, bob, &bob_rules).await;
        assert_saved(rig, bob, &bob_rules).await;

        s.allow_external_sending(c).await;

        // The users list shows both, active until they set their passwords.
        s.goto(&c.url("/admin/users")).await;
        let users = s.text("main table tbody").await;
        assert!(users.contains("alice") && users.contains("bob"), "users list: {users}");
        look.check_console(s, "admin-flow").await;
        s.sign_out().await;
        assert_eq!(s.path().await, "/login");

        // Alice signs in, sets her password, and sees her restrictions and workgroup.
        rig.user_signed_in("alice", &alice_otp).await;
        let home = s.text("main").await;
        for expect in ["2099-12-31", "Allowed", "127.0.0.0/8", "editors"] {
            assert!(home.contains(expect), "alice's home lacks {expect:?}:\n{home}");
        }
        let work = tempfile::tempdir().unwrap();
        rig.console.start_gate().await;
        let (package, link) = alice_sends_a_package(rig, work.path()).await;
        s.sign_out().await;
        rig.user_signed_in("bob", &bob_otp).await;
        let home = s.text("main").await;
        assert!(home.contains("Download only") || home.contains("download only"), "{home}");
        assert!(!s.has("a[href='/admin/users']").await, "a user sees no admin menu");
        let bob_url = bob_downloads(rig, &package, work.path()).await;
        s.sign_out().await;
        look.check_console(s, "user-flow").await;

        partner_uses_the_link(rig, &mut look, &link, work.path()).await;
        rig.session.sign_in(c, "alice", GOOD_PASSWORD).await;
        alice_sees_the_deliveries(rig, &package).await;
        look.check_page(s, "package-deliveries").await;
        s.sign_out().await;

        // A sign-in allow-list that excludes this address refuses alice, with a message.
        s.sign_in(c, "admin", GOOD_PASSWORD).await;
        let locked = Restrictions { ip_login: "10.0.0.0/8".into(), ..alice_rules };
        s.set_restrictions(c, alice, &locked).await;
        // Bob's account is expired through the console (today, 00:00 UTC, has passed): the
        // `haul get` URL minted for him before is refused at the gate with its code, and he
        // cannot sign in.
        let today = haul_control::users::format_utc(now_s())[..10].to_owned();
        let expired = Restrictions { expires: today, ..bob_rules };
        s.set_restrictions(c, bob, &expired).await;
        s.sign_out().await;
        let late = work.path().join("late");
        std::fs::create_dir(&late).unwrap();
        let err = haul_refused(&["get", &bob_url, late.to_str().unwrap()]).await;
        assert!(err.contains("user-expired"), "an expired account's haul get: {err}");
        assert!(!late.join("reel4.mov").exists(), "the refused haul get wrote the file");
        s.sign_in(c, "bob", GOOD_PASSWORD).await;
        assert_eq!(s.path().await, "/login", "an expired account signed in");
        assert!(s.error_text().await.is_some(), "the expired account's refusal shows a message");
        s.sign_in(c, "alice", GOOD_PASSWORD).await;
        assert_eq!(s.path().await, "/login", "alice signed in from outside her allow-list");
        assert!(s.error_text().await.is_some(), "the refusal shows a message");
        look.check_console(s, "restriction").await;
        admin_reads_the_transfer_audit(rig, &mut look, &link).await;
        look.assert_clean();
    });
}

/// The audit log, filtered on the admin page to `token`, holds the mints, uses and refusals
/// (with their codes) of the flow, and neither a token nor the link id.
async fn admin_reads_the_transfer_audit(rig: &Rig, look: &mut Look, link: &str) {
    let (s, c) = (&rig.session, &rig.console);
    s.sign_in(c, "admin", GOOD_PASSWORD).await;
    s.goto(&c.url("/admin/audit")).await;
    s.fill("#fx", "token").await;
    s.click_and_wait("form[action='/admin/audit'] button[type=submit]").await;
    let log = s.text("main").await;
    for expect in
        ["token.mint", "token.use", "token.refused", "code=download-limit", "code=user-expired"]
    {
        assert!(log.contains(expect), "the audit log lacks {expect}:\n{log}");
    }
    assert!(!log.contains("package.create"), "the filter let other actions through");
    let html = s.execute("return document.documentElement.outerHTML;", vec![]).await;
    let html = html.as_str().unwrap_or_default();
    assert!(!html.contains(link.trim_start_matches("/x/")), "a link id in the audit log");
    assert!(!html.contains("token=") && !html.contains("haul://"), "a token in the audit log");
    look.check_page(s, "audit-tokens").await;
    s.sign_out().await;
}

/// The package's file (its bytes are what the recipient must get back).
const REEL: &[u8] = b"frame 1, frame 2, frame 3: the final grade of reel 4\n";

/// Step 2: alice creates a package for bob and the workgroup, uploads its file with `haul put`
/// and the URL shown on the package page, sends it and sees it under Sent; then adds an
/// external recipient allowed two downloads, whose link arrives by e-mail (the development
/// outbox). Returns the package page's path and the link's path.
async fn alice_sends_a_package(rig: &Rig, work: &Path) -> (String, String) {
    let (s, c) = (&rig.session, &rig.console);
    let path = s.create_package(c, "Reel 4", "Final grade, please check", "bob", "editors").await;
    let about = s.text("main").await;
    assert!(about.contains("bob") && about.contains("editors"), "recipients shown: {about}");
    let url = s.haul_url("#put-command").await;
    let file = work.join("reel4.mov");
    std::fs::write(&file, REEL).unwrap();
    haul(&["put", &url, file.to_str().unwrap()]).await;
    s.send_package(c, &path).await;
    s.goto(&c.url("/packages/sent")).await;
    assert!(s.text("main").await.contains("Reel 4"), "the package is under Sent");
    s.add_external(c, &path, PARTNER, 2).await;
    assert!(s.text("main").await.contains(PARTNER), "the external recipient is listed");
    let mail = c.mail_containing(&format!("To: {PARTNER}")).await;
    let link = mail.split("/x/").nth(1).and_then(|t| t.split_whitespace().next()).unwrap_or("");
    assert_eq!(link.len(), 43, "no link id in the partner's mail:\n{mail}");
    (path, format!("/x/{link}"))
}

/// The external recipient, who has no account.
const PARTNER: &str = "partner@example.test";

/// Step 4: the partner opens the e-mailed link (no session) and fetches the file with `haul
/// get` and the URL on the link page, then over HTTPS: the two downloads allowed. A third, by
/// the same `haul get` URL, is refused by the gate (`download-limit`), and the link then
/// answers 410 with a page saying why.
async fn partner_uses_the_link(rig: &Rig, look: &mut Look, link: &str, work: &Path) {
    use sha2::Digest as _;
    let (s, c) = (&rig.session, &rig.console);
    s.goto(&c.url(link)).await;
    let page = s.text("main").await;
    assert!(page.contains("Reel 4") && page.contains("reel4.mov"), "link page: {page}");
    look.check_page(s, "external-link").await;
    let url = s.haul_url("main .get-command").await;
    let dest = work.join("partner");
    std::fs::create_dir(&dest).unwrap();
    haul(&["get", &url, dest.to_str().unwrap()]).await;
    assert_eq!(std::fs::read(dest.join("reel4.mov")).unwrap(), REEL, "haul get: other bytes");
    c.mail_containing(&format!("{PARTNER} downloaded reel4.mov")).await;
    let href = s.attr("main a[href$='/files/reel4.mov']", "href").await;
    let (status, sha) = s.fetch_sha256(&href).await;
    assert_eq!(status, 200, "the second download, over HTTPS");
    assert_eq!(sha, hex(&sha2::Sha256::digest(REEL)));
    let again = work.join("again");
    std::fs::create_dir(&again).unwrap();
    let err = haul_refused(&["get", &url, again.to_str().unwrap()]).await;
    assert!(err.contains("download-limit"), "a third download through the gate: {err}");
    assert!(!again.join("reel4.mov").exists(), "the refused haul get wrote the file");
    // The HTTPS download's accounting settles when its response ends: then the link is gone.
    let deadline = tokio::time::Instant::now() + haul_tests::browser::COMMAND_TIMEOUT;
    while s.fetch_sha256(link).await.0 != 410 {
        assert!(tokio::time::Instant::now() < deadline, "the used-up link never answered 410");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    s.goto(&c.url(link)).await;
    let gone = s.text("main").await;
    assert!(gone.contains("used as many times as it allows"), "410 page: {gone}");
    look.check_page(s, "external-link-gone").await;
    assert_eq!(s.fetch_sha256(&href).await.0, 410, "the file link is gone too");
    // The 410s asked for above are logged by the browser as failed loads: expected here.
    s.drain_log().await;
}

/// Alice's package page lists who downloaded what, by which path.
async fn alice_sees_the_deliveries(rig: &Rig, package: &str) {
    let (s, c) = (&rig.session, &rig.console);
    s.goto(&c.url(package)).await;
    let rows = s.text("#receipts tbody").await;
    for who in ["bob", PARTNER] {
        for how in ["haul get", "HTTPS"] {
            let seen = rows.lines().any(|l| l.contains(who) && l.contains(how));
            assert!(seen, "no receipt for {who} by {how}:\n{rows}");
        }
    }
}

/// Step 3: bob finds the package in his inbox and opens it from there; `haul get` with the URL
/// on its page, and its HTTPS download link, each give back exactly the bytes alice sent.
/// Returns the `haul get` URL.
async fn bob_downloads(rig: &Rig, package: &str, work: &Path) -> String {
    use sha2::Digest as _;
    let (s, c) = (&rig.session, &rig.console);
    s.goto(&c.url("/packages/inbox")).await;
    s.click_and_wait(&format!("main a[href='{package}']")).await;
    let page = s.text("main").await;
    for expect in ["Reel 4", "Final grade, please check", "alice", "reel4.mov"] {
        assert!(page.contains(expect), "bob's package page lacks {expect:?}:\n{page}");
    }
    let url = s.haul_url("main .get-command").await;
    let dest = work.join("bob");
    std::fs::create_dir(&dest).unwrap();
    haul(&["get", &url, dest.to_str().unwrap()]).await;
    assert_eq!(std::fs::read(dest.join("reel4.mov")).unwrap(), REEL, "haul get: other bytes");
    let href = s.attr("main a[href$='/files/reel4.mov']", "href").await;
    let (status, sha) = s.fetch_sha256(&href).await;
    assert_eq!(status, 200, "HTTPS download of {href}");
    assert_eq!(sha, hex(&sha2::Sha256::digest(REEL)), "bob got other bytes than alice sent");
    url
}

fn now_s() -> i64 {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap();
    i64::try_from(now.as_secs()).unwrap()
}

/// Runs the release `haul` client (URLs are the tests' own, so argv is fine here).
async fn haul(args: &[&str]) {
    let run = tokio::process::Command::new(haul_tests::haul_bin()).args(args).output();
    let out = tokio::time::timeout(haul_tests::TRANSFER_TIMEOUT, run)
        .await
        .unwrap_or_else(|_| panic!("haul {} timed out", args[0]))
        .unwrap();
    assert!(out.status.success(), "haul {}: {}", args[0], String::from_utf8_lossy(&out.stderr));
}

/// Runs the release `haul` client expecting a refusal; returns its standard error.
async fn haul_refused(args: &[&str]) -> String {
    let run = tokio::process::Command::new(haul_tests::haul_bin()).args(args).output();
    let out = tokio::time::timeout(haul_tests::TRANSFER_TIMEOUT, run)
        .await
        .unwrap_or_else(|_| panic!("haul {} timed out", args[0]))
        .unwrap();
    assert!(!out.status.success(), "haul {} succeeded where it must be refused", args[0]);
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The first admin: the one-time password works once, the change is forced, a weak password
/// is refused with the policy's message, a strong one is taken and the file is gone.
async fn first_sign_in(rig: &Rig) {
    let (s, c) = (&rig.session, &rig.console);
    let otp = c.initial_admin_password();
    s.goto(&c.url("/")).await;
    assert_eq!(s.path().await, "/login", "the console starts at the sign-in page");
    s.sign_in(c, "admin", "not-the-password-1!").await;
    assert_eq!(s.path().await, "/login");
    assert!(s.error_text().await.is_some(), "a wrong password shows a message");
    s.sign_in(c, "admin", &otp).await;
    assert_eq!(s.path().await, "/account/password", "the one-time password forces a change");
    s.goto(&c.url("/admin/users")).await;
    assert_eq!(s.path().await, "/account/password", "nothing else until it is changed");
    s.change_password(&otp, "short").await;
    let err = s.error_text().await.expect("a weak password is refused with a message");
    assert!(!err.is_empty());
    s.change_password(&otp, GOOD_PASSWORD).await;
    assert_eq!(s.path().await, "/?notice=password");
    let file = c.data_dir().join(haul_control::web::first_admin::INITIAL_ADMIN_PASSWORD_FILE);
    assert!(!file.exists(), "the one-time password file is deleted after the change");
}

/// The user's page, reloaded, shows exactly what was saved.
async fn assert_saved(rig: &Rig, user: i64, r: &Restrictions) {
    let s = &rig.session;
    s.goto(&rig.console.url(&format!("/admin/users/{user}"))).await;
    assert_eq!(s.value("#expires").await, r.expires);
    assert_eq!(s.value("#direction").await, r.direction);
    assert_eq!(s.is_checked("input[name=may_send_external]").await, r.may_send_external);
    assert_eq!(s.is_checked("input[name=may_forward]").await, r.may_forward);
    assert_eq!(s.value("#ip_login").await, r.ip_login);
    assert_eq!(s.value("#ip_upload").await, r.ip_upload);
    assert_eq!(s.value("#ip_download").await, r.ip_download);
}
