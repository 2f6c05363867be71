//! `fn app(state) -> Router`: every route and layer of the console.
//!
//! Layer order, outermost first: security headers (on every response, errors included), client
//! address, session + CSRF, then the route; request tracing is a route layer so it sees the
//! matched route template and never the raw URL.

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::middleware::{from_fn, from_fn_with_state};
use axum::routing::{get, post};

use super::error::AppError;
use super::session::MAX_FORM_BYTES;
use super::state::AppState;
use super::{
    accounts, admin, api, assets, audit, mfa, security, session, settings, tokens, trace,
    workgroups,
};

/// Every route the console serves, as (method, path): the API contract test compares the
/// `/api/` part with the OpenAPI document once it exists.
pub const ROUTES: &[(&str, &str)] = &[
    ("GET", "/"),
    ("GET", "/login"),
    ("POST", "/login"),
    ("GET", "/login/totp"),
    ("POST", "/login/totp"),
    ("POST", "/logout"),
    ("GET", "/account/password"),
    ("POST", "/account/password"),
    ("GET", "/account/tokens"),
    ("POST", "/account/tokens"),
    ("POST", "/account/tokens/{id}/revoke"),
    ("GET", "/account/totp"),
    ("POST", "/account/totp/start"),
    ("POST", "/account/totp/confirm"),
    ("POST", "/account/totp/disable"),
    ("GET", "/workgroups"),
    ("POST", "/workgroups"),
    ("GET", "/workgroups/{id}"),
    ("POST", "/workgroups/{id}/members"),
    ("POST", "/workgroups/{id}/members/{user_id}/remove"),
    ("POST", "/workgroups/{id}/delete"),
    ("GET", "/admin/users"),
    ("POST", "/admin/users"),
    ("GET", "/admin/users/{id}"),
    ("POST", "/admin/users/{id}"),
    ("POST", "/admin/users/{id}/reset"),
    ("GET", "/admin/settings"),
    ("POST", "/admin/settings"),
    ("GET", "/admin/audit"),
    ("GET", "/api/v1/me"),
    ("GET", "/api/v1/tokens"),
    ("POST", "/api/v1/tokens"),
    ("DELETE", "/api/v1/tokens/{id}"),
    ("GET", "/api/v1/workgroups"),
    ("GET", "/api/v1/workgroups/{id}"),
    ("GET", "/api/v1/admin/users"),
    ("GET", "/api/v1/admin/users/{id}"),
    ("GET", "/api/v1/admin/audit"),
    ("GET", "/assets/{name}"),
];

/// Builds the router.
pub fn app(state: AppState) -> Router {
    let pages = Router::new()
        .route("/", get(accounts::home))
        .route("/login", get(accounts::login_page).post(accounts::login))
        .route("/login/totp", get(accounts::totp_page).post(accounts::totp_login))
        .route("/logout", post(accounts::logout))
        .route("/account/password", get(accounts::password_page).post(accounts::change_password))
        .route("/account/tokens", get(tokens::tokens_page).post(tokens::create_token))
        .route("/account/tokens/{id}/revoke", post(tokens::revoke_token))
        .route("/account/totp", get(mfa::totp_page))
        .route("/account/totp/start", post(mfa::start))
        .route("/account/totp/confirm", post(mfa::confirm))
        .route("/account/totp/disable", post(mfa::disable))
        .route("/workgroups", get(workgroups::list).post(workgroups::create))
        .route("/workgroups/{id}", get(workgroups::detail))
        .route("/workgroups/{id}/members", post(workgroups::add_member))
        .route("/workgroups/{id}/members/{user_id}/remove", post(workgroups::remove_member))
        .route("/workgroups/{id}/delete", post(workgroups::delete))
        .route("/admin/users", get(admin::users_page).post(admin::create_user))
        .route("/admin/users/{id}", get(admin::user_page).post(admin::update_user))
        .route("/admin/users/{id}/reset", post(admin::reset_password))
        .route("/admin/settings", get(settings::settings_page).post(settings::save_settings))
        .route("/admin/audit", get(audit::audit_page));
    let api = Router::new()
        .route("/api/v1/me", get(api::me))
        .route("/api/v1/tokens", get(api::list_tokens).post(api::create_token))
        .route("/api/v1/tokens/{id}", axum::routing::delete(api::revoke_token))
        .route("/api/v1/workgroups", get(api::list_workgroups))
        .route("/api/v1/workgroups/{id}", get(api::workgroup))
        .route("/api/v1/admin/users", get(api::admin_users))
        .route("/api/v1/admin/users/{id}", get(api::admin_user))
        .route("/api/v1/admin/audit", get(api::admin_audit));
    Router::new()
        .merge(pages)
        .merge(api)
        .route_layer(from_fn(trace::trace))
        .route_layer(from_fn_with_state(state.clone(), session::resolve))
        .route("/assets/{name}", get(assets::asset))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(MAX_FORM_BYTES))
        .layer(from_fn_with_state(state.clone(), security::client_ip))
        .layer(from_fn(security::headers))
        .with_state(state)
}

async fn not_found() -> AppError {
    tracing::info!(target: "haul::web", "<unmatched>");
    AppError::NotFound
}
