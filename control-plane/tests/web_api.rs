//! The API contract: the routes the router serves and the OpenAPI document agree, and every
//! route in the table is really served.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod web_support;

use std::collections::BTreeSet;

use haul_control::web::api::OPENAPI_JSON;
use haul_control::web::app::route_table;
use reqwest::{Method, StatusCode};
use web_support::Server;

#[test]
fn the_openapi_document_lists_exactly_the_api_routes() {
    let doc: serde_json::Value = serde_json::from_str(OPENAPI_JSON).unwrap();
    let mut documented = BTreeSet::new();
    for (path, ops) in doc["paths"].as_object().unwrap() {
        for method in ops.as_object().unwrap().keys() {
            documented.insert((method.to_uppercase(), path.clone()));
        }
    }
    let served: BTreeSet<(String, String)> = route_table()
        .into_iter()
        .filter(|(_, p)| p.starts_with("/api/"))
        .map(|(m, p)| (m.to_owned(), p.to_owned()))
        .collect();
    assert_eq!(documented, served);
}

#[tokio::test]
async fn every_route_in_the_table_is_served() {
    let srv = Server::start().await;
    let mut b = srv.browser();
    for (method, path) in route_table() {
        // An external link route answers 404 for every unknown link id by design
        // (tests/web_external.rs serves it with real links).
        if path.starts_with("/x/") {
            continue;
        }
        let concrete =
            path.replace("{id}", "1").replace("{user_id}", "1").replace("{name}", "app.css");
        let r =
            b.request(Method::from_bytes(method.as_bytes()).unwrap(), &concrete, &[], None).await;
        // Anonymous: pages redirect to sign-in, writes are refused for CSRF, the API wants a
        // token; none may be the router's 404 or 405.
        assert!(
            ![StatusCode::NOT_FOUND, StatusCode::METHOD_NOT_ALLOWED].contains(&r.status),
            "{method} {path}: {}",
            r.status
        );
    }
    assert_eq!(b.get("/no/such/route").await.status, StatusCode::NOT_FOUND);
    assert_eq!(
        b.request(Method::GET, "/logout", &[], None).await.status,
        StatusCode::METHOD_NOT_ALLOWED
    );
    let r = b.get("/api/v1/openapi.json").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.header("content-type"), "application/json");
    assert_eq!(b.get("/api/v1/me").await.status, StatusCode::UNAUTHORIZED);
}

/// A new API token for the signed-in browser `b`, made through the API with its cookie.
async fn api_token(b: &mut web_support::Browser, scopes: &[&str]) -> String {
    b.get("/").await;
    let csrf = b.csrf.clone().unwrap();
    let body = serde_json::json!({ "name": "script", "scopes": scopes });
    let r = b.request(Method::POST, "/api/v1/tokens", &[("x-csrf-token", &csrf)], Some(body)).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    format!("Bearer {}", v["token"].as_str().unwrap())
}

/// A client for a script holding `auth`.
struct Script {
    b: web_support::Browser,
    auth: String,
}

