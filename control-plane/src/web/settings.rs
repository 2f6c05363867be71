//! The admin settings page: security, transfer caps, external sending, admin address ranges,
//! session timeouts and SMTP.
//!
//! Invariants:
//! - Every number is range-checked and every CIDR list parsed before anything is written; a bad
//!   form changes nothing and says what to fix.
//! - A list of admin ranges that excludes the admin saving it is refused (no self lock-out).
//! - The SMTP password is never sent back to the browser; an empty field keeps the stored one.
//! - The audit entry names the settings that changed, never their secret values.

use axum::Form;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use haul_proto::rate::Policy;
use serde::Deserialize;
use serde_json::{Value, json};

use super::accounts::{NoticeQuery, audit_for, notice_text};
use super::error::AppError;
use super::session::Admin;
use super::state::AppState;
use super::views::{self, base, with};
use crate::store::settings::AdminSettings;
use crate::store::web_audit::Outcome;
use crate::store::web_settings::{SmtpSettings, WebSettings};
use crate::users;

const POLICIES: [Policy; 4] = [Policy::Low, Policy::Fair, Policy::High, Policy::Fixed];

fn settings_json(t: &AdminSettings, w: &WebSettings) -> Value {
    json!({
        "strong_passwords": w.strong_passwords,
        "password_min_len": w.password_min_len,
        "encrypt_transfers": t.encrypt_transfers,
        "require_content_protection": w.require_content_protection,
        "admin_cidrs": w.admin_cidrs,
        "session_idle_min": w.session_idle_s / 60,
        "session_absolute_h": w.session_absolute_s / 3600,
        "token_lifetime_min": t.token_lifetime_s / 60,
        "rate_cap_mbps": t.rate_cap_bps / 1_000_000,
        "policy_cap": t.policy_cap.name(),
        "external_sending": w.external_sending,
        "external_expiry_default_days": w.external_expiry_default_days,
        "external_expiry_max_days": w.external_expiry_max_days,
        "external_downloads_default": w.external_downloads_default,
        "external_downloads_max": w.external_downloads_max,
        "package_expiry_max_days": w.package_expiry_max_days,
        "package_downloads_max": w.package_downloads_max,
        "smtp_host": w.smtp.host,
        "smtp_port": w.smtp.port,
        "smtp_starttls": w.smtp.starttls,
        "smtp_from": w.smtp.from,
        "smtp_user": w.smtp.user,
        "smtp_password_set": !w.smtp.password.is_empty(),
    })
}

async fn view(
    state: &AppState,
    a: &Admin,
    extra: Value,
    status: StatusCode,
) -> Result<Response, AppError> {
    let (t, w) = state.db(|s| Ok((s.admin_settings()?, s.web_settings()?))).await?;
    let policies: Vec<&str> = POLICIES.iter().map(|p| p.name()).collect();
    let ctx = json!({ "s": settings_json(&t, &w), "policies": policies, "your_ip": a.0.visit.ip.to_string() });
    Ok((
        status,
        views::render(
            "admin_settings.html",
            with(with(base(&a.0.visit, "Settings", "settings"), ctx), extra),
        )?,
    )
        .into_response())
}

/// `GET /admin/settings`.
pub async fn settings_page(
    State(state): State<AppState>,
    a: Admin,
    Query(q): Query<NoticeQuery>,
) -> Result<Response, AppError> {
    let notice = q.notice.as_deref().and_then(notice_text);
    view(&state, &a, json!({ "notice": notice }), StatusCode::OK).await
}

#[derive(Debug, Default, Deserialize)]
pub struct SettingsForm {
    pub strong_passwords: Option<String>,
    #[serde(default)]
    pub password_min_len: String,
    pub encrypt_transfers: Option<String>,
    pub require_content_protection: Option<String>,
    #[serde(default)]
    pub admin_cidrs: String,
    #[serde(default)]
    pub session_idle_min: String,
    #[serde(default)]
    pub session_absolute_h: String,
    #[serde(default)]
    pub token_lifetime_min: String,
    #[serde(default)]
    pub rate_cap_mbps: String,
    #[serde(default)]
    pub policy_cap: String,
    pub external_sending: Option<String>,
    #[serde(default)]
    pub external_expiry_default_days: String,
    #[serde(default)]
    pub external_expiry_max_days: String,
    #[serde(default)]
    pub external_downloads_default: String,
    #[serde(default)]
    pub external_downloads_max: String,
    /// Empty (a form from before these fields): keep the current value.
    #[serde(default)]
    pub package_expiry_max_days: String,
    #[serde(default)]
    pub package_downloads_max: String,
    #[serde(default)]
    pub smtp_host: String,
    #[serde(default)]
    pub smtp_port: String,
    pub smtp_starttls: Option<String>,
    #[serde(default)]
    pub smtp_from: String,
    #[serde(default)]
    pub smtp_user: String,
    #[serde(default)]
    pub smtp_password: String,
    pub smtp_password_clear: Option<String>,
}

