//! The people's door, measured as a person at a terminal pays for it:
//! `bpm tui` following a busy process against `tail -f` of the same file,
//! its redraw after an exit against a shell's, `bpm up --dry-run` of
//! process-compose's largest fixture against a one-process file, and a
//! rolling replace's window with no listener against a plain replace.
//! Each figure stands beside its baseline, measured in the same run in
//! alternating rounds. The work is `tests/people_bench.py`, through a real
//! tmux. Prints figures; asserts nothing about them.
//!
//! Run: `cargo bench -p bpm-cli --bench people` (`BPM_BENCH_ROUNDS=3`).

#[path = "../tests/support/mod.rs"]
mod support;

fn main() {
    let home = tempfile::tempdir().expect("a state folder");
    let root = support::workspace_root();
    let status = std::process::Command::new("python3")
        .arg(root.join("tests/people_bench.py"))
        .arg(support::BPM)
        .arg(home.path())
        .arg(root.join("tests/fixtures/process-compose"))
        .status()
        .expect("the benchmark runs");
    let _ = std::process::Command::new(support::BPM)
        .args(["daemon", "stop", "--kill-all"])
        .env("BPM_HOME", home.path())
        .output();
    assert!(status.success(), "the benchmark failed");
}
