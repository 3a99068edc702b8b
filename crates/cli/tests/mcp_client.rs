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

/// Runs `tests/mcp/SCRIPT` with the pinned client, given bpm and `home`
/// then `more`; stops `home`'s daemon and every process it ran, whatever
/// happened; and checks that it succeeded and printed steps 1 to `steps`.
fn scenario(script: &str, home: &std::path::Path, more: &[&std::ffi::OsStr], steps: usize) {
    let out = Command::new(python())
        .arg(workspace_root().join("tests/mcp").join(script))
        .arg(support::BPM)
        .arg(home)
        .args(more)
        .output()
        .expect("the scenario runs");
    let _ = Command::new(support::BPM)
        .args(["daemon", "stop", "--kill-all"])
        .env("BPM_HOME", home)
        .output();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{script} failed:\n{stdout}\n{stderr}");
    for step in 1..=steps {
        assert!(
            stdout.contains(&format!("{step}. ")),
            "step {step} did not run:\n{stdout}"
        );
    }
    println!("{stdout}");
}

#[test]
fn the_python_mcp_client_runs_the_agent_scenario() {
    let home = tempfile::tempdir().expect("home");
    scenario("scenario.py", home.path(), &[], 11);
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

/// Reads the first line `child` prints on stdout (the endpoint's URL).
fn first_line(child: &mut std::process::Child) -> String {
    use std::io::BufRead as _;
    let stdout = child.stdout.take().expect("stdout");
    let mut line = String::new();
    std::io::BufReader::new(stdout)
        .read_line(&mut line)
        .expect("a line");
    line.trim().to_owned()
}

/// `bpm mcp --http` driven over Streamable HTTP by the Python client and
/// by plain requests (`tests/mcp/http_scenario.py`): refusals (no token, a
/// wrong token, another origin, another host), two sessions at once each
/// the owner of what it starts with its own grace, a 2026-07-28 client
/// without a session, a cut stream resumed with `Last-Event-ID`, and the
/// tasks extension's requests (a task polled, refused to another session,
/// cancelled with its TERM-ignoring tree).
#[test]
fn the_python_mcp_client_uses_bpm_over_http() {
    let python = python();
    let home = tempfile::tempdir().expect("home");
    std::fs::write(
        home.path().join("config.toml"),
        "[mcp]\nowner_grace = \"2s\"\n",
    )
    .expect("config");
    let bpm = support::BPM;
    let mut endpoint = Command::new(bpm)
        .args(["mcp", "--http", "127.0.0.1:0"])
        .env("BPM_HOME", home.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("bpm mcp --http");
    let url = first_line(&mut endpoint);
    assert!(
        url.starts_with("http://127.0.0.1:") && url.ends_with("/mcp"),
        "the endpoint printed {url:?}"
    );
    let out = Command::new(&python)
        .arg(workspace_root().join("tests/mcp/http_scenario.py"))
        .arg(bpm)
        .arg(home.path())
        .arg(&url)
        .output()
        .expect("the scenario runs");
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(endpoint.id().cast_signed()).expect("pid"),
        rustix::process::Signal::TERM,
    )
    .expect("TERM");
    let ended = endpoint.wait_with_output().expect("the endpoint ends");
    let _ = Command::new(bpm)
        .args(["daemon", "stop", "--kill-all"])
        .env("BPM_HOME", home.path())
        .output();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "the MCP HTTP scenario failed:\n{stdout}\n{stderr}"
    );
    for step in 1..=6 {
        assert!(
            stdout.contains(&format!("{step}. ")),
            "step {step} did not run:\n{stdout}"
        );
    }
    assert!(ended.status.success(), "the endpoint on TERM: {ended:?}");
    let log = String::from_utf8_lossy(&ended.stderr);
    let token = std::fs::read_to_string(home.path().join("mcp-token")).expect("token");
    assert_eq!(
        log.matches(token.trim()).count(),
        1,
        "the token is printed once, when it is made, and never in a refusal:\n{log}"
    );
    for reason in [
        "no bearer token",
        "not this endpoint's",
        "another host",
        "Origin",
    ] {
        assert!(
            log.lines()
                .any(|l| l.contains("refused") && l.contains(reason)),
            "no refusal logged for {reason:?}:\n{log}"
        );
    }
    println!("{stdout}");
}

