//! `bpm mcp` driven by a real MCP client that is not ours: the official
//! Python `mcp` package, at the version pinned in `tests/mcp/requirements.txt`,
//! running `tests/mcp/scenario.py` against the real binary.
//!
//! The Python comes from `BPM_MCP_PYTHON` (`.ci/run` sets it); otherwise the
//! test makes a virtualenv in `target/mcp-venv` and installs the pinned client
//! with pip once. It fails, never skips, when neither works.

use std::path::{Path, PathBuf};
use std::process::Command;

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .expect("workspace root")
        .to_path_buf()
}

fn has_client(python: &Path) -> bool {
    Command::new(python)
        .args(["-c", "import mcp, sys; from importlib.metadata import version; sys.exit(version('mcp') != '2.3.0')"])
        .status()
        .is_ok_and(|s| s.success())
}

/// A Python with the pinned MCP client.
fn python() -> PathBuf {
    if let Some(p) = std::env::var_os("BPM_MCP_PYTHON") {
        let p = PathBuf::from(p);
        assert!(
            has_client(&p),
            "BPM_MCP_PYTHON={} lacks mcp==2.3.0: pip install -r tests/mcp/requirements.txt",
            p.display()
        );
        return p;
    }
    let root = workspace_root();
    let venv = root.join("target/mcp-venv");
    let python = venv.join("bin/python");
    if has_client(&python) {
        return python;
    }
    let made = Command::new("python3")
        .args(["-m", "venv"])
        .arg(&venv)
        .status()
        .expect("python3 runs (the MCP client test needs Python 3.10 or later)");
    assert!(made.success(), "python3 -m venv {} failed", venv.display());
    let installed = Command::new(&python)
        .args(["-m", "pip", "install", "--quiet", "-r"])
        .arg(root.join("tests/mcp/requirements.txt"))
        .status()
        .expect("pip runs");
    assert!(
        installed.success() && has_client(&python),
        "could not install the pinned MCP client into {}",
        venv.display()
    );
    python
}

#[test]
fn the_python_mcp_client_runs_the_agent_scenario() {
    let python = python();
    let home = tempfile::tempdir().expect("home");
    let bpm = env!("CARGO_BIN_EXE_bpm");
    let out = Command::new(&python)
        .arg(workspace_root().join("tests/mcp/scenario.py"))
        .arg(bpm)
        .arg(home.path())
        .output()
        .expect("the scenario runs");
    // Whatever happened, leave no daemon or process behind.
    let _ = Command::new(bpm)
        .args(["daemon", "stop", "--kill-all"])
        .env("BPM_HOME", home.path())
        .output();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "the MCP scenario failed:\n{stdout}\n{stderr}"
    );
    for step in 1..=9 {
        assert!(
            stdout.contains(&format!("{step}. ")),
            "step {step} did not run:\n{stdout}"
        );
    }
    println!("{stdout}");
}
