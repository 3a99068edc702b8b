//! The manager contract, on a client of a real daemon over its socket (the
//! plain `DaemonClient`, and the `ReconnectingManager` that MCP and the
//! page use): the `bpm` binary, with its own home, filesystem store and
//! keeper. The same
//! cases run on the embedded engine (`crates/runtime/tests/manager_contract.rs`),
//! so a front end gets the same answers and error variants from either.

use std::process::{Command, Stdio};
use std::sync::Arc;

use bpm_adapters::control::DaemonClient;
use bpm_ports::contract::manager::Subject;

/// A daemon in its own home, stopped with every process it runs when dropped.
struct Daemon {
    home: tempfile::TempDir,
}

impl Daemon {
    fn bpm(&self, args: &[&str]) -> std::process::Output {
        Command::new(env!("CARGO_BIN_EXE_bpm"))
            .args(args)
            .env("BPM_HOME", self.home.path())
            .env_remove("BPM_NODE")
            .stdin(Stdio::null())
            .output()
            .expect("bpm runs")
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.bpm(&["daemon", "stop", "--kill-all"]);
    }
}

/// A daemon of a fresh home, started as any command starts it.
fn started() -> Daemon {
    let daemon = Daemon {
        home: tempfile::tempdir().expect("home"),
    };
    // Any command starts the daemon, which outlives it.
    let started = daemon.bpm(&["ps"]);
    assert!(
        started.status.success(),
        "the daemon starts: {}",
        String::from_utf8_lossy(&started.stderr)
    );
    daemon
}

async fn daemon() -> Subject {
    let daemon = started();
    let client = DaemonClient::connect(&daemon.home.path().join("bpm.sock"), "contract")
        .await
        .expect("the client connects");
    Subject::new(Arc::new(client), daemon)
}

bpm_ports::manager_contract_tests!(daemon().await);

/// The same cases through `ReconnectingManager`, the client the MCP server
/// and the page hold: it reconnects (and starts the daemon again) when the
/// daemon goes away, and must answer as the plain client does meanwhile.
mod reconnecting {
    use super::*;

    async fn reconnecting() -> Subject {
        let daemon = started();
        let home = bpm::home::Home::new(daemon.home.path().to_path_buf());
        let manager = bpm_adapters::control::Reconnecting::connect(bpm::daemon::connector(home))
            .await
            .expect("the client connects");
        Subject::new(
            Arc::new(bpm_adapters::control::ReconnectingManager(manager)),
            daemon,
        )
    }

    bpm_ports::manager_contract_tests!(reconnecting().await);
}
