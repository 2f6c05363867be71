//! Driving the console like a person: fill in a form, press its button, wait for the next
//! page. One helper per task of the main flow (sign in, change the password, create a user, a
//! workgroup, set restrictions); each finds fields by their label's `for` id or the form's
//! action, as a screen reader would, and fails the test with the page's error text when the
//! console refuses.

use fantoccini::Locator;
use serde_json::json;

use super::COMMAND_TIMEOUT;
use super::console::Console;
use super::driver::Session;

/// The per-user restrictions as the admin's user page offers them.
#[derive(Debug, Clone, Default)]
pub struct Restrictions {
    /// `YYYY-MM-DD` (UTC), or empty for never.
    pub expires: String,
    /// `both`, `upload_only` or `download_only`.
    pub direction: String,
    pub may_send_external: bool,
    pub may_forward: bool,
    pub ip_login: String,
    pub ip_upload: String,
    pub ip_download: String,
}

impl Session {
    /// Replaces the value of the input `css` with `value`.
    pub async fn fill(&self, css: &str, value: &str) {
        let el = self.find(css).await;
        el.clear().await.unwrap_or_else(|e| panic!("clearing {css}: {e}"));
        el.send_keys(value).await.unwrap_or_else(|e| panic!("typing into {css}: {e}"));
    }

    /// The element `css`, waiting for it up to [`COMMAND_TIMEOUT`].
    pub async fn find(&self, css: &str) -> fantoccini::elements::Element {
        let found =
            self.client.wait().at_most(COMMAND_TIMEOUT).for_element(Locator::Css(css)).await;
        match found {
            Ok(el) => el,
            Err(e) => panic!("no {css} on {}: {e}", self.path().await),
        }
    }

    /// Whether `css` matches anything on the page now (no waiting).
    pub async fn has(&self, css: &str) -> bool {
        self.client.find_all(Locator::Css(css)).await.is_ok_and(|v| !v.is_empty())
    }

    /// The text of `css`.
    pub async fn text(&self, css: &str) -> String {
        self.find(css).await.text().await.unwrap_or_else(|e| panic!("text of {css}: {e}"))
    }

    /// The current URL's path and query.
    pub async fn path(&self) -> String {
        match self.client.current_url().await {
            Ok(u) => match u.query() {
                Some(q) => format!("{}?{q}", u.path()),
                None => u.path().to_owned(),
            },
            Err(e) => format!("(no URL: {e})"),
        }
    }

    /// Clicks `css` (a submit button or link) and waits until a new document has loaded.
    pub async fn click_and_wait(&self, css: &str) {
        self.execute("window.__haulOld = true;", vec![]).await;
        let el = self.find(css).await;
        el.click().await.unwrap_or_else(|e| panic!("clicking {css}: {e}"));
        let script = "return window.__haulOld === undefined && document.readyState === 'complete';";
        let deadline = tokio::time::Instant::now() + COMMAND_TIMEOUT;
        while self.execute(script, vec![]).await != json!(true) {
            assert!(tokio::time::Instant::now() < deadline, "no new page after clicking {css}");
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        self.settle_log().await;
    }

    /// The text of the page's error message, if it shows one.
    pub async fn error_text(&self) -> Option<String> {
        if self.has("main .error").await { Some(self.text("main .error").await) } else { None }
    }

    /// Signs in on `/login` (the caller checks where it lands).
    pub async fn sign_in(&self, console: &Console, name: &str, password: &str) {
        self.goto(&console.url("/login")).await;
        self.fill("#name", name).await;
        self.fill("#password", password).await;
        self.click_and_wait("form[action='/login'] button[type=submit]").await;
    }

    /// Submits the change-password form on the page now loaded.
    pub async fn change_password(&self, current: &str, new: &str) {
        self.fill("#current", current).await;
        self.fill("#new", new).await;
        self.fill("#confirm", new).await;
        self.click_and_wait("form[action='/account/password'] button[type=submit]").await;
    }

    /// Signs out with the header's button.
    pub async fn sign_out(&self) {
        self.click_and_wait("form[action='/logout'] button[type=submit]").await;
    }

    /// As an admin, creates a user; returns (id, one-time password) from the page shown once.
    pub async fn create_user(
        &self,
        console: &Console,
        name: &str,
        email: &str,
        role: &str,
    ) -> (i64, String) {
        self.goto(&console.url("/admin/users")).await;
        self.fill("#uname", name).await;
        self.fill("#ufull", &format!("{name} (browser test)")).await;
        self.fill("#uemail", email).await;
        self.select("#urole", role).await;
        self.click_and_wait("form[action='/admin/users'] button[type=submit]").await;
        if let Some(e) = self.error_text().await {
            panic!("creating user {name} refused: {e}");
        }
        let otp = self.text("#one-time-password").await;
        let href = self.attr("a.button[href^='/admin/users/']", "href").await;
        let id = href.rsplit('/').next().and_then(|s| s.parse().ok()).expect("user id in link");
        (id, otp)
    }

    /// As an admin, creates a workgroup and returns its id (from the page it lands on).
    pub async fn create_workgroup(&self, console: &Console, name: &str, description: &str) -> i64 {
        self.goto(&console.url("/workgroups")).await;
        self.fill("#gname", name).await;
        self.fill("#gdesc", description).await;
        self.click_and_wait("form[action='/workgroups'] button[type=submit]").await;
        let path = self.path().await;
        path.strip_prefix("/workgroups/")
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("creating workgroup {name} landed on {path}"))
    }

    /// As a workgroup's manager, adds `name` to it.
    pub async fn add_member(&self, console: &Console, group: i64, name: &str) {
        self.goto(&console.url(&format!("/workgroups/{group}"))).await;
        self.fill("#mname", name).await;
        self.click_and_wait(&format!("form[action='/workgroups/{group}/members'] button")).await;
        if let Some(e) = self.error_text().await {
            panic!("adding {name} to workgroup {group} refused: {e}");
        }
    }

