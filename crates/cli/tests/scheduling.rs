//! Cluster scheduling on real daemons that share the test's own
//! `redis-server` (on loopback), each with its own state directory: records
//! placed on any node (`--node any`) are taken by one node each and run
//! once, within per-node limits and a cluster-wide limit on their group; a
//! node's labels decide what it may take; a record no node can take waits
//! and `bpm show` says why, and can be stopped while it waits.

#[path = "support/node.rs"]
mod node;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bpm_tests::unique_prefix;
use node::{Node, kill, state, text, until};

/// Four processes at once per node, six agents at once across the cluster.
const LIMITS: &str = "[limits]\nmax_running = 4\n[limits.cluster_groups]\nagents = 6\n";

/// The shell line each record runs: it notes its start and its end (in
/// nanoseconds) in `marks`, 50 ms apart.
fn marking(marks: &Path) -> String {
    marking_for(marks, "0.05")
}

/// [`marking`], `secs` apart.
fn marking_for(marks: &Path, secs: &str) -> String {
    format!(
        "echo \"$BPM_PROCESS_ID start $(date +%s%N)\" >> {m}; sleep {secs}; echo \"$BPM_PROCESS_ID end $(date +%s%N)\" >> {m}",
        m = marks.display()
    )
}

/// Submits `n` marking records from `node`, placed on any node, in group
/// `agents` with label `batch=NAME`, plus `extra` options; their ids.
fn submit(node: &Node, n: usize, marks: &Path, batch: &str, extra: &[&str]) -> Vec<String> {
    submit_line(node, n, &marking(marks), marks, batch, extra)
}

/// [`submit`], each record running `line`.
fn submit_line(
    node: &Node,
    n: usize,
    line: &str,
    marks: &Path,
    batch: &str,
    extra: &[&str],
) -> Vec<String> {
    let list = marks.with_extension("list");
    std::fs::write(&list, format!("{line}\n").repeat(n)).expect("list");
    let label = format!("batch={batch}");
    let list = list.display().to_string();
    let mut args = vec![
        "run", "--node", "any", "--group", "agents", "--label", &label, "--shell",
    ];
    args.extend_from_slice(extra);
    args.extend_from_slice(&["--from", &list]);
    let ids: Vec<String> = node.ok(&args).lines().map(str::to_owned).collect();
    assert_eq!(ids.len(), n, "one id per line");
    ids
}

/// The marks: for each record, its starts and ends in nanoseconds.
fn read_marks(marks: &Path) -> BTreeMap<String, (Vec<u128>, Vec<u128>)> {
    let text = std::fs::read_to_string(marks).unwrap_or_default();
    let mut by_id: BTreeMap<String, (Vec<u128>, Vec<u128>)> = BTreeMap::new();
    for line in text.lines() {
        let mut words = line.split(' ');
        let (Some(id), Some(what), Some(at)) = (words.next(), words.next(), words.next()) else {
            panic!("a torn mark: {line:?}");
        };
        let at: u128 = at.parse().expect("nanoseconds");
        let entry = by_id.entry(id.to_owned()).or_default();
        match what {
            "start" => entry.0.push(at),
            "end" => entry.1.push(at),
            other => panic!("an unknown mark {other:?}"),
        }
    }
    by_id
}

/// The most processes that ran at once, from their own marks.
fn most_at_once(marks: &BTreeMap<String, (Vec<u128>, Vec<u128>)>) -> usize {
    let mut edges: Vec<(u128, i32)> = Vec::new();
    for (starts, ends) in marks.values() {
        edges.extend(starts.iter().map(|t| (*t, 1)));
        edges.extend(ends.iter().map(|t| (*t, -1)));
    }
    // An end before a start at the same instant: they did not overlap.
    edges.sort_unstable();
    let (mut now, mut most) = (0i32, 0i32);
    for (_, step) in edges {
        now += step;
        most = most.max(now);
    }
    usize::try_from(most).unwrap_or(0)
}

