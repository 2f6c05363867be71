//! axe-core, the accessibility rules engine, obtained at test time and run in the page.
//!
//! The release is pinned ([`AXE_VERSION`]) together with the npm registry's published
//! integrity of its tarball ([`AXE_SHA512`]). The tarball is fetched with `npm pack` into a
//! cache outside the repository (`$HAUL_AXE_CACHE`, else `$HOME/.cache/haul-axe`) and its
//! sha512 is checked on every use: a tarball that does not match is deleted and refused.
//! `axe.min.js` is read straight out of the verified tarball (never from an unpacked copy),
//! and none of axe's code is committed here (it is MPL-2.0 and not ours to vendor).
//!
//! To move to a newer axe: `npm view axe-core@X.Y.Z dist.integrity`, and change both
//! constants together.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use serde_json::Value as Json;

use super::driver::Session;

/// The pinned axe-core release.
pub const AXE_VERSION: &str = "4.14.1";
/// The npm registry's `dist.integrity` of `axe-core-4.14.1.tgz` (SRI: sha512, base64).
pub const AXE_SHA512: &str = "sha512-FHfa+lmNjQZfJz1q8wKqIDwC6DExcHt/pkjNQb09a3NPjCKg2rhu5qb2S4r76ASyFNNtuFooJpZe37OgudVGtQ==";
/// The impacts that fail a page.
pub const FAILING_IMPACTS: [&str; 2] = ["serious", "critical"];
/// The largest `axe.min.js` accepted (4.14 is about 560 KB).
const MAX_AXE_BYTES: usize = 4 << 20;
/// Nodes named per violation in a report.
const MAX_NODES_REPORTED: usize = 5;

/// One axe violation.
#[derive(Debug, Clone)]
pub struct Violation {
    pub id: String,
    pub impact: String,
    pub help: String,
    /// CSS selectors of (up to [`MAX_NODES_REPORTED`]) offending elements.
    pub nodes: Vec<String>,
}

impl Violation {
    pub fn is_failing(&self) -> bool {
        FAILING_IMPACTS.contains(&self.impact.as_str())
    }
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({}): {} at {}", self.id, self.impact, self.help, self.nodes.join(", "))
    }
}

/// The verified `axe.min.js` (loaded once per test binary). Panics, saying why, when the
/// pinned release cannot be obtained or does not match its recorded hash.
pub fn source() -> &'static str {
    static SOURCE: OnceLock<String> = OnceLock::new();
    SOURCE.get_or_init(|| load().unwrap_or_else(|e| panic!("axe-core {AXE_VERSION}: {e}")))
}

fn cache_dir() -> PathBuf {
    if let Some(p) = std::env::var_os("HAUL_AXE_CACHE") {
        return PathBuf::from(p);
    }
    let home = std::env::var_os("HOME").map_or_else(std::env::temp_dir, PathBuf::from);
    home.join(".cache").join("haul-axe")
}

fn load() -> Result<String, String> {
    let dir = cache_dir();
    std::fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    let tgz = dir.join(format!("axe-core-{AXE_VERSION}.tgz"));
    if !tgz.is_file() || verify(&tgz).is_err() {
        let _ = std::fs::remove_file(&tgz);
        fetch(&dir, &tgz)?;
    }
    verify(&tgz).inspect_err(|_| {
        let _ = std::fs::remove_file(&tgz);
    })?;
    let out = Command::new("tar")
        .arg("-xzOf")
        .arg(&tgz)
        .arg("package/axe.min.js")
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| format!("running tar: {e}"))?;
    if !out.status.success() || out.stdout.is_empty() || out.stdout.len() > MAX_AXE_BYTES {
        return Err(format!("no usable package/axe.min.js in {}", tgz.display()));
    }
    String::from_utf8(out.stdout).map_err(|_| "axe.min.js is not UTF-8".into())
}

/// `npm pack axe-core@VERSION` into a fresh directory in the cache, then into place.
fn fetch(dir: &Path, tgz: &Path) -> Result<(), String> {
    let tmp =
        tempfile::tempdir_in(dir).map_err(|e| format!("temp dir in {}: {e}", dir.display()))?;
    eprintln!(
        "browser tests: fetching axe-core {AXE_VERSION} with npm pack into {}",
        dir.display()
    );
    let status = Command::new("npm")
        .args(["pack", &format!("axe-core@{AXE_VERSION}"), "--silent", "--pack-destination"])
        .arg(tmp.path())
        .stdout(Stdio::null())
        .status()
        .map_err(|e| format!("running npm (install it: apt-get install -y npm): {e}"))?;
    let packed = tmp.path().join(format!("axe-core-{AXE_VERSION}.tgz"));
    if !status.success() || !packed.is_file() {
        return Err(format!("npm pack axe-core@{AXE_VERSION} failed ({status})"));
    }
    std::fs::rename(&packed, tgz).map_err(|e| format!("moving the tarball into place: {e}"))
}

/// Checks the tarball against [`AXE_SHA512`].
fn verify(tgz: &Path) -> Result<(), String> {
    use base64::Engine as _;
    use sha2::Digest as _;
    let bytes = std::fs::read(tgz).map_err(|e| format!("reading {}: {e}", tgz.display()))?;
    let got = format!(
        "sha512-{}",
        base64::engine::general_purpose::STANDARD.encode(sha2::Sha512::digest(&bytes))
    );
    if got == AXE_SHA512 {
        Ok(())
    } else {
        Err(format!("{} has {got}, expected the pinned {AXE_SHA512}", tgz.display()))
    }
}

/// Injects axe into the current page (once per document) and runs every rule on it.
pub async fn run(session: &Session) -> Vec<Violation> {
    let loaded = session.execute("return typeof window.axe === 'object';", vec![]).await;
    if loaded != Json::Bool(true) {
        let script = format!("{}\nreturn typeof window.axe;", source());
        session.execute(&script, vec![]).await;
    }
    let script = r#"
        const done = arguments[arguments.length - 1];
        axe.run(document, { resultTypes: ['violations'] })
          .then(r => done({ ok: r.violations.map(v => ({
              id: v.id, impact: v.impact || '', help: v.help,
              nodes: v.nodes.map(n => n.target.join(' ')) })) }))
          .catch(e => done({ err: String(e) }));
    "#;
    let out = session.execute_async(script, vec![]).await;
    if let Some(err) = out.get("err") {
        panic!("axe.run failed: {err}");
    }
    out["ok"].as_array().map(|vs| vs.iter().map(violation).collect()).unwrap_or_default()
}

fn violation(v: &Json) -> Violation {
    let text = |k: &str| v[k].as_str().unwrap_or("").to_owned();
    let nodes = v["nodes"].as_array().map_or_else(Vec::new, |ns| {
        ns.iter().take(MAX_NODES_REPORTED).filter_map(|n| n.as_str().map(str::to_owned)).collect()
    });
    Violation { id: text("id"), impact: text("impact"), help: text("help"), nodes }
}
