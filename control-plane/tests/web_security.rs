//! Security behaviour of the console, from the outside over real HTTPS: headers and cookie
//! attributes, CSRF, login throttling, the admin address ranges with `X-Forwarded-For`
//! spoofing, IDOR on every id-taking route, and request logs without tokens or ids.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod web_support;

use haul_control::users::parse_cidr_list;
use haul_control::web::app::route_table;
use reqwest::{Method, StatusCode};
use web_support::{GOOD_PASSWORD, Server, between, log_buffer};

#[tokio::test]
async fn every_response_carries_the_security_headers_and_cookies_are_host_only() {
    let srv = Server::start().await;
    let mut b = srv.browser();
    for path in ["/login", "/assets/app.css", "/no/such/page", "/admin/users"] {
        let r = b.get(path).await;
        assert_eq!(
            r.header("strict-transport-security"),
            "max-age=31536000; includeSubDomains",
            "{path}"
        );
        let csp = r.header("content-security-policy");
        assert!(
            csp.contains("default-src 'none'") && csp.contains("frame-ancestors 'none'"),
            "{path}: {csp}"
        );
        assert!(
            csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"),
            "{path}: {csp}"
        );
        assert_eq!(r.header("x-content-type-options"), "nosniff", "{path}");
        assert_eq!(r.header("referrer-policy"), "no-referrer", "{path}");
        assert!(r.header("permissions-policy").contains("camera=()"), "{path}");
    }
    let r = srv.browser().get("/login").await;
    let cookie = r.header("set-cookie");
    assert!(cookie.starts_with("__Host-haul-pre="), "{cookie}");
    for attr in ["Path=/", "Secure", "HttpOnly", "SameSite=Strict"] {
        assert!(cookie.contains(attr), "{cookie}");
    }
    assert!(!cookie.contains("Domain"), "{cookie}");
    assert!(
        !r.body.contains("<script>") && !r.body.contains("style="),
        "no inline script or style"
    );
    let login = srv.browser().login("admin", "wrong").await;
    assert_eq!(login.status, StatusCode::UNAUTHORIZED);
    let _admin = srv.admin().await;
    let r = srv.browser().login("admin", GOOD_PASSWORD).await;
    let session = r
        .headers
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap())
        .find(|v| v.starts_with("__Host-haul-session="))
        .unwrap()
        .to_owned();
    for attr in ["Path=/", "Secure", "HttpOnly", "SameSite=Strict"] {
        assert!(session.contains(attr), "{session}");
    }
}

#[tokio::test]
async fn state_changing_requests_need_the_csrf_token() {
    let srv = Server::start().await;
    // Even the sign-in form.
    let mut anon = srv.browser();
    anon.get("/login").await;
    let r = anon.post_form_no_csrf("/login", &[("name", "admin"), ("password", "x")]).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let mut admin = srv.admin().await;
    admin.get("/admin/users").await;
    let fields = [("name", "mallory"), ("role", "admin")];
    let r = admin.post_form_no_csrf("/admin/users", &fields).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let good = admin.csrf.clone().unwrap();
    // Change the last character to a different one (a fixed "0" would keep a token ending in 0).
    let (head, last) = good.split_at(good.len() - 1);
    let changed = if last == "0" { "1" } else { "0" };
    admin.csrf = Some(format!("{head}{changed}"));
    assert_eq!(admin.post_form("/admin/users", &fields).await.status, StatusCode::FORBIDDEN);
    admin.csrf = Some(good.clone());
    // A request marked cross-site is refused even with the token.
    let r = admin
        .request(
            Method::POST,
            "/logout",
            &[("sec-fetch-site", "cross-site"), ("x-csrf-token", &good)],
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    // The API with a cookie: 403 without the header, accepted with it.
    let body = serde_json::json!({ "name": "cli", "scopes": ["read"] });
    let r = admin.request(Method::POST, "/api/v1/tokens", &[], Some(body.clone())).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.body);
    let r =
        admin.request(Method::POST, "/api/v1/tokens", &[("x-csrf-token", &good)], Some(body)).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    // Nothing was created by the refused requests.
    assert!(srv.store.user("mallory").unwrap().is_none());
}

#[tokio::test]
async fn ten_failed_logins_in_a_minute_throttle_the_account_even_with_the_right_password() {
    let srv = Server::start_with(parse_cidr_list("127.0.0.1/32").unwrap()).await;
    let _admin = srv.admin().await;
    // Failures from ten different client addresses (through the trusted proxy).
    for i in 0..10 {
        let mut b = srv.browser();
        b.get("/login").await;
        let xff = format!("198.51.100.{i}");
        let csrf = b.csrf.clone().unwrap();
        let form = [("name", "admin"), ("password", "wrong"), ("csrf", csrf.as_str())];
        let req =
            b.client.post(format!("{}/login", b.base)).header("x-forwarded-for", xff).form(&form);
        assert_eq!(b.send(req).await.status, StatusCode::UNAUTHORIZED);
    }
    let mut b = srv.browser();
    let r = b.login("admin", GOOD_PASSWORD).await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
    let wait: i64 = r.header("retry-after").parse().unwrap();
    assert!(wait > 0 && wait <= 60, "{wait}");
    // Backoff, not lockout: after the wait the right password works.
    srv.clock.advance(wait);
    assert_eq!(b.login("admin", GOOD_PASSWORD).await.location(), "/");
}

