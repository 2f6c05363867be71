//! The one error type of the web app, and how each variant answers.
//!
//! Invariants:
//! - An internal error is logged (without request data) and answered with a generic 500 page:
//!   no SQL, path or key material reaches a response.
//! - "Not found" and "not yours" are the same answer (404, no data), so ids cannot be probed.
//! - A throttled login answers 429 with `Retry-After`.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};

use super::views;
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// Not there, or not the caller's (IDOR): the same 404.
    #[error("not found")]
    NotFound,
    /// The caller may not do this (the caller's fault); the message is shown.
    #[error("forbidden: {0}")]
    Forbidden(&'static str),
    /// A state-changing request without a valid CSRF token.
    #[error("missing or invalid CSRF token")]
    Csrf,
    /// Too many failed logins for this address or account.
    #[error("too many attempts; retry after {retry_after_s} s")]
    Throttled { retry_after_s: u64 },
    /// Not signed in: pages redirect to the sign-in page, the API answers 401.
    #[error("sign-in required")]
    SignIn,
    /// Signed in with a one-time password that must be changed first.
    #[error("password change required")]
    MustChangePassword,
    /// The request is malformed (the caller's fault); the message is shown.
    #[error("bad request: {0}")]
    BadRequest(String),
    /// Ours or the host's; logged, shown as a generic error.
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<StoreError> for AppError {
    fn from(e: StoreError) -> AppError {
        AppError::Internal(e.to_string())
    }
}

impl AppError {
    pub fn status(&self) -> StatusCode {
        match self {
            AppError::NotFound => StatusCode::NOT_FOUND,
            AppError::Forbidden(_) | AppError::Csrf => StatusCode::FORBIDDEN,
            AppError::Throttled { .. } => StatusCode::TOO_MANY_REQUESTS,
            AppError::SignIn => StatusCode::UNAUTHORIZED,
            AppError::MustChangePassword => StatusCode::FORBIDDEN,
            AppError::BadRequest(_) => StatusCode::BAD_REQUEST,
            AppError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// What a person or script is told.
    pub fn public_message(&self) -> String {
        match self {
            AppError::NotFound => "There is nothing here, or it is not yours to see.".into(),
            AppError::Forbidden(m) => (*m).into(),
            AppError::Csrf => "This form has expired or did not come from this site. Reload the page and try again.".into(),
            AppError::Throttled { retry_after_s } => {
                format!("Too many failed sign-in attempts. Try again in {retry_after_s} seconds.")
            }
            AppError::SignIn => "Please sign in.".into(),
            AppError::MustChangePassword => "Change your one-time password in the console first.".into(),
            AppError::BadRequest(m) => m.clone(),
            AppError::Internal(_) => "Something went wrong on the server. The administrator can find the details in the log.".into(),
        }
    }

    fn log(&self) {
        if let AppError::Internal(m) = self {
            tracing::error!("web console internal error: {m}");
        }
    }

    fn with_retry_after(&self, mut res: Response) -> Response {
        if let AppError::Throttled { retry_after_s } = self
            && let Ok(v) = HeaderValue::from_str(&retry_after_s.to_string())
        {
            res.headers_mut().insert(header::RETRY_AFTER, v);
        }
        res
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        self.log();
        match self {
            AppError::SignIn => return Redirect::to("/login").into_response(),
            AppError::MustChangePassword => {
                return Redirect::to("/account/password").into_response();
            }
            _ => {}
        }
        let status = self.status();
        let page = views::error_page(status, &self.public_message());
        self.with_retry_after((status, page).into_response())
    }
}

/// The same errors, answered as JSON for the API.
#[derive(Debug)]
pub struct ApiError(pub AppError);

impl From<AppError> for ApiError {
    fn from(e: AppError) -> ApiError {
        ApiError(e)
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> ApiError {
        ApiError(e.into())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        self.0.log();
        let status = self.0.status();
        let body = Json(
            serde_json::json!({ "error": self.0.public_message(), "status": status.as_u16() }),
        );
        self.0.with_retry_after((status, body).into_response())
    }
}