impl Script {
    async fn call(
        &mut self,
        method: Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> (StatusCode, serde_json::Value) {
        let r = self.b.request(method, path, &[("authorization", &self.auth)], body).await;
        let v = if r.body.is_empty() {
            serde_json::Value::Null
        } else {
            serde_json::from_str(&r.body)
                .unwrap_or_else(|_| panic!("{path}: not JSON: {} {}", r.status, r.body))
        };
        (r.status, v)
    }
}

#[tokio::test]
async fn a_script_runs_the_whole_console_flow_through_the_api() {
    use serde_json::json;
    let srv = Server::start().await;
    srv.host_key();
    let mut admin = srv.admin().await;
    let auth = api_token(&mut admin, &["read", "write", "admin"]).await;
    let mut root = Script { b: srv.browser(), auth };

    // Admin: users, restrictions, a workgroup with members.
    let mut ids = Vec::new();
    for name in ["ann", "ben", "cat"] {
        let (st, v) = root
            .call(
                Method::POST,
                "/api/v1/admin/users",
                Some(json!({ "name": name, "role": "user" })),
            )
            .await;
        assert_eq!(st, StatusCode::CREATED, "{v}");
        assert!(v["one_time_password"].as_str().unwrap().len() >= 12);
        ids.push(v["id"].as_i64().unwrap());
    }
    let (st, v) = root
        .call(Method::POST, "/api/v1/admin/users", Some(json!({ "name": "ann", "role": "user" })))
        .await;
    assert_eq!(st, StatusCode::CONFLICT, "{v}");
    assert!(v["error"].as_str().unwrap().contains("already exists"), "{v}");
    let ben_update = json!({ "role": "user", "direction": "both", "may_forward": true,
        "expires": "2099-01-31", "ip_allow": { "download": ["127.0.0.0/8"] } });
    let (st, v) =
        root.call(Method::PUT, &format!("/api/v1/admin/users/{}", ids[1]), Some(ben_update)).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(
        (v["may_forward"].as_bool(), v["ip_allow"]["download"][0].as_str()),
        (Some(true), Some("127.0.0.0/8"))
    );
    assert_eq!(v["expires_at"].as_str(), Some("2099-01-31T00:00:00Z"));
    let bad = json!({ "role": "user", "direction": "sideways" });
    let (st, v) =
        root.call(Method::PUT, &format!("/api/v1/admin/users/{}", ids[1]), Some(bad)).await;
    assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert!(v["error"].as_str().unwrap().contains("direction"), "{v}");
    let (st, v) =
        root.call(Method::POST, "/api/v1/workgroups", Some(json!({ "name": "crew" }))).await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    let gid = v["id"].as_i64().unwrap();
    for name in ["ben", "cat"] {
        let (st, v) = root
            .call(
                Method::POST,
                &format!("/api/v1/workgroups/{gid}/members"),
                Some(json!({ "name": name })),
            )
            .await;
        assert_eq!(st, StatusCode::NO_CONTENT, "{v}");
    }
    let (st, v) = root
        .call(
            Method::POST,
            &format!("/api/v1/workgroups/{gid}/members"),
            Some(json!({ "name": "nobody" })),
        )
        .await;
    assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(v["error"].as_str().unwrap().contains("no user named nobody"), "{v}");

    // Users get their passwords from a reset, sign in, and make their own tokens.
    let mut scripts = Vec::new();
    for (name, id) in [("ann", ids[0]), ("ben", ids[1])] {
        let (st, v) =
            root.call(Method::POST, &format!("/api/v1/admin/users/{id}/reset"), None).await;
        assert_eq!(st, StatusCode::OK, "{v}");
        let otp = v["one_time_password"].as_str().unwrap().to_owned();
        let mut b = srv.browser();
        b.login(name, &otp).await;
        b.get("/account/password").await;
        let pw = web_support::GOOD_PASSWORD;
        let r = b
            .post_form("/account/password", &[("current", &otp), ("new", pw), ("confirm", pw)])
            .await;
        assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
        let auth = api_token(&mut b, &["read", "write"]).await;
        scripts.push(Script { b: srv.browser(), auth });
    }
    let (mut ann, mut ben) = (scripts.remove(0), scripts.remove(0));

    // Ann sends a package to the workgroup; Ben receives it with a haul get URL per file.
    let body = json!({ "title": "Dailies", "note": "day 3", "workgroups": ["crew"] });
    let (st, v) = ann.call(Method::POST, "/api/v1/packages", Some(body)).await;
    assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY, "ann is not in crew: {v}");
    assert!(v["error"].as_str().unwrap().contains("not a member of a workgroup named crew"), "{v}");
    let body = json!({ "title": "Dailies", "note": "day 3", "users": ["ben"] });
    let (st, v) = ann.call(Method::POST, "/api/v1/packages", Some(body)).await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    let pkg = v["id"].as_i64().unwrap();
    let (st, v) = ann.call(Method::GET, &format!("/api/v1/packages/{pkg}"), None).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let put_url = v["upload_url"].as_str().unwrap();
    assert!(put_url.starts_with("haul://") && put_url.contains("hostkey="), "{v}");
    let (st, v) = ann.call(Method::POST, &format!("/api/v1/packages/{pkg}/send"), None).await;
    assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY, "nothing uploaded yet: {v}");
    let public_id = srv.store.package_for(pkg, ids[0]).unwrap().unwrap().public_id;
    let outbox = srv.data_dir().join("storage/ann/outbox").join(&public_id);
    std::fs::write(outbox.join("reel.mov"), b"frames").unwrap();
    let (st, v) = ann.call(Method::POST, &format!("/api/v1/packages/{pkg}/send"), None).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let (_, v) = ann.call(Method::GET, "/api/v1/packages/sent", None).await;
    assert_eq!(v["packages"][0]["id"].as_i64(), Some(pkg));
    assert!(v["packages"][0]["sent_at"].is_string());
    let (st, v) = ben.call(Method::GET, "/api/v1/packages/inbox", None).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(v["packages"][0]["title"].as_str(), Some("Dailies"));
    let (st, v) = ben.call(Method::GET, &format!("/api/v1/packages/{pkg}"), None).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let file = &v["files"][0];
    assert_eq!((file["name"].as_str(), file["size"].as_u64()), (Some("reel.mov"), Some(6)));
    assert!(file["haul_url"].as_str().unwrap().starts_with("haul://"), "{v}");
    assert_eq!(
        file["https_path"].as_str(),
        Some(format!("/packages/{pkg}/files/reel.mov").as_str())
    );
    // Ben may forward; he adds the rest of the workgroup he is in.
    let (st, v) = ben
        .call(
            Method::POST,
            &format!("/api/v1/packages/{pkg}/forward"),
            Some(json!({ "workgroups": ["crew"] })),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let (_, v) = ann.call(Method::GET, &format!("/api/v1/packages/{pkg}"), None).await;
    let cat = v["recipients"].as_array().unwrap().iter().find(|r| r["name"] == "cat").cloned();
    assert_eq!(cat.unwrap()["via"].as_str(), Some("forwarded by ben"), "{v}");

    // Settings round-trip; a bad value changes nothing and says why.
    let (st, mut s) = root.call(Method::GET, "/api/v1/admin/settings", None).await;
    assert_eq!(st, StatusCode::OK, "{s}");
    assert_eq!(s["smtp_password_set"].as_bool(), Some(false));
    s["token_lifetime_min"] = json!(90);
    let (st, v) = root.call(Method::PUT, "/api/v1/admin/settings", Some(s.clone())).await;
    assert_eq!((st, v["token_lifetime_min"].as_u64()), (StatusCode::OK, Some(90)), "{v}");
    s["token_lifetime_min"] = json!(0);
    let (st, v) = root.call(Method::PUT, "/api/v1/admin/settings", Some(s)).await;
    assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert!(v["error"].as_str().unwrap().contains("Token lifetime"), "{v}");
    let (_, v) = root.call(Method::GET, "/api/v1/admin/settings", None).await;
    assert_eq!(v["token_lifetime_min"].as_u64(), Some(90));

    // Disabling Ben refuses his token; members leave and the workgroup goes.
    let off = json!({ "role": "user", "direction": "both", "disabled": true });
    let (st, v) =
        root.call(Method::PUT, &format!("/api/v1/admin/users/{}", ids[1]), Some(off)).await;
    assert_eq!((st, v["disabled"].as_bool()), (StatusCode::OK, Some(true)), "{v}");
    assert_eq!(
        ben.call(Method::GET, "/api/v1/packages/inbox", None).await.0,
        StatusCode::FORBIDDEN
    );
    let path = format!("/api/v1/workgroups/{gid}/members/{}", ids[2]);
    assert_eq!(root.call(Method::DELETE, &path, None).await.0, StatusCode::NO_CONTENT);
    assert_eq!(root.call(Method::DELETE, &path, None).await.0, StatusCode::NOT_FOUND);
    let (_, v) = root.call(Method::GET, &format!("/api/v1/workgroups/{gid}"), None).await;
    assert_eq!(v["members"].as_array().unwrap().len(), 1, "{v}");
    let path = format!("/api/v1/workgroups/{gid}");
    assert_eq!(root.call(Method::DELETE, &path, None).await.0, StatusCode::NO_CONTENT);
    assert_eq!(root.call(Method::GET, &path, None).await.0, StatusCode::NOT_FOUND);
    // The admin changes are in the audit log, which the API filters.
    let (_, v) = root.call(Method::GET, "/api/v1/admin/audit?action=workgroup", None).await;
    let actions: Vec<&str> =
        v["entries"].as_array().unwrap().iter().map(|e| e["action"].as_str().unwrap()).collect();
    assert!(actions.contains(&"workgroup.delete") && actions.contains(&"workgroup.create"), "{v}");
    assert!(actions.iter().all(|a| a.starts_with("workgroup")), "{v}");
}

