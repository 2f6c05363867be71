//! Accounts over real HTTPS: the first admin, forced password change, password policy, session
//! timeouts and logout, account restrictions at sign-in, and API tokens.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod web_support;

use std::os::unix::fs::PermissionsExt;

use haul_control::store::web_settings::WebSettings;
use haul_control::web::first_admin::INITIAL_ADMIN_PASSWORD_FILE;
use reqwest::{Method, StatusCode};
use web_support::{GOOD_PASSWORD, Server, between};

#[tokio::test]
async fn first_admin_password_is_a_private_file_and_must_be_changed() {
    let srv = Server::start().await;
    let file = srv.data_dir().join(INITIAL_ADMIN_PASSWORD_FILE);
    let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let otp = std::fs::read_to_string(&file).unwrap().trim().to_owned();
    let mut b = srv.browser();
    let r = b.login("admin", &otp).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    assert_eq!(r.location(), "/account/password");
    // Every other page and the API send the admin back to change it.
    for path in ["/", "/admin/users", "/account/tokens"] {
        let r = b.get(path).await;
        assert_eq!(r.location(), "/account/password", "{path}");
    }
    let r = b.request(Method::GET, "/api/v1/me", &[], None).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let r = b.get("/account/password").await;
    assert!(r.body.contains("one-time password"), "{}", r.body);
    let r = b
        .post_form(
            "/account/password",
            &[("current", &otp), ("new", GOOD_PASSWORD), ("confirm", GOOD_PASSWORD)],
        )
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    assert!(!file.exists(), "the one-time password file is removed once used");
    let r = b.get("/").await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.body.contains("Welcome, admin"));
    // The one-time password no longer works; the new one does.
    let mut other = srv.browser();
    assert_eq!(other.login("admin", &otp).await.status, StatusCode::UNAUTHORIZED);
    assert_eq!(other.login("admin", GOOD_PASSWORD).await.location(), "/");
}

#[tokio::test]
async fn a_second_start_does_not_make_another_admin() {
    let srv = Server::start().await;
    let _admin = srv.admin().await;
    let again =
        haul_control::web::first_admin::ensure(&srv.store, &srv.data_dir(), web_support::T0)
            .unwrap();
    assert!(again.is_none());
    assert!(!srv.data_dir().join(INITIAL_ADMIN_PASSWORD_FILE).exists());
}

#[tokio::test]
async fn weak_passwords_are_refused_while_the_policy_is_on() {
    let srv = Server::start().await;
    let mut admin = srv.admin().await;
    let (_, otp) = srv.create_user(&mut admin, "alice", "user").await;
    let mut b = srv.browser();
    b.login("alice", &otp).await;
    b.get("/account/password").await;
    for (weak, says) in [
        ("short1!", "at least 12"),
        ("longpasswordonly", "one letter, one number and one symbol"),
        ("longpassword1234", "one symbol"),
    ] {
        let r = b
            .post_form("/account/password", &[("current", &otp), ("new", weak), ("confirm", weak)])
            .await;
        assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{weak}");
        assert!(r.body.contains(says), "{weak}: {}", r.body);
    }
    // With the policy off, the length floor still holds but classes are not required.
    let mut s = srv.store.web_settings().unwrap();
    s.strong_passwords = false;
    srv.store.set_web_settings(&s, web_support::T0).unwrap();
    let r = b
        .post_form(
            "/account/password",
            &[("current", &otp), ("new", "longpasswordonly"), ("confirm", "longpasswordonly")],
        )
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
}

