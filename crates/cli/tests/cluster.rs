//! Several daemons on one `redis-server` (the test's own, on loopback), each
//! with its own state directory: a node's name is claimed by one daemon at
//! a time, `bpm nodes` lists them, and a stopped daemon leaves.

#[path = "support/node.rs"]
mod node;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bpm_tests::{RedisServer, unique_prefix};
use node::{Node, beta_running, daemon_that_fails, kill, state, state_of, text, until};

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
        said.contains("node alpha is held")
            && said.contains("still runs on this machine")
            && said.contains(&format!("pid {}", holder.trim())),
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
    let out = b.bpm(&[
        "wait",
        "--timeout",
        "30",
        String::from_utf8_lossy(&out.stdout).trim(),
    ]);
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
    let signal = |sig: &str| kill(sig, &[&pid]);
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

/// kill -9 of node beta's daemon, keeper and processes together: alpha and
/// gamma mark its live records `unreachable` within about a lease, one of
/// them alone (the reason names it, and only one log says it swept), and
/// after `lost_after` the records are `lost` and the one waiting to start
/// there `failed`. A record that had ended stays as it was.
#[test]
fn a_dead_nodes_records_are_unreachable_then_lost_each_sweep_made_by_one_node() {
    let prefix = unique_prefix();
    let more = "lost_after = \"6s\"\n";
    let a = Node::with("alpha", &prefix, more);
    let b = Node::with("beta", &prefix, more);
    let c = Node::with("gamma", &prefix, more);
    for node in [&a, &c] {
        node.ok(&["ps"]);
    }
    let running = b.ok(&["run", "--", "sleep", "300"]);
    let waiting = b.ok(&["run", "--after", &running, "--", "true"]);
    let done = b.ok(&["run", "--", "true"]);
    b.ok(&["wait", "--timeout", "30", &done]);
    let (record, _) = until(&a, &running, Duration::from_secs(10), |r| {
        state(r) == "running"
    });
    let pid = record["pid"].as_u64().expect("a pid").to_string();
    assert_eq!(state(&a.show(&waiting)), "pending");

    let (daemon, keeper) = b.daemon_and_keeper();
    kill("-9", &[&daemon, &keeper, &pid]);
    let at = Instant::now();

    // Unreachable, seen from either survivor, with who marked it and why.
    let (record, seen) = until(&c, &running, Duration::from_secs(10), |r| {
        state(r) == "unreachable"
    });
    let noticed = seen.duration_since(at);
    let reason = record["error"].as_str().unwrap_or_default().to_owned();
    assert!(
        reason.contains("node beta stopped renewing its lease")
            && (reason.contains("by node alpha") || reason.contains("by node gamma")),
        "{record}"
    );
    assert_eq!(a.show(&running)["state"], "unreachable");
    assert_eq!(state(&a.show(&waiting)), "pending", "a queued record waits");
    assert_eq!(state(&a.show(&done)), "completed");
    let table = a.ok(&["ps", "--node", "beta"]);
    assert!(table.contains("unreachable"), "{table}");

    // Lost after lost_after; the record waiting to start there failed.
    let (record, _) = until(&a, &running, Duration::from_secs(15), |r| {
        state(r) == "lost"
    });
    let reason = record["error"].as_str().unwrap_or_default();
    assert!(
        reason.contains("did not come back within lost_after 6s"),
        "{record}"
    );
    let failed = a.show(&waiting);
    assert_eq!(state(&failed), "failed", "{failed}");
    assert_eq!(state(&a.show(&done)), "completed");

    // Each sweep was made by exactly one node.
    let logs = [a.log(), c.log()];
    for sweep in ["sweep=\"unreach\"", "sweep=\"give_up\""] {
        let made: usize = logs
            .iter()
            .map(|l| {
                l.lines()
                    .filter(|l| l.contains("swept a node") && l.contains(sweep))
                    .count()
            })
            .sum();
        assert_eq!(made, 1, "{sweep}: {logs:?}");
    }
    eprintln!("unreachable noticed {noticed:?} after the kill (lease_ttl 2s)");
    assert!(
        noticed < Duration::from_secs(6),
        "noticed only after {noticed:?}"
    );
}