#[tokio::test]
async fn ten_failed_logins_from_one_address_throttle_that_address() {
    let srv = Server::start().await;
    let _admin = srv.admin().await;
    let mut b = srv.browser();
    for i in 0..10 {
        assert_eq!(b.login(&format!("nobody{i}"), "wrong").await.status, StatusCode::UNAUTHORIZED);
    }
    let r = b.login("admin", GOOD_PASSWORD).await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
    assert!(!r.header("retry-after").is_empty());
    assert!(r.body.contains("Too many failed sign-in attempts"));
}

async fn set_admin_ranges(srv: &Server, ranges: &str) {
    let mut s = srv.store.web_settings().unwrap();
    s.admin_cidrs = ranges.to_owned();
    srv.store.set_web_settings(&s, web_support::T0).unwrap();
}

#[tokio::test]
async fn admin_console_from_a_disallowed_address_is_403_and_forwarded_for_cannot_spoof() {
    // No trusted proxy: X-Forwarded-For is ignored entirely.
    let srv = Server::start().await;
    let mut admin = srv.admin().await;
    set_admin_ranges(&srv, "192.0.2.0/24").await;
    for path in ["/admin/users", "/admin/settings", "/admin/audit", "/api/v1/admin/users"] {
        let r = admin.get(path).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{path}");
        let r = admin.request(Method::GET, path, &[("x-forwarded-for", "192.0.2.7")], None).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "spoofed {path}");
    }
    // Non-admin pages still work from here.
    assert_eq!(admin.get("/").await.status, StatusCode::OK);

    // Behind a trusted proxy (127.0.0.1): the proxy's X-Forwarded-For is believed, but a
    // client-supplied hop prepended before the proxy's own entry is not.
    let srv = Server::start_with(parse_cidr_list("127.0.0.1/32").unwrap()).await;
    let mut admin = srv.admin().await;
    set_admin_ranges(&srv, "192.0.2.0/24").await;
    let r =
        admin.request(Method::GET, "/admin/users", &[("x-forwarded-for", "192.0.2.7")], None).await;
    assert_eq!(r.status, StatusCode::OK);
    let r = admin
        .request(
            Method::GET,
            "/admin/users",
            &[("x-forwarded-for", "192.0.2.7, 203.0.113.9")],
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let r = admin
        .request(Method::GET, "/admin/users", &[("x-forwarded-for", "not-an-address")], None)
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let r = admin.get("/admin/users").await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn another_users_ids_give_404_with_no_data_on_every_id_route() {
    let srv = Server::start().await;
    let mut admin = srv.admin().await;
    let (_, mut a) = srv.user(&mut admin, "anna", "workgroup_admin").await;
    let (bob_id, mut bob) = srv.user(&mut admin, "bobsecret", "workgroup_admin").await;
    // Bob's token and Bob's workgroup (Anna is not a member).
    bob.get("/account/tokens").await;
    let r = bob
        .post_form(
            "/account/tokens",
            &[("name", "bobs-token"), ("scope_read", "on"), ("expires_days", "0")],
        )
        .await;
    let bob_token = between(&r.body, "id=\"new-token\">", "<").to_owned();
    let r = bob.get("/account/tokens").await;
    let tok_id = between(&r.body, "/account/tokens/", "/revoke").to_owned();
    admin.get("/workgroups").await;
    let r =
        admin.post_form("/workgroups", &[("name", "bobsgroup"), ("description", "private")]).await;
    let gid = r.location().trim_start_matches("/workgroups/").to_owned();
    admin.get(&format!("/workgroups/{gid}")).await;
    admin
        .post_form(
            &format!("/workgroups/{gid}/members"),
            &[("name", "bobsecret"), ("is_admin", "on")],
        )
        .await;
    assert!(bob.get(&format!("/workgroups/{gid}")).await.status.is_success());
    // Bob's draft package.
    bob.get("/packages/new").await;
    let r = bob.post_form("/packages", &[("title", "bobs-package"), ("users", "bobsecret")]).await;
    let pkg = r.location().trim_start_matches("/packages/").to_owned();
    assert!(pkg.parse::<i64>().is_ok(), "{}", r.body);

    let wg = format!("/workgroups/{gid}");
    let probes: Vec<(Method, String, &str)> = vec![
        (Method::POST, format!("/account/tokens/{tok_id}/revoke"), "/account/tokens/{id}/revoke"),
        (Method::GET, format!("/packages/{pkg}"), "/packages/{id}"),
        (Method::POST, format!("/packages/{pkg}/send"), "/packages/{id}/send"),
        (Method::POST, format!("/packages/{pkg}/forward"), "/packages/{id}/forward"),
        (Method::GET, format!("/packages/{pkg}/files/a.bin"), "/packages/{id}/files/{name}"),
        (Method::GET, wg.clone(), "/workgroups/{id}"),
        (Method::POST, format!("{wg}/members"), "/workgroups/{id}/members"),
        (
            Method::POST,
            format!("{wg}/members/{bob_id}/remove"),
            "/workgroups/{id}/members/{user_id}/remove",
        ),
        (Method::POST, format!("{wg}/delete"), "/workgroups/{id}/delete"),
        (Method::GET, format!("/admin/users/{bob_id}"), "/admin/users/{id}"),
        (Method::POST, format!("/admin/users/{bob_id}"), "/admin/users/{id}"),
        (Method::POST, format!("/admin/users/{bob_id}/reset"), "/admin/users/{id}/reset"),
        (Method::DELETE, format!("/api/v1/tokens/{tok_id}"), "/api/v1/tokens/{id}"),
        (Method::GET, format!("/api/v1/workgroups/{gid}"), "/api/v1/workgroups/{id}"),
        (Method::GET, format!("/api/v1/admin/users/{bob_id}"), "/api/v1/admin/users/{id}"),
        (Method::GET, format!("/packages/{pkg}/external"), "/packages/{id}/external"),
        (Method::POST, format!("/packages/{pkg}/external"), "/packages/{id}/external"),
        (Method::GET, format!("/api/v1/packages/{pkg}/external"), "/api/v1/packages/{id}/external"),
        (
            Method::POST,
            format!("/api/v1/packages/{pkg}/external"),
            "/api/v1/packages/{id}/external",
        ),
    ];
    // Every id-taking route of the router is probed (assets take a file name, not an id).
    let mut covered: Vec<(&str, &str)> = probes.iter().map(|(m, _, r)| (m.as_str(), *r)).collect();
    covered.sort_unstable();
    covered.dedup();
    let mut id_routes: Vec<(&str, &str)> = route_table()
        .iter()
        .copied()
        // External link ids are capabilities, not a user's ids (tests/web_external.rs).
        .filter(|(_, p)| p.contains('{') && !p.starts_with("/assets") && !p.starts_with("/x/"))
        .collect();
    id_routes.sort_unstable();
    assert_eq!(covered, id_routes);
    // A well-formed request (forms carry plausible fields) so only the id can be refused.
    let form = [("name", "anna"), ("role", "admin"), ("direction", "both"), ("is_admin", "on")];
    for (method, path, _) in &probes {
        // Ids that are not numbers, and ids that do not exist, get the same answer.
        let bogus = path
            .replace(&tok_id, "x9")
            .replace(&gid, "999999")
            .replace(&format!("/packages/{pkg}"), "/packages/777777")
            .replace(&format!("/api/v1/packages/{pkg}"), "/api/v1/packages/777777");
        for p in [path.clone(), bogus] {
            let csrf = a.csrf.clone().unwrap();
            let r = if *method == Method::POST {
                a.post_form(&p, &form).await
            } else {
                a.request(method.clone(), &p, &[("x-csrf-token", &csrf)], None).await
            };
            assert_eq!(r.status, StatusCode::NOT_FOUND, "{method} {p}: {}", r.body);
            assert!(
                !r.body.contains("bobsecret")
                    && !r.body.contains("bobsgroup")
                    && !r.body.contains("bobs-token"),
                "{p}"
            );
        }
    }
    // Nothing changed: Bob's token still works and Bob is still in his group.
    let r = srv
        .browser()
        .request(
            Method::GET,
            "/api/v1/me",
            &[("authorization", &format!("Bearer {bob_token}"))],
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(bob.get(&wg).await.body.contains("bobsecret"));
}

#[tokio::test]
async fn request_logs_never_hold_a_token_or_id_from_the_url() {
    let logs = log_buffer();
    let srv = Server::start().await;
    let mut admin = srv.admin().await;
    admin.get("/account/tokens").await;
    let r = admin
        .post_form("/account/tokens", &[("name", "t"), ("scope_read", "on"), ("expires_days", "1")])
        .await;
    let token = between(&r.body, "id=\"new-token\">", "<").to_owned();
    let link_id = "L1nkIdThatMustNotBeLogged0123456789abcdef";
    let mut c = srv.browser();
    c.get(&format!("/workgroups/{link_id}?token={token}")).await;
    c.get(&format!("/l/{link_id}?t={token}")).await;
    c.request(Method::GET, "/api/v1/me", &[("authorization", &format!("Bearer {token}"))], None)
        .await;
    c.request(
        Method::GET,
        &format!("/api/v1/tokens/{link_id}"),
        &[("authorization", &format!("Bearer {token}"))],
        None,
    )
    .await;
    let text = String::from_utf8(logs.lock().unwrap().clone()).unwrap();
    assert!(text.contains("GET /api/v1/me 200"), "the log is not empty:\n{text}");
    assert!(text.contains("/workgroups/{id}"), "routes are logged by template:\n{text}");
    assert!(!text.contains(&token), "token in log:\n{text}");
    assert!(!text.contains(link_id), "link id in log:\n{text}");
    let otp_file = srv.data_dir().join(haul_control::web::first_admin::INITIAL_ADMIN_PASSWORD_FILE);
    assert!(!otp_file.exists());
    assert!(!text.contains(GOOD_PASSWORD));
}