/// `[mcp] http` in config.toml: the daemon serves MCP over HTTP itself, for
/// as long as it runs, to the Python client.
#[test]
fn the_daemon_serves_mcp_over_http_when_configured() {
    let python = python();
    let home = tempfile::tempdir().expect("home");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    std::fs::write(
        home.path().join("config.toml"),
        format!("[mcp]\nhttp = \"127.0.0.1:{port}\"\n"),
    )
    .expect("config");
    let bpm = support::BPM;
    let daemon = |args: &[&str]| {
        Command::new(bpm)
            .args(args)
            .env("BPM_HOME", home.path())
            .output()
            .expect("bpm")
    };
    assert!(daemon(&["ps"]).status.success(), "the daemon starts");
    let url = format!("http://127.0.0.1:{port}/mcp");
    let script = r#"
import asyncio, os, sys
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client
home, url = sys.argv[1], sys.argv[2]
token = open(os.path.join(home, "mcp-token")).read().strip()
async def main():
    http = create_mcp_http_client(headers={"Authorization": f"Bearer {token}"})
    async with Client(streamable_http_client(url, http_client=http)) as c:
        r = await c.call_tool("start_background_process", {"command": "echo from-http", "name": "via-daemon"})
        assert not r.is_error, r.content
        w = await c.call_tool("wait_for_process", {"process_id": "via-daemon", "until": "exit", "timeout_secs": 20})
        assert w.structured_content["exit_code"] == 0, w.structured_content
        print("served by the daemon:", w.structured_content["output_tail"].strip())
asyncio.run(main())
"#;
    let out = Command::new(&python)
        .args(["-c", script])
        .arg(home.path())
        .arg(&url)
        .output()
        .expect("the client runs");
    let stopped = daemon(&["daemon", "stop", "--kill-all"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("from-http"),
        "the client over the daemon's endpoint:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stopped.status.success(), "daemon stop: {stopped:?}");
    // The endpoint went with the daemon.
    let refused = std::net::TcpStream::connect(("127.0.0.1", port));
    assert!(
        refused.is_err(),
        "the daemon's MCP endpoint outlived the daemon"
    );
    println!("{stdout}");
}

/// Where npm put the MCP servers from npm: `BPM_NODE_MODULES`, as
/// tests/run.sh sets it, else target/npm under the workspace.
fn node_modules() -> std::path::PathBuf {
    let dir = std::env::var_os("BPM_NODE_MODULES").map_or_else(
        || workspace_root().join("target/npm/node_modules"),
        std::path::PathBuf::from,
    );
    for server in ["server-filesystem", "server-memory", "server-everything"] {
        assert!(
            dir.join("@modelcontextprotocol").join(server).is_dir(),
            "@modelcontextprotocol/{server} is not in {}: run tests/run.sh, which installs it with npm",
            dir.display()
        );
    }
    dir
}

/// Real stdio MCP servers from npm (`server-filesystem`, `server-memory`,
/// `server-everything`) hosted by `bpm mcp-run`, driven by the Python
/// client (`tests/mcp/mcp_run_scenario.py`): a server as a record of kind
/// `mcp` with its caller; an agent killed with `kill -9` and its server's
/// tree stopped after the grace, not before; five clients sharing one
/// `server-memory` (`--shared`: one process, each call answered under its
/// caller's id) until the last leaves; progress routed back through the
/// hub; a missing command, garbage relayed as it is, and garbage ending a
/// shared server with its reason.
#[test]
fn real_mcp_servers_run_hosted_by_bpm_mcp_run() {
    let modules = node_modules();
    let home = tempfile::tempdir().expect("home");
    scenario(
        "mcp_run_scenario.py",
        home.path(),
        &[modules.as_os_str()],
        5,
    );
}