/// A partition: node beta's only way to Redis is a proxy the test cuts for
/// longer than a lease. Beta writes nothing meanwhile and says so; alpha
/// marks beta's records `unreachable`. When the cut heals, beta claims its
/// node again with a new epoch, and its records come back with their real
/// states: the one still running is running, with its pid, and the one
/// that ended during the cut has its own exit code.
#[test]
fn a_partitioned_nodes_records_come_back_with_their_real_states() {
    let prefix = unique_prefix();
    let proxy = node::redis_proxy();
    let more = "lost_after = \"60s\"\n";
    let a = Node::with("alpha", &prefix, more);
    let b = Node::at(&proxy.redis_url(), "beta", &prefix, more);
    a.ok(&["ps"]);
    let running = b.ok(&["run", "--", "sleep", "300"]);
    let ends = b.ok(&["run", "--shell", "--", "sleep 4; exit 7"]);
    let (before, _) = until(&a, &running, Duration::from_secs(10), |r| {
        state(r) == "running"
    });
    until(&a, &ends, Duration::from_secs(10), |r| {
        state(r) == "running"
    });
    let epoch_before = b.ok(&["daemon", "status"]);

    proxy.cut(true);
    let (marked, _) = until(&a, &running, Duration::from_secs(10), |r| {
        state(r) == "unreachable"
    });
    assert!(
        marked["error"]
            .as_str()
            .is_some_and(|e| e.contains("by node alpha")),
        "{marked}"
    );
    until(&a, &ends, Duration::from_secs(10), |r| {
        state(r) == "unreachable"
    });
    // A listing that spans nodes names each row's node.
    let local = a.ok(&["run", "--", "sleep", "300"]);
    let table = a.ok(&["ps"]);
    assert!(
        table.lines().next().is_some_and(|h| h.ends_with(" NODE")),
        "{table}"
    );
    assert!(
        table
            .lines()
            .any(|l| l.contains(" unreachable ") && l.ends_with(" beta")),
        "{table}"
    );
    assert!(
        table
            .lines()
            .any(|l| l.contains(" running ") && l.ends_with(" alpha")),
        "{table}"
    );
    a.ok(&["stop", &local]);
    // Beta takes no new work, and its status says why.
    let refused = b.bpm(&["run", "--", "true"]);
    assert!(!refused.status.success(), "{}", text(&refused));
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let status = b.ok(&["daemon", "status"]);
        if status.contains("writes nothing until it holds the node again") {
            break;
        }
        assert!(Instant::now() < deadline, "{status}");
        std::thread::sleep(Duration::from_millis(200));
    }

    proxy.cut(false);
    let (back, _) = until(&a, &running, Duration::from_secs(15), |r| {
        state(r) == "running"
    });
    assert_eq!(back["pid"], before["pid"], "the same process: {back}");
    let (ended, _) = until(&a, &ends, Duration::from_secs(15), |r| state(r) == "failed");
    assert_eq!(ended["exit"]["code"], 7, "{ended}");
    let status = b.ok(&["daemon", "status"]);
    assert_ne!(status, epoch_before);
    assert!(status.contains("epoch 2"), "a new epoch: {status}");
    let out = b.ok(&["run", "--", "true"]);
    b.ok(&["wait", "--timeout", "30", &out]);
    b.ok(&["stop", &running]);
}

/// kill -9 of node beta's daemon alone (its keeper and processes live on):
/// alpha marks beta's running record `unreachable`; the next daemon on beta
/// takes it back, running with the same process.
#[test]
fn a_restarted_daemon_takes_its_unreachable_records_back() {
    let (a, b, running, before) = beta_running("lost_after = \"60s\"\n");
    let (daemon, _) = b.daemon_and_keeper();
    kill("-9", &[&daemon]);
    until(&a, &running, Duration::from_secs(10), |r| {
        state(r) == "unreachable"
    });
    b.ok(&["ps"]);
    let (back, _) = until(&a, &running, Duration::from_secs(10), |r| {
        state(r) == "running"
    });
    assert_eq!(back["pid"], before["pid"], "{back}");
    b.ok(&["stop", &running]);
    assert_eq!(state(&a.show(&running)), "cancelled");
}

