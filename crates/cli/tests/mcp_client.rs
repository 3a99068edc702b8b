//! `bpm mcp` driven by a real MCP client that is not ours: the official
//! Python `mcp` package, at the version pinned in `tests/mcp/requirements.txt`,
//! running `tests/mcp/scenario.py` against the real binary.
//!
//! The Python comes from `BPM_MCP_PYTHON` (`.ci/run` sets it); otherwise the
//! test makes a virtualenv in `target/mcp-venv` and installs the pinned client
//! with pip once. It fails, never skips, when neither works.

mod support;

use std::process::Command;

use support::workspace_root;

/// A Python with the pinned MCP client.
fn python() -> std::path::PathBuf {
    support::python(
        "BPM_MCP_PYTHON",
        "mcp-venv",
        "tests/mcp/requirements.txt",
        "import mcp, sys; from importlib.metadata import version; sys.exit(version('mcp') != '2.3.0')",
    )
}

#[test]
fn the_python_mcp_client_runs_the_agent_scenario() {
    let python = python();
    let home = tempfile::tempdir().expect("home");
    let bpm = support::BPM;
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
    for step in 1..=11 {
        assert!(
            stdout.contains(&format!("{step}. ")),
            "step {step} did not run:\n{stdout}"
        );
    }
    println!("{stdout}");
}

/// `bpm mcp` on node alpha, over processes of node beta (two daemons on
/// the test's own loopback `redis-server`): `tests/mcp/cluster_scenario.py`
/// starts one there, lists and reads it, pauses, resumes, waits for and
/// stops beta's processes, all through alpha's MCP server.
#[test]
fn the_python_mcp_client_controls_another_nodes_processes() {
    let python = python();
    let prefix = bpm_tests::unique_prefix();
    let url = bpm_tests::redis_url();
    // Beta carries a label, so a start placed on any node that needs it
    // runs there.
    let home = |name: &str, labels: &str| {
        let home = tempfile::tempdir().expect("home");
        std::fs::write(
            home.path().join("config.toml"),
            format!("store = \"{url}\"\nredis_prefix = \"{prefix}\"\nlease_ttl = \"2s\"\n[node]\nname = \"{name}\"\nlabels = {{ {labels} }}\n"),
        )
        .expect("config");
        home
    };
    let (alpha, beta) = (home("alpha", ""), home("beta", "side = \"b\""));
    let bpm = support::BPM;
    let stop_all = || {
        for h in [&alpha, &beta] {
            let _ = Command::new(bpm)
                .args(["daemon", "stop", "--kill-all"])
                .env("BPM_HOME", h.path())
                .env_remove("BPM_NODE")
                .output();
        }
    };
    let started = Command::new(bpm)
        .arg("ps")
        .env("BPM_HOME", beta.path())
        .env_remove("BPM_NODE")
        .output()
        .expect("bpm ps");
    assert!(started.status.success(), "beta's daemon: {started:?}");
    let out = Command::new(&python)
        .arg(workspace_root().join("tests/mcp/cluster_scenario.py"))
        .arg(bpm)
        .arg(alpha.path())
        .arg(beta.path())
        .env_remove("BPM_NODE")
        .output()
        .expect("the scenario runs");
    stop_all();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "the MCP cluster scenario failed:\n{stdout}\n{stderr}"
    );
    for step in 1..=6 {
        assert!(
            stdout.contains(&format!("{step}. ")),
            "step {step} did not run:\n{stdout}"
        );
    }
    println!("{stdout}");
}
