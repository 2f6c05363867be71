#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The browser checks can fail: on a page with known faults (no `lang`, an image without
//! `alt`, a button without a name, a console error, a box wider than a phone) each check
//! reports its fault, and the overflow check only at the width where the page overflows.

use haul_tests::browser::checks::Kind;
use haul_tests::browser::{Look, run};

const FAULTY_PAGE: &str = r#"<!doctype html><html><head><title>faulty</title></head><body>
<main><h1>Faults</h1><div style="width:900px">wider than a phone</div>
<img src="data:image/gif;base64,R0lGODlhAQABAAAAACw=" width="10" height="10">
<button></button><script>console.error("deliberate console error");</script></main>
</body></html>"#;

#[test]
fn checks_report_known_faults_on_a_faulty_page() {
    run("checks_report_known_faults_on_a_faulty_page", async |rig| {
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::STANDARD.encode(FAULTY_PAGE);
        rig.session.goto(&format!("data:text/html;base64,{b64}")).await;
        let mut look = Look::new("checks_report_known_faults_on_a_faulty_page");
        look.check_page(&rig.session, "faulty").await;
        let found = look.findings();
        let has = |kind: Kind, width: Option<u32>, needle: &str| {
            found.iter().any(|f| f.kind == kind && f.width == width && f.detail.contains(needle))
        };
        let all: Vec<String> = found.iter().map(ToString::to_string).collect();
        let all = all.join("\n");
        for width in [375, 1280] {
            assert!(has(Kind::Axe, Some(width), "image-alt"), "image-alt @ {width}:\n{all}");
            assert!(has(Kind::Axe, Some(width), "button-name"), "button-name @ {width}:\n{all}");
            assert!(
                has(Kind::Axe, Some(width), "html-has-lang"),
                "html-has-lang @ {width}:\n{all}"
            );
        }
        assert!(has(Kind::Overflow, Some(375), "scrollWidth 9"), "overflow at 375:\n{all}");
        assert!(has(Kind::Overflow, Some(375), "meta name=viewport"), "viewport:\n{all}");
        assert!(!has(Kind::Overflow, Some(1280), ""), "no overflow at 1280:\n{all}");
        assert!(has(Kind::Console, None, "deliberate console error"), "console:\n{all}");
        assert_eq!(look.screenshots().len(), 2);
        for shot in look.screenshots() {
            let png = std::fs::read(shot).unwrap();
            assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "{} is a PNG", shot.display());
        }
        // And a clean page is clean: the same checks find nothing on it.
        let clean = "<!doctype html><html lang=\"en\"><head><title>clean</title><meta name=\"viewport\" \
                     content=\"width=device-width, initial-scale=1\"></head>\
                     <body><main><h1>Clean</h1><p>Nothing wrong here.</p></main></body></html>";
        let b64 = base64::engine::general_purpose::STANDARD.encode(clean);
        rig.session.goto(&format!("data:text/html;base64,{b64}")).await;
        let mut look = Look::new("checks_report_nothing_on_a_clean_page");
        look.check_page(&rig.session, "clean").await;
        look.assert_clean();
    });
}