/// Live pids of processes whose environment carries `BPM_PROCESS_ID=id`.
fn marked(id: &str) -> Vec<u32> {
    let mark = format!("BPM_PROCESS_ID={id}");
    std::fs::read_dir("/proc")
        .expect("/proc")
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .filter(|p: &u32| {
            let env = std::fs::read(format!("/proc/{p}/environ")).unwrap_or_default();
            let stat = std::fs::read_to_string(format!("/proc/{p}/stat")).unwrap_or_default();
            let zombie = stat
                .rsplit(')')
                .next()
                .is_some_and(|s| s.trim_start().starts_with('Z'));
            !zombie && env.split(|b| *b == 0).any(|v| v == mark.as_bytes())
        })
        .collect()
}

/// Any process from any node: from alpha, a process on beta is paused,
/// resumed, read and waited for (its own exit code, woken by beta's event
/// through Redis), a TERM-ignoring tree on gamma is stopped with nothing
/// left of it, and `bpm events` on alpha carries beta's events.
#[test]
fn any_nodes_process_is_controlled_read_and_waited_for_from_another() {
    let prefix = unique_prefix();
    let a = Node::new("alpha", &prefix);
    let b = Node::new("beta", &prefix);
    let c = Node::new("gamma", &prefix);
    a.ok(&["ps"]);
    let ticker = b.ok(&[
        "run",
        "--shell",
        "--",
        "i=0; while true; do echo tick $i; i=$((i+1)); sleep 0.1; done",
    ]);
    until(&a, &ticker, Duration::from_secs(10), |r| {
        state(r) == "running"
    });

    // Pause and resume on beta, from alpha: the answer is the record after.
    let paused = a.ok(&["pause", &ticker]);
    assert!(paused.contains("paused"), "{paused}");
    assert_eq!(state(&b.show(&ticker)), "paused");
    a.ok(&["resume", &ticker]);
    assert_eq!(state(&b.show(&ticker)), "running");

    // Its output, read from alpha.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let logs = a.ok(&["logs", &ticker]);
        if logs.contains("tick 3") {
            break;
        }
        assert!(Instant::now() < deadline, "alpha reads: {logs}");
        std::thread::sleep(Duration::from_millis(100));
    }

    follows_from_another_node(&a, &ticker);
    waits_for_output_on_its_owner(&a, &b, &ticker);
    // A wait on alpha for a process on beta ends with its exit code.
    let ends = b.ok(&["run", "--shell", "--", "sleep 1; exit 3"]);
    let waited = a.bpm(&["wait", "--timeout", "30", &ends]);
    assert_eq!(waited.status.code(), Some(3), "{}", text(&waited));
    let events = a.ok(&["events"]);
    assert!(
        events
            .lines()
            .any(|l| l.contains(&ends) && l.contains("\"failed\"") && l.contains("\"beta\"")),
        "alpha heard beta's end: {events}"
    );

    stops_a_term_ignoring_tree_on_another_node(&a, &c);
    // A record no node has.
    let missing = a.bpm(&["stop", "00000000-0000-7000-8000-000000000000"]);
    assert!(!missing.status.success());

    starts_on_another_node(&a, &b, &c);
    // A node that is not there, and a name that cannot be one.
    let nowhere = a.bpm(&["run", "--node", "nobody", "--", "true"]);
    assert!(!nowhere.status.success());
    assert!(
        text(&nowhere).contains("no node is named nobody: nothing was sent"),
        "{}",
        text(&nowhere)
    );
    let bad = a.bpm(&["run", "--node", "no such/node", "--", "true"]);
    assert!(!bad.status.success());
    assert!(text(&bad).contains("--node"), "{}", text(&bad));
    a.ok(&["stop", &ticker]);
    assert_eq!(state(&b.show(&ticker)), "cancelled");
}

/// Followed from alpha: new lines come as beta's process writes them.
fn follows_from_another_node(a: &Node, ticker: &str) {
    let mut follow = Command::new(env!("CARGO_BIN_EXE_bpm"))
        .args(["logs", "-f", ticker])
        .env("BPM_HOME", a.home())
        .env_remove("BPM_NODE")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("logs -f");
    let stdout = follow.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead as _;
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let ticks = |line: &str| {
        line.strip_prefix("tick ")
            .and_then(|n| n.trim().parse::<u64>().ok())
    };
    let first = ticks(&rx.recv_timeout(Duration::from_secs(10)).expect("a line"));
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut newest = first;
    while newest <= first.map(|n| n + 5) {
        let left = deadline.saturating_duration_since(Instant::now());
        newest = ticks(&rx.recv_timeout(left).expect("lines keep coming")).or(newest);
    }
    let _ = follow.kill();
    let _ = follow.wait();
}

