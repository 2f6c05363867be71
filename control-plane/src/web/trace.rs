//! Request tracing that cannot leak a token or link id.
//!
//! Invariant: a request is logged by its method, its route *template* (`/admin/users/{id}`, from
//! axum's `MatchedPath`), its status and the client address, never by its URL: path parameters
//! and query strings (where tokens and link ids travel) are not in the log at all. A request that
//! matched no route is logged as `<unmatched>`.

use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::Response;

use super::security::ClientIp;

/// The tracing middleware.
pub async fn trace(req: Request, next: Next) -> Response {
    let method = req.method().clone();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "<unmatched>".to_owned(), |m| m.as_str().to_owned());
    let ip = req.extensions().get::<ClientIp>().map(|c| c.0);
    let started = Instant::now();
    let res = next.run(req).await;
    let ip = ip.map_or_else(|| "-".to_owned(), |i| i.to_string());
    tracing::info!(
        target: "haul::web",
        "{method} {route} {} {}us from {ip}",
        res.status().as_u16(),
        started.elapsed().as_micros()
    );
    res
}