#[tokio::test]
async fn token_scopes_and_roles_gate_every_write() {
    use serde_json::json;
    let srv = Server::start().await;
    let mut admin = srv.admin().await;
    let (dora_id, mut dora) = srv.user(&mut admin, "dora", "user").await;
    let read = api_token(&mut dora, &["read"]).await;
    let mut ro = Script { b: srv.browser(), auth: read };
    assert_eq!(ro.call(Method::GET, "/api/v1/packages/inbox", None).await.0, StatusCode::OK);
    let writes: [(Method, &str, serde_json::Value); 4] = [
        (Method::POST, "/api/v1/packages", json!({ "title": "t", "users": ["dora"] })),
        (Method::POST, "/api/v1/workgroups", json!({ "name": "g" })),
        (Method::POST, "/api/v1/tokens", json!({ "name": "x", "scopes": ["read"] })),
        (Method::DELETE, "/api/v1/tokens/1", json!({})),
    ];
    for (m, path, body) in &writes {
        let (st, v) = ro.call(m.clone(), path, Some(body.clone())).await;
        assert_eq!(st, StatusCode::FORBIDDEN, "{m} {path}: {v}");
    }
    assert!(srv.store.sent_packages(dora_id).unwrap().is_empty());
    // A write token without `admin`, or a non-admin's session, never reaches the admin API.
    let rw = api_token(&mut dora, &["read", "write"]).await;
    let mut rw = Script { b: srv.browser(), auth: rw };
    for (m, path, body) in [
        (Method::GET, "/api/v1/admin/settings", json!({})),
        (Method::PUT, "/api/v1/admin/settings", json!({})),
        (Method::POST, "/api/v1/admin/users", json!({ "name": "x", "role": "admin" })),
        (Method::POST, "/api/v1/workgroups", json!({ "name": "x" })),
    ] {
        let (st, v) = rw.call(m.clone(), path, Some(body)).await;
        assert_eq!(st, StatusCode::NOT_FOUND, "{m} {path}: {v}");
    }
    assert!(srv.store.list_workgroups().unwrap().is_empty());
    // A cookie caller needs the CSRF token on API writes.
    dora.get("/").await;
    let r = dora
        .request(
            Method::POST,
            "/api/v1/packages",
            &[],
            Some(json!({ "title": "t", "users": ["dora"] })),
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let csrf = dora.csrf.clone().unwrap();
    let r = dora
        .request(
            Method::POST,
            "/api/v1/packages",
            &[("x-csrf-token", &csrf)],
            Some(json!({ "title": "t", "users": ["dora"] })),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
}