/// A wait for output asked of alpha about beta's records is made on
/// beta, whose keeper sees the process write: it answers with the new
/// output there, and on a quiet process it runs its time (alpha alone
/// could only look again after 100 ms).
fn waits_for_output_on_its_owner(a: &Node, b: &Node, ticker: &str) {
    use bpm_ports::{Cursor, OutputQuery, ProcessManager as _};
    let quiet = b.ok(&["run", "--", "sleep", "300"]);
    let runtime = tokio::runtime::Runtime::new().expect("a runtime");
    runtime.block_on(async {
        let m = bpm_adapters::control::DaemonClient::connect(&a.home().join("bpm.sock"), "cluster")
            .await
            .expect("alpha's daemon");
        let quiet = quiet.parse().expect("an id");
        let asked = Instant::now();
        m.wait_output(quiet, Cursor(0), Duration::from_millis(600))
            .await
            .expect("a wait on beta's quiet process");
        let waited = asked.elapsed();
        assert!(
            waited >= Duration::from_millis(500),
            "answered after {waited:?}"
        );
        let ticker = ticker.parse().expect("an id");
        let end = m
            .read_output(ticker, OutputQuery::default())
            .await
            .expect("read")
            .next;
        m.wait_output(ticker, end, Duration::from_secs(10))
            .await
            .expect("a wait on beta's ticker");
        let more = OutputQuery {
            cursor: Some(end),
            ..OutputQuery::default()
        };
        let chunk = m.read_output(ticker, more).await.expect("read more");
        assert!(chunk.next > end, "answered with nothing new: {chunk:?}");
        m.stop(quiet, bpm_ports::StopOptions::default())
            .await
            .expect("stop");
    });
}

/// A tree on gamma that ignores TERM, stopped from alpha: the answer comes
/// once the whole tree is gone.
fn stops_a_term_ignoring_tree_on_another_node(a: &Node, c: &Node) {
    let tree = c.ok(&[
        "run",
        "--shell",
        "--",
        "trap '' TERM; (trap '' TERM; sleep 300) & sleep 300",
    ]);
    until(a, &tree, Duration::from_secs(10), |r| state(r) == "running");
    let deadline = Instant::now() + Duration::from_secs(5);
    while marked(&tree).len() < 2 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(marked(&tree).len() >= 2, "the tree runs");
    let stopped = a.bpm(&["stop", "--grace", "1", &tree]);
    assert!(stopped.status.success(), "{}", text(&stopped));
    assert_eq!(state(&a.show(&tree)), "cancelled");
    assert_eq!(
        marked(&tree),
        Vec::<u32>::new(),
        "nothing of the tree is left"
    );
}

/// Started from alpha on beta: beta's daemon makes and runs the record; a
/// batch placed on gamma: one command, three records there.
fn starts_on_another_node(a: &Node, b: &Node, c: &Node) {
    let placed = a.ok(&["run", "--node", "beta", "--", "sleep", "300"]);
    let record = b.show(&placed);
    assert_eq!(record["node"], "beta", "{record}");
    assert_eq!(state(&record), "running", "{record}");
    let pid = record["pid"].as_u64().expect("a pid");
    assert!(marked(&placed).contains(&u32::try_from(pid).expect("pid")));
    a.ok(&["stop", &placed]);
    // A batch placed on gamma: one command, three records there.
    let mut batch = Command::new(env!("CARGO_BIN_EXE_bpm"))
        .args(["run", "--node", "gamma", "--from", "-", "--", "sh", "-c"])
        .env("BPM_HOME", a.home())
        .env_remove("BPM_NODE")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("run --from");
    {
        use std::io::Write as _;
        let mut stdin = batch.stdin.take().expect("stdin");
        stdin
            .write_all(b"'exit 0'\n'exit 1'\n'exit 2'\n")
            .expect("write");
    }
    let out = batch.wait_with_output().expect("run --from");
    assert!(out.status.success(), "{}", text(&out));
    let ids: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect();
    assert_eq!(ids.len(), 3, "{ids:?}");
    for (code, id) in ids.iter().enumerate() {
        let waited = a.bpm(&["wait", "--timeout", "30", id]);
        assert_eq!(
            waited.status.code(),
            Some(i32::try_from(code).expect("small"))
        );
        assert_eq!(c.show(id)["node"], "gamma");
    }
}

