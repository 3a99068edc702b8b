//! How soon an agent learns of an exit through MCP: `wait_for_process`,
//! called through the official Python MCP client, against the floor (the
//! same Python waiting for the same program itself), for programs that
//! live 50 ms, 1 s and 10 s. The client work is `tests/mcp/bench.py`.
//! Prints figures; asserts nothing about them.
//!
//! Run: `cargo bench -p bpm-cli --bench mcp` (`BPM_BENCH_LIVES="0.05:8 1:8"`
//! to choose lives and samples).

#[path = "../tests/support/mod.rs"]
mod support;

fn main() {
    let python = support::python(
        "BPM_MCP_PYTHON",
        "mcp-venv",
        "tests/mcp/requirements.txt",
        "import mcp",
    );
    let home = tempfile::tempdir().expect("a state folder");
    let status = std::process::Command::new(python)
        .arg(support::workspace_root().join("tests/mcp/bench.py"))
        .arg(support::BPM)
        .arg(home.path())
        .status()
        .expect("the MCP benchmark runs");
    let _ = std::process::Command::new(support::BPM)
        .args(["daemon", "stop", "--kill-all"])
        .env("BPM_HOME", home.path())
        .output();
    assert!(status.success(), "the MCP benchmark failed");
}
