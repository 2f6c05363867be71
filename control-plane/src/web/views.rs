//! Server-rendered pages: minijinja templates embedded in the binary.
//!
//! Invariants: templates are compiled into the binary (`include_str!`), so building needs cargo
//! and nothing else; auto-escaping is on for every `.html` template, so user text (names,
//! descriptions, audit details) cannot inject markup; no template has inline script or style.

use std::sync::OnceLock;

use axum::http::StatusCode;
use axum::response::Html;
use minijinja::Environment;
use serde_json::{Value, json};

use super::error::AppError;
use super::session::Visit;

const TEMPLATES: &[(&str, &str)] = &[
    ("base.html", include_str!("../../templates/base.html")),
    ("error.html", include_str!("../../templates/error.html")),
    ("login.html", include_str!("../../templates/login.html")),
    ("login_totp.html", include_str!("../../templates/login_totp.html")),
    ("home.html", include_str!("../../templates/home.html")),
    ("password.html", include_str!("../../templates/password.html")),
    ("tokens.html", include_str!("../../templates/tokens.html")),
    ("totp.html", include_str!("../../templates/totp.html")),
    ("admin_users.html", include_str!("../../templates/admin_users.html")),
    ("admin_user.html", include_str!("../../templates/admin_user.html")),
    ("admin_secret.html", include_str!("../../templates/admin_secret.html")),
    ("admin_settings.html", include_str!("../../templates/admin_settings.html")),
    ("admin_audit.html", include_str!("../../templates/admin_audit.html")),
    ("workgroups.html", include_str!("../../templates/workgroups.html")),
    ("packages.html", include_str!("../../templates/packages.html")),
    ("package_new.html", include_str!("../../templates/package_new.html")),
    ("package.html", include_str!("../../templates/package.html")),
    ("workgroup.html", include_str!("../../templates/workgroup.html")),
    ("package_external.html", include_str!("../../templates/package_external.html")),
    ("external_link.html", include_str!("../../templates/external_link.html")),
];

fn env() -> Result<&'static Environment<'static>, AppError> {
    static ENV: OnceLock<Result<Environment<'static>, String>> = OnceLock::new();
    ENV.get_or_init(|| {
        let mut env = Environment::new();
        for (name, src) in TEMPLATES {
            env.add_template(name, src).map_err(|e| format!("template {name}: {e}"))?;
        }
        Ok(env)
    })
    .as_ref()
    .map_err(|e| AppError::Internal(e.clone()))
}

/// Renders `name` with `ctx`.
pub fn render(name: &str, ctx: Value) -> Result<Html<String>, AppError> {
    let t = env()?
        .get_template(name)
        .map_err(|e| AppError::Internal(format!("template {name}: {e}")))?;
    t.render(ctx).map(Html).map_err(|e| AppError::Internal(format!("rendering {name}: {e}")))
}

/// The context every page shares: who is signed in, the CSRF token, the active menu entry.
pub fn base(visit: &Visit, title: &str, active: &str) -> Value {
    let me = visit.session.as_ref().filter(|s| !s.is_partial).map(|s| {
        let role = s.role();
        json!({
            "name": s.account.name,
            "role_label": role.label(),
            "is_admin": s.account.is_admin,
            "is_workgroup_admin": s.user.is_workgroup_admin,
        })
    });
    json!({ "me": me, "csrf": visit.csrf, "title": title, "active": active })
}

/// Merges page fields into a base context.
pub fn with(mut base: Value, extra: Value) -> Value {
    if let (Some(b), Value::Object(e)) = (base.as_object_mut(), extra) {
        b.extend(e);
    }
    base
}

/// An error page (never fails: falls back to plain text if templates are broken).
pub fn error_page(status: StatusCode, message: &str) -> Html<String> {
    let title = status.canonical_reason().unwrap_or("Error");
    let ctx = json!({ "me": null, "title": title, "message": message, "active": "" });
    render("error.html", ctx).unwrap_or_else(|_| {
        Html(format!("<!doctype html><title>{title}</title><p>{}</p>", escape(message)))
    })
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

/// Percent-encodes everything but RFC 3986's unreserved characters (for URL parts and
/// `filename*`).
pub fn percent_encode(s: &str) -> String {
    use std::fmt::Write as _;
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// A size for people: `1234 bytes`, `1.2 KiB`, `3.4 GiB`.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if n < 1024 {
        return format!("{n} bytes");
    }
    let mut v = n as f64 / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.1} {}", UNITS[unit])
}

/// `YYYY-MM-DD HH:MM UTC` for tables.
pub fn when(t_s: i64) -> String {
    let s = crate::users::format_utc(t_s);
    // format_utc gives YYYY-MM-DDTHH:MM:SSZ.
    format!("{} {} UTC", &s[..10.min(s.len())], s.get(11..16).unwrap_or(""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_well() {
        assert_eq!(human_bytes(6), "6 bytes");
        assert_eq!(human_bytes(1234), "1.2 KiB");
        assert_eq!(human_bytes(5 << 30), "5.0 GiB");
    }

    #[test]
    fn every_template_compiles_and_escapes() {
        let e = env().unwrap();
        for (name, _) in TEMPLATES {
            e.get_template(name).unwrap();
        }
        let page = error_page(StatusCode::NOT_FOUND, "<script>x</script>").0;
        assert!(page.contains("&lt;script&gt;"));
        assert!(!page.contains("<script>x"));
    }
}