/// A call about a record whose node is gone gives a clear error at once,
/// naming the node and its lease's age; it never hangs.
#[test]
fn a_call_for_a_node_that_is_gone_is_refused_by_name() {
    let (a, b, running, _) = beta_running("lost_after = \"60s\"\n");
    let (daemon, _) = b.daemon_and_keeper();
    kill("-STOP", &[&daemon]);
    // Once its lease lapsed, a call about its records is refused at once.
    until(&a, &running, Duration::from_secs(10), |r| {
        state(r) == "unreachable"
    });
    let started = Instant::now();
    let refused = a.bpm(&["pause", &running]);
    let took = started.elapsed();
    kill("-CONT", &[&daemon]);
    assert!(!refused.status.success());
    let said = text(&refused);
    assert!(
        said.contains("node beta did not answer the pause") && said.contains("lease was renewed"),
        "{said}"
    );
    assert!(
        took < Duration::from_secs(5),
        "refused at once, took {took:?}"
    );
}

/// A Redis restart under three nodes (kill -9 of `redis-server`, its data
/// kept by an append-only file synced on every write): no record and no
/// transition is lost, and every daemon comes back by itself. Each node
/// runs a process that outlives the outage and one that ends during it;
/// afterwards the first runs on with its pid, the second has its own exit
/// code, every node's end reached another node's events, all three nodes
/// are alive and each takes new work.
#[test]
fn a_redis_restart_under_three_nodes_loses_nothing_and_every_daemon_comes_back() {
    let data = tempfile::tempdir().expect("redis dir");
    let redis = RedisServer::start_with(&format!(
        "--appendonly yes --appendfsync always --dir {}",
        data.path().display()
    ));
    let prefix = unique_prefix();
    let more = "lost_after = \"60s\"\n";
    let nodes: Vec<Node> = ["alpha", "beta", "gamma"]
        .iter()
        .map(|name| Node::at(&redis.url(), name, &prefix, more))
        .collect();
    for n in &nodes {
        n.ok(&["ps"]);
    }
    let long: Vec<String> = nodes
        .iter()
        .map(|n| n.ok(&["run", "--", "sleep", "300"]))
        .collect();
    let ends: Vec<String> = nodes
        .iter()
        .map(|n| n.ok(&["run", "--shell", "--", "sleep 2; exit 4"]))
        .collect();
    let mut pids = Vec::new();
    for id in &long {
        let (r, _) = until(&nodes[0], id, Duration::from_secs(10), |r| {
            state(r) == "running"
        });
        pids.push(r["pid"].clone());
    }

    redis.kill();
    std::thread::sleep(Duration::from_secs(4));
    redis.restart();
    // A call may fail while a connection is made again; none hangs.
    let settled = |id: &str, what: &str| -> serde_json::Value {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let out = nodes[0].bpm(&["show", id, "--json"]);
            if out.status.success() {
                let r: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
                if state(&r) == what {
                    return r;
                }
            }
            assert!(Instant::now() < deadline, "{id} not {what}: {}", text(&out));
            std::thread::sleep(Duration::from_millis(200));
        }
    };

    for (id, pid) in long.iter().zip(&pids) {
        let r = settled(id, "running");
        assert_eq!(&r["pid"], pid, "the same process: {r}");
    }
    for id in &ends {
        let r = settled(id, "failed");
        assert_eq!(r["exit"]["code"], 4, "its own exit code: {r}");
    }
    // Every node's end reached alpha's events.
    let events = nodes[0].ok(&["events"]);
    for id in &ends {
        assert!(
            events
                .lines()
                .any(|l| l.contains(id.as_str()) && l.contains("\"failed\"")),
            "{id} not in alpha's events: {events}"
        );
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let listed = nodes[0].nodes();
        if ["alpha", "beta", "gamma"]
            .iter()
            .all(|n| state_of(&listed, n) == "alive")
        {
            break;
        }
        assert!(Instant::now() < deadline, "not all alive: {listed}");
        std::thread::sleep(Duration::from_millis(200));
    }
    for n in &nodes {
        let deadline = Instant::now() + Duration::from_secs(15);
        let id = loop {
            let out = n.bpm(&["run", "--", "true"]);
            if out.status.success() {
                break String::from_utf8_lossy(&out.stdout).trim().to_owned();
            }
            assert!(Instant::now() < deadline, "no new work: {}", text(&out));
            std::thread::sleep(Duration::from_millis(200));
        };
        n.ok(&["wait", "--timeout", "30", &id]);
    }
    for (n, id) in nodes.iter().zip(&long) {
        n.ok(&["stop", id]);
    }
}

