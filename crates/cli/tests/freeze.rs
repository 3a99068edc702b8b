//! A whole node paused and thawed, as a stalled hypervisor or a VM pause
//! does: node alpha's daemon, keeper and processes are frozen together
//! (the cgroup freezer where this machine has one, SIGSTOP otherwise,
//! continuing the processes first), long enough for beta to run alpha's
//! `--failover` servers again. Nothing on a frozen machine can act while
//! it is frozen, so the thawed copy may run a moment before its keeper
//! kills it: that window is measured, and writes guarded by
//! `bpm fence check` never come from a check that began after the
//! replacement started.
//!
//! `BPM_FREEZE_TRIALS=20 cargo test -p bpm-cli --test freeze -- --nocapture`
//! prints the window of each trial, its median and its worst.

// Figures for printing: microseconds as f64 lose nothing that matters here.
#![allow(clippy::cast_precision_loss)]

#[path = "support/node.rs"]
mod node;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use bpm_tests::unique_prefix;
use node::{Mark, Node, marks, replacement_of, state, text, until};

/// Bash's clock in µs, as the servers read it.
fn now_us() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_micros()
}

/// How node alpha is frozen.
enum Freezer {
    /// A cgroup v1 freezer group that alpha's daemon was started in.
    Cgroup(PathBuf),
    /// SIGSTOP of each process of alpha's.
    Signals,
}

impl Freezer {
    fn new(prefix: &str) -> Freezer {
        let root = Path::new("/sys/fs/cgroup/freezer");
        let group = root.join(format!("bpm-{prefix}"));
        if root.join("cgroup.procs").exists() && std::fs::create_dir(&group).is_ok() {
            Freezer::Cgroup(group)
        } else {
            eprintln!("no cgroup freezer here: freezing alpha with SIGSTOP, processes first");
            Freezer::Signals
        }
    }

    /// Starts alpha's daemon (and so its keeper and processes) inside the
    /// freezer's group.
    fn start(&self, alpha: &Node) {
        let out = match self {
            Freezer::Cgroup(group) => Command::new("sh")
                .arg("-c")
                .arg(format!(
                    "echo $$ > {}/cgroup.procs && exec \"$0\" ps",
                    group.display()
                ))
                .arg(env!("CARGO_BIN_EXE_bpm"))
                .env("BPM_HOME", alpha.home())
                .env_remove("BPM_NODE")
                .output()
                .expect("sh runs"),
            Freezer::Signals => alpha.bpm(&["ps"]),
        };
        assert!(out.status.success(), "{}", text(&out));
    }

    /// Every pid of alpha's: its daemon, its keeper, and its processes
    /// (leaders first, daemon and keeper last).
    fn pids(alpha: &Node, leaders: &[String]) -> Vec<String> {
        let mut pids: Vec<String> = leaders.to_vec();
        for leader in leaders {
            let children =
                std::fs::read_to_string(format!("/proc/{leader}/task/{leader}/children"))
                    .unwrap_or_default();
            pids.extend(children.split_whitespace().map(str::to_owned));
        }
        let (daemon, keeper) = alpha.daemon_and_keeper();
        pids.push(daemon);
        pids.push(keeper);
        pids
    }

