//! The keeper: what it adopts, what survives its `kill -9` (alone or
//! with the daemon), and the usage it counts.

// Scenario tests name their processes a, b, c...
#![allow(clippy::many_single_char_names)]

use std::process::Command;
use std::time::{Duration, Instant};

mod support;
use support::bpm::{Bpm, alive};
#[allow(clippy::wildcard_imports)]
use support::cli::*;

/// The usage `bpm show` gives counts every process of a tree: one that
/// left it (its parent ended, and bpm's keeper took it in) while the
/// daemon reads only what runs under the keeper; and, once daemon and
/// keeper died and a new daemon adopted the tree from init, both again,
/// through a scan of the whole machine.
#[test]
fn usage_counts_what_left_a_tree_under_the_keeper_and_after_adoption() {
    let bpm = Bpm::new();
    let id = bpm.ok(&[
        "run",
        "--shell",
        "--",
        "(setsid sleep 300 &); exec sleep 301",
    ]);
    let id = id.trim();
    bpm.until_state(id, "running");
    until_usage(&bpm, id, "(2 processes)", "under the keeper");
    let leader = u32::try_from(
        bpm.json(&["show", id, "--json"])["pid"]
            .as_u64()
            .expect("pid"),
    )
    .expect("pid");
    let (daemon, keeper) = (bpm.daemon_pid(), bpm.keeper_pid());
    let parent = std::fs::read_to_string(format!("/proc/{leader}/stat")).expect("stat");
    let ppid = parent[parent.rfind(')').expect(")") + 4..]
        .split(' ')
        .next()
        .and_then(|p| p.parse::<u32>().ok());
    assert_eq!(ppid, Some(keeper), "the leader runs under the keeper");
    assert!(
        Command::new("kill")
            .args(["-9", &daemon.to_string(), &keeper.to_string()])
            .status()
            .expect("kill")
            .success()
    );
    while alive(daemon) || alive(keeper) {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(alive(leader));
    // Any command brings a daemon back, which adopts the tree.
    bpm.until_state(id, "running");
    until_usage(&bpm, id, "(2 processes)", "adopted");
    bpm.ok(&["stop", id]);
    until_gone(leader, "a stop after the adoption");
}

/// kill -9 of the keeper while a record's leader is gone and its tree runs
/// on: the next keeper adopts what runs on through the record's mark, so
/// the record stays live and a stop still reaches it.
#[test]
fn what_a_leader_left_running_is_adopted_when_the_keeper_dies() {
    let bpm = Bpm::new();
    let id = bpm.ok(&["run", "--", "sh", "-c", "sleep 300 & exit 0"]);
    let id = id.trim();
    let (_, sleeper) = leader_gone(&bpm, id, "sleep");
    let keeper = bpm.keeper_pid();
    assert!(
        Command::new("kill")
            .args(["-9", &keeper.to_string()])
            .status()
            .expect("kill")
            .success()
    );
    until_gone(keeper, "kill -9 of the keeper");
    let deadline = Instant::now() + Duration::from_secs(15);
    while bpm.keeper_pid() == keeper {
        assert!(Instant::now() < deadline, "no new keeper");
        std::thread::sleep(Duration::from_millis(50));
    }
    // Given time to be wrongly ended, it is not.
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(bpm.state(id), "running");
    assert!(alive(sleeper));
    bpm.ok(&["stop", id]);
    until_gone(sleeper, "a stop after the keeper's death");
    // Stopped on request; its leader's code died with the keeper.
    bpm.until_state(id, "cancelled");
    let v = bpm.json(&["show", id, "--json"]);
    let error = v["error"].as_str().expect("a reason");
    assert!(error.contains("exit code is unknown"), "{v}");
}

/// kill -9 of the keeper: a new keeper takes over at once, new runs work,
/// every process still running stays running and under control (stop
/// reaches it), queued starts go on, and a process that ends meanwhile is
/// reported with its real exit code: the daemon, a child subreaper,
/// inherited it. The status and the log say what happened.
#[test]
fn a_keeper_killed_with_sigkill_is_replaced_and_its_processes_stay_under_control() {
    let bpm = Bpm::new();
    std::fs::write(
        bpm.home().join("config.toml"),
        "[limits]\nmax_running = 3\n",
    )
    .expect("config");
    // It writes all along: its pipes must outlive the keeper, or it dies of SIGPIPE.
    let lives = bpm.ok(&[
        "run",
        "--name",
        "lives",
        "--shell",
        "--",
        "while true; do echo tick; sleep 0.05; done",
    ]);
    let ends = bpm.ok(&["run", "--name", "ends", "--shell", "--", "sleep 1; exit 3"]);
    let held = bpm.ok(&["run", "--name", "held", "--", "sleep", "30"]);
    // Queued behind the three: some are handed to the keeper to start on exits.
    let runs = bpm.home().join("runs.log");
    let line = format!("echo \"$BPM_PROCESS_ID\" >> '{}'", runs.display());
    let queued: Vec<String> = (0..4)
        .map(|i| {
            bpm.ok(&["run", "--name", &format!("q{i}"), "--shell", "--", &line])
                .trim()
                .to_string()
        })
        .collect();
    for id in [&lives, &ends, &held] {
        bpm.until_state(id.trim(), "running");
    }
    let pid = bpm.json(&["show", "lives", "--json"])["pid"]
        .as_u64()
        .expect("pid");
    let keeper = bpm.keeper_pid();
    Command::new("kill")
        .args(["-9", &keeper.to_string()])
        .status()
        .expect("kill");
    until_gone(keeper, "the keeper survived kill -9");
    let started = Instant::now();
    let out = bpm.run(&["run", "--wait", "--", "sh", "-c", "echo hi"]);
    assert!(
        out.status.success(),
        "a run after the keeper died: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
    let status = bpm.ok(&["daemon", "status"]);
    assert_ne!(bpm.keeper_pid(), keeper, "{status}");
    assert!(
        status.contains(&format!("warning  bpm's keeper (pid {keeper}) died")),
        "{status}"
    );
    let log = std::fs::read_to_string(bpm.home().join("daemon.log")).expect("log");
    assert!(log.contains("bpm's keeper died"), "{log}");
    // Still running, with its pid, its output still captured, and under control.
    let shown = bpm.json(&["show", "lives", "--json"]);
    assert_eq!(shown["state"], "running", "{shown}");
    assert_eq!(shown["pid"].as_u64(), Some(pid));
    let before = bpm.ok(&["logs", "lives"]).lines().count();
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        bpm.ok(&["logs", "lives"]).lines().count() > before + 3,
        "its output is no longer captured"
    );
    // The one that ends meanwhile: its own exit code, which the daemon
    // reaped once the dead keeper's children became its own.
    let deadline = Instant::now() + Duration::from_secs(10);
    while bpm.state(ends.trim()) == "running" {
        assert!(Instant::now() < deadline, "its end was never noticed");
        std::thread::sleep(Duration::from_millis(50));
    }
    let ended = bpm.json(&["show", "ends", "--json"]);
    assert_eq!(ended["state"], "failed", "{ended}");
    assert_eq!(ended["exit_code"], 3, "{ended}");
    assert!(
        status.contains("exit codes come from the daemon"),
        "{status}"
    );
    // Its slot freed, the queue goes on, each once.
    bpm.ok(&["wait", &queued[0], &queued[1], &queued[2], &queued[3]]);
    let mut ran: Vec<String> = std::fs::read_to_string(&runs)
        .expect("runs")
        .lines()
        .map(str::to_string)
        .collect();
    ran.sort();
    let mut expected = queued.clone();
    expected.sort();
    assert_eq!(ran, expected, "each queued record ran exactly once");
    for id in &queued {
        assert_eq!(bpm.state(id), "completed");
    }
    assert!(bpm.ok(&["stop", "lives"]).contains("cancelled"));
    until_gone(
        u32::try_from(pid).expect("pid"),
        "stop did not reach the adopted process",
    );
    bpm.ok(&["stop", "held"]);
}

/// A daemon that restarted (kill -9) gets the pipes of the processes the
/// keeper runs, so they also outlive a keeper killed afterwards.
#[test]
fn pipes_reach_a_restarted_daemon_and_outlive_the_keeper_after_it() {
    let bpm = Bpm::new();
    let id = bpm.ok(&[
        "run",
        "--shell",
        "--",
        "while true; do echo tick; sleep 0.05; done",
    ]);
    let id = id.trim();
    bpm.until_state(id, "running");
    let daemon = bpm.daemon_pid();
    Command::new("kill")
        .args(["-9", &daemon.to_string()])
        .status()
        .expect("kill");
    until_gone(daemon, "kill -9");
    assert_eq!(bpm.state(id), "running");
    let keeper = bpm.keeper_pid();
    Command::new("kill")
        .args(["-9", &keeper.to_string()])
        .status()
        .expect("kill");
    until_gone(keeper, "kill -9");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(bpm.state(id), "running", "it died with the keeper");
    // Its output goes on being captured: what it writes while no keeper
    // reads waits in the pipe, and the next keeper reads on (on a loaded
    // machine that keeper may take a while to come).
    let before = bpm.ok(&["logs", id]).lines().count();
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while bpm.ok(&["logs", id]).lines().count() <= before + 3 {
        assert!(
            std::time::Instant::now() < deadline,
            "its output is no longer captured"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(bpm.ok(&["stop", id]).contains("cancelled"));
}

/// A keeper left with an exit no daemon took, and nothing running, does not
/// wait for ever: it writes the exit down and leaves, and the next daemon
/// still learns the real exit code.
#[test]
fn a_keeper_without_a_daemon_keeps_the_exits_and_leaves() {
    let bpm = Bpm::new();
    let run = |args: &[&str]| {
        let out = bpm
            .cmd(args)
            .env("BPM_KEEPER_IDLE_MS", "300")
            .output()
            .expect("bpm runs");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let id = run(&["run", "--", "sh", "-c", "sleep 0.5; exit 7"]);
    let id = id.trim();
    let keeper = bpm.keeper_pid();
    run(&["daemon", "stop"]);
    until_gone(keeper, "the keeper never left");
    let kept = std::fs::read_to_string(bpm.home().join("keeper.exits")).expect("kept exits");
    assert!(kept.contains(id), "{kept}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while bpm.state(id) == "running" {
        assert!(Instant::now() < deadline, "the kept exit never arrived");
        std::thread::sleep(Duration::from_millis(50));
    }
    let shown = bpm.json(&["show", id, "--json"]);
    assert_eq!(shown["state"], "failed", "{shown}");
    assert_eq!(shown["exit_code"], 7, "{shown}");
}

/// A record handed over to the keeper, which the keeper started just
/// before it was killed (so it never said so), is adopted by the next
/// keeper: it runs, and is never given back to the queue to run twice.
/// (`tests/campaigns/keeper_kill.py` found such a task run twice.) The
/// start the dead keeper made is stood in for by a process carrying the
/// record's mark, with its line in the start log.
#[test]
fn a_handed_record_the_dead_keeper_started_is_adopted_not_run_twice() {
    let bpm = Bpm::new();
    std::fs::write(
        bpm.home().join("config.toml"),
        "[limits]\nmax_running = 1\n",
    )
    .expect("config");
    let busy = bpm.ok(&["run", "--", "sleep", "30"]);
    let busy = busy.trim();
    bpm.until_state(busy, "running");
    let ran = bpm.home().join("ran");
    let queued = bpm.ok(&[
        "run",
        "--shell",
        "--",
        &format!("echo ran >> '{}'; sleep 30", ran.display()),
    ]);
    let queued = queued.trim();
    // Every slot is taken: the engine hands it to the keeper at once,
    // before it answers the next request.
    assert_eq!(bpm.state(queued), "pending");
    let mut stand_in = Command::new("sleep")
        .arg("30")
        .env("BPM_PROCESS_ID", queued)
        .spawn()
        .expect("sleep");
    {
        use std::io::Write as _;
        let mut log = std::fs::OpenOptions::new()
            .append(true)
            .open(bpm.home().join("keeper.starts"))
            .expect("the keeper's start log");
        write!(log, "{queued}\n{queued} {}\n", stand_in.id()).expect("write");
    }
    let keeper = bpm.keeper_pid();
    Command::new("kill")
        .args(["-9", &keeper.to_string()])
        .status()
        .expect("kill");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let shown = bpm.json(&["show", queued, "--json"]);
        if shown["state"] == "running" {
            assert_eq!(shown["pid"], stand_in.id(), "{shown}");
            break;
        }
        assert_eq!(shown["state"], "pending", "{shown}");
        assert!(Instant::now() < deadline, "never adopted: {shown}");
        std::thread::sleep(Duration::from_millis(50));
    }
    // Its slot freed, the busy one's end starts nothing twice.
    bpm.ok(&["stop", busy]);
    bpm.until_state(busy, "cancelled");
    std::thread::sleep(Duration::from_millis(500));
    assert!(!ran.exists(), "the record ran a second time");
    assert_eq!(bpm.state(queued), "running");
    // And it stays under control: stop reaches the process.
    bpm.ok(&["stop", queued]);
    let status = stand_in.wait().expect("wait");
    assert!(status.code().is_none(), "ended by a signal: {status}");
}

/// kill -9 of the daemon and the keeper together: the next daemon tells the
/// truth about every record (running only while its process runs, and an
/// end it could not see says so), and what still runs stays under control.
#[test]
fn daemon_and_keeper_killed_together_leave_honest_records_and_no_orphan() {
    let bpm = Bpm::new();
    let quiet = bpm.ok(&["run", "--name", "quiet", "--", "sleep", "30"]);
    let ends = bpm.ok(&[
        "run",
        "--name",
        "ends",
        "--",
        "sh",
        "-c",
        "sleep 0.5; exit 4",
    ]);
    // Writes a line every 20 ms for 6 s: before, the first line after the
    // kill ended it with SIGPIPE, since no bpm process held its pipe.
    let writes = bpm.ok(&[
        "run",
        "--name",
        "writes",
        "--",
        "sh",
        "-c",
        "i=0; while [ $i -lt 300 ]; do echo tick $i; i=$((i+1)); sleep 0.02; done",
    ]);
    let (quiet, ends, writes) = (quiet.trim(), ends.trim(), writes.trim());
    bpm.until_state(quiet, "running");
    bpm.until_state(ends, "running");
    bpm.until_state(writes, "running");
    let pid_of = |id: &str| {
        bpm.json(&["show", id, "--json"])["pid"]
            .as_u64()
            .and_then(|p| u32::try_from(p).ok())
            .expect("pid")
    };
    let (pid, writer) = (pid_of(quiet), pid_of(writes));
    let (daemon, keeper) = (bpm.daemon_pid(), bpm.keeper_pid());
    Command::new("kill")
        .args(["-9", &daemon.to_string(), &keeper.to_string()])
        .status()
        .expect("kill");
    while alive(daemon) || alive(keeper) {
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(700));
    let deadline = Instant::now() + Duration::from_secs(10);
    while bpm.state(ends) == "running" {
        assert!(Instant::now() < deadline, "its end was never noticed");
        std::thread::sleep(Duration::from_millis(50));
    }
    let ended = bpm.json(&["show", ends, "--json"]);
    assert_eq!(ended["state"], "lost", "{ended}");
    assert!(
        ended["exit_code"].is_null(),
        "no made-up exit code: {ended}"
    );
    assert_eq!(bpm.state(quiet), "running");
    assert!(alive(pid));
    assert!(alive(writer), "the writer died with bpm");
    // The new keeper reads its pipe on: every line reaches its log, those
    // written while no bpm process ran included, but for the one read the
    // dead keeper may have taken from the pipe and not yet stored (under a
    // heavy load, a line or a few: see ARCHITECTURE.md).
    until_gone(writer, "the writer never ended");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let logs = bpm.ok(&["logs", writes]);
        let ticks: Vec<usize> = logs
            .lines()
            .map(|l| {
                l.strip_prefix("tick ")
                    .and_then(|n| n.parse().ok())
                    .unwrap_or_else(|| panic!("a line that was never written: {l:?}"))
            })
            .collect();
        // In order, none twice, and at most one run missing.
        assert!(ticks.windows(2).all(|w| w[0] < w[1]), "{logs}");
        let gaps = ticks.windows(2).filter(|w| w[1] != w[0] + 1).count()
            + usize::from(ticks.first().is_some_and(|t| *t != 0));
        assert!(
            gaps <= 1,
            "more than the one read in flight is missing: {logs}"
        );
        if ticks.last() == Some(&299) {
            break;
        }
        assert!(Instant::now() < deadline, "logs: {logs}");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(bpm.ok(&["stop", quiet]).contains("cancelled"));
    until_gone(pid, "stop did not reach it");
}