/// kill -9 of node beta's daemon alone, for longer than `lost_after`: its
/// running record is given up as lost by alpha while its keeper still
/// runs the process. The next daemon on beta kills that process, so the
/// record runs nowhere; the record stays lost.
#[test]
fn a_daemon_back_after_its_records_were_given_up_kills_their_processes() {
    let (a, b, running, _) = beta_running("lost_after = \"4s\"\n");
    let (daemon, _) = b.daemon_and_keeper();
    kill("-9", &[&daemon]);
    until(&a, &running, Duration::from_secs(20), |r| {
        state(r) == "lost"
    });
    assert!(!marked(&running).is_empty(), "its keeper still runs it");
    b.ok(&["ps"]);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !marked(&running).is_empty() {
        assert!(
            Instant::now() < deadline,
            "still runs: {:?}",
            marked(&running)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(state(&a.show(&running)), "lost");
}

/// Dependencies and parents on other nodes: a record on alpha that waits
/// for one on beta starts only once beta's completed (it checks a mark
/// beta's process leaves last), and fails, naming it, when beta's failed;
/// children on alpha and gamma of a parent on beta are stopped, with
/// nothing of them left, when the parent is stopped from gamma; and
/// alpha's daemon, killed meanwhile, learns at its restart what changed
/// on beta while it was down.
#[test]
fn dependencies_and_parents_on_other_nodes_are_waited_for_and_stopped_with() {
    let prefix = unique_prefix();
    let a = Node::new("alpha", &prefix);
    let b = Node::new("beta", &prefix);
    let c = Node::new("gamma", &prefix);
    a.ok(&["ps"]);
    c.ok(&["ps"]);
    let marks = tempfile::tempdir().expect("marks");
    let done = marks.path().join("done");
    let done = done.to_str().expect("utf-8");

    // A dependency on beta that completes; alpha's record waits for it.
    let dep = b.ok(&["run", "--shell", "--", &format!("sleep 2; touch {done}")]);
    let next = a.ok(&[
        "run",
        "--after",
        &dep,
        "--shell",
        "--",
        &format!("test -f {done}"),
    ]);
    assert_eq!(state(&a.show(&next)), "pending");
    let waited = a.bpm(&["wait", "--timeout", "20", &next]);
    assert_eq!(waited.status.code(), Some(0), "{}", text(&waited));
    assert_eq!(state(&a.show(&next)), "completed");

    // One that fails: what waits for it fails, and says why.
    let failing = b.ok(&["run", "--shell", "--", "sleep 1; exit 3"]);
    let blocked = a.ok(&["run", "--after", &failing, "--", "true"]);
    a.bpm(&["wait", "--timeout", "20", &blocked]);
    let record = a.show(&blocked);
    assert_eq!(state(&record), "failed", "{record}");
    assert!(
        record.to_string().contains(&failing),
        "the reason names the dependency: {record}"
    );

    // A parent on beta with children on alpha and (placed from alpha) gamma.
    let parent = b.ok(&["run", "--", "sleep", "300"]);
    let here = a.ok(&["run", "--parent", &parent, "--", "sleep", "300"]);
    let there = a.ok(&[
        "run", "--node", "gamma", "--parent", &parent, "--", "sleep", "300",
    ]);
    for child in [&here, &there] {
        until(&b, child, Duration::from_secs(10), |r| {
            state(r) == "running"
        });
    }
    assert_eq!(c.show(&there)["node"], "gamma");
    // The stop answers once the whole tree is gone, on every node.
    c.ok(&["stop", &parent]);
    for child in [&here, &there] {
        let record = c.show(child);
        assert_eq!(state(&record), "cancelled", "{record}");
        assert!(
            record
                .to_string()
                .contains(&format!("parent {parent} was stopped")),
            "{record}"
        );
        assert_eq!(marked(child), Vec::<u32>::new(), "{child} still runs");
    }

    // Alpha's daemon dies while its records wait on beta's; beta's
    // dependency completes and its parent is stopped meanwhile.
    let dep = b.ok(&["run", "--", "sleep", "4"]);
    let parent = b.ok(&["run", "--", "sleep", "300"]);
    let waiting = a.ok(&["run", "--after", &dep, "--", "true"]);
    let child = a.ok(&["run", "--parent", &parent, "--", "sleep", "300"]);
    until(&a, &child, Duration::from_secs(10), |r| {
        state(r) == "running"
    });
    let (daemon, _) = a.daemon_and_keeper();
    kill("-9", &[&daemon]);
    assert_eq!(
        state(&b.show(&waiting)),
        "pending",
        "killed before the dependency ended"
    );
    b.ok(&["stop", &parent]);
    until(&b, &dep, Duration::from_secs(10), |r| {
        state(r) == "completed"
    });
    assert!(
        !marked(&child).is_empty(),
        "alpha's keeper still runs the child"
    );
    a.ok(&["ps"]);
    until(&b, &child, Duration::from_secs(10), |r| {
        state(r) == "cancelled"
    });
    until(&b, &waiting, Duration::from_secs(10), |r| {
        state(r) == "completed"
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    while !marked(&child).is_empty() {
        assert!(Instant::now() < deadline, "the child still runs");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A daemon killed with kill -9 leaves its lease alive for a while; the
/// next daemon of the same machine (same boot) sees the holder's pid gone
/// and takes the node over at once with a newer epoch, instead of refusing
/// every command until the lease lapses. The processes run on, adopted.
#[test]
fn a_killed_daemon_of_this_machine_is_taken_over_at_once() {
    let prefix = unique_prefix();
    let a = Node::new("solo", &prefix);
    // A lease far longer than anything here waits: only a takeover lets the
    // next command through.
    let config_path = a.home().join("config.toml");
    let config = std::fs::read_to_string(&config_path).expect("config");
    std::fs::write(
        &config_path,
        config.replace("lease_ttl = \"2s\"", "lease_ttl = \"60s\""),
    )
    .expect("config");
    let id = a.ok(&["run", "--", "sleep", "300"]);
    let id = id.trim();
    let pid = a.show(id)["pid"].clone();
    let (daemon, _) = a.daemon_and_keeper();
    let epoch_before = a.nodes()[0]["lease"]["epoch"].as_u64().expect("epoch");
    kill("-9", &[&daemon]);
    let deadline = Instant::now() + Duration::from_secs(10);
    let dead = || {
        std::fs::read_to_string(format!("/proc/{daemon}/stat"))
            .map_or(true, |s| s.contains(") Z ") || s.contains(") X "))
    };
    while !dead() {
        assert!(Instant::now() < deadline, "{daemon} outlived kill -9");
        std::thread::sleep(Duration::from_millis(10));
    }

    let started = Instant::now();
    let out = a.bpm(&["ps", "--json"]);
    let took = started.elapsed();
    assert!(out.status.success(), "{}", text(&out));
    println!("from a daemon's kill -9 to the next command answered: {took:?}");
    let shown = a.show(id);
    assert_eq!(state(&shown), "running", "{shown}");
    assert_eq!(shown["pid"], pid, "the same process, adopted");
    let lease = &a.nodes()[0]["lease"];
    assert!(
        lease["epoch"].as_u64().expect("epoch") > epoch_before,
        "{lease}"
    );
    assert!(
        a.log()
            .contains("took the node over from a daemon of this machine that is gone"),
        "{}",
        a.log()
    );
}
