//! The cluster tests' nodes: state directories whose configs point at the
//! test's own `redis-server`, driven through the real binary.
#![allow(dead_code, unreachable_pub)]

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use bpm_tests::{CutProxy, redis_url, unique_prefix};

/// A node: a state directory whose config points at the shared Redis.
pub struct Node {
    home: tempfile::TempDir,
}

impl Node {
    pub fn new(name: &str, prefix: &str) -> Node {
        Node::with(name, prefix, "")
    }

    /// A node whose config.toml also holds `more`.
    pub fn with(name: &str, prefix: &str, more: &str) -> Node {
        Node::at(&redis_url(), name, prefix, more)
    }

    /// A node carrying `labels` (a TOML inline table, `{ gpu = "true" }`),
    /// named in the `[node]` table, with `more` in its config.
    pub fn labelled(name: &str, prefix: &str, labels: &str, more: &str) -> Node {
        let home = tempfile::tempdir().expect("home");
        std::fs::write(
            home.path().join("config.toml"),
            format!(
                "store = \"{}\"\nredis_prefix = \"{prefix}\"\nlease_ttl = \"2s\"\n{more}\n[node]\nname = \"{name}\"\nlabels = {labels}\n",
                redis_url()
            ),
        )
        .expect("config");
        Node { home }
    }

    /// A node that reaches Redis at `url`.
    pub fn at(url: &str, name: &str, prefix: &str, more: &str) -> Node {
        let home = tempfile::tempdir().expect("home");
        std::fs::write(
            home.path().join("config.toml"),
            format!(
                "store = \"{url}\"\nredis_prefix = \"{prefix}\"\nnode = \"{name}\"\nlease_ttl = \"2s\"\n{more}"
            ),
        )
        .expect("config");
        Node { home }
    }

    /// Output of a command that must succeed.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.bpm(args);
        assert!(out.status.success(), "bpm {args:?}: {}", text(&out));
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// A record as `bpm show --json` gives it.
    pub fn show(&self, id: &str) -> serde_json::Value {
        serde_json::from_str(&self.ok(&["show", id, "--json"])).expect("JSON")
    }

    /// The daemon's log.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.home().join("daemon.log")).unwrap_or_default()
    }

    /// The pids of the daemon and of the keeper `bpm daemon status` names.
    pub fn daemon_and_keeper(&self) -> (String, String) {
        let daemon = std::fs::read_to_string(self.home().join("daemon.pid")).expect("pid");
        let status = self.ok(&["daemon", "status"]);
        let keeper = status
            .lines()
            .find_map(|l| l.strip_prefix("keeper   pid "))
            .and_then(|l| l.split(' ').next())
            .unwrap_or_else(|| panic!("no keeper line: {status}"))
            .to_owned();
        (daemon.trim().to_owned(), keeper)
    }

    pub fn home(&self) -> &Path {
        self.home.path()
    }

    pub fn bpm(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_bpm"))
            .args(args)
            .env("BPM_HOME", self.home())
            .env_remove("BPM_NODE")
            .stdin(Stdio::null())
            .output()
            .expect("bpm runs")
    }

    pub fn nodes(&self) -> serde_json::Value {
        let out = self.bpm(&["nodes", "--json"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("JSON")
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.bpm(&["daemon", "stop", "--kill-all"]);
    }
}

/// Runs `bpm daemon` in the foreground in `home`, which must fail: killed
/// (and the test failed) if it still runs after 20 s.
pub fn daemon_that_fails(home: &Path) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_bpm"))
        .arg("daemon")
        .env("BPM_HOME", home)
        .env_remove("BPM_NODE")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("bpm runs");
    let deadline = Instant::now() + Duration::from_secs(20);
    while child.try_wait().expect("wait").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!(
                "the daemon did not refuse to run: {:?}",
                child.wait_with_output()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.wait_with_output().expect("output")
}

pub fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Sends `sig` (as `kill` spells it: `-9`, `-STOP`) to `pids`.
pub fn kill(sig: &str, pids: &[&str]) {
    let ok = Command::new("kill")
        .arg(sig)
        .args(pids)
        .status()
        .expect("kill")
        .success();
    assert!(ok, "kill {sig} {pids:?}");
}

/// Alpha and beta, with `more` in their configs, and a `sleep 300` on
/// beta that alpha sees running (its record as alpha shows it).
pub fn beta_running(more: &str) -> (Node, Node, String, serde_json::Value) {
    let prefix = unique_prefix();
    let a = Node::with("alpha", &prefix, more);
    let b = Node::with("beta", &prefix, more);
    a.ok(&["ps"]);
    let running = b.ok(&["run", "--", "sleep", "300"]);
    let (record, _) = until(&a, &running, Duration::from_secs(10), |r| {
        state(r) == "running"
    });
    (a, b, running, record)
}

pub fn state_of(nodes: &serde_json::Value, name: &str) -> String {
    nodes
        .as_array()
        .expect("a list")
        .iter()
        .find(|n| n["lease"]["node"] == name)
        .unwrap_or_else(|| panic!("{name} is not listed: {nodes}"))["state"]
        .as_str()
        .expect("a state")
        .to_owned()
}

pub fn state(record: &serde_json::Value) -> &str {
    record["state"].as_str().unwrap_or_default()
}

/// Polls `what` on `node`'s view of record `id` until it holds, for at
/// most `within`; returns the record and when it first held.
pub fn until(
    node: &Node,
    id: &str,
    within: Duration,
    what: impl Fn(&serde_json::Value) -> bool,
) -> (serde_json::Value, Instant) {
    let deadline = Instant::now() + within;
    loop {
        let record = node.show(id);
        if what(&record) {
            return (record, Instant::now());
        }
        assert!(
            Instant::now() < deadline,
            "never held within {within:?}: {record}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A proxy to the test's Redis that the test can cut: a node configured
/// with its URL (`Node::at`) is partitioned by `cut(true)`.
pub fn redis_proxy() -> CutProxy {
    let target = redis_url()
        .trim_start_matches("redis://")
        .parse()
        .expect("the test Redis is on a loopback address");
    CutProxy::start(target)
}

/// The id of the record that replaced `given_up` (failed over), as its
/// reason names it.
pub fn replacement_of(given_up: &serde_json::Value) -> String {
    given_up["error"]
        .as_str()
        .and_then(|e| e.split("failed over to ").nth(1))
        .and_then(|rest| rest.split(' ').next())
        .unwrap_or_else(|| panic!("not failed over: {given_up}"))
        .to_owned()
}

/// One line a test's server wrote: what, when (a number from bash's
/// clock), on which node, of which record.
#[derive(Debug, Clone)]
pub struct Mark {
    pub what: String,
    pub at: u128,
    pub node: String,
    pub id: String,
}

/// The marks in `path`, one per line: `WHAT AT NODE ID`.
pub fn marks(path: &Path) -> Vec<Mark> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| {
            let w: Vec<&str> = l.split(' ').collect();
            assert_eq!(w.len(), 4, "a torn mark: {l:?}");
            Mark {
                what: w[0].to_owned(),
                at: w[1].parse().expect("a time"),
                node: w[2].to_owned(),
                id: w[3].to_owned(),
            }
        })
        .collect()
}
