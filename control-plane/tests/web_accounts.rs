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