    fn freeze(&self, pids: &[String]) {
        match self {
            Freezer::Cgroup(group) => {
                std::fs::write(group.join("freezer.state"), "FROZEN").expect("freeze");
                let deadline = Instant::now() + Duration::from_secs(5);
                while std::fs::read_to_string(group.join("freezer.state"))
                    .unwrap_or_default()
                    .trim()
                    != "FROZEN"
                {
                    assert!(Instant::now() < deadline, "the group never froze");
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
            Freezer::Signals => node::kill(
                "-STOP",
                &pids.iter().map(String::as_str).collect::<Vec<_>>(),
            ),
        }
    }

    fn thaw(&self, pids: &[String]) {
        match self {
            Freezer::Cgroup(group) => {
                std::fs::write(group.join("freezer.state"), "THAWED").expect("thaw");
            }
            // The processes first: the worst order for bpm.
            Freezer::Signals => {
                for pid in pids {
                    let _ = Command::new("kill").args(["-CONT", pid]).status();
                }
            }
        }
    }
}

impl Drop for Freezer {
    fn drop(&mut self) {
        if let Freezer::Cgroup(group) = self {
            let _ = std::fs::write(group.join("freezer.state"), "THAWED");
            // Whatever is left in it moves to the root group, so it can go.
            if let Ok(pids) = std::fs::read_to_string(group.join("cgroup.procs")) {
                for pid in pids.lines() {
                    let _ = std::fs::write("/sys/fs/cgroup/freezer/cgroup.procs", pid);
                }
            }
            let _ = std::fs::remove_dir(group);
        }
    }
}

/// What one trial saw: how long after the thaw the stale unguarded copy
/// still wrote (µs; 0 if it never did), and how long its replacement had
/// been running by the thaw.
struct Trial {
    stale_us: u128,
    replacement_ran_us: u128,
}

fn trial() -> Trial {
    let prefix = unique_prefix();
    let more = "lost_after = \"120s\"\n";
    let alpha = Node::with("alpha", &prefix, more);
    let beta = Node::with("beta", &prefix, more);
    let freezer = Freezer::new(&prefix);
    freezer.start(&alpha);
    beta.ok(&["ps"]);
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("lines");
    let (unguarded, guarded) = servers(&alpha, &beta, &path);
    let run = |line: &str| {
        alpha
            .ok(&[
                "run",
                "--failover",
                "--restart",
                "always",
                "--grace",
                "1",
                "--",
                "bash",
                "-c",
                line,
            ])
            .trim()
            .to_owned()
    };
    let writer = run(&unguarded);
    let checker = run(&guarded);
    let mut leaders = Vec::new();
    for id in [&writer, &checker] {
        let (record, _) = until(&beta, id, Duration::from_secs(10), |r| {
            state(r) == "running"
        });
        leaders.push(record["pid"].to_string());
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while !marks(&path).iter().any(|l| l.what == "g") {
        assert!(Instant::now() < deadline, "the guarded server never wrote");
        std::thread::sleep(Duration::from_millis(20));
    }

    let pids = Freezer::pids(&alpha, &leaders);
    freezer.freeze(&pids);
    // Beta gives both up and runs their replacements.
    let mut replacements = Vec::new();
    for id in [&writer, &checker] {
        let (given_up, _) = until(&beta, id, Duration::from_secs(30), |r| state(r) == "lost");
        replacements.push(replacement_of(&given_up));
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let seen = marks(&path);
        if replacements.iter().all(|r| seen.iter().any(|l| &l.id == r)) {
            break;
        }
        assert!(Instant::now() < deadline, "the replacements never wrote");
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(300));
    let thawed_at = now_us();
    freezer.thaw(&pids);
    std::thread::sleep(Duration::from_secs(3));

    let seen = marks(&path);
    let first_of = |id: &str| {
        seen.iter()
            .filter(|l| l.id == id)
            .map(|l| l.at)
            .min()
            .unwrap_or_else(|| panic!("{id} never wrote"))
    };
    let last_of = |id: &str| seen.iter().filter(|l| l.id == id).map(|l| l.at).max();
    // Guarded: no check that began after the replacement's first write
    // passed.
    let replaced_at = first_of(&replacements[1]);
    let late: Vec<&Mark> = seen
        .iter()
        .filter(|l| l.id == checker && l.at >= replaced_at)
        .collect();
    assert!(
        late.is_empty(),
        "guarded writes of the stale copy: {late:?}"
    );
    assert!(
        seen.iter()
            .any(|l| l.what == "g" && l.id == replacements[1] && l.node == "beta"),
        "the replacement's guarded writes pass"
    );
    // Unguarded: the stale copy ends; how long after the thaw it wrote.
    let stale = last_of(&writer).map_or(0, |last| last.saturating_sub(thawed_at));
    assert!(
        last_of(&writer).is_none_or(|last| last < thawed_at + 2_000_000),
        "the stale copy still wrote 2 s after the thaw"
    );
    for id in [&writer, &checker] {
        let record = alpha.show(id);
        assert_eq!(state(&record), "lost", "{record}");
    }
    let ran = thawed_at.saturating_sub(first_of(&replacements[0]));
    for id in &replacements {
        beta.ok(&["stop", id]);
    }
    Trial {
        stale_us: stale,
        replacement_ran_us: ran,
    }
}

/// Two servers' command lines, writing a line to `path` every 2 ms: one
/// that writes unguarded, one that writes only while `bpm fence check`
/// passes on its own node's daemon.
fn servers(alpha: &Node, beta: &Node, path: &std::path::Path) -> (String, String) {
    let exe = env!("CARGO_BIN_EXE_bpm");
    // Each node's processes ask their own node's daemon.
    let home = format!(
        "case $BPM_NODE in alpha) h={};; *) h={};; esac",
        alpha.home().display(),
        beta.home().display()
    );
    let unguarded = format!(
        "while true; do echo \"w ${{EPOCHREALTIME/./}} $BPM_NODE $BPM_PROCESS_ID\" >> {p}; sleep 0.002; done",
        p = path.display()
    );
    let guarded = format!(
        "{home}; while true; do t=${{EPOCHREALTIME/./}}; \
         if BPM_HOME=$h {exe} fence check 2>/dev/null; then echo \"g $t $BPM_NODE $BPM_PROCESS_ID\" >> {p}; fi; \
         sleep 0.002; done",
        p = path.display()
    );
    (unguarded, guarded)
}

#[test]
fn a_thawed_node_kills_its_stale_copies_and_guarded_writes_never_overlap() {
    let trials: usize = std::env::var("BPM_FREEZE_TRIALS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(1);
    let mut windows = Vec::new();
    for n in 1..=trials {
        let t = trial();
        println!(
            "trial {n}: the stale copy wrote {:.2} ms after the thaw; its replacement had run {:.2} s",
            t.stale_us as f64 / 1e3,
            t.replacement_ran_us as f64 / 1e6
        );
        windows.push(t.stale_us);
    }
    windows.sort_unstable();
    println!(
        "stale window after a thaw over {trials} trials: median {:.2} ms, worst {:.2} ms",
        windows[windows.len() / 2] as f64 / 1e3,
        windows[windows.len() - 1] as f64 / 1e3
    );
}
