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
