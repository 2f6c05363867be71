//! Static assets (CSS, the one script, the icon), embedded in the binary.
//!
//! Invariant: only the files listed here are served; a name not in the list is 404, so no path
//! from a request ever reaches the file system.

use axum::extract::Path;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

const ASSETS: &[(&str, &str, &[u8])] = &[
    ("app.css", "text/css; charset=utf-8", include_bytes!("../../assets/app.css")),
    ("app.js", "text/javascript; charset=utf-8", include_bytes!("../../assets/app.js")),
    ("upload.js", "text/javascript; charset=utf-8", include_bytes!("../../assets/upload.js")),
    ("favicon.svg", "image/svg+xml", include_bytes!("../../assets/favicon.svg")),
];

/// `GET /assets/{name}`.
pub async fn asset(Path(name): Path<String>) -> Response {
    match ASSETS.iter().find(|(n, _, _)| *n == name) {
        Some((_, mime, bytes)) => {
            let mut res = (StatusCode::OK, *bytes).into_response();
            res.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(mime));
            res.headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=3600"));
            res
        }
        None => StatusCode::NOT_FOUND.into_response(),
    }
}