#[tokio::test]
async fn sessions_end_when_idle_when_too_old_and_on_logout() {
    let srv = Server::start().await;
    let d = WebSettings::default();
    let mut b = srv.admin().await;
    // Activity keeps a session alive past the idle timeout...
    for _ in 0..4 {
        srv.clock.advance(d.session_idle_s - 60);
        assert_eq!(b.get("/").await.status, StatusCode::OK);
    }
    // ...but idling past it ends the session on the server.
    srv.clock.advance(d.session_idle_s);
    assert_eq!(b.get("/").await.location(), "/login");
    // The absolute timeout ends even a busy session.
    b.login("admin", GOOD_PASSWORD).await;
    let mut elapsed = 0;
    while elapsed + d.session_idle_s / 2 < d.session_absolute_s {
        srv.clock.advance(d.session_idle_s / 2);
        elapsed += d.session_idle_s / 2;
        assert_eq!(b.get("/").await.status, StatusCode::OK, "at {elapsed}s");
    }
    srv.clock.advance(d.session_idle_s / 2);
    assert_eq!(b.get("/").await.location(), "/login");
    // Logout ends the session server-side: the old cookie is useless afterwards.
    b.login("admin", GOOD_PASSWORD).await;
    assert_eq!(b.get("/").await.status, StatusCode::OK);
    let saved = b.cookies.clone();
    let r = b.post_form("/logout", &[]).await;
    assert_eq!(r.location(), "/login");
    assert!(!b.cookies.contains_key("__Host-haul-session"));
    b.cookies = saved;
    assert_eq!(b.get("/").await.location(), "/login");
}

#[tokio::test]
async fn disabled_expired_and_address_restricted_accounts_cannot_sign_in() {
    let srv = Server::start().await;
    let mut admin = srv.admin().await;
    let (id, mut user) = srv.user(&mut admin, "bob", "user").await;
    // A checkbox that is not ticked is not sent at all, as in a browser.
    let edit = |disabled: bool, expires: &'static str, ip_login: &'static str| {
        let mut f = vec![
            ("full_name", ""),
            ("email", ""),
            ("role", "user"),
            ("expires", expires),
            ("direction", "both"),
            ("ip_login", ip_login),
            ("ip_upload", ""),
            ("ip_download", ""),
        ];
        if disabled {
            f.push(("disabled", "on"));
        }
        f
    };
    let path = format!("/admin/users/{id}");
    admin.get(&path).await;
    // Expired yesterday (T0 is 2027-01-15): the session ends and sign-in is refused.
    let r = admin.post_form(&path, &edit(false, "2027-01-14", "")).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    assert_eq!(user.get("/").await.location(), "/login");
    let r = user.login("bob", GOOD_PASSWORD).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert!(r.body.contains("expired"));
    // Disabled.
    admin.get(&path).await;
    admin.post_form(&path, &edit(true, "", "")).await;
    let r = user.login("bob", GOOD_PASSWORD).await;
    assert!(r.body.contains("disabled"), "{}", r.body);
    // Login allow-list that does not hold 127.0.0.1.
    admin.get(&path).await;
    admin.post_form(&path, &edit(false, "", "192.0.2.0/24")).await;
    let r = user.login("bob", GOOD_PASSWORD).await;
    assert!(r.body.contains("may not sign in from this address"), "{}", r.body);
    // Back to normal.
    admin.get(&path).await;
    admin.post_form(&path, &edit(false, "", "")).await;
    assert_eq!(user.login("bob", GOOD_PASSWORD).await.location(), "/");
    // The audit log recorded the refusals with who, what and where.
    let r = admin.get("/admin/audit?action=login.refused").await;
    assert!(
        r.body.contains("bob") && r.body.contains("127.0.0.1") && r.body.contains("expired"),
        "{}",
        r.body
    );
}

