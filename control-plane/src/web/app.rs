//! `fn app(state) -> Router`: every route and layer of the console.
//!
//! Layer order, outermost first: security headers (on every response, errors included), client
//! address, session + CSRF, then the route; request tracing is a route layer so it sees the
//! matched route template and never the raw URL.

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::middleware::{from_fn, from_fn_with_state};
use axum::routing::{MethodRouter, delete, get, head, patch, post, put};

use super::error::AppError;
use super::session::MAX_FORM_BYTES;
use super::state::AppState;
use super::{
    accounts, admin, api, assets, audit, download, external, external_link, mfa, packages,
    security, session, settings, tokens, trace, upload, workgroups,
};

type Handler = MethodRouter<AppState>;

/// Every route the console serves: (method, path, handler). [`app`] builds the router from this
/// table and nothing else, so [`route_table`] is exactly what the router serves (the API
/// contract test compares it with the OpenAPI document).
fn routes() -> Vec<(&'static str, &'static str, Handler)> {
    vec![
        ("GET", "/", get(accounts::home)),
        ("GET", "/login", get(accounts::login_page)),
        ("POST", "/login", post(accounts::login)),
        ("GET", "/login/totp", get(accounts::totp_page)),
        ("POST", "/login/totp", post(accounts::totp_login)),
        ("POST", "/logout", post(accounts::logout)),
        ("GET", "/account/password", get(accounts::password_page)),
        ("POST", "/account/password", post(accounts::change_password)),
        ("GET", "/account/tokens", get(tokens::tokens_page)),
        ("POST", "/account/tokens", post(tokens::create_token)),
        ("POST", "/account/tokens/{id}/revoke", post(tokens::revoke_token)),
        ("GET", "/account/totp", get(mfa::totp_page)),
        ("POST", "/account/totp/start", post(mfa::start)),
        ("POST", "/account/totp/confirm", post(mfa::confirm)),
        ("POST", "/account/totp/disable", post(mfa::disable)),
        ("GET", "/packages/inbox", get(packages::inbox)),
        ("GET", "/packages/sent", get(packages::sent)),
        ("GET", "/packages/new", get(packages::new_page)),
        ("POST", "/packages", post(packages::create)),
        ("GET", "/packages/{id}", get(packages::detail)),
        ("POST", "/packages/{id}/send", post(packages::send)),
        ("POST", "/packages/{id}/forward", post(packages::forward)),
        ("GET", "/packages/{id}/files/{name}", get(download::file)),
        ("GET", "/packages/{id}/external", get(external::external_page)),
        ("POST", "/packages/{id}/external", post(external::add)),
        ("GET", "/x/{link}", get(external_link::link_page)),
        ("GET", "/x/{link}/files/{name}", get(external_link::link_file)),
        ("GET", "/workgroups", get(workgroups::list)),
        ("POST", "/workgroups", post(workgroups::create)),
        ("GET", "/workgroups/{id}", get(workgroups::detail)),
        ("POST", "/workgroups/{id}/members", post(workgroups::add_member)),
        ("POST", "/workgroups/{id}/members/{user_id}/remove", post(workgroups::remove_member)),
        ("POST", "/workgroups/{id}/delete", post(workgroups::delete)),
        ("GET", "/admin/users", get(admin::users_page)),
        ("POST", "/admin/users", post(admin::create_user)),
        ("GET", "/admin/users/{id}", get(admin::user_page)),
        ("POST", "/admin/users/{id}", post(admin::update_user)),
        ("POST", "/admin/users/{id}/reset", post(admin::reset_password)),
        ("GET", "/admin/settings", get(settings::settings_page)),
        ("POST", "/admin/settings", post(settings::save_settings)),
        ("GET", "/admin/audit", get(audit::audit_page)),
        ("GET", "/api/v1/openapi.json", get(api::openapi)),
        ("GET", "/api/v1/me", get(api::me)),
        ("GET", "/api/v1/tokens", get(api::list_tokens)),
        ("POST", "/api/v1/tokens", post(api::create_token)),
        ("DELETE", "/api/v1/tokens/{id}", delete(api::revoke_token)),
        ("GET", "/api/v1/workgroups", get(api::list_workgroups)),
        ("GET", "/api/v1/workgroups/{id}", get(api::workgroup)),
        ("GET", "/api/v1/admin/users", get(api::admin_users)),
        ("GET", "/api/v1/admin/users/{id}", get(api::admin_user)),
        ("GET", "/api/v1/admin/audit", get(api::admin_audit)),
        ("GET", "/api/v1/packages/{id}/external", get(external::api_list)),
        ("POST", "/api/v1/packages/{id}/external", post(external::api_add)),
        // JSON API for packages, workgroups, users and settings (branch webapi).
        ("GET", "/api/v1/packages/inbox", get(api::packages::inbox)),
        ("GET", "/api/v1/packages/sent", get(api::packages::sent)),
        ("POST", "/api/v1/packages", post(api::packages::create)),
        ("GET", "/api/v1/packages/{id}", get(api::packages::package)),
        ("POST", "/api/v1/packages/{id}/send", post(api::packages::send)),
        ("POST", "/api/v1/packages/{id}/forward", post(api::packages::forward)),
        ("POST", "/api/v1/workgroups", post(api::manage::create_workgroup)),
        ("DELETE", "/api/v1/workgroups/{id}", delete(api::manage::delete_workgroup)),
        ("POST", "/api/v1/workgroups/{id}/members", post(api::manage::add_member)),
        ("DELETE", "/api/v1/workgroups/{id}/members/{user_id}", delete(api::manage::remove_member)),
        ("POST", "/api/v1/admin/users", post(api::manage::create_user)),
        ("PUT", "/api/v1/admin/users/{id}", put(api::manage::update_user)),
        ("POST", "/api/v1/admin/users/{id}/reset", post(api::manage::reset_user)),
        ("GET", "/api/v1/admin/settings", get(api::manage::settings)),
        ("PUT", "/api/v1/admin/settings", put(api::manage::put_settings)),
        ("POST", "/api/v1/packages/{id}/uploads", post(upload::create)),
        ("HEAD", "/api/v1/uploads/{upload}", head(upload::offset)),
        ("PATCH", "/api/v1/uploads/{upload}", patch(upload::patch)),
        ("DELETE", "/api/v1/uploads/{upload}", delete(upload::cancel)),
        ("GET", "/api/v1/admin/upload-settings", get(upload::settings)),
        ("PUT", "/api/v1/admin/upload-settings", put(upload::put_settings)),
    ]
}

/// The assets route sits outside the session layer (no cookie work for static files).
pub const ASSETS_ROUTE: (&str, &str) = ("GET", "/assets/{name}");

/// (method, path) of every route the router serves.
pub fn route_table() -> Vec<(&'static str, &'static str)> {
    let mut t: Vec<_> = routes().into_iter().map(|(m, p, _)| (m, p)).collect();
    t.push(ASSETS_ROUTE);
    t
}

/// Builds the router.
pub fn app(state: AppState) -> Router {
    let mut router = Router::new();
    for (_, path, handler) in routes() {
        // Routes on the same path merge their method routers.
        router = router.route(path, handler);
    }
    router
        .route_layer(from_fn(trace::trace))
        .route_layer(from_fn_with_state(state.clone(), session::resolve))
        .route(ASSETS_ROUTE.1, get(assets::asset))
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
