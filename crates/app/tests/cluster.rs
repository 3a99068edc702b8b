//! Several daemons on one `redis-server` (the test's own, on loopback), each
//! with its own state directory: a node's name is claimed by one daemon at
//! a time, `bpm nodes` lists them, and a stopped daemon leaves.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use bpm_tests::{redis_url, unique_prefix};

/// A node: a state directory whose config points at the shared Redis.
struct Node {
    home: tempfile::TempDir,
}

impl Node {
    fn new(name: &str, prefix: &str) -> Node {
        let home = tempfile::tempdir().expect("home");
        std::fs::write(
            home.path().join("config.toml"),
            format!(
                "store = \"{}\"\nredis_prefix = \"{prefix}\"\nnode = \"{name}\"\nlease_ttl = \"2s\"\n",
                redis_url()
            ),
        )
        .expect("config");
        Node { home }
    }

    fn home(&self) -> &Path {
        self.home.path()
    }

    fn bpm(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_bpm"))
            .args(args)
            .env("BPM_HOME", self.home())
            .env_remove("BPM_NODE")
            .stdin(Stdio::null())
            .output()
            .expect("bpm runs")
    }

    fn nodes(&self) -> serde_json::Value {
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
fn daemon_that_fails(home: &Path) -> Output {
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

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn state_of(nodes: &serde_json::Value, name: &str) -> String {
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

#[test]
fn a_node_name_is_held_by_one_daemon_listed_by_all_and_left_on_stop() {
    let prefix = unique_prefix();
    let a = Node::new("alpha", &prefix);
    let b = Node::new("beta", &prefix);
    let twin = Node::new("alpha", &prefix);
    for node in [&a, &b] {
        let out = node.bpm(&["ps"]);
        assert!(out.status.success(), "{}", text(&out));
    }

    // A second daemon claiming alpha is refused, naming the holder.
    let out = daemon_that_fails(twin.home());
    assert!(!out.status.success());
    let said = text(&out);
    let holder = std::fs::read_to_string(a.home().join("daemon.pid")).expect("pid");
    assert!(
        said.contains("node alpha is held") && said.contains(&format!("pid {}", holder.trim())),
        "{said}"
    );

    // Every node sees both, alive, each with its own epoch and daemon.
    let nodes = b.nodes();
    assert_eq!(nodes.as_array().map(Vec::len), Some(2), "{nodes}");
    assert_eq!(state_of(&nodes, "alpha"), "alive");
    assert_eq!(state_of(&nodes, "beta"), "alive");
    let status = text(&a.bpm(&["daemon", "status"]));
    assert!(status.contains("cluster  epoch "), "{status}");

    // Each node's slots and records by state, as every node sees them.
    let out = b.bpm(&["run", "--", "sleep", "30"]);
    assert!(out.status.success(), "{}", text(&out));
    let out = b.bpm(&["run", "--", "true"]);
    assert!(out.status.success(), "{}", text(&out));
    let out = b.bpm(&["wait", String::from_utf8_lossy(&out.stdout).trim()]);
    assert!(out.status.success(), "{}", text(&out));
    let nodes = a.nodes();
    let beta = nodes
        .as_array()
        .and_then(|n| n.iter().find(|n| n["lease"]["node"] == "beta"))
        .expect("beta");
    assert_eq!(beta["lease"]["slots"], 10, "{beta}");
    assert_eq!(beta["slots_in_use"], 1, "{beta}");
    assert_eq!(beta["slots_free"], 9, "{beta}");
    assert_eq!(
        beta["records"],
        serde_json::json!({"running": 1, "completed": 1})
    );
    let table = text(&a.bpm(&["nodes"]));
    assert!(
        table.lines().any(|l| l.starts_with("beta ")
            && l.contains(" alive ")
            && l.contains(" 1/10 ")
            && l.contains("running 1, completed 1")),
        "{table}"
    );

    // Renewals keep alpha alive past its 2 s lease.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(state_of(&b.nodes(), "alpha"), "alive");

    // A stopped daemon leaves; its name is free at once.
    let out = a.bpm(&["daemon", "stop"]);
    assert!(out.status.success(), "{}", text(&out));
    let deadline = Instant::now() + Duration::from_secs(10);
    while state_of(&b.nodes(), "alpha") != "left" {
        assert!(Instant::now() < deadline, "alpha never left: {}", b.nodes());
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = twin.bpm(&["ps"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(state_of(&b.nodes(), "alpha"), "alive");
}

#[test]
fn nodes_needs_a_shared_store_and_says_so() {
    let home = tempfile::tempdir().expect("home");
    let out = Command::new(env!("CARGO_BIN_EXE_bpm"))
        .args(["nodes"])
        .env("BPM_HOME", home.path())
        .output()
        .expect("bpm runs");
    assert!(!out.status.success());
    let said = text(&out);
    assert!(
        said.contains("nodes share a Redis store") && said.contains("(fs)"),
        "{said}"
    );
}

#[test]
fn a_lease_too_short_is_refused_by_name() {
    let home = tempfile::tempdir().expect("home");
    std::fs::write(home.path().join("config.toml"), "lease_ttl = \"1s\"\n").expect("config");
    let out = daemon_that_fails(home.path());
    assert!(!out.status.success());
    let said = text(&out);
    assert!(said.contains("lease_ttl 1s is too short"), "{said}");
}

/// A daemon cut off long enough for its lease to expire (here: stopped
/// with SIGSTOP) finds, when it runs again, that another daemon claimed its
/// node: the cluster says so, and it takes no new work, refused by epoch.
#[test]
fn a_daemon_whose_node_was_claimed_meanwhile_is_fenced() {
    let prefix = unique_prefix();
    let a = Node::new("alpha", &prefix);
    let watcher = Node::new("gamma", &prefix);
    let twin = Node::new("alpha", &prefix);
    for node in [&a, &watcher] {
        let out = node.bpm(&["ps"]);
        assert!(out.status.success(), "{}", text(&out));
    }
    let pid = std::fs::read_to_string(a.home().join("daemon.pid")).expect("pid");
    let pid = pid.trim().to_owned();
    let signal = |sig: &str| {
        let ok = Command::new("kill")
            .args([sig, &pid])
            .status()
            .expect("kill")
            .success();
        assert!(ok, "kill {sig} {pid}");
    };
    signal("-STOP");
    let deadline = Instant::now() + Duration::from_secs(10);
    while state_of(&watcher.nodes(), "alpha") != "lost" {
        if Instant::now() > deadline {
            signal("-CONT");
            panic!("alpha's lease never expired: {}", watcher.nodes());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let claimed = twin.bpm(&["ps"]);
    signal("-CONT");
    assert!(claimed.status.success(), "{}", text(&claimed));
    assert_eq!(state_of(&watcher.nodes(), "alpha"), "alive");

    let refused = a.bpm(&["run", "--", "true"]);
    assert!(!refused.status.success());
    let said = text(&refused);
    assert!(
        said.contains("node alpha was claimed by a newer daemon (epoch 2)"),
        "{said}"
    );
    let out = twin.bpm(&["run", "--", "true"]);
    assert!(out.status.success(), "{}", text(&out));
}