#[tokio::test]
async fn api_tokens_are_scoped_hashed_and_revocable() {
    let srv = Server::start().await;
    let mut admin = srv.admin().await;
    let (_, mut carol) = srv.user(&mut admin, "carol", "user").await;
    carol.get("/account/tokens").await;
    let r = carol
        .post_form(
            "/account/tokens",
            &[("name", "nightly"), ("scope_read", "on"), ("expires_days", "30")],
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let token = between(&r.body, "id=\"new-token\">", "<").to_owned();
    assert!(token.starts_with("haul_"));
    // Only the hash is stored.
    let dump = std::fs::read(srv.data_dir().join("haul.db")).unwrap();
    assert!(!dump.windows(token.len()).any(|w| w == token.as_bytes()));
    let mut script = srv.browser();
    let bearer = format!("Bearer {token}");
    let r = script.request(Method::GET, "/api/v1/me", &[("authorization", &bearer)], None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert!(r.body.contains("\"carol\""));
    // A read-only token cannot write, and no token reaches the admin API without the scope.
    let body = serde_json::json!({ "name": "x", "scopes": ["read"] });
    let r = script
        .request(Method::POST, "/api/v1/tokens", &[("authorization", &bearer)], Some(body))
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let r = script
        .request(Method::GET, "/api/v1/admin/users", &[("authorization", &bearer)], None)
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    // Revoked: refused.
    let r = carol.get("/account/tokens").await;
    let id = between(&r.body, "/account/tokens/", "/revoke");
    let r = carol.post_form(&format!("/account/tokens/{id}/revoke"), &[]).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    let r = script.request(Method::GET, "/api/v1/me", &[("authorization", &bearer)], None).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn admins_can_add_a_second_factor_and_codes_work_once() {
    use haul_control::web::totp;
    let srv = Server::start().await;
    let mut admin = srv.admin().await;
    admin.get("/account/totp").await;
    assert_eq!(admin.post_form("/account/totp/start", &[]).await.location(), "/account/totp");
    let r = admin.get("/account/totp").await;
    assert!(r.body.contains("totp&#x2f;Haul:admin?secret="), "{}", r.body);
    let secret = srv.store.web_login("admin").unwrap().unwrap().1.totp_pending.unwrap();
    let now = web_support::T0 as u64;
    let r = admin.post_form("/account/totp/confirm", &[("code", "000000")]).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    let r =
        admin.post_form("/account/totp/confirm", &[("code", &totp::code_at(&secret, now))]).await;
    assert_eq!(r.location(), "/account/totp?notice=totp_on");
    // Signing in now takes the password, then a code; a half signed-in session sees nothing.
    let mut b = srv.browser();
    assert_eq!(b.login("admin", GOOD_PASSWORD).await.location(), "/login/totp");
    assert_eq!(b.get("/").await.location(), "/login");
    assert_eq!(b.get("/admin/users").await.location(), "/login");
    b.get("/login/totp").await;
    // The code used to confirm is spent; the next step's code works once.
    let r = b.post_form("/login/totp", &[("code", &totp::code_at(&secret, now))]).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    srv.clock.advance(totp::STEP_S as i64);
    let code = totp::code_at(&secret, now + totp::STEP_S);
    assert_eq!(b.post_form("/login/totp", &[("code", &code)]).await.location(), "/");
    assert_eq!(b.get("/").await.status, StatusCode::OK);
    let mut c = srv.browser();
    c.login("admin", GOOD_PASSWORD).await;
    c.get("/login/totp").await;
    assert_eq!(
        c.post_form("/login/totp", &[("code", &code)]).await.status,
        StatusCode::UNAUTHORIZED,
        "replayed code"
    );
    // Users who are not admins do not get the page.
    let (_, mut u) = srv.user(&mut admin, "dave", "user").await;
    assert_eq!(u.get("/account/totp").await.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn settings_are_validated_saved_and_audited_without_secrets() {
    let srv = Server::start().await;
    let mut admin = srv.admin().await;
    let base = [
        ("password_min_len", "14"),
        ("encrypt_transfers", "on"),
        ("session_idle_min", "20"),
        ("session_absolute_h", "8"),
        ("token_lifetime_min", "30"),
        ("rate_cap_mbps", "500"),
        ("policy_cap", "fair"),
        ("external_sending", "on"),
        ("external_expiry_default_days", "3"),
        ("external_expiry_max_days", "14"),
        ("external_downloads_default", "1"),
        ("external_downloads_max", "5"),
        ("smtp_host", "mail.example"),
        ("smtp_port", "587"),
        ("smtp_from", "haul@example.org"),
        ("smtp_user", "haul"),
        ("smtp_password", "sm7p-Secret-value"),
    ];
    let with = |extra: &[(&'static str, &'static str)]| {
        let mut f: Vec<(&str, &str)> = base.to_vec();
        f.extend_from_slice(extra);
        f
    };
    admin.get("/admin/settings").await;
    let r = admin.post_form("/admin/settings", &with(&[("admin_cidrs", "192.0.2.0/24")])).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(r.body.contains("lock yourself out"));
    let r = admin.post_form("/admin/settings", &with(&[("admin_cidrs", "10.0.0.0/33")])).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    let mut bad = with(&[("admin_cidrs", "")]);
    bad[0] = ("password_min_len", "3");
    let r = admin.post_form("/admin/settings", &bad).await;
    assert!(
        r.body.contains("Minimum password length must be a whole number from 8 to 128"),
        "{}",
        r.body
    );
    assert_eq!(
        srv.store.web_settings().unwrap(),
        WebSettings::default(),
        "a refused form changes nothing"
    );
    let r = admin
        .post_form("/admin/settings", &with(&[("admin_cidrs", "127.0.0.0/8, 192.0.2.0/24")]))
        .await;
    assert_eq!(r.location(), "/admin/settings?notice=saved");
    let w = srv.store.web_settings().unwrap();
    assert!(!w.strong_passwords && w.external_sending && w.password_min_len == 14);
    assert_eq!(w.admin_cidrs, "127.0.0.0/8, 192.0.2.0/24");
    assert_eq!(w.smtp.password, "sm7p-Secret-value");
    let t = srv.store.admin_settings().unwrap();
    assert_eq!(
        (t.token_lifetime_s, t.rate_cap_bps, t.policy_cap.name()),
        (1800, 500_000_000, "fair")
    );
    // The password is kept when the field is left empty, and never shown or audited.
    let page = admin.get("/admin/settings").await.body;
    assert!(!page.contains("sm7p-Secret-value") && page.contains("leave empty to keep it"));
    admin.post_form("/admin/settings", &with(&[("smtp_password", "")])).await;
    assert_eq!(srv.store.web_settings().unwrap().smtp.password, "sm7p-Secret-value");
    let audit = admin.get("/admin/audit?action=settings").await.body;
    assert!(
        audit.contains("strong_passwords=false")
            && audit.contains("smtp password (value not logged)"),
        "{audit}"
    );
    assert!(!audit.contains("sm7p-Secret-value"));
}

#[tokio::test]
async fn workgroup_admins_manage_members_of_their_own_groups_only() {
    let srv = Server::start().await;
    let mut admin = srv.admin().await;
    let (_, mut lead) = srv.user(&mut admin, "lead", "workgroup_admin").await;
    let (_, mut member) = srv.user(&mut admin, "member", "user").await;
    admin.get("/workgroups").await;
    let gid = admin
        .post_form(
            "/workgroups",
            &[("name", "post-production"), ("description", "Colour and sound")],
        )
        .await
        .location()
        .to_owned();
    admin.get(&gid).await;
    admin.post_form(&format!("{gid}/members"), &[("name", "lead"), ("is_admin", "on")]).await;
    // The lead adds a member; the member sees the group but cannot manage it.
    lead.get(&gid).await;
    let r =
        lead.post_form(&format!("{gid}/members"), &[("name", "member"), ("is_admin", "on")]).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    let page = member.get(&gid).await;
    assert!(page.body.contains("lead") && page.body.contains("Colour and sound"));
    assert!(!page.body.contains("/members/"), "no manage controls for plain members");
    let mid = srv.store.user("member").unwrap().unwrap().id;
    assert_eq!(
        member.post_form(&format!("{gid}/members/{mid}/remove"), &[]).await.status,
        StatusCode::NOT_FOUND
    );
    // A lead cannot make workgroup admins (only admins can) or delete the group.
    let members = srv
        .store
        .workgroup_members(gid.trim_start_matches("/workgroups/").parse().unwrap())
        .unwrap();
    assert!(members.iter().any(|m| m.name == "member" && !m.is_admin));
    assert_eq!(lead.post_form(&format!("{gid}/delete"), &[]).await.status, StatusCode::NOT_FOUND);
    assert_eq!(
        lead.post_form(&format!("{gid}/members/{mid}/remove"), &[]).await.status,
        StatusCode::SEE_OTHER
    );
    // Lists: the admin sees every group; a user only theirs.
    assert!(admin.get("/workgroups").await.body.contains("post-production"));
    assert!(!member.get("/workgroups").await.body.contains("post-production"));
    assert!(member.get("/workgroups").await.body.contains("not in any workgroup"));
}
