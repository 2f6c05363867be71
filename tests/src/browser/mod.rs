//! The browser test harness: the web console in-process on 127.0.0.1 port 0 with a temporary
//! data directory, Debian's headless Chromium driven through chromedriver by fantoccini, and
//! the look-and-accessibility checks (axe-core, console errors, horizontal overflow,
//! screenshots). docs/TESTING.md says how to run it and where the artefacts go.
//!
//! Invariants:
//! - every wait has a deadline at least 10x its nominal time, and nothing asserts a duration;
//! - the browser trusts exactly the certificate the console generated (its SPKI hash is passed
//!   to Chromium), never "any certificate";
//! - axe-core is the pinned release whose sha512 is recorded in [`axe`]: a tarball that does
//!   not match is refused, and axe's code is never committed to this repository;
//! - one browser at a time per test binary ([`exclusive`]): the CI machine has two cores;
//! - chromedriver and the Chromium it starts run in their own process group, killed (by that
//!   group id, nothing else) when the [`Driver`] drops, so a failing test leaves no browser.

pub mod axe;
pub mod checks;
pub mod console;
pub mod driver;
pub mod pages;

pub use checks::{Finding, Look};
pub use console::Console;
pub use driver::{Driver, Session, Tools};

use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard};

/// Deadline for one page load or WebDriver command (nominally well under a second).
pub const COMMAND_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);
/// The widths every main page is checked and photographed at (CSS pixels).
pub const WIDTHS: [u32; 2] = [375, 1280];
/// The viewport height used with every width.
pub const VIEWPORT_HEIGHT: u32 = 900;

/// Serializes the browser tests of one test binary (cargo runs a binary's tests on threads).
pub fn exclusive() -> MutexGuard<'static, ()> {
    static ONE_BROWSER: Mutex<()> = Mutex::new(());
    ONE_BROWSER.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Where screenshots go: `$HAUL_BROWSER_ARTEFACTS/<test>`, else
/// `<cargo target dir>/browser-artefacts/<test>`. Created empty for each run of the test.
pub fn artefact_dir(test: &str) -> PathBuf {
    let root = match std::env::var_os("HAUL_BROWSER_ARTEFACTS") {
        Some(p) => PathBuf::from(p),
        None => target_dir().join("browser-artefacts"),
    };
    let dir = root.join(test);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// `$CARGO_TARGET_DIR`, else the target directory this test binary was built in.
fn target_dir() -> PathBuf {
    if let Some(p) = std::env::var_os("CARGO_TARGET_DIR") {
        return PathBuf::from(p);
    }
    // current_exe = <target>/<profile>/deps/<test>-<hash>
    let exe = std::env::current_exe().unwrap();
    exe.parent().and_then(std::path::Path::parent).and_then(std::path::Path::parent).unwrap().into()
}

/// A strong password the default policy accepts (letters, digits, a symbol, 12+ characters).
pub const GOOD_PASSWORD: &str = "c0rrect-Horse-battery!";

/// A console, a chromedriver and one browser session on it.
#[derive(Debug)]
pub struct Rig {
    pub session: Session,
    pub console: Console,
    _driver: Driver,
}

impl Rig {
    /// Signs in as the first admin with the one-time password and sets [`GOOD_PASSWORD`]
    /// (the forced change), landing on the home page.
    pub async fn admin_signed_in(&self) {
        let otp = self.console.initial_admin_password();
        self.session.sign_in(&self.console, "admin", &otp).await;
        assert_eq!(self.session.path().await, "/account/password", "forced change expected");
        self.session.change_password(&otp, GOOD_PASSWORD).await;
        assert_eq!(self.session.path().await, "/?notice=password");
    }

    /// Signs a new user in with their one-time password and sets [`GOOD_PASSWORD`].
    pub async fn user_signed_in(&self, name: &str, otp: &str) {
        self.session.sign_in(&self.console, name, otp).await;
        assert_eq!(self.session.path().await, "/account/password", "forced change expected");
        self.session.change_password(otp, GOOD_PASSWORD).await;
        assert_eq!(self.session.path().await, "/?notice=password");
    }
}

/// Runs one browser test: skips loudly (see [`Tools::or_skip`]) without a browser; otherwise
/// holds [`exclusive`], starts a console, chromedriver and a session on a two-thread runtime,
/// runs `body`, and closes everything (also when `body` panics: the driver's process group is
/// killed on drop).
pub fn run(test: &str, body: impl AsyncFnOnce(&Rig)) {
    let Some(tools) = Tools::or_skip(test) else { return };
    let _one = exclusive();
    let rt =
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(async {
        let console = Console::start().await;
        let driver = Driver::start(&tools);
        let session = driver.session(&console.spki()).await;
        let rig = Rig { session, console, _driver: driver };
        body(&rig).await;
        let Rig { session, console, _driver } = rig;
        session.close().await;
        console.stop().await;
    });
}
