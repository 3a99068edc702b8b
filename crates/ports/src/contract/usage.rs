//! The resource-sampler contract: cases every [`ResourceSampler`] must pass,
//! on real processes (`sh` and `python3`) in their own process groups.

use std::io::{BufRead as _, BufReader};
use std::os::unix::process::CommandExt as _;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use bpm_domain::ProcessId;

use crate::{ResourceSampler, ResourceUsage, SampleTarget};

/// A process tree started for a case, its group killed when dropped.
struct Tree {
    child: Child,
    id: ProcessId,
}

impl Tree {
    /// `sh -c script` leading its own process group; `BPM_PROCESS_ID` names a
    /// fresh record, as bpm marks every process it starts.
    fn start(script: &str) -> Tree {
        let id = ProcessId::from_uuid(uuid::Uuid::now_v7());
        let child = Command::new("sh")
            .args(["-c", script])
            .env("BPM_PROCESS_ID", id.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .process_group(0)
            .spawn()
            .expect("sh starts");
        Tree { child, id }
    }

    fn target(&self) -> SampleTarget {
        SampleTarget {
            id: self.id,
            pid: self.child.id(),
        }
    }

    /// The first line the tree writes to stdout.
    fn first_line(&mut self) -> String {
        let out = self.child.stdout.take().expect("stdout piped");
        let mut line = String::new();
        BufReader::new(out).read_line(&mut line).expect("a line");
        line.trim().to_owned()
    }

    fn kill(&mut self) {
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.child.id())])
            .stderr(Stdio::null())
            .status();
        let _ = self.child.wait();
    }
}

impl Drop for Tree {
    fn drop(&mut self) {
        self.kill();
    }
}

async fn one(sampler: &Arc<dyn ResourceSampler>, tree: &Tree) -> ResourceUsage {
    let mut got = sampler.sample(vec![tree.target()]).await;
    assert_eq!(got.len(), 1, "one live tree, one answer: {got:?}");
    got.remove(0)
}

/// A sample waits for what the tree is doing to settle: up to 10 s for `ok`.
async fn until(
    sampler: &Arc<dyn ResourceSampler>,
    tree: &Tree,
    what: &str,
    ok: impl Fn(&ResourceUsage) -> bool,
) -> ResourceUsage {
    let mut last = None;
    for _ in 0..100 {
        let u = one(sampler, tree).await;
        if ok(&u) {
            return u;
        }
        last = Some(u);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{what} never showed: last sample {last:?}");
}

/// A tree that has ended, and a pid that never ran, are left out.
pub async fn ended_and_unknown_trees_are_left_out(sampler: Arc<dyn ResourceSampler>) {
    let mut tree = Tree::start("sleep 30");
    let live = one(&sampler, &tree).await;
    assert_eq!(live.id, tree.id);
    assert!(live.processes >= 1, "{live:?}");
    tree.kill();
    // KILL reaches every member at once, but a member other than the
    // leader (which `kill` reaped) may take a moment to be torn down.
    let mut gone = sampler.sample(vec![tree.target()]).await;
    for _ in 0..50 {
        if gone.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        gone = sampler.sample(vec![tree.target()]).await;
    }
    assert!(gone.is_empty(), "a killed tree reads as absent: {gone:?}");
    let never = SampleTarget {
        id: ProcessId::from_uuid(uuid::Uuid::now_v7()),
        pid: u32::MAX - 7,
    };
    assert!(sampler.sample(vec![never]).await.is_empty());
}

/// Answers follow the order of the targets, each naming its record.
pub async fn answers_follow_the_targets(sampler: Arc<dyn ResourceSampler>) {
    let trees: Vec<Tree> = (0..3).map(|_| Tree::start("sleep 30")).collect();
    let got = sampler
        .sample(trees.iter().rev().map(Tree::target).collect())
        .await;
    let ids: Vec<ProcessId> = got.iter().map(|u| u.id).collect();
    let want: Vec<ProcessId> = trees.iter().rev().map(|t| t.id).collect();
    assert_eq!(ids, want);
}

/// A child that holds 100 MB shows in its tree's resident memory.
pub async fn a_childs_memory_counts_toward_its_tree(sampler: Arc<dyn ResourceSampler>) {
    let tree = Tree::start(
        "python3 -c 'import sys, time\nb = bytearray(b\"x\") * (100 << 20)\nprint(\"held\", flush=True)\ntime.sleep(30)' & wait",
    );
    let u = until(&sampler, &tree, "100 MB of resident memory", |u| {
        u.rss_bytes >= 100 << 20
    })
    .await;
    assert!(u.processes >= 2, "sh and python3: {u:?}");
}

/// A busy child's CPU time counts toward its tree, measured between samples.
pub async fn a_childs_cpu_counts_toward_its_tree(sampler: Arc<dyn ResourceSampler>) {
    let tree = Tree::start("(while :; do :; done) & wait");
    let _ = one(&sampler, &tree).await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    // On a loaded machine the busy loop gets less than a core; a fifth of
    // one is far above what an idle `sh` uses.
    let u = until(&sampler, &tree, "a busy child's CPU", |u| {
        u.cpu_percent >= 20.0
    })
    .await;
    assert!(u.cpu_percent <= 100.0 * 64.0, "{u:?}");
    let idle = Tree::start("sleep 30");
    let _ = one(&sampler, &idle).await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    let i = one(&sampler, &idle).await;
    assert!(i.cpu_percent < 5.0, "a sleeping tree is idle: {i:?}");
}

/// A port that a descendant listens on is listed, also when it starts
/// listening after the tree was first sampled.
pub async fn a_listeners_port_is_found(sampler: Arc<dyn ResourceSampler>) {
    let mut tree = Tree::start(
        "sleep 0.3; python3 -c 'import socket, time\ns = socket.socket()\ns.bind((\"127.0.0.1\", 0))\ns.listen()\nprint(s.getsockname()[1], flush=True)\ntime.sleep(30)' & wait",
    );
    assert!(
        one(&sampler, &tree).await.listening_ports.is_empty(),
        "not listening yet"
    );
    let port: u16 = tree.first_line().parse().expect("the port");
    let u = until(&sampler, &tree, "the listening port", |u| {
        u.listening_ports.contains(&port)
    })
    .await;
    assert_eq!(u.listening_ports, vec![port], "{u:?}");
    let quiet = Tree::start("sleep 30");
    assert!(one(&sampler, &quiet).await.listening_ports.is_empty());
}
