//! Failover on real daemons that share the test's own `redis-server` (on
//! loopback), each with its own state directory: a partitioned node stops
//! its failover processes before another node starts them again, which the
//! processes' own timestamps show; and when the partition heals, each runs
//! once.

#[path = "support/node.rs"]
mod node;

use std::path::Path;
use std::time::{Duration, Instant};

use bpm_tests::unique_prefix;
use node::{Mark, Node, marks, replacement_of, state, until};

/// A server that notes, in `marks`, when it starts and when it stops (on
/// TERM), with the node it runs on and its record: `start NS NODE ID`.
/// Run by bash, whose clock (`EPOCHREALTIME`, in µs) is a variable: its
/// trap starts no process that the stop, which reaches every process of
/// the record, could cut short.
fn server(marks: &Path) -> String {
    format!(
        "trap 'echo \"stop ${{EPOCHREALTIME/./}}000 $BPM_NODE $BPM_PROCESS_ID\" >> {m}; exit 0' TERM; \
         echo \"start ${{EPOCHREALTIME/./}}000 $BPM_NODE $BPM_PROCESS_ID\" >> {m}; \
         while true; do sleep 0.05; done",
        m = marks.display()
    )
}

/// Starts the node's daemon again when dropped.
struct Restart<'a>(&'a Node);

impl Drop for Restart<'_> {
    fn drop(&mut self) {
        let _ = self.0.bpm(&["ps"]);
    }
}

/// How many copies of the server run at once, at most, from the marks
/// (an id's stop ends its start).
fn most_at_once(marks: &[Mark]) -> i32 {
    let mut edges: Vec<(u128, i32)> = marks
        .iter()
        .map(|m| (m.at, if m.what == "start" { 1 } else { -1 }))
        .collect();
    edges.sort_unstable();
    let (mut now, mut most) = (0, 0);
    for (_, step) in edges {
        now += step;
        most = most.max(now);
    }
    most
}