/// A whole number in `lo..=hi`, or a message naming the field.
fn num(v: &str, what: &str, lo: u64, hi: u64) -> Result<u64, String> {
    v.trim()
        .parse::<u64>()
        .ok()
        .filter(|n| (lo..=hi).contains(n))
        .ok_or_else(|| format!("{what} must be a whole number from {lo} to {hi}."))
}

fn text(v: &str, what: &str, max: usize) -> Result<String, String> {
    let v = v.trim();
    if v.len() > max || v.chars().any(char::is_control) {
        return Err(format!(
            "{what} must be at most {max} characters, without control characters."
        ));
    }
    Ok(v.to_owned())
}

/// Checks the whole form into new settings (nothing is written on error).
pub fn parse(
    f: &SettingsForm,
    old: &WebSettings,
    old_t: &AdminSettings,
) -> Result<(AdminSettings, WebSettings), String> {
    let cidrs = users::parse_cidr_list(&f.admin_cidrs).map_err(|e| e.to_string())?;
    let policy_cap = Policy::from_name(&f.policy_cap).ok_or("Pick a policy from the list.")?;
    let t = AdminSettings {
        encrypt_transfers: f.encrypt_transfers.is_some(),
        token_lifetime_s: num(&f.token_lifetime_min, "Token lifetime", 1, 10_080)? * 60,
        rate_cap_bps: num(&f.rate_cap_mbps, "Rate cap", 0, 1_000_000)? * 1_000_000,
        policy_cap,
        ..old_t.clone()
    };
    let expiry_max = num(&f.external_expiry_max_days, "Link expiry at most", 1, 3650)? as u32;
    let downloads_max =
        num(&f.external_downloads_max, "Downloads per link at most", 1, 1000)? as u32;
    let w = WebSettings {
        strong_passwords: f.strong_passwords.is_some(),
        password_min_len: num(&f.password_min_len, "Minimum password length", 8, 128)? as u32,
        require_content_protection: f.require_content_protection.is_some(),
        external_sending: f.external_sending.is_some(),
        external_expiry_default_days: num(
            &f.external_expiry_default_days,
            "Link expiry by default",
            1,
            u64::from(expiry_max),
        )? as u32,
        external_expiry_max_days: expiry_max,
        external_downloads_default: num(
            &f.external_downloads_default,
            "Downloads per link by default",
            1,
            u64::from(downloads_max),
        )? as u32,
        external_downloads_max: downloads_max,
        package_expiry_max_days: match f.package_expiry_max_days.trim() {
            "" => old.package_expiry_max_days,
            v => num(v, "Package expiry at most", 1, 3650)? as u32,
        },
        package_downloads_max: match f.package_downloads_max.trim() {
            "" => old.package_downloads_max,
            v => num(v, "Downloads per recipient at most", 1, 1000)? as u32,
        },
        admin_cidrs: cidrs.iter().map(ToString::to_string).collect::<Vec<_>>().join(", "),
        session_idle_s: num(&f.session_idle_min, "Idle sign-out", 1, 1440)? as i64 * 60,
        session_absolute_s: num(&f.session_absolute_h, "Longest session", 1, 720)? as i64 * 3600,
        smtp: SmtpSettings {
            host: text(&f.smtp_host, "The SMTP server", 253)?,
            port: num(&f.smtp_port, "The SMTP port", 1, 65_535)? as u16,
            from: text(&f.smtp_from, "The from address", 254)?,
            user: text(&f.smtp_user, "The SMTP user name", 254)?,
            password: match (f.smtp_password_clear.is_some(), f.smtp_password.is_empty()) {
                (true, _) => String::new(),
                (false, true) => old.smtp.password.clone(),
                (false, false) => text(&f.smtp_password, "The SMTP password", 256)?,
            },
            starttls: f.smtp_starttls.is_some(),
        },
    };
    Ok((t, w))
}