    /// As an admin, sets a user's restrictions on their page and saves.
    pub async fn set_restrictions(&self, console: &Console, user: i64, r: &Restrictions) {
        self.goto(&console.url(&format!("/admin/users/{user}"))).await;
        self.fill("#expires", &r.expires).await;
        self.select("#direction", &r.direction).await;
        self.set_checked("input[name=may_send_external]", r.may_send_external).await;
        self.set_checked("input[name=may_forward]", r.may_forward).await;
        self.fill("#ip_login", &r.ip_login).await;
        self.fill("#ip_upload", &r.ip_upload).await;
        self.fill("#ip_download", &r.ip_download).await;
        self.click_and_wait(&format!("form[action='/admin/users/{user}'] button[type=submit]"))
            .await;
        if let Some(e) = self.error_text().await {
            panic!("saving the restrictions of user {user} refused: {e}");
        }
    }

    /// Creates a package (title, note, comma-separated user and workgroup names) on
    /// `/packages/new` and returns its page's path (`/packages/ID`).
    pub async fn create_package(
        &self,
        console: &Console,
        title: &str,
        note: &str,
        users: &str,
        groups: &str,
    ) -> String {
        self.goto(&console.url("/packages/new")).await;
        self.fill("#ptitle", title).await;
        self.fill("#pnote", note).await;
        self.fill("#pusers", users).await;
        self.fill("#pgroups", groups).await;
        self.click_and_wait("form[action='/packages'] button[type=submit]").await;
        if let Some(e) = self.error_text().await {
            panic!("creating package {title} refused: {e}");
        }
        let path = self.path().await;
        assert!(path.starts_with("/packages/"), "creating package {title} landed on {path}");
        path
    }

    /// Presses "Send the package" on the package page `path`.
    pub async fn send_package(&self, console: &Console, path: &str) {
        self.goto(&console.url(path)).await;
        self.click_and_wait(&format!("form[action='{path}/send'] button[type=submit]")).await;
        if let Some(e) = self.error_text().await {
            panic!("sending {path} refused: {e}");
        }
    }

    /// As an admin, turns on "allow sending to external addresses" on the settings page.
    pub async fn allow_external_sending(&self, console: &Console) {
        self.goto(&console.url("/admin/settings")).await;
        self.set_checked("input[name=external_sending]", true).await;
        self.click_and_wait("form[action='/admin/settings'] button[type=submit]").await;
        if let Some(e) = self.error_text().await {
            panic!("saving the settings refused: {e}");
        }
    }

    /// As the sender, adds the external recipient `email` with `downloads` downloads on the
    /// sent package `path`'s external page.
    pub async fn add_external(&self, console: &Console, path: &str, email: &str, downloads: u32) {
        self.goto(&console.url(&format!("{path}/external"))).await;
        self.fill("#xemail", email).await;
        self.fill("#xdl", &downloads.to_string()).await;
        self.click_and_wait(&format!("form[action='{path}/external'] button[type=submit]")).await;
        if let Some(e) = self.error_text().await {
            panic!("adding external recipient {email} refused: {e}");
        }
    }

    /// Fetches `href` (a link on this page) with the browser's own session, as a click on it
    /// would, and returns (HTTP status, SHA-256 of the body in hex).
    pub async fn fetch_sha256(&self, href: &str) -> (u64, String) {
        let script = r#"
            const [href, done] = arguments;
            fetch(href, { credentials: 'same-origin' })
              .then(async r => {
                const d = await crypto.subtle.digest('SHA-256', await r.arrayBuffer());
                done([r.status, [...new Uint8Array(d)].map(b => b.toString(16).padStart(2, '0')).join('')]);
              })
              .catch(e => done([0, String(e)]));
        "#;
        let v = self.execute_async(script, vec![json!(href)]).await;
        (v[0].as_u64().unwrap_or(0), v[1].as_str().unwrap_or("").to_owned())
    }

    /// The `haul://` URL inside the command shown in `css` (`haul put 'URL' ...`).
    pub async fn haul_url(&self, css: &str) -> String {
        let cmd = self.text(css).await;
        let url = cmd.split('\'').nth(1).unwrap_or_default();
        assert!(url.starts_with("haul://"), "no haul:// URL in {css}: {cmd}");
        url.to_owned()
    }

    /// Picks the option with `value` in the select `css`.
    pub async fn select(&self, css: &str, value: &str) {
        self.find(css)
            .await
            .select_by_value(value)
            .await
            .unwrap_or_else(|e| panic!("choosing {value} in {css}: {e}"));
    }

    /// Ticks or unticks the checkbox `css`.
    pub async fn set_checked(&self, css: &str, on: bool) {
        let el = self.find(css).await;
        let now = el.prop("checked").await.ok().flatten().as_deref() == Some("true");
        if now != on {
            el.click().await.unwrap_or_else(|e| panic!("clicking {css}: {e}"));
        }
    }

    /// The value of `css`'s form control (its live property, not the attribute).
    pub async fn value(&self, css: &str) -> String {
        self.find(css).await.prop("value").await.ok().flatten().unwrap_or_default()
    }

    /// Whether the checkbox `css` is ticked.
    pub async fn is_checked(&self, css: &str) -> bool {
        self.find(css).await.prop("checked").await.ok().flatten().as_deref() == Some("true")
    }

    /// The attribute `name` of `css`.
    pub async fn attr(&self, css: &str, name: &str) -> String {
        self.find(css).await.attr(name).await.ok().flatten().unwrap_or_default()
    }
}
