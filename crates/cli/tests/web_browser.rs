//! `bpm web` in a real browser: Debian's Chromium and chromedriver, driven
//! by Selenium (pinned in `tests/web/requirements.txt`) through
//! `tests/web/browser.py`. Screenshots go to `target/web-screenshots/`.
//!
//! The Python comes from `BPM_WEB_PYTHON` (`.ci/run` sets it), else a
//! virtualenv in `target/web-venv`. The test fails, never skips, without
//! Chromium, chromedriver or Python.

mod support;

use std::path::Path;
use std::process::Command;

#[test]
fn a_real_browser_drives_the_page() {
    for tool in ["/usr/bin/chromium", "/usr/bin/chromedriver"] {
        assert!(
            Path::new(tool).exists(),
            "{tool} is missing: apt-get install chromium chromium-driver (the browser test never skips)"
        );
    }
    let python = support::web_python();
    let web = support::Web::start(&[]);
    let shots = support::workspace_root().join("target/web-screenshots");
    let out = Command::new(&python)
        .arg(support::workspace_root().join("tests/web/browser.py"))
        .arg(support::BPM)
        .arg(&web.url)
        .arg(web.home.path())
        .arg(&shots)
        .output()
        .expect("the browser scenario runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "the browser scenario failed:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains(" passed, 0 failed"), "{stdout}");
    println!("{stdout}");
    for shot in ["table.png", "detail.png", "phone.png"] {
        assert!(shots.join(shot).exists(), "{shot} was not saved");
    }
}
