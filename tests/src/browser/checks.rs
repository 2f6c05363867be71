//! The look checks run on every main page: axe-core (no serious or critical violation), no
//! console errors, no horizontal overflow (`document.documentElement.scrollWidth <=
//! innerWidth`) at each of [`WIDTHS`], and one full-page PNG per page and width.
//!
//! A [`Look`] collects findings instead of failing at the first, so one run reports every
//! problem of every page; [`Look::assert_clean`] fails the test with the whole list.

use std::path::{Path, PathBuf};

use serde_json::{Value as Json, json};

use super::driver::Session;
use super::{VIEWPORT_HEIGHT, WIDTHS, artefact_dir, axe};

/// Widths below this are checked as a phone would show them (viewport meta tag).
const PHONE_WIDTH: u32 = 600;
/// The tallest screenshot taken (CSS pixels); longer pages are cut there.
const MAX_SHOT_HEIGHT: u64 = 8000;

/// What kind of problem a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A serious or critical axe-core violation.
    Axe,
    /// A browser console error (script error, failed load, CSP violation, console.error).
    Console,
    /// The page is wider than the viewport.
    Overflow,
}

/// One problem found on one page.
#[derive(Debug, Clone)]
pub struct Finding {
    pub page: String,
    /// The viewport width, for the width-dependent checks.
    pub width: Option<u32>,
    pub kind: Kind,
    pub detail: String,
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.width {
            Some(w) => write!(f, "[{:?}] {} @ {w}px: {}", self.kind, self.page, self.detail),
            None => write!(f, "[{:?}] {}: {}", self.kind, self.page, self.detail),
        }
    }
}

/// The findings and screenshots of one test.
#[derive(Debug)]
pub struct Look {
    dir: PathBuf,
    findings: Vec<Finding>,
    shots: Vec<PathBuf>,
}

impl Look {
    /// Screenshots go to [`artefact_dir`]`(test)`.
    pub fn new(test: &str) -> Look {
        Look { dir: artefact_dir(test), findings: Vec::new(), shots: Vec::new() }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn findings(&self) -> &[Finding] {
        &self.findings
    }

    pub fn screenshots(&self) -> &[PathBuf] {
        &self.shots
    }

    /// Runs every check on the page now loaded, named `page` (a file-name-safe slug), at each
    /// width, and leaves the viewport at the widest.
    pub async fn check_page(&mut self, s: &Session, page: &str) {
        for width in WIDTHS {
            set_width(s, width).await;
            if width < PHONE_WIDTH && !has_device_width_viewport(s).await {
                self.add(
                    page,
                    Some(width),
                    Kind::Overflow,
                    "no <meta name=viewport \
                    content=\"width=device-width…\">: phones would lay it out 980 px wide"
                        .into(),
                );
            }
            if let Some((scroll, inner)) = overflow(s).await {
                self.add(
                    page,
                    Some(width),
                    Kind::Overflow,
                    format!(
                        "scrollWidth {scroll} > innerWidth {inner}; made wide by: {}",
                        widest_elements(s, scroll).await
                    ),
                );
            }
            for v in axe::run(s).await.into_iter().filter(axe::Violation::is_failing) {
                self.add(page, Some(width), Kind::Axe, v.to_string());
            }
            let path = self.dir.join(format!("{page}-{width}.png"));
            screenshot(s, width, &path).await;
            self.shots.push(path);
        }
        self.check_console(s, page).await;
    }

    /// Records the console errors logged since the last read, against `page`.
    pub async fn check_console(&mut self, s: &Session, page: &str) {
        for e in s.drain_log().await.into_iter().filter(|e| e.level == "SEVERE") {
            self.add(page, None, Kind::Console, e.message);
        }
    }

    fn add(&mut self, page: &str, width: Option<u32>, kind: Kind, detail: String) {
        self.findings.push(Finding { page: page.to_owned(), width, kind, detail });
    }

    /// Fails, listing every finding, unless there are none.
    pub fn assert_clean(&self) {
        if self.findings.is_empty() {
            return;
        }
        let list: Vec<String> = self.findings.iter().map(ToString::to_string).collect();
        panic!(
            "{} look/accessibility finding(s) (screenshots in {}):\n  {}",
            list.len(),
            self.dir.display(),
            list.join("\n  ")
        );
    }
}

/// Sets the viewport to `width` x [`VIEWPORT_HEIGHT`] CSS pixels, as a window that narrow
/// (not phone emulation, whose automatic zoom-out can hide an overflow: the layout width is
/// exactly `width`, so `innerWidth` is too; scrollbars are hidden, so they take no width).
pub async fn set_width(s: &Session, width: u32) {
    let params = json!({ "width": width, "height": VIEWPORT_HEIGHT, "deviceScaleFactor": 1,
                         "mobile": false });
    s.cdp("Emulation.setDeviceMetricsOverride", params).await;
}

/// Whether the page asks phones for a layout as wide as the device (without it, a phone lays
/// the page out 980 px wide and shrinks it, which no narrow-window check would notice).
async fn has_device_width_viewport(s: &Session) -> bool {
    let script = "const m = document.querySelector('meta[name=viewport]');\
                  return !!m && /width\\s*=\\s*device-width/.test(m.content);";
    s.execute(script, vec![]).await == Json::Bool(true)
}

/// `Some((scrollWidth, innerWidth))` when the document is wider than the viewport.
pub async fn overflow(s: &Session) -> Option<(u64, u64)> {
    let v = s
        .execute("return [document.documentElement.scrollWidth, window.innerWidth];", vec![])
        .await;
    let (scroll, inner) = (v[0].as_u64().unwrap_or(0), v[1].as_u64().unwrap_or(0));
    (scroll > inner).then_some((scroll, inner))
}

/// The (up to three) elements whose right edge is the document's scroll width: they make
/// the page wide (an element clipped inside a scrolling box does not reach it).
async fn widest_elements(s: &Session, scroll: u64) -> String {
    let script = r#"
        const edge = arguments[0], out = [];
        for (const el of document.querySelectorAll('body *')) {
          const r = el.getBoundingClientRect();
          if (Math.abs(r.right + window.scrollX - edge) < 1.5) out.push(el.tagName.toLowerCase() +
            (el.id ? '#' + el.id : '') + (typeof el.className === 'string' && el.className.trim()
              ? '.' + el.className.trim().split(/\s+/).join('.') : '') +
            ' "' + (el.textContent || '').trim().slice(0, 30) + '"');
        }
        return out.slice(-3).join(', ');
    "#;
    match s.execute(script, vec![json!(scroll)]).await {
        Json::String(t) if !t.is_empty() => t,
        _ => "no element ends there (a margin or padding?)".into(),
    }
}

/// A full-page PNG (up to [`MAX_SHOT_HEIGHT`] tall) at the current width.
pub async fn screenshot(s: &Session, width: u32, path: &Path) {
    use base64::Engine as _;
    let metrics = s.cdp("Page.getLayoutMetrics", json!({})).await;
    let height = metrics["cssContentSize"]["height"].as_f64().unwrap_or(f64::from(VIEWPORT_HEIGHT));
    let height = (height.ceil() as u64).clamp(1, MAX_SHOT_HEIGHT);
    let params = json!({ "format": "png", "captureBeyondViewport": true,
        "clip": { "x": 0, "y": 0, "width": width, "height": height, "scale": 1 } });
    let shot = s.cdp("Page.captureScreenshot", params).await;
    let data = shot["data"].as_str().expect("screenshot data");
    let png = base64::engine::general_purpose::STANDARD.decode(data).expect("screenshot base64");
    std::fs::write(path, png).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
}
