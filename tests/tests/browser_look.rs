#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Look and accessibility of every main page of the console (issue 6, acceptance "Look and
//! accessibility"): axe-core reports no serious or critical violation, the browser logs no
//! console error, and nothing overflows horizontally, at 375 and 1280 px. Each page is seen
//! in the states a person meets: empty, filled in, with a validation message, and after a
//! change (notice). One PNG per page and width is saved (docs/TESTING.md says where).
//!
//! Packages: inbox and sent (empty and filled), the new-package form (plain and refused), a
//! draft, a sent package as sender and as recipient. The external-link pages (the link's page
//! and its 410 page) join this list when they exist.

use haul_tests::browser::{GOOD_PASSWORD, Look, Rig, run};

const TEST: &str = "main_pages_pass_axe_without_console_errors_or_overflow";

#[test]
fn main_pages_pass_axe_without_console_errors_or_overflow() {
    run(TEST, async |rig| {
        let mut look = Look::new(TEST);
        sign_in_pages(rig, &mut look).await;
        let (group, alice_otp) = admin_pages(rig, &mut look).await;
        account_pages(rig, &mut look).await;
        rig.user_signed_in("alice", &alice_otp).await;
        rig.session.sign_out().await;
        user_pages(rig, &mut look, group).await;
        eprintln!("{TEST}: {} screenshots in {}", look.screenshots().len(), look.dir().display());
        look.assert_clean();
    });
}

/// Sign-in (empty and refused), the forced password change (plain and refused), home.
async fn sign_in_pages(rig: &Rig, look: &mut Look) {
    let (s, c) = (&rig.session, &rig.console);
    s.goto(&c.url("/login")).await;
    look.check_page(s, "login").await;
    s.sign_in(c, "admin", "wrong-password-1!").await;
    assert!(s.error_text().await.is_some());
    look.check_page(s, "login-refused").await;
    let otp = c.initial_admin_password();
    s.sign_in(c, "admin", &otp).await;
    look.check_page(s, "password-forced").await;
    s.change_password(&otp, "weak").await;
    assert!(s.error_text().await.is_some());
    look.check_page(s, "password-refused").await;
    s.change_password(&otp, GOOD_PASSWORD).await;
    look.check_page(s, "home-admin").await;
}

/// Users (list, one-time password, edit with a notice and with an error), workgroups (empty,
/// new, with members, list), settings, audit log.
async fn admin_pages(rig: &Rig, look: &mut Look) -> (i64, String) {
    let (s, c) = (&rig.session, &rig.console);
    s.goto(&c.url("/admin/users")).await;
    look.check_page(s, "users").await;
    let (alice, alice_otp) = s.create_user(c, "alice", "alice@example.test", "user").await;
    look.check_page(s, "user-created").await;
    s.create_user(c, "bob", "bob@example.test", "workgroup_admin").await;
    s.goto(&c.url("/admin/users")).await;
    look.check_page(s, "users-list").await;
    s.goto(&c.url(&format!("/admin/users/{alice}"))).await;
    s.fill("#ip_login", "not-a-network").await;
    s.click_and_wait(&format!("form[action='/admin/users/{alice}'] button[type=submit]")).await;
    assert!(s.error_text().await.is_some(), "a bad network is refused with a message");
    look.check_page(s, "user-edit-refused").await;
    s.goto(&c.url(&format!("/admin/users/{alice}?notice=saved"))).await;
    look.check_page(s, "user-edit").await;

    s.goto(&c.url("/workgroups")).await;
    look.check_page(s, "workgroups-empty").await;
    let group = s.create_workgroup(c, "editors", "Picture editors").await;
    look.check_page(s, "workgroup-empty").await;
    s.add_member(c, group, "alice").await;
    s.add_member(c, group, "bob").await;
    look.check_page(s, "workgroup").await;
    s.goto(&c.url("/workgroups")).await;
    look.check_page(s, "workgroups").await;

    s.goto(&c.url("/admin/settings")).await;
    look.check_page(s, "settings").await;
    s.goto(&c.url("/admin/audit")).await;
    look.check_page(s, "audit").await;
    (group, alice_otp)
}

/// API tokens (empty, just created), two-step verification, a page that does not exist.
async fn account_pages(rig: &Rig, look: &mut Look) {
    let (s, c) = (&rig.session, &rig.console);
    s.goto(&c.url("/account/tokens")).await;
    look.check_page(s, "tokens-empty").await;
    s.fill("#tname", "nightly-sync").await;
    s.click_and_wait("form[action='/account/tokens'] button[type=submit]").await;
    assert!(s.has("#new-token").await, "the new token is shown once");
    look.check_page(s, "tokens-created").await;
    s.goto(&c.url("/account/totp")).await;
    look.check_page(s, "totp").await;
    s.goto(&c.url("/account/password")).await;
    look.check_page(s, "password").await;
    s.goto(&c.url("/no/such/page")).await;
    look.check_page(s, "not-found").await;
    s.goto(&c.url("/")).await;
    s.sign_out().await;
}

/// What a plain user sees: home, their workgroups and one workgroup's members.
async fn user_pages(rig: &Rig, look: &mut Look, group: i64) {
    let (s, c) = (&rig.session, &rig.console);
    s.sign_in(c, "admin", GOOD_PASSWORD).await;
    let (_, otp) = s.create_user(c, "carol", "carol@example.test", "user").await;
    s.add_member(c, group, "carol").await;
    s.sign_out().await;
    rig.user_signed_in("carol", &otp).await;
    look.check_page(s, "home-user").await;
    s.goto(&c.url("/workgroups")).await;
    look.check_page(s, "workgroups-user").await;
    s.goto(&c.url(&format!("/workgroups/{group}"))).await;
    look.check_page(s, "workgroup-user").await;
    package_pages(rig, look).await;
    s.sign_out().await;
}

/// Inbox and sent (empty and not), the new-package form (plain and refused), a draft package,
/// a sent one as its sender and as its recipient.
async fn package_pages(rig: &Rig, look: &mut Look) {
    let (s, c) = (&rig.session, &rig.console);
    // With the gate up, a draft's page shows the real `haul put` command.
    c.start_gate().await;
    s.goto(&c.url("/packages/inbox")).await;
    look.check_page(s, "inbox-empty").await;
    s.goto(&c.url("/packages/sent")).await;
    look.check_page(s, "sent-empty").await;
    s.goto(&c.url("/packages/new")).await;
    look.check_page(s, "package-new").await;
    s.fill("#ptitle", "Reel 4").await;
    s.fill("#pusers", "nobody").await;
    s.click_and_wait("form[action='/packages'] button[type=submit]").await;
    assert!(s.error_text().await.is_some(), "an unknown recipient is refused with a message");
    look.check_page(s, "package-new-refused").await;
    let path = s.create_package(c, "Reel 4", "Final grade, please check", "alice", "editors").await;
    look.check_page(s, "package-draft").await;
    assert!(s.has("#put-command").await, "the draft shows the haul put command");
    c.place_in_outbox("carol", "reel4.mov", b"frames");
    s.send_package(c, &path).await;
    look.check_page(s, "package-sent").await;
    s.goto(&c.url("/packages/sent")).await;
    look.check_page(s, "sent").await;
    s.sign_out().await;
    s.sign_in(c, "alice", GOOD_PASSWORD).await;
    s.goto(&c.url("/packages/inbox")).await;
    look.check_page(s, "inbox").await;
    s.goto(&c.url(&path)).await;
    look.check_page(s, "package-received").await;
}
