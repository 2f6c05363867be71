//! Request-level defences every response and request passes through: the security headers, the
//! client address (with `X-Forwarded-For` believed only from configured proxies), and the admin
//! console's address ranges.
//!
//! Invariants:
//! - Every response carries HSTS, a Content-Security-Policy without `unsafe-inline` (pages use
//!   only same-origin script and style files), `X-Content-Type-Options: nosniff`,
//!   `Referrer-Policy: no-referrer`, `frame-ancestors 'none'` (and `X-Frame-Options: DENY`) and a
//!   Permissions-Policy that turns off every powerful feature.
//! - The client address is the TCP peer unless that peer is a trusted proxy; only then is
//!   `X-Forwarded-For` read, right to left, skipping trusted proxies, and the first untrusted hop is
//!   the client. A header from anyone else is ignored, so it cannot be used to spoof an address.

use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::middleware::Next;
use axum::response::Response;

use super::state::AppState;
use crate::users::Cidr;

pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
font-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";
pub const PERMISSIONS_POLICY: &str = "accelerometer=(), camera=(), geolocation=(), gyroscope=(), \
magnetometer=(), microphone=(), payment=(), usb=(), interest-cohort=()";
pub const HSTS: &str = "max-age=31536000; includeSubDomains";
/// Most `X-Forwarded-For` hops examined; a longer chain is cut at this many from the right.
pub const MAX_FORWARDED_HOPS: usize = 16;

/// The address a request is believed to come from (see the module invariants).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientIp(pub IpAddr);

/// Adds the security headers to every response.
pub async fn headers(req: Request, next: Next) -> Response {
    let mut res = next.run(req).await;
    let h = res.headers_mut();
    let set = |h: &mut HeaderMap, name: &'static str, value: &'static str| {
        h.insert(name, HeaderValue::from_static(value));
    };
    set(h, "strict-transport-security", HSTS);
    set(h, "content-security-policy", CSP);
    set(h, "x-content-type-options", "nosniff");
    set(h, "referrer-policy", "no-referrer");
    set(h, "x-frame-options", "DENY");
    set(h, "permissions-policy", PERMISSIONS_POLICY);
    set(h, "cross-origin-opener-policy", "same-origin");
    set(h, "cross-origin-resource-policy", "same-origin");
    if !h.contains_key(header::CACHE_CONTROL) {
        set(h, "cache-control", "no-store");
    }
    res
}

/// Works out the [`ClientIp`] and stores it in the request's extensions.
pub async fn client_ip(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip())
        .unwrap_or(IpAddr::from([0, 0, 0, 0]));
    let ip = resolve_client(peer, req.headers(), &state.config.trusted_proxies);
    req.extensions_mut().insert(ClientIp(canonical(ip)));
    next.run(req).await
}

/// The client address for a request from `peer` (pure; see the module invariants).
pub fn resolve_client(peer: IpAddr, headers: &HeaderMap, trusted: &[Cidr]) -> IpAddr {
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|n| n.contains(*ip));
    if !is_trusted(&peer) {
        return peer;
    }
    let mut hops: Vec<IpAddr> = Vec::new();
    for value in headers.get_all("x-forwarded-for") {
        let Ok(text) = value.to_str() else { return peer };
        for part in text.split(',') {
            match part.trim().parse::<IpAddr>() {
                Ok(ip) => hops.push(ip),
                // A malformed chain is not believed at all.
                Err(_) => return peer,
            }
        }
    }
    let start = hops.len().saturating_sub(MAX_FORWARDED_HOPS);
    let mut client = peer;
    for hop in hops[start..].iter().rev() {
        client = *hop;
        if !is_trusted(hop) {
            break;
        }
    }
    client
}

/// IPv4-mapped IPv6 addresses compare as the IPv4 address they carry.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::users::parse_cidr_list;

    fn h(xff: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", HeaderValue::from_str(xff).unwrap());
        h
    }

    #[test]
    fn forwarded_for_is_believed_only_from_trusted_proxies() {
        let proxies = parse_cidr_list("10.0.0.0/8").unwrap();
        let outsider: IpAddr = "203.0.113.9".parse().unwrap();
        let proxy: IpAddr = "10.1.1.1".parse().unwrap();
        assert_eq!(resolve_client(outsider, &h("127.0.0.1"), &proxies), outsider);
        assert_eq!(
            resolve_client(proxy, &h("198.51.100.7"), &proxies),
            "198.51.100.7".parse::<IpAddr>().unwrap()
        );
        // A client that prepends a fake hop is still seen as itself.
        assert_eq!(
            resolve_client(proxy, &h("127.0.0.1, 198.51.100.7"), &proxies),
            "198.51.100.7".parse::<IpAddr>().unwrap()
        );
        assert_eq!(resolve_client(proxy, &h("nonsense"), &proxies), proxy);
    }
}