/// The names of the settings that differ (for the audit log; values of secrets never).
fn changed(old: &(AdminSettings, WebSettings), new: &(AdminSettings, WebSettings)) -> String {
    let mut v = Vec::new();
    let (ot, ow) = old;
    let (nt, nw) = new;
    let mut note = |c: bool, name: &str| {
        if c {
            v.push(name.to_owned());
        }
    };
    note(
        ot.encrypt_transfers != nt.encrypt_transfers,
        &format!("encrypt_transfers={}", nt.encrypt_transfers),
    );
    note(
        ot.token_lifetime_s != nt.token_lifetime_s,
        &format!("token_lifetime_s={}", nt.token_lifetime_s),
    );
    note(ot.rate_cap_bps != nt.rate_cap_bps, &format!("rate_cap_bps={}", nt.rate_cap_bps));
    note(ot.policy_cap != nt.policy_cap, &format!("policy_cap={}", nt.policy_cap.name()));
    note(
        ow.strong_passwords != nw.strong_passwords,
        &format!("strong_passwords={}", nw.strong_passwords),
    );
    note(
        ow.password_min_len != nw.password_min_len,
        &format!("password_min_len={}", nw.password_min_len),
    );
    note(
        ow.require_content_protection != nw.require_content_protection,
        &format!("require_content_protection={}", nw.require_content_protection),
    );
    note(ow.admin_cidrs != nw.admin_cidrs, &format!("admin_cidrs=[{}]", nw.admin_cidrs));
    note(
        ow.external_sending != nw.external_sending,
        &format!("external_sending={}", nw.external_sending),
    );
    note(
        ow.session_idle_s != nw.session_idle_s || ow.session_absolute_s != nw.session_absolute_s,
        "session timeouts",
    );
    note(
        ow.external_expiry_default_days != nw.external_expiry_default_days
            || ow.external_expiry_max_days != nw.external_expiry_max_days
            || ow.external_downloads_default != nw.external_downloads_default
            || ow.external_downloads_max != nw.external_downloads_max,
        "external link limits",
    );
    note(
        ow.package_expiry_max_days != nw.package_expiry_max_days
            || ow.package_downloads_max != nw.package_downloads_max,
        "package limits",
    );
    note(
        ow.smtp.host != nw.smtp.host
            || ow.smtp.port != nw.smtp.port
            || ow.smtp.from != nw.smtp.from
            || ow.smtp.user != nw.smtp.user
            || ow.smtp.starttls != nw.smtp.starttls,
        "smtp",
    );
    note(ow.smtp.password != nw.smtp.password, "smtp password (value not logged)");
    if v.is_empty() { "no change".into() } else { v.join("; ") }
}

/// `POST /admin/settings`.
pub async fn save_settings(
    State(state): State<AppState>,
    a: Admin,
    Form(f): Form<SettingsForm>,
) -> Result<Response, AppError> {
    let old = state.db(|s| Ok((s.admin_settings()?, s.web_settings()?))).await?;
    let new = match parse(&f, &old.1, &old.0) {
        Ok(n) => n,
        Err(msg) => {
            return view(&state, &a, json!({ "error": msg }), StatusCode::UNPROCESSABLE_ENTITY)
                .await;
        }
    };
    let ranges = users::parse_cidr_list(&new.1.admin_cidrs)
        .map_err(|e| AppError::Internal(e.to_string()))?;
    if !users::is_allowed(&ranges, a.0.visit.ip) {
        let msg = format!(
            "The admin address ranges must include your own address ({}), or you would lock yourself out.",
            a.0.visit.ip
        );
        return view(&state, &a, json!({ "error": msg }), StatusCode::UNPROCESSABLE_ENTITY).await;
    }
    let detail = changed(&old, &new);
    let now_s = state.now_s();
    state
        .db(move |s| {
            s.set_admin_settings(&new.0, now_s)?;
            s.set_web_settings(&new.1, now_s)
        })
        .await?;
    state
        .audit(
            audit_for(
                &a.0.visit,
                Some(&a.0.ctx.account.name),
                "settings.update",
                Outcome::Ok,
                &detail,
            )
            .target("settings"),
        )
        .await?;
    Ok(Redirect::to("/admin/settings?notice=saved").into_response())
}
