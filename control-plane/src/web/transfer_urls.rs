//! `haul://` URLs the console puts in its pages: a token minted by `token::Minter` (which
//! applies the admin settings and the user's state), recorded by token id for the gate's ledger
//! (receipts, external links' byte accounting) and audited as `token.mint`.
//!
//! Invariants: the token reaches only the returned URL, which goes into the page of the person
//! it is for; the store keeps its 16-byte id, the audit log neither.

use std::net::IpAddr;

use super::error::AppError;
use super::state::AppState;
use crate::authz::Direction;
use crate::store::deliveries::MintedFor;
use crate::store::web_audit::{AuditRecord, Outcome};
use crate::token::hostkey_pin::host_key_fingerprint;
use crate::token::minter::{MintRequest, Minter, transfer_url};
use crate::users::UserName;

/// What a URL is minted for.
#[derive(Clone, Debug)]
pub struct UrlFor {
    /// The user the token names (for an external link: the sender, whose outbox it reads).
    pub user: UserName,
    pub direction: Direction,
    /// Relative to the user's storage root.
    pub path: String,
    /// The token's package id: a package's public id, or
    /// [`super::package_files::link_token_package_id`].
    pub package_id: String,
    pub minted: MintedFor,
    /// `None`: the settings' token lifetime.
    pub lifetime_s: Option<u64>,
    /// Who asked (for the audit log).
    pub ip: IpAddr,
}

/// A `haul://` URL, or the reason there is none (shown on the page).
pub async fn transfer_link(
    state: &AppState,
    want: UrlFor,
) -> Result<Result<String, String>, AppError> {
    let (store, keys, dir, now_s) =
        (state.store.clone(), state.keys.clone(), state.config.data_dir.clone(), state.now_s());
    let req = MintRequest {
        user: want.user.clone(),
        direction: want.direction,
        paths: vec![want.path.clone()],
        lifetime_s: want.lifetime_s,
        single_use: false,
        client_ip: None,
        package_id: Some(want.package_id.clone()),
    };
    state
        .blocking(move || {
            let hostkey = match host_key_fingerprint(&dir) {
                Ok(h) => h,
                Err(e) => return Ok(Err(format!("Transfers are not available yet: {e}."))),
            };
            let settings = store.admin_settings().map_err(AppError::from)?;
            let (claims, token) = match Minter::new(&store, &keys).mint(&req, now_s) {
                Ok(m) => m,
                Err(e) => return Ok(Err(format!("No transfer URL: {e}."))),
            };
            let direction = want.direction.name();
            store.record_minted_token(
                &claims.token_id,
                want.minted,
                direction,
                claims.expires_at_s,
                now_s,
            )?;
            let mut detail = format!("direction={direction} expires_at={}", claims.expires_at_s);
            if let Some(l) = want.minted.link_id {
                detail.push_str(&format!(" external_link={l}"));
            }
            store.audit(&AuditRecord {
                at_s: now_s,
                actor: Some(want.user.as_str()),
                action: "token.mint",
                target: &format!("package {}", want.minted.package_id),
                outcome: Outcome::Ok,
                ip: &want.ip.to_string(),
                detail: &detail,
            })?;
            Ok(Ok(transfer_url(
                &settings.public_host,
                settings.public_port,
                &want.path,
                &token,
                &hostkey,
            )))
        })
        .await?
}
