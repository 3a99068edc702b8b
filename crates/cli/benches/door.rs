//! The agents' door, measured as agents pay for it: a stdio MCP server's
//! round trip driven directly, through `bpm mcp-run` and through `bpm
//! mcp-run --shared`; the memory of 20 callers of one server, shared
//! against not shared; and `bpm mcp` over Streamable HTTP against stdio.
//! Each figure stands beside its baseline, measured in the same run in
//! alternating rounds. The work is `tests/mcp/door_bench.py`, with the real
//! `server-memory` from npm. Prints figures; asserts nothing about them.
//!
//! Run: `cargo bench -p bpm-cli --bench door` (`BPM_BENCH_ROUNDS=5`,
//! `BPM_BENCH_CALLS=200`).

#[path = "../tests/support/mod.rs"]
mod support;

fn main() {
    let python = support::python(
        "BPM_MCP_PYTHON",
        "mcp-venv",
        "tests/mcp/requirements.txt",
        "import mcp",
    );
    let modules = std::env::var_os("BPM_NODE_MODULES").map_or_else(
        || support::workspace_root().join("target/npm/node_modules"),
        std::path::PathBuf::from,
    );
    let home = tempfile::tempdir().expect("a state folder");
    let status = std::process::Command::new(python)
        .arg(support::workspace_root().join("tests/mcp/door_bench.py"))
        .arg(support::BPM)
        .arg(home.path())
        .arg(&modules)
        .status()
        .expect("the benchmark runs");
    let _ = std::process::Command::new(support::BPM)
        .args(["daemon", "stop", "--kill-all"])
        .env("BPM_HOME", home.path())
        .output();
    assert!(status.success(), "the benchmark failed");
}
