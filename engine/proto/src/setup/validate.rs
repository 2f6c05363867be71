//! The server's check of an Offer (docs/protocol/09-setup.md §9.3.2): every field from the
//! client is bounded and every file name is a safe relative name before anything is created.
//!
//! Invariant (rustls-style proof type): a [`ValidOffer`] can only be built by
//! [`validate_offer`], so holding one means the transcript matched and every field is in
//! bounds. The data plane still creates files with `openat2(RESOLVE_BENEATH |
//! RESOLVE_NO_SYMLINKS)`; name checks here are the first of two walls, not the only one.

use super::{FileAttrs, Offer, OverwritePref, Refuse, RefuseCode, ResumePref};
use crate::crypto::SuiteId;
use crate::rate::{Policy, RateLimits};
use crate::session::layout::{BLOCK_SIZE_LOG2_RANGE, MAX_FILES, MAX_SHARDS};
use crate::session::{FileEntry, Manifest, SessionParams};
use ctutils::CtEq;
use std::collections::HashSet;

/// Smallest datagram a peer may ask for (fits IPv6's minimum MTU with room to spare).
pub const MIN_DATAGRAM_SIZE: u16 = 512;
/// Largest datagram: a 9000-byte jumbo frame's UDP payload.
pub const MAX_DATAGRAM_SIZE: u16 = 9000;
/// Receiver window bounds per shard.
pub const WINDOW_BYTES_RANGE: core::ops::RangeInclusive<u64> = (1 << 20)..=(4 << 30);
/// Highest target rate a peer may ask for: 400 Gbit/s.
pub const MAX_RATE_BPS: u64 = 400_000_000_000;
/// IP + UDP header bytes: 8 (UDP) at least, 128 at most (IPv6 with extension headers).
pub const IP_OVERHEAD_RANGE: core::ops::RangeInclusive<u16> = 8..=128;
/// Mode bits a file may carry: permissions, sticky, setuid, setgid (the receiver drops the
/// last two unless root asked to keep them).
pub const MODE_MASK: u32 = 0o7777;

/// An Offer that passed every check, with the fields turned into proto types.
#[derive(Debug)]
pub struct ValidOffer {
    params: SessionParams,
    pub manifest: Manifest,
    pub overwrite: OverwritePref,
    pub resume: ResumePref,
    /// Empty, or per file (manifest order) the owner and xattrs the sender asks to preserve.
    pub attrs: Vec<FileAttrs>,
}

impl ValidOffer {
    /// The session parameters, under the session id the server picked.
    pub fn params(&self, session_id: u64) -> SessionParams {
        SessionParams { session_id, ..self.params.clone() }
    }
}

fn refuse(code: RefuseCode, reason: impl Into<String>) -> Refuse {
    Refuse { code, reason: reason.into() }
}

/// Check `offer` against the transcript this server computed; refuse with a reason otherwise.
pub fn validate_offer(offer: &Offer, transcript: &[u8; 32]) -> Result<ValidOffer, Refuse> {
    if !offer.transcript[..].ct_eq(&transcript[..]).to_bool() {
        return Err(refuse(RefuseCode::Transcript, "the hellos were altered on the way"));
    }
    let params = check_params(offer)?;
    if offer.files.is_empty() {
        return Err(refuse(RefuseCode::BadParams, "the offer lists no file"));
    }
    if offer.files.len() > MAX_FILES {
        return Err(refuse(RefuseCode::BadParams, format!("more than {MAX_FILES} files")));
    }
    let mut seen = HashSet::with_capacity(offer.files.len());
    for f in &offer.files {
        check_entry(f)?;
        if !seen.insert(f.name.as_str()) {
            return Err(refuse(RefuseCode::BadName, format!("{:?} is listed twice", f.name)));
        }
    }
    if !offer.attrs.is_empty() && offer.attrs.len() != offer.files.len() {
        return Err(refuse(
            RefuseCode::BadParams,
            format!("{} attribute entries for {} files", offer.attrs.len(), offer.files.len()),
        ));
    }
    let manifest = Manifest::new(offer.files.clone(), offer.block_size_log2)
        .map_err(|e| refuse(RefuseCode::BadParams, e.to_string()))?;
    Ok(ValidOffer {
        params,
        manifest,
        overwrite: offer.overwrite,
        resume: offer.resume,
        attrs: offer.attrs.clone(),
    })
}

fn check_params(o: &Offer) -> Result<SessionParams, Refuse> {
    let bad = |what: String| Err(refuse(RefuseCode::BadParams, what));
    let Some(suite) = SuiteId::from_u8(o.suite) else {
        return bad(format!("unknown cipher suite {}", o.suite));
    };
    let Some(policy) = [Policy::Fixed, Policy::High, Policy::Fair, Policy::Low]
        .into_iter()
        .find(|p| *p as u8 == o.policy)
    else {
        return bad(format!("unknown policy {}", o.policy));
    };
    if o.shards == 0 || o.shards > MAX_SHARDS {
        return bad(format!("shard count {} is outside 1..={MAX_SHARDS}", o.shards));
    }
    if !(MIN_DATAGRAM_SIZE..=MAX_DATAGRAM_SIZE).contains(&o.datagram_size) {
        return bad(format!(
            "datagram size {} is outside {MIN_DATAGRAM_SIZE}..={MAX_DATAGRAM_SIZE}",
            o.datagram_size
        ));
    }
    if !IP_OVERHEAD_RANGE.contains(&o.ip_overhead) {
        return bad(format!("IP overhead {} is out of bounds", o.ip_overhead));
    }
    if !WINDOW_BYTES_RANGE.contains(&o.window_bytes) {
        return bad(format!("window {} bytes is out of bounds", o.window_bytes));
    }
    if o.target_rate_bps == 0 || o.target_rate_bps > MAX_RATE_BPS {
        return bad(format!("target rate {} bit/s is out of bounds", o.target_rate_bps));
    }
    if o.min_rate_bps > o.target_rate_bps {
        return bad("the minimum rate exceeds the target rate".into());
    }
    if !BLOCK_SIZE_LOG2_RANGE.contains(&o.block_size_log2) {
        return bad(format!("block size 2^{} is out of bounds", o.block_size_log2));
    }
    let mut p = SessionParams::new(0, suite);
    p.shards = o.shards;
    p.datagram_size = o.datagram_size;
    p.ip_overhead = o.ip_overhead;
    p.window_bytes = o.window_bytes;
    p.rate = RateLimits { min_bps: o.min_rate_bps, target_bps: o.target_rate_bps };
    p.policy = policy;
    p.check().map_err(|e| refuse(RefuseCode::BadParams, e.to_string()))?;
    Ok(p)
}

