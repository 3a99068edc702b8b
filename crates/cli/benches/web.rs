//! Figures for `bpm web` in a real browser (Debian's Chromium through
//! chromedriver): exit-to-badge latency against `bpm wait`, and the page's
//! load time with 1,000 records against an empty page. The browser work is
//! `tests/web/bench.py`. Prints figures; asserts nothing.
//!
//! Run: `cargo bench -p bpm-cli --bench web` (after `tests/run.sh` made `target/web-venv`).

#[path = "../tests/support/mod.rs"]
mod support;

fn main() {
    let python = support::web_python();
    let web = support::Web::start(&[]);
    let web_dir = support::workspace_root().join("tests/web");
    let status = std::process::Command::new(python)
        .arg(web_dir.join("bench.py"))
        .arg(support::BPM)
        .arg(&web.url)
        .arg(web.home.path())
        .env("PYTHONPATH", &web_dir)
        .status()
        .expect("the browser benchmark runs");
    assert!(status.success(), "the browser benchmark failed");
}