/// Samples, from `node`, how many records of `batch` hold a slot, every
/// 50 ms until `done`; the most it saw and how many samples it took.
fn sample_slots(
    node_home: std::path::PathBuf,
    batch: String,
    done: Arc<AtomicBool>,
) -> std::thread::JoinHandle<(usize, usize)> {
    std::thread::spawn(move || {
        let (mut most, mut samples) = (0, 0);
        let label = format!("batch={batch}");
        while !done.load(Ordering::Relaxed) {
            let out = std::process::Command::new(env!("CARGO_BIN_EXE_bpm"))
                .args(["ps", "--json", "--label", &label])
                .args(["--state", "starting", "--state", "running"])
                .args(["--state", "paused", "--state", "stopping"])
                .env("BPM_HOME", &node_home)
                .env_remove("BPM_NODE")
                .output()
                .expect("bpm ps");
            if out.status.success() {
                let records: Vec<serde_json::Value> =
                    serde_json::from_slice(&out.stdout).expect("JSON");
                most = most.max(records.len());
                samples += 1;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        (most, samples)
    })
}

/// 1,000 records of 50 ms placed on any node of three, four at once per
/// node and six agents at once across them: each record is taken by one
/// node and runs exactly once, every one completes, and never more than
/// six run at once, counted from the records (sampled from a node) and
/// from the processes' own marks.
#[test]
fn a_thousand_records_on_any_node_run_once_each_within_the_cluster_limit() {
    let prefix = unique_prefix();
    let nodes: Vec<Node> = ["alpha", "beta", "gamma"]
        .iter()
        .map(|n| Node::with(n, &prefix, LIMITS))
        .collect();
    for n in &nodes {
        n.ok(&["ps"]);
    }
    let dir = tempfile::tempdir().expect("dir");
    let marks = dir.path().join("marks");
    let done = Arc::new(AtomicBool::new(false));
    let sampler = sample_slots(nodes[1].home().to_path_buf(), "k".into(), Arc::clone(&done));
    let started = Instant::now();
    let ids = submit(&nodes[0], 1_000, &marks, "k", &[]);
    let mut wait = vec!["wait", "--timeout", "240"];
    wait.extend(ids.iter().map(String::as_str));
    let out = nodes[2].bpm(&wait);
    let took = started.elapsed();
    done.store(true, Ordering::Relaxed);
    let (most_sampled, samples) = sampler.join().expect("the sampler");
    assert!(out.status.success(), "every record ends: {}", text(&out));

    // Every record completed, on one of the three nodes, and all three took some.
    let records: Vec<serde_json::Value> =
        serde_json::from_str(&nodes[0].ok(&["ps", "--all", "--json", "--label", "batch=k"]))
            .expect("JSON");
    assert_eq!(records.len(), 1_000);
    let mut per_node: BTreeMap<String, usize> = BTreeMap::new();
    for r in &records {
        assert_eq!(state(r), "completed", "{r}");
        *per_node
            .entry(r["node"].as_str().unwrap_or_default().to_owned())
            .or_default() += 1;
    }
    assert_eq!(
        per_node.keys().map(String::as_str).collect::<Vec<_>>(),
        ["alpha", "beta", "gamma"],
        "{per_node:?}"
    );

    // Each ran exactly once: one start and one end of its own.
    let marked = read_marks(&marks);
    let submitted: BTreeSet<&str> = ids.iter().map(String::as_str).collect();
    let ran: BTreeSet<&str> = marked.keys().map(String::as_str).collect();
    assert_eq!(ran, submitted, "every record ran, and nothing else");
    for (id, (starts, ends)) in &marked {
        assert_eq!(
            (starts.len(), ends.len()),
            (1, 1),
            "{id} ran more than once"
        );
    }
    let most_marked = most_at_once(&marked);
    assert!(most_marked <= 6, "{most_marked} processes ran at once");
    assert!(
        most_sampled <= 6,
        "{most_sampled} records held a slot at once"
    );
    assert!(samples > 10, "the count was sampled ({samples} samples)");
    eprintln!(
        "1000 records in {took:?}: per node {per_node:?}, at most {most_marked} at once (marks), {most_sampled} (sampled {samples} times)"
    );
}

/// A record that needs a label no alive node carries waits, unplaced, and
/// `bpm show` says why; a node with the label that joins takes it. Another
/// that waits is stopped from any node: cancelled, never run.
#[test]
fn a_node_takes_only_what_its_labels_allow_and_a_waiting_record_says_why() {
    let prefix = unique_prefix();
    let alpha = Node::labelled("alpha", &prefix, "{ os = \"linux\" }", "");
    alpha.ok(&["ps"]);
    let dir = tempfile::tempdir().expect("dir");
    let mark = dir.path().join("ran");
    let script = format!("echo \"$BPM_NODE\" > {}", mark.display());
    let gpu = alpha.ok(&[
        "run",
        "--node",
        "any",
        "--node-label",
        "gpu=true",
        "--shell",
        "--",
        &script,
    ]);
    let never = alpha.ok(&[
        "run",
        "--node",
        "any",
        "--node-label",
        "gpu=true",
        "--name",
        "never",
        "--",
        "true",
    ]);
    std::thread::sleep(Duration::from_millis(1_500));
    let shown = alpha.show(&gpu);
    assert_eq!(
        (state(&shown), shown["node"].as_str()),
        ("pending", Some("any")),
        "{shown}"
    );
    assert_eq!(
        shown["waiting"].as_str(),
        Some("no alive node carries the labels gpu=true (alive: alpha)"),
        "{shown}"
    );
    let human = alpha.ok(&["show", &gpu]);
    assert!(
        human.contains("waiting       no alive node carries the labels gpu=true"),
        "{human}"
    );

    // Stopped while it waits: cancelled by the node that was asked, never run.
    let stopped = alpha.ok(&["stop", &never]);
    assert!(stopped.contains("cancelled"), "{stopped}");
    let never = alpha.show(&never);
    assert_eq!(
        (state(&never), never["node"].as_str()),
        ("cancelled", Some("alpha")),
        "{never}"
    );
    assert!(never["started_at"].is_null(), "it never started: {never}");

    // A node with the label joins and takes it at once.
    let gpu_node = Node::labelled("gpu-1", &prefix, "{ gpu = \"true\" }", "");
    gpu_node.ok(&["ps"]);
    let out = alpha.bpm(&["wait", "--timeout", "20", &gpu]);
    assert!(out.status.success(), "{}", text(&out));
    let done = alpha.show(&gpu);
    assert_eq!(
        (state(&done), done["node"].as_str()),
        ("completed", Some("gpu-1")),
        "{done}"
    );
    assert_eq!(
        std::fs::read_to_string(&mark).expect("it ran").trim(),
        "gpu-1"
    );
    assert!(done.get("waiting").is_none(), "{done}");
    let nodes = alpha.ok(&["nodes", "--json"]);
    assert!(nodes.contains("\"gpu\": \"true\""), "{nodes}");
    let table = alpha.ok(&["nodes"]);
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("gpu-1 ") && l.ends_with(" [gpu=true]")),
        "{table}"
    );

    // Bad input is named.
    let out = alpha.bpm(&["run", "--node-label", "gpu=true", "--", "true"]);
    assert!(!out.status.success());
    assert!(
        text(&out).contains("node labels choose among nodes"),
        "{}",
        text(&out)
    );
    // A dependency that does not exist is refused at once, by id.
    let missing = "01900000-0000-7000-8000-000000000009";
    let out = alpha.bpm(&["run", "--node", "any", "--after", missing, "--", "true"]);
    assert!(!out.status.success());
    assert!(text(&out).contains(missing), "{}", text(&out));
}

