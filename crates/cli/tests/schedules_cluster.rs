//! Schedules across a cluster: three real daemons on one `redis-server`
//! the test starts. A binary of its own, so that its daemons do not run
//! beside the timing-bound chaos tests of `scheduling.rs`.

#[path = "support/node.rs"]
mod node;

use std::collections::BTreeSet;
use std::time::Duration;

use bpm_tests::unique_prefix;
use node::Node;

/// A schedule on one node of three on one Redis: each due time makes one
/// run in the whole cluster, listed once by every node, on the
/// schedule's node; one made through another node is placed as asked.
#[test]
fn a_schedule_in_a_cluster_runs_each_due_time_once() {
    let prefix = unique_prefix();
    let nodes: Vec<Node> = ["alpha", "beta", "gamma"]
        .into_iter()
        .map(|n| Node::with(n, &prefix, ""))
        .collect();
    for n in &nodes {
        n.ok(&["ps"]);
    }
    let id = nodes[1].ok(&[
        "run", "--node", "gamma", "--every", "1s", "--name", "beat", "--", "true",
    ]);
    std::thread::sleep(Duration::from_millis(3500));
    nodes[0].ok(&["stop", "beat"]);
    let mut seen: Vec<BTreeSet<String>> = Vec::new();
    for n in &nodes {
        let all: Vec<serde_json::Value> =
            serde_json::from_str(&n.ok(&["ps", "--all", "--json"])).expect("JSON");
        let runs: Vec<&serde_json::Value> = all
            .iter()
            .filter(|r| r["scheduled_from"] == id.as_str())
            .collect();
        assert!(runs.iter().all(|r| r["node"] == "gamma"), "{runs:#?}");
        let ids: BTreeSet<String> = runs
            .iter()
            .map(|r| r["id"].as_str().expect("id").to_owned())
            .collect();
        assert_eq!(ids.len(), runs.len(), "each run listed once: {runs:#?}");
        seen.push(ids);
    }
    assert!(seen.iter().all(|s| *s == seen[0]), "{seen:?}");
    assert_eq!(seen[0].len(), 3, "three due times in 3.5 s: {seen:?}");
    let schedule = nodes[2].show("beat");
    assert_eq!(schedule["schedule"]["runs"], 3, "{schedule:#}");
}

/// A schedule placed on any node: the claim decides which node holds it,
/// its runs go on that node, and each due time still makes one run in the
/// whole cluster.
#[test]
fn a_schedule_on_any_node_runs_where_the_claim_put_it() {
    let prefix = unique_prefix();
    let nodes: Vec<Node> = ["alpha", "beta", "gamma"]
        .into_iter()
        .map(|n| Node::with(n, &prefix, ""))
        .collect();
    for n in &nodes {
        n.ok(&["ps"]);
    }
    let id = nodes[0].ok(&[
        "run", "--node", "any", "--every", "1s", "--name", "roam", "--", "true",
    ]);
    let id = id.trim();
    std::thread::sleep(Duration::from_millis(3500));
    let schedule = nodes[1].show("roam");
    let holder = schedule["node"].as_str().expect("node").to_owned();
    assert_ne!(holder, "any", "a node claimed it: {schedule:#}");
    nodes[2].ok(&["stop", "roam"]);
    let all: Vec<serde_json::Value> =
        serde_json::from_str(&nodes[0].ok(&["ps", "--all", "--json"])).expect("JSON");
    let runs: Vec<&serde_json::Value> = all.iter().filter(|r| r["scheduled_from"] == id).collect();
    assert!(
        runs.iter().all(|r| r["node"] == holder.as_str()),
        "{runs:#?}"
    );
    let ids: BTreeSet<&str> = runs.iter().filter_map(|r| r["id"].as_str()).collect();
    assert_eq!(ids.len(), runs.len(), "each run listed once: {runs:#?}");
    assert!(
        (3..=4).contains(&runs.len()),
        "a due time a second, from the claim on, for 3.5 s: {runs:#?}"
    );
    let schedule = nodes[0].show("roam");
    assert_eq!(
        schedule["schedule"]["runs"].as_u64(),
        Some(runs.len() as u64),
        "{schedule:#}"
    );
}
