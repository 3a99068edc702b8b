//! The OS spawner against the spawner contract suite, with real processes.

use std::sync::Arc;

use bpm_adapters::memory::InMemoryOutput;
use bpm_adapters::os::{OsSpawner, OsSpawnerConfig};
use bpm_ports::contract::spawner::SpawnerHarness;
use bpm_ports::{OutputStore, ProcessSpawner};

struct OsHarness {
    spawner: Arc<OsSpawner>,
    output: Arc<InMemoryOutput>,
}

fn harness() -> Arc<dyn SpawnerHarness> {
    let output = Arc::new(InMemoryOutput::default());
    let spawner = Arc::new(OsSpawner::new(output.clone(), OsSpawnerConfig::default()));
    Arc::new(OsHarness { spawner, output })
}

fn words(w: &[&str]) -> Vec<String> {
    w.iter().map(ToString::to_string).collect()
}

impl SpawnerHarness for OsHarness {
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

mod os_spawner {
    use super::*;
    bpm_ports::spawner_contract_tests!(harness());
}