/// The pids of processes that node `name` started (their `BPM_NODE`).
fn processes_of(name: &str) -> Vec<String> {
    let mark = format!("BPM_NODE={name}");
    std::fs::read_dir("/proc")
        .expect("/proc")
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|p| {
            let env = std::fs::read(format!("/proc/{p}/environ")).unwrap_or_default();
            env.split(|b| *b == 0).any(|v| v == mark.as_bytes())
        })
        .map(|p| p.to_string())
        .collect()
}

/// kill -9 of one node of three (daemon, keeper and processes) while 20
/// `--failover` records and 300 without, placed on any node, run: the
/// others finish the queue, each record runs at most once, what ran on the
/// dead node is `unreachable` and then `lost` (nothing moves without
/// failover), and what it took but never started fails with it; each of
/// its failover records is run again exactly once elsewhere, as a new
/// record restarted from it.
#[test]
fn a_node_killed_during_a_run_costs_its_own_records_and_nothing_runs_twice() {
    let prefix = unique_prefix();
    let more = format!("lost_after = \"6s\"\n{LIMITS}");
    let nodes: Vec<Node> = ["lambda", "mu", "kappa"]
        .iter()
        .map(|n| Node::with(n, &prefix, &more))
        .collect();
    for n in &nodes {
        n.ok(&["ps"]);
    }
    let doomed = nodes[2].ok(&["run", "--", "sleep", "300"]);
    let dir = tempfile::tempdir().expect("dir");
    let marks = dir.path().join("marks");
    let failover = ["--failover", "--restart", "on-failure", "--grace", "1"];
    // Interleaved in the queue, so that kappa runs both kinds; the
    // failover records run for three seconds, so that kappa is killed while
    // it runs some, even when a loaded machine takes a second between the
    // look that finds one running there and the kill.
    let (mut moving, mut ids) = (Vec::new(), Vec::new());
    let long = marking_for(&marks, "3");
    for _ in 0..10 {
        moving.extend(submit_line(
            &nodes[0], 2, &long, &marks, "killfo", &failover,
        ));
        ids.extend(submit(&nodes[0], 30, &marks, "kill", &[]));
    }
    // Kill kappa while the run is under way and it runs a failover record.
    let deadline = Instant::now() + Duration::from_mins(1);
    let kappa_moves = || {
        let running: Vec<serde_json::Value> = serde_json::from_str(&nodes[2].ok(&[
            "ps",
            "--json",
            "--label",
            "batch=killfo",
            "--state",
            "running",
        ]))
        .expect("JSON");
        running.iter().any(|r| r["node"] == "kappa")
    };
    // Once kappa runs a failover record, whatever the count of marks: the
    // failover records are few and short, and waiting for a count as well
    // could outlast them all on a loaded machine.
    while std::fs::read_to_string(&marks)
        .unwrap_or_default()
        .is_empty()
        || !kappa_moves()
    {
        assert!(Instant::now() < deadline, "the run never got going");
        std::thread::sleep(Duration::from_millis(20));
    }
    let (daemon, keeper) = nodes[2].daemon_and_keeper();
    kill("-9", &[&daemon, &keeper]);
    for _ in 0..3 {
        let pids = processes_of("kappa");
        if !pids.is_empty() {
            let refs: Vec<&str> = pids.iter().map(String::as_str).collect();
            let _ = std::process::Command::new("kill")
                .arg("-9")
                .args(&refs)
                .status();
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let killed_at = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_nanos();
    let (_, _) = until(&nodes[0], &doomed, Duration::from_secs(10), |r| {
        state(r) == "unreachable"
    });
    let mut wait = vec!["wait", "--timeout", "120"];
    wait.extend(ids.iter().map(String::as_str));
    wait.push(&doomed);
    let out = nodes[1].bpm(&wait);
    assert_ne!(
        out.status.code(),
        Some(124),
        "every record ends: {}",
        text(&out)
    );

    let ends = each_record_ran_at_most_once(&nodes[0], &marks);
    let lost = nodes[0].show(&doomed);
    assert_eq!(state(&lost), "lost", "{lost}");
    let completed: usize = ends
        .iter()
        .filter(|((_, st), _)| st == "completed")
        .map(|(_, n)| n)
        .sum();
    assert!(
        completed >= 200,
        "the survivors finished the queue: {ends:?}"
    );
    eprintln!("after kill -9 of kappa: {ends:?}");
    failed_over_once(&nodes[0], &moving, &marks);
    // What kappa ran ended when it was killed, with no end mark of its own.
    let mut marked = read_marks(&marks);
    for (starts, ends) in marked.values_mut() {
        if ends.len() < starts.len() {
            ends.push(killed_at);
        }
    }
    let most = most_at_once(&marked);
    assert!(most <= 6, "{most} ran at once");
}

/// Each of the 300 records of batch `kill` started at most once, and only
/// the dead node's ended other than completed: how many ended how, by node.
fn each_record_ran_at_most_once(
    node: &Node,
    marks: &std::path::Path,
) -> BTreeMap<(String, String), usize> {
    let records: Vec<serde_json::Value> =
        serde_json::from_str(&node.ok(&["ps", "--all", "--json", "--label", "batch=kill"]))
            .expect("JSON");
    assert_eq!(records.len(), 300);
    let marked = read_marks(marks);
    let mut ends: BTreeMap<(String, String), usize> = BTreeMap::new();
    for r in &records {
        let (id, node, st) = (
            r["id"].as_str().unwrap_or_default(),
            r["node"].as_str().unwrap_or_default(),
            state(r),
        );
        *ends.entry((node.to_owned(), st.to_owned())).or_default() += 1;
        let (starts, finished) = marked.get(id).cloned().unwrap_or_default();
        assert!(starts.len() <= 1, "{id} started {} times", starts.len());
        match st {
            "completed" => assert_eq!((starts.len(), finished.len()), (1, 1), "{r}"),
            // Only the dead node's records end otherwise: lost if it ran
            // them (a process may have ended just before the kill, unseen),
            // failed if it had not started them.
            "lost" => assert_eq!(node, "kappa", "{r}"),
            "failed" => {
                assert_eq!(node, "kappa", "{r}");
                assert!(starts.is_empty(), "{r}");
            }
            other => panic!("{id} ended {other}: {r}"),
        }
    }
    ends
}

/// Checks the `--failover` records `originals` (label `batch=killfo`) once
/// they and their replacements end: each completed, or was lost on kappa
/// and replaced by exactly one record, restarted from it, that completed
/// on another node; and every process ran at most once.
fn failed_over_once(node: &Node, originals: &[String], marks: &Path) {
    let deadline = Instant::now() + Duration::from_mins(2);
    let records: Vec<serde_json::Value> = loop {
        let all: Vec<serde_json::Value> =
            serde_json::from_str(&node.ok(&["ps", "--all", "--json", "--label", "batch=killfo"]))
                .expect("JSON");
        let live = all
            .iter()
            .filter(|r| !["completed", "failed", "lost", "cancelled"].contains(&state(r)))
            .count();
        if live == 0 && all.len() >= originals.len() {
            break all;
        }
        assert!(Instant::now() < deadline, "{live} still live: {all:?}");
        std::thread::sleep(Duration::from_millis(250));
    };
    let dir_marks = read_marks(marks);
    let original: BTreeSet<&str> = originals.iter().map(String::as_str).collect();
    let mut replaced_by: BTreeMap<String, Vec<&serde_json::Value>> = BTreeMap::new();
    for r in &records {
        if let Some(from) = r["restarted_from"].as_str() {
            replaced_by.entry(from.to_owned()).or_default().push(r);
        }
    }
    let mut moved = 0;
    for r in &records {
        let id = r["id"].as_str().unwrap_or_default();
        let starts = dir_marks.get(id).map_or(0, |m| m.0.len());
        assert!(starts <= 1, "{id} started {starts} times");
        if !original.contains(id) {
            // A replacement: completed, elsewhere, once.
            assert_eq!(state(r), "completed", "{r}");
            assert_ne!(r["node"], "kappa", "{r}");
            assert_eq!(starts, 1, "{r}");
            continue;
        }
        match state(r) {
            "completed" => assert!(!replaced_by.contains_key(id), "{r}"),
            "lost" => {
                assert_eq!(r["node"], "kappa", "{r}");
                let next = replaced_by.get(id).map_or(0, Vec::len);
                assert_eq!(next, 1, "{id} was replaced {next} times");
                moved += 1;
            }
            other => panic!("{id} ended {other}: {r}"),
        }
    }
    assert!(moved > 0, "kappa held failover records when it was killed");
    assert_eq!(records.len(), originals.len() + moved);
    eprintln!("{moved} failover records of kappa ran again elsewhere, once each");
}

/// With a store of its own (files), a node's cluster-wide limit is its
/// own: counted from its records, it holds as a group limit would.
#[test]
fn a_cluster_limit_on_a_node_of_its_own_holds_as_its_own() {
    let home = tempfile::tempdir().expect("home");
    std::fs::write(
        home.path().join("config.toml"),
        "node = \"solo\"\n[limits.cluster_groups]\nagents = 2\n",
    )
    .expect("config");
    let run = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_bpm"))
            .args(args)
            .env("BPM_HOME", home.path())
            .env_remove("BPM_NODE")
            .stdin(std::process::Stdio::null())
            .output()
            .expect("bpm runs");
        assert!(out.status.success(), "bpm {args:?}: {}", text(&out));
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    let dir = tempfile::tempdir().expect("dir");
    let marks = dir.path().join("marks");
    let list = dir.path().join("list");
    std::fs::write(&list, format!("{}\n", marking(&marks)).repeat(12)).expect("list");
    let list = list.display().to_string();
    let ids = run(&["run", "--group", "agents", "--shell", "--from", &list]);
    let mut wait = vec!["wait", "--timeout", "60"];
    wait.extend(ids.lines());
    run(&wait);
    let marked = read_marks(&marks);
    assert_eq!(marked.len(), 12, "each ran");
    let most = most_at_once(&marked);
    assert!(most <= 2, "{most} ran at once");
    let _ = std::process::Command::new(env!("CARGO_BIN_EXE_bpm"))
        .args(["daemon", "stop", "--kill-all"])
        .env("BPM_HOME", home.path())
        .output();
}

/// A name placed on any node is unique in the whole cluster: 50 racing
/// `--ensure` starts from three nodes make one record, the others answer
/// with it; a plain start of the name is refused naming it, from any
/// node; `--replace` stops it (its whole tree) before the new one is
/// queued; once it ended, the name is free.
#[test]
fn fifty_racing_ensures_on_three_nodes_start_one_process() {
    let prefix = unique_prefix();
    let nodes: Vec<Arc<Node>> = ["alpha", "beta", "gamma"]
        .into_iter()
        .map(|n| Arc::new(Node::with(n, &prefix, "")))
        .collect();
    for n in &nodes {
        n.ok(&["ps"]);
    }
    let racers: Vec<_> = (0..50)
        .map(|i| {
            let node = Arc::clone(&nodes[i % 3]);
            std::thread::spawn(move || {
                node.ok(&[
                    "run", "--node", "any", "--name", "web", "--ensure", "--", "sleep", "300",
                ])
            })
        })
        .collect();
    let ids: BTreeSet<String> = racers
        .into_iter()
        .map(|r| r.join().expect("a racer"))
        .collect();
    assert_eq!(ids.len(), 1, "{ids:?}");
    let web = ids.into_iter().next().expect("one id");
    until(&nodes[0], &web, Duration::from_secs(15), |r| {
        state(r) == "running"
    });
    let all: Vec<serde_json::Value> =
        serde_json::from_str(&nodes[1].ok(&["ps", "--all", "--json"])).expect("JSON");
    let named = all.iter().filter(|r| r["name"] == "web").count();
    assert_eq!(named, 1, "one record named web in the cluster: {all:?}");

    // Refused from any node, naming the live one.
    let out = nodes[2].bpm(&[
        "run", "--node", "any", "--name", "web", "--", "sleep", "300",
    ]);
    assert_eq!(out.status.code(), Some(4), "{}", text(&out));
    assert!(text(&out).contains(&web), "{}", text(&out));
    // Ensure with another command is refused, naming the difference.
    let out = nodes[1].bpm(&[
        "run", "--node", "any", "--name", "web", "--ensure", "--", "sleep", "301",
    ]);
    assert!(text(&out).contains("differs in command"), "{}", text(&out));

    // Replace: the old one has ended by the time the new one is queued.
    let old_pid = nodes[0].show(&web)["pid"].as_u64().expect("pid");
    let new = nodes[2].ok(&[
        "run",
        "--node",
        "any",
        "--name",
        "web",
        "--replace",
        "--",
        "sleep",
        "302",
    ]);
    assert_ne!(new, web);
    assert_eq!(state(&nodes[0].show(&web)), "cancelled");
    assert!(
        !Path::new(&format!("/proc/{old_pid}")).exists()
            || std::fs::read_to_string(format!("/proc/{old_pid}/cmdline"))
                .is_ok_and(|c| !c.contains("300")),
        "the replaced process runs on"
    );
    until(&nodes[1], &new, Duration::from_secs(15), |r| {
        state(r) == "running"
    });
    nodes[1].ok(&["stop", &new]);
    let again = nodes[0].ok(&["run", "--node", "any", "--name", "web", "--", "true"]);
    assert_ne!(again, new);
}