fn check_entry(f: &FileEntry) -> Result<(), Refuse> {
    if let Err(why) = check_name(&f.name) {
        return Err(refuse(RefuseCode::BadName, format!("file name {:?} refused: {why}", f.name)));
    }
    if f.mode & !MODE_MASK != 0 {
        return Err(refuse(RefuseCode::BadParams, format!("{:?}: mode {:o}", f.name, f.mode)));
    }
    Ok(())
}

/// Whether `name` is a safe relative name: not empty, at most `MAX_NAME_LEN` bytes, no NUL,
/// not absolute, and no empty, `.` or `..` component (§9.3.2). Symlinks in DEST are the data
/// plane's to refuse (it alone sees the disk).
pub fn check_name(name: &str) -> Result<(), &'static str> {
    if name.is_empty() {
        return Err("empty");
    }
    if name.len() > super::MAX_NAME_LEN {
        return Err("too long");
    }
    if name.contains('\0') {
        return Err("contains NUL");
    }
    if name.starts_with('/') {
        return Err("absolute path");
    }
    for part in name.split('/') {
        match part {
            "" => return Err("empty path component"),
            "." => return Err("`.` component"),
            ".." => return Err("`..` component (would leave the destination)"),
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offer(names: &[&str]) -> Offer {
        Offer {
            transcript: [9; 32],
            suite: SuiteId::Aes128CfbCmac as u8,
            shards: 2,
            datagram_size: 1472,
            ip_overhead: 28,
            window_bytes: 64 << 20,
            min_rate_bps: 0,
            target_rate_bps: 1_000_000_000,
            policy: Policy::Fair as u8,
            block_size_log2: 20,
            overwrite: OverwritePref::Never,
            resume: ResumePref::Attributes,
            files: names
                .iter()
                .map(|n| FileEntry { name: (*n).into(), size: 10, mode: 0o644, mtime_ns: 0 })
                .collect(),
            attrs: Vec::new(),
        }
    }

    #[test]
    fn attributes_are_none_or_one_per_file() {
        let mut o = offer(&["a", "b"]);
        o.attrs = vec![FileAttrs { owner: Some((1, 2)), xattrs: vec![] }];
        let r = validate_offer(&o, &[9; 32]).unwrap_err();
        assert_eq!(r.code, RefuseCode::BadParams);
        o.attrs.push(FileAttrs::default());
        let v = validate_offer(&o, &[9; 32]).unwrap();
        assert_eq!(v.attrs[0].owner, Some((1, 2)));
    }

    #[test]
    fn a_sane_offer_passes_and_keeps_its_fields() {
        let v = validate_offer(&offer(&["a", "dir/b.txt", "..hidden"]), &[9; 32]).unwrap();
        let p = v.params(77);
        assert_eq!((p.session_id, p.shards, p.datagram_size), (77, 2, 1472));
        assert_eq!(v.manifest.file_count(), 3);
    }

    #[test]
    fn transcript_mismatch_is_refused() {
        let r = validate_offer(&offer(&["a"]), &[8; 32]).unwrap_err();
        assert_eq!(r.code, RefuseCode::Transcript);
    }

    #[test]
    fn escaping_names_are_refused() {
        for bad in ["../x", "/etc/x", "a/../../x", "a//b", "./a", "a/.", "", "a\0b", "a/"] {
            let r = validate_offer(&offer(&[bad]), &[9; 32]).unwrap_err();
            assert_eq!(r.code, RefuseCode::BadName, "{bad:?}: {}", r.reason);
        }
        let r = validate_offer(&offer(&["a", "a"]), &[9; 32]).unwrap_err();
        assert_eq!(r.code, RefuseCode::BadName);
    }

    #[test]
    fn out_of_bounds_params_are_refused() {
        let cases: [fn(&mut Offer); 9] = [
            |o| o.suite = 9,
            |o| o.policy = 4,
            |o| o.shards = 0,
            |o| o.shards = 65,
            |o| o.datagram_size = 9001,
            |o| o.window_bytes = 0,
            |o| o.target_rate_bps = 0,
            |o| o.min_rate_bps = o.target_rate_bps + 1,
            |o| o.block_size_log2 = 40,
        ];
        for (i, mutate) in cases.iter().enumerate() {
            let mut o = offer(&["a"]);
            mutate(&mut o);
            let r = validate_offer(&o, &[9; 32]).unwrap_err();
            assert_eq!(r.code, RefuseCode::BadParams, "case {i}: {}", r.reason);
        }
        let mut o = offer(&["a"]);
        o.files[0].mode = 0o100644;
        assert!(validate_offer(&o, &[9; 32]).is_err());
        assert!(validate_offer(&offer(&[]), &[9; 32]).is_err());
    }
}