/// A partition of node alpha, which runs two `--failover` servers: `quick`
/// (grace 1 s) and `patient` (grace 30 s). Alpha stops both a lease after
/// its last renewal; beta starts `quick` again, as a new record restarted
/// from it, only after alpha's copy stopped (the processes' own
/// timestamps), and not `patient`, whose failover is not due yet. When the
/// partition heals, alpha gives `quick` up (it runs on beta) and starts
/// `patient` again itself: one copy of each, all along.
#[test]
fn a_partitioned_node_stops_its_copy_before_another_starts_one() {
    let prefix = unique_prefix();
    let proxy = node::redis_proxy();
    let more = "lost_after = \"120s\"\n";
    let alpha = Node::at(&proxy.redis_url(), "alpha", &prefix, more);
    let beta = Node::with("beta", &prefix, more);
    beta.ok(&["ps"]);
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("marks");
    let line = server(&path);
    let run = |name: &str, grace: &str| {
        alpha.ok(&[
            "run",
            "--name",
            name,
            "--failover",
            "--restart",
            "always",
            "--grace",
            grace,
            "--",
            "bash",
            "-c",
            &line,
        ])
    };
    let quick = run("quick", "1");
    let patient = run("patient", "30");
    for id in [&quick, &patient] {
        until(&beta, id, Duration::from_secs(10), |r| {
            state(r) == "running"
        });
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while marks(&path).len() < 2 {
        assert!(Instant::now() < deadline, "the servers never started");
        std::thread::sleep(Duration::from_millis(20));
    }

    let cut_at = Instant::now();
    proxy.cut(true);
    // Beta gives `quick` up and queues its replacement, which it takes.
    let (given_up, _) = until(&beta, &quick, Duration::from_secs(20), |r| {
        state(r) == "lost"
    });
    let moved_after = cut_at.elapsed();
    let replacement = runs_again_on_beta(&beta, &quick, &given_up);
    // Lease 2 s, grace 1 s, margin 2 s: not before 5 s after the last
    // renewal, which came at most a third of a lease before the cut.
    assert!(
        moved_after >= Duration::from_millis(4_300),
        "failed over after {moved_after:?}"
    );

    let seen = marks(&path);
    let first = |what: &str, node: &str, id: &str| {
        seen.iter()
            .find(|m| m.what == what && m.node == node && m.id == id)
            .map_or_else(|| panic!("no {what} of {id} on {node}: {seen:?}"), |m| m.at)
    };
    let stopped = first("stop", "alpha", &quick);
    let started = first("start", "beta", &replacement);
    assert!(
        stopped < started,
        "alpha stopped its copy {} ms after beta started one",
        (started - stopped) / 1_000_000
    );
    eprintln!(
        "alpha's copy stopped {} ms before beta's started; failed over {moved_after:?} after the cut",
        (started - stopped) / 1_000_000
    );
    // `patient` was stood down too (its own stop mark), and is not moved.
    first("stop", "alpha", &patient);
    assert_eq!(state(&beta.show(&patient)), "unreachable");

    proxy.cut(false);
    // Alpha is back: `patient` runs there again, `quick` stays on beta.
    let (back, _) = until(&beta, &patient, Duration::from_secs(20), |r| {
        state(r) == "running"
    });
    assert_eq!(back["node"], "alpha", "{back}");
    let (quick_here, _) = until(&alpha, &quick, Duration::from_secs(20), |r| {
        state(r) == "lost"
    });
    assert_eq!(quick_here["node"], "alpha", "{quick_here}");
    // Past the time `patient` would have been due, had alpha stayed away.
    let due = Duration::from_secs(2 + 30 + 2 + 1);
    if let Some(rest) = due.checked_sub(cut_at.elapsed()) {
        std::thread::sleep(rest);
    }
    assert_eq!(state(&beta.show(&patient)), "running");
    assert_eq!(state(&beta.show(&replacement)), "running");
    let seen = marks(&path);
    assert_eq!(most_at_once(&seen), 2, "one copy of each: {seen:?}");
    let starts = |id: &str| {
        seen.iter()
            .filter(|m| m.what == "start" && m.id == id)
            .count()
    };
    assert_eq!((starts(&quick), starts(&replacement)), (1, 1), "{seen:?}");
    assert_eq!(starts(&patient), 2, "{seen:?}");
    let all: Vec<serde_json::Value> =
        serde_json::from_str(&beta.ok(&["ps", "--all", "--json"])).expect("JSON");
    let live: Vec<&serde_json::Value> = all.iter().filter(|r| state(r) == "running").collect();
    assert_eq!(live.len(), 2, "{all:?}");
    beta.ok(&["stop", &replacement]);
    alpha.ok(&["stop", &patient]);
}

/// The replacement of `quick`, given up as `given_up`: running on beta, one
/// restart on, its earlier run on alpha lost, as `bpm show` says too.
fn runs_again_on_beta(beta: &Node, quick: &str, given_up: &serde_json::Value) -> String {
    let replacement = replacement_of(given_up);
    let (moved, _) = until(beta, &replacement, Duration::from_secs(15), |r| {
        state(r) == "running"
    });
    assert_eq!(moved["node"], "beta", "{moved}");
    assert_eq!(moved["restarted_from"].as_str(), Some(quick), "{moved}");
    assert_eq!(moved["restarts"], 1, "{moved}");
    let runs = &moved["earlier_runs"];
    assert_eq!(runs[0]["node"], "alpha", "{moved}");
    assert_eq!(runs[0]["state"], "lost", "{moved}");
    let human = beta.ok(&["show", &replacement]);
    assert!(
        human.contains(&format!("earlier runs  {quick} on node alpha: lost")),
        "{human}"
    );
    replacement
}

/// kill -9 of node alpha's daemon alone: its keeper, told of every
/// renewal, hears of none and stops the `--failover` server itself, before
/// beta runs it again; when alpha's next daemon starts, it leaves the
/// record given up, and one copy runs.
#[test]
fn the_keeper_stops_a_failover_process_when_its_daemon_dies() {
    keeper_stands_down_when_the_daemon_dies(false);
}

/// The same after alpha's keeper was killed first: the keeper that adopts
/// the server stands it down too.
#[test]
fn a_keeper_that_adopted_a_failover_process_stops_it_when_its_daemon_dies() {
    keeper_stands_down_when_the_daemon_dies(true);
}

fn keeper_stands_down_when_the_daemon_dies(keeper_dies_first: bool) {
    let prefix = unique_prefix();
    let more = "lost_after = \"120s\"\n";
    let alpha = Node::with("alpha", &prefix, more);
    let beta = Node::with("beta", &prefix, more);
    beta.ok(&["ps"]);
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("marks");
    let line = server(&path);
    let quick = alpha.ok(&[
        "run",
        "--failover",
        "--restart",
        "always",
        "--grace",
        "1",
        "--",
        "bash",
        "-c",
        &line,
    ]);
    until(&beta, &quick, Duration::from_secs(10), |r| {
        state(r) == "running"
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    while marks(&path).is_empty() {
        assert!(Instant::now() < deadline, "the server never started");
        std::thread::sleep(Duration::from_millis(20));
    }
    let (daemon, keeper) = alpha.daemon_and_keeper();
    if keeper_dies_first {
        node::kill("-9", &[&keeper]);
        let deadline = Instant::now() + Duration::from_secs(15);
        while alpha.daemon_and_keeper().1 == keeper {
            assert!(Instant::now() < deadline, "no keeper took over");
            std::thread::sleep(Duration::from_millis(100));
        }
        // The next renewal reaches the new keeper.
        std::thread::sleep(Duration::from_secs(1));
    }
    node::kill("-9", &[&daemon]);
    // Whatever happens next, a daemon is running again when the nodes are
    // dropped, so that their stop reaches alpha's processes.
    let _restart = Restart(&alpha);

    let (given_up, _) = until(&beta, &quick, Duration::from_secs(20), |r| {
        state(r) == "lost"
    });
    let replacement = replacement_of(&given_up);
    until(&beta, &replacement, Duration::from_secs(15), |r| {
        state(r) == "running"
    });
    let seen = marks(&path);
    let at = |what: &str, node: &str| {
        seen.iter()
            .find(|m| m.what == what && m.node == node)
            .map_or_else(|| panic!("no {what} on {node}: {seen:?}"), |m| m.at)
    };
    assert!(at("stop", "alpha") < at("start", "beta"), "{seen:?}");

    // Alpha's next daemon: the record stays given up, nothing restarts there.
    alpha.ok(&["ps"]);
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(state(&alpha.show(&quick)), "lost");
    let seen = marks(&path);
    assert_eq!(most_at_once(&seen), 1, "{seen:?}");
    assert_eq!(
        seen.iter().filter(|m| m.what == "start").count(),
        2,
        "{seen:?}"
    );
    beta.ok(&["stop", &replacement]);
}

/// A `--failover` without a restart policy that runs it again is refused,
/// naming what is missing.
#[test]
fn failover_without_a_restart_policy_is_refused() {
    let alpha = Node::with("alpha", &unique_prefix(), "");
    let out = alpha.bpm(&["run", "--failover", "--", "true"]);
    assert!(!out.status.success());
    let said = node::text(&out);
    assert!(said.contains("--restart on-failure"), "{said}");
}
