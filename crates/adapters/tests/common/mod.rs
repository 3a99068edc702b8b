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
