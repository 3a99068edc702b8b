//! What the spawner tests share: the contract's harness over any spawner of
//! real processes, with the programs written for `sh`.

use std::sync::Arc;

use bpm_ports::contract::spawner::SpawnerHarness;
use bpm_ports::{OutputStore, ProcessSpawner};

pub(crate) struct ShHarness {
    pub(crate) spawner: Arc<dyn ProcessSpawner>,
    pub(crate) output: Arc<dyn OutputStore>,
    /// Whatever must live as long as the spawner (a keeper's directory);
    /// held, never read.
    #[allow(dead_code)]
    pub(crate) keep: Option<Box<dyn std::any::Any + Send + Sync>>,
}

fn words(w: &[&str]) -> Vec<String> {
    w.iter().map(ToString::to_string).collect()
}

impl SpawnerHarness for ShHarness {
    fn spawner(&self) -> Arc<dyn ProcessSpawner> {
        self.spawner.clone()
    }
    fn output(&self) -> Arc<dyn OutputStore> {
        self.output.clone()
    }
    fn exit_with(&self, code: i32) -> Vec<String> {
        words(&["sh", "-c", &format!("exit {code}")])
    }
    fn sleep(&self, secs: u32) -> Vec<String> {
        words(&["sleep", &secs.to_string()])
    }
    fn ignore_term_and_sleep(&self, secs: u32) -> Vec<String> {
        words(&["sh", "-c", &format!("trap '' TERM; sleep {secs} & wait")])
    }
    fn print(&self, out: &str, err: &str) -> Vec<String> {
        words(&["sh", "-c", "echo \"$1\"; echo \"$2\" >&2", "sh", out, err])
    }
    fn missing_program(&self) -> Vec<String> {
        words(&["bpm-no-such-program-xyz"])
    }
}

/// A request for `sh -c script` with the environment `env` (shared as given).
#[allow(dead_code)]
pub(crate) fn sh_request(
    script: &str,
    env: &Arc<bpm_domain::Environment>,
) -> bpm_ports::SpawnRequest {
    bpm_ports::SpawnRequest {
        id: bpm_domain::ProcessId::from_uuid(uuid::Uuid::now_v7()),
        node: bpm_domain::NodeId::local(),
        session: None,
        argv: ["sh", "-c", script].map(Into::into).to_vec(),
        cwd: None,
        env: env.clone(),
        env_files: Vec::new(),
        stdin: bpm_domain::StdinMode::Closed,
        readiness: bpm_domain::ReadinessCheck::None,
        idle_after: None,
        hands_over: true,
        stand_down: None,
        token: 0,
        leader_only: false,
        port: None,
        health: None,
        limits: None,
        tty: None,
        ready_pace: None,
        log_archive: None,
    }
}

/// Waits (up to 10 s) for the end of `id` on `notices`, as a plain exit or
/// as the exit that started the next record handed over; returns its stdout.
#[allow(dead_code)]
pub(crate) async fn stdout_at_exit(
    notices: &mut tokio::sync::mpsc::UnboundedReceiver<bpm_ports::ProcessNotice>,
    output: &Arc<dyn OutputStore>,
    id: bpm_domain::ProcessId,
) -> String {
    use bpm_ports::ProcessNotice;
    loop {
        let notice = tokio::time::timeout(std::time::Duration::from_secs(10), notices.recv())
            .await
            .unwrap_or_else(|_| panic!("no exit of {id} within 10 s"))
            .expect("notices");
        if let ProcessNotice::Exited { id: e, .. } | ProcessNotice::HandedOver { id: e, .. } =
            notice
            && e == id
        {
            break;
        }
    }
    let chunk = output
        .read(id, &bpm_ports::OutputQuery::default())
        .await
        .expect("output");
    chunk
        .pieces
        .iter()
        .filter(|p| p.stream == bpm_ports::Stream::Stdout)
        .map(|p| String::from_utf8_lossy(&p.data).into_owned())
        .collect()
}
