//! The real `bpm` binary in a temporary `BPM_HOME`: every command, its JSON,
//! its errors and exit codes; the daemon's auto-start race, permissions and
//! protocol robustness; and surviving `kill -9` of the daemon.

// Scenario tests name their processes a, b, c...
#![allow(clippy::many_single_char_names)]

use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod support;
use support::bpm::{Bpm, alive, cgroups_of};

#[test]
fn run_ps_show_logs_wait_stop_and_rm() {
    let bpm = Bpm::new();
    let id = bpm.ok(&[
        "run",
        "--name",
        "web",
        "--label",
        "team=core",
        "--session",
        "s1",
        "--",
        "sh",
        "-c",
        "echo hello; sleep 0.1; echo oops >&2; sleep 30",
    ]);
    let id = id.trim();
    assert_eq!(id.len(), 36, "run prints the id alone: {id:?}");
    bpm.until_state(id, "running");
    let table = bpm.ok(&["ps"]);
    assert!(
        table.lines().next().expect("header").starts_with("ID"),
        "{table}"
    );
    assert!(
        table.contains("web") && table.contains("running") && table.contains("s1"),
        "{table}"
    );
    assert!(
        table.lines().all(|l| l.chars().count() <= 80),
        "fits 80 columns:\n{table}"
    );
    let listed = bpm.json(&["ps", "--json", "--label", "team=core"]);
    let rec = &listed.as_array().expect("array")[0];
    for field in [
        "id",
        "name",
        "kind",
        "state",
        "pid",
        "exit_code",
        "signal",
        "session",
        "node",
        "parent",
        "group",
        "progress",
        "created_at",
        "started_at",
        "ended_at",
        "error",
        "restarted_from",
        "labels",
        "metadata",
    ] {
        assert!(rec.get(field).is_some(), "ps --json lacks {field}: {rec}");
    }
    assert_eq!(rec["state"], "running");
    assert!(
        bpm.json(&["ps", "--json", "--session", "other"])
            .as_array()
            .expect("array")
            .is_empty()
    );
    // A reader that stops early (`| head -1`) is not a failure.
    let mut early = bpm
        .cmd(&["ps", "--all", "--json"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn");
    drop(early.stdout.take());
    assert!(early.wait().expect("wait").success());
    let short = &id[id.len() - 8..];
    assert!(bpm.ok(&["show", short]).contains("state         running"));
    let deadline = Instant::now() + Duration::from_secs(10);
    while !bpm.ok(&["logs", "web"]).contains("oops") {
        assert!(Instant::now() < deadline, "output never arrived");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(bpm.ok(&["logs", "web", "--stream", "stdout"]), "hello\n");
    assert_eq!(bpm.ok(&["logs", "web", "-n", "1"]), "oops\n");
    assert_eq!(bpm.ok(&["logs", "web", "--since", "6"]), "oops\n");
    let stopped = bpm.ok(&["stop", "web"]);
    assert!(stopped.contains("cancelled"), "{stopped}");
    assert!(
        bpm.ok(&["ps"]).lines().count() == 1,
        "only the header once nothing runs"
    );
    assert!(bpm.ok(&["ps", "--all"]).contains("cancelled"));
    bpm.ok(&["rm", "web"]);
    bpm.fails(&["show", id], 3);
}

#[test]
fn wait_exits_with_the_process_code_and_124_on_timeout() {
    let bpm = Bpm::new();
    let id = bpm.ok(&["run", "--", "sh", "-c", "exit 3"]);
    let out = bpm.run(&["wait", id.trim()]);
    assert_eq!(out.status.code(), Some(3));
    let sleeper = bpm.ok(&["run", "--", "sleep", "30"]);
    let err = bpm.fails(&["wait", sleeper.trim(), "--timeout", "0.3"], 124);
    assert!(err.contains("timed out"), "{err}");
    // Several ids: done once all have ended, whatever their codes; the
    // timeout bounds the whole wait and names one still running.
    let short = bpm.ok(&["run", "--", "sleep", "0.3"]);
    bpm.ok(&["wait", id.trim(), short.trim()]);
    assert_eq!(
        bpm.json(&["show", short.trim(), "--json"])["state"],
        "completed"
    );
    let err = bpm.fails(
        &["wait", id.trim(), sleeper.trim(), "--timeout", "0.3"],
        124,
    );
    assert!(err.contains(sleeper.trim()), "{err}");
    bpm.fails(&["wait", id.trim(), "no-such-process"], 3);
    let out = bpm
        .cmd(&[
            "run",
            "--wait",
            "--",
            "sh",
            "-c",
            "echo to-out; echo to-err >&2; exit 9",
        ])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(9));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "to-out\n");
    assert_eq!(String::from_utf8_lossy(&out.stderr), "to-err\n");
    let killed = bpm
        .cmd(&["run", "--wait", "--shell", "--", "kill -9 $$"])
        .output()
        .expect("run");
    assert_eq!(killed.status.code(), Some(137));
}

#[test]
fn options_reach_the_record() {
    let bpm = Bpm::new();
    let dir = bpm.home().join("work");
    std::fs::create_dir(&dir).expect("dir");
    let id = bpm.ok(&[
        "run",
        "--name",
        "build",
        "--kind",
        "build",
        "--group",
        "g1",
        "--cwd",
        dir.to_str().expect("utf-8"),
        "--env",
        "GREETING=hi",
        "--timeout",
        "1m",
        "--grace",
        "2s",
        "--restart",
        "on-failure",
        "--max-restarts",
        "2",
        "--priority",
        "5",
        "--metadata",
        "{\"ticket\": 42}",
        "--json",
        "--",
        "sh",
        "-c",
        "echo $GREETING from $(pwd)",
    ]);
    let r: serde_json::Value = serde_json::from_str(&id).expect("--json prints the record");
    let id = r["id"].as_str().expect("id").to_owned();
    bpm.ok(&["wait", &id]);
    let text = bpm.ok(&["logs", &id]);
    assert_eq!(text, format!("hi from {}\n", dir.display()));
    let spec = &bpm.json(&["show", &id, "--json"])["spec"];
    assert_eq!(spec["kind"], "build");
    assert_eq!(spec["group"], "g1");
    assert_eq!(spec["timeout"], "1m");
    assert_eq!(spec["stop"]["grace"], "2s");
    assert_eq!(spec["restart"]["mode"], "on_failure");
    assert_eq!(spec["priority"], 5);
    assert_eq!(spec["metadata"]["ticket"], 42);
    // The caller's environment reaches the process, unless --clean-env.
    let out = bpm
        .cmd(&["run", "--wait", "--shell", "--", "echo \"[$CALLER_ONLY]\""])
        .env("CALLER_ONLY", "from the shell")
        .output()
        .expect("run");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "[from the shell]\n");
    let out = bpm
        .cmd(&[
            "run",
            "--wait",
            "--clean-env",
            "--shell",
            "--",
            "echo \"[$CALLER_ONLY]\"",
        ])
        .env("CALLER_ONLY", "x")
        .output()
        .expect("run");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "[]\n");
    // --after: the second starts only when the first completed.
    let first = bpm.ok(&["run", "--", "sleep", "0.5"]);
    let second = bpm.ok(&["run", "--after", first.trim(), "--", "true"]);
    assert_eq!(bpm.state(second.trim()), "pending");
    bpm.ok(&["wait", second.trim()]);
    // --delay and --ready-pattern.
    let delayed = bpm.ok(&["run", "--delay", "30s", "--", "true"]);
    assert_eq!(bpm.state(delayed.trim()), "pending");
    let ready = bpm.ok(&[
        "run",
        "--ready-pattern",
        "^up$",
        "--",
        "sh",
        "-c",
        "echo up; sleep 30",
    ]);
    let deadline = Instant::now() + Duration::from_secs(10);
    while bpm.json(&["show", ready.trim(), "--json"])["ready_at"].is_null() {
        assert!(Instant::now() < deadline, "never ready");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn pause_resume_restart_and_hierarchies() {
    let bpm = Bpm::new();
    let parent = bpm.ok(&["run", "--name", "parent", "--", "sleep", "30"]);
    let child = bpm.ok(&[
        "run", "--parent", "parent", "--name", "child", "--", "sleep", "30",
    ]);
    bpm.until_state(child.trim(), "running");
    assert!(bpm.ok(&["pause", "child"]).contains("paused"));
    assert!(bpm.ok(&["resume", "child"]).contains("running"));
    let tree = bpm.ok(&["ps", "--tree"]);
    assert!(tree.contains("└─ child"), "{tree}");
    let level1 = bpm.json(&["ps", "--json", "--level", "1"]);
    assert_eq!(level1.as_array().expect("array").len(), 1);
    let new = bpm.ok(&["restart", "child"]);
    let new = new.trim();
    bpm.until_state(new, "running");
    assert_eq!(
        bpm.json(&["show", new, "--json"])["restarted_from"],
        child.trim()
    );
    bpm.ok(&["stop", "--level", "0"]);
    assert_eq!(bpm.state(parent.trim()), "cancelled");
    assert_eq!(
        bpm.state(new),
        "cancelled",
        "stopping a parent stops its children"
    );
}

#[test]
fn tracked_operations_from_the_command_line() {
    let bpm = Bpm::new();
    let id = bpm.ok(&["track", "migrate db", "--session", "s9"]);
    let id = id.trim();
    bpm.ok(&["progress", id, "40", "copying"]);
    let r = bpm.json(&["show", id, "--json"]);
    assert_eq!(r["progress"]["percent"], 40);
    bpm.ok(&["complete", id, "--result", "{\"rows\": 7}"]);
    let r = bpm.json(&["show", id, "--json"]);
    assert_eq!(r["state"], "completed");
    assert_eq!(r["result"]["rows"], 7);
    let again = bpm.run(&["complete", id]);
    assert!(again.status.success(), "completing twice is harmless");
    assert!(String::from_utf8_lossy(&again.stderr).contains("nothing changed"));
    let other = bpm.ok(&["track", "other"]);
    bpm.ok(&["fail", other.trim(), "disk full"]);
    assert_eq!(
        bpm.json(&["show", other.trim(), "--json"])["error"],
        "disk full"
    );
    // A child reports about itself through BPM_PROCESS_ID.
    let script = format!(
        "{} progress \"$BPM_PROCESS_ID\" 70 halfway && echo ok",
        env!("CARGO_BIN_EXE_bpm")
    );
    let child = bpm.ok(&["run", "--wait", "--shell", "--", &script]);
    assert_eq!(child, "ok\n");
}

#[test]
fn bad_input_gets_clear_errors_and_exit_codes() {
    let bpm = Bpm::new();
    let err = bpm.fails(&["show", "nothing-like-this"], 3);
    assert!(
        err.contains("no process matches \"nothing-like-this\""),
        "{err}"
    );
    bpm.ok(&["run", "--name", "a", "--", "true"]);
    bpm.ok(&["run", "--name", "b", "--", "true"]);
    let err = bpm.fails(&["show", "01"], 4);
    assert!(
        err.contains("is ambiguous") && err.lines().count() >= 3,
        "{err}"
    );
    let err = bpm.fails(&["run", "--timeout", "ten seconds", "--", "true"], 4);
    assert!(err.contains("invalid duration \"ten seconds\""), "{err}");
    let err = bpm.fails(&["run", "--timeout", "0s", "--", "true"], 4);
    assert!(err.contains("invalid timeout 0"), "{err}");
    let err = bpm.fails(&["run", "--cwd", "/no/such/dir", "--", "true"], 4);
    assert!(
        err.contains("working directory not found: /no/such/dir"),
        "{err}"
    );
    let file = bpm.home().join("a-file");
    std::fs::write(&file, "").expect("file");
    let err = bpm.fails(
        &["run", "--cwd", file.to_str().expect("utf-8"), "--", "true"],
        4,
    );
    assert!(
        err.contains(&format!(
            "working directory is not a directory: {}",
            file.display()
        )),
        "{err}"
    );
    let err = bpm.fails(&["run", "--ready-pattern", "(", "--", "true"], 4);
    assert!(err.contains("invalid regex"), "{err}");
    bpm.fails(&["run"], 2);
    let err = bpm.fails(&["run", "--", ""], 4);
    assert!(err.contains("missing command"), "{err}");
    let err = bpm.fails(&["stop"], 4);
    assert!(err.contains("no process given"), "{err}");
    let err = bpm.fails(&["progress", "a", "150"], 4);
    assert!(err.contains("invalid progress 150"), "{err}");
    let err = bpm.fails(&["pause", "a"], 4);
    assert!(err.contains("cannot pause a completed process"), "{err}");
    // An argument that is not UTF-8, first or later: a usage error, not a panic.
    let not_utf8 = <std::ffi::OsString as std::os::unix::ffi::OsStringExt>::from_vec(vec![0xff]);
    for args in [vec![not_utf8.clone()], vec!["show".into(), not_utf8]] {
        let out = bpm.cmd(&[]).args(&args).output().expect("bpm runs");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "bpm {args:?}: {err}");
        assert!(err.contains("Usage:"), "bpm {args:?}: {err}");
    }
}

/// `daemon stop --kill-all` with no daemon running starts one to do it:
/// no process of any record is left behind, whether the keeper still runs
/// them or died with the daemon.
#[test]
fn kill_all_needs_no_running_daemon() {
    for keeper_too in [false, true] {
        let bpm = Bpm::new();
        let a = bpm.ok(&["run", "--", "sleep", "300"]);
        let b = bpm.ok(&["run", "--", "sh", "-c", "sleep 300 & wait"]);
        let mut pids = Vec::new();
        for id in [a.trim(), b.trim()] {
            bpm.until_state(id, "running");
            pids.push(
                bpm.json(&["show", id, "--json"])["pid"]
                    .as_u64()
                    .expect("pid"),
            );
        }
        let status = bpm.ok(&["daemon", "status"]);
        let keeper = status
            .lines()
            .find_map(|l| l.strip_prefix("keeper   pid "))
            .and_then(|l| l.split(' ').next())
            .expect("a keeper")
            .to_owned();
        let mut victims = vec![bpm.daemon_pid().to_string()];
        if keeper_too {
            victims.push(keeper);
        }
        let killed = Command::new("kill")
            .arg("-9")
            .args(&victims)
            .status()
            .expect("kill");
        assert!(killed.success());
        for pid in &victims {
            until_gone(pid.parse().expect("pid"), "kill -9");
        }
        bpm.ok(&["daemon", "stop", "--kill-all"]);
        for pid in pids {
            let pid = u32::try_from(pid).expect("pid");
            until_gone(
                pid,
                &format!("daemon stop --kill-all (keeper killed too: {keeper_too})"),
            );
        }
    }
}

/// The record's JSON once its leader has exited with processes of its tree
/// running on, and the pid of the one named `name` among them.
fn leader_gone(bpm: &Bpm, id: &str, name: &str) -> (serde_json::Value, u32) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let v = bpm.json(&["show", id, "--json"]);
        let found = v["leader_exit"]["running"].as_array().and_then(|running| {
            running
                .iter()
                .find(|r| r["name"] == name)
                .and_then(|r| r["pid"].as_u64())
        });
        if let Some(pid) = found {
            return (v, u32::try_from(pid).expect("pid"));
        }
        assert!(Instant::now() < deadline, "{id}: no {name} runs on: {v}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits (boundedly) until process `pid` is gone; `what` says what
/// should have ended it.
fn until_gone(pid: u32, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while alive(pid) {
        assert!(Instant::now() < deadline, "{what}: {pid} runs on");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A leader that backgrounds its work and exits leaves its record live:
/// it shows the leader's exit and what runs on, `wait` waits for the rest,
/// a stop (and `daemon stop --kill-all`) reaches it, and the record ends
/// with the leader's code when the last of them ends, even one that left
/// the session and closed its output. `--leader-only` ends it with the
/// leader, as before.
#[test]
fn a_command_that_backgrounds_itself_stays_under_control() {
    let bpm = Bpm::new();
    let a = bpm.ok(&["run", "--", "sh", "-c", "sleep 300 & exit 3"]);
    let a = a.trim();
    let (v, sleeper) = leader_gone(&bpm, a, "sleep");
    assert_eq!(v["state"], "running", "{v}");
    assert_eq!(v["leader_exit"]["status"]["code"], 3, "{v}");
    assert!(alive(sleeper));
    let text = bpm.ok(&["show", a]);
    assert!(
        text.contains(&format!(
            "leader exited 3; 1 process runs on: {sleeper} sleep"
        )),
        "{text}"
    );
    let events = bpm.ok(&["events"]);
    assert!(
        events
            .lines()
            .any(|l| l.contains("\"leader_exited\"") && l.contains(a)),
        "{events}"
    );
    bpm.fails(&["wait", a, "--timeout", "0.3"], 124);
    bpm.ok(&["stop", a]);
    until_gone(sleeper, "a stop");
    bpm.until_state(a, "cancelled");

    // Left the session, closed its output: still the record's, and its end
    // is the record's end, with the leader's code.
    let b = bpm.ok(&[
        "run",
        "--",
        "sh",
        "-c",
        "setsid sleep 300 </dev/null >/dev/null 2>&1 & exit 0",
    ]);
    let b = b.trim();
    let (_, daemonized) = leader_gone(&bpm, b, "sleep");
    assert_eq!(bpm.state(b), "running");
    assert!(
        Command::new("kill")
            .arg(daemonized.to_string())
            .status()
            .expect("kill")
            .success()
    );
    bpm.until_state(b, "completed");
    assert_eq!(bpm.json(&["show", b, "--json"])["exit_code"], 0);

    // What `daemon stop --kill-all` stops includes what runs on.
    let c = bpm.ok(&["run", "--", "sh", "-c", "sleep 300 & exit 0"]);
    let (_, rest) = leader_gone(&bpm, c.trim(), "sleep");
    bpm.ok(&["daemon", "stop", "--kill-all"]);
    until_gone(rest, "daemon stop --kill-all");

    // --leader-only: the record ends with its leader; what it started runs on.
    let d = bpm.ok(&[
        "run",
        "--leader-only",
        "--",
        "sh",
        "-c",
        "sleep 300 & echo $!",
    ]);
    let d = d.trim();
    bpm.until_state(d, "completed");
    let left: u32 = bpm
        .ok(&["logs", d])
        .trim()
        .parse()
        .expect("the pid it printed");
    assert!(alive(left), "--leader-only leaves it running");
    assert!(bpm.json(&["show", d, "--json"])["leader_exit"].is_null());
    let _ = Command::new("kill").arg(left.to_string()).status();

    // Started together, each child still in its execve as its leader
    // exits (where its environment reads empty): none slips away.
    let lines = "sh -c 'sleep 300 & exit 3'\n".repeat(10);
    let mut batch = bpm.feed(&["run", "--from", "-"], lines.as_bytes());
    let ids = {
        let mut out = String::new();
        std::io::Read::read_to_string(&mut batch.stdout.take().expect("stdout"), &mut out)
            .expect("ids");
        assert!(batch.wait().expect("batch").success());
        out
    };
    let ids: Vec<&str> = ids.lines().collect();
    assert_eq!(ids.len(), 10);
    let mut left = Vec::new();
    for id in &ids {
        left.push(leader_gone(&bpm, id, "sleep").1);
    }
    let mut stop = vec!["stop"];
    stop.extend(&ids);
    bpm.ok(&stop);
    for pid in left {
        until_gone(pid, "a stop of the batch");
    }
}

/// `wait --any` returns when the first of its records ends, printing its
/// id, with its exit code; at once when one has ended already; 124 when
/// none ends in time.
/// A record whose leader exited 0 ends with the leader's code when what
/// ran on after it succeeded too, and `failed`, with the failing process's
/// code, when one of them failed.
#[test]
fn a_process_that_runs_on_and_fails_fails_its_record() {
    let bpm = Bpm::new();
    let fine = bpm.ok(&["run", "--", "sh", "-c", "(sleep 0.3; exit 0) & exit 0"]);
    let failing = bpm.ok(&["run", "--", "sh", "-c", "(sleep 0.3; exit 3) & exit 0"]);
    let fine = ended_within(&bpm, fine.trim(), Duration::from_secs(15));
    assert_eq!(
        (fine["state"].as_str(), fine["exit_code"].as_i64()),
        (Some("completed"), Some(0)),
        "{fine}"
    );
    let failing = ended_within(&bpm, failing.trim(), Duration::from_secs(15));
    assert_eq!(
        (failing["state"].as_str(), failing["exit_code"].as_i64()),
        (Some("failed"), Some(3)),
        "{failing}"
    );
    assert_eq!(failing["leader_exit"]["status"]["code"], 0, "{failing}");
}

#[test]
fn wait_any_returns_with_the_first_that_ends() {
    let bpm = Bpm::new();
    let long = bpm.ok(&["run", "--", "sleep", "30"]);
    let short = bpm.ok(&["run", "--", "sh", "-c", "sleep 0.3; exit 7"]);
    let (long, short) = (long.trim(), short.trim());
    let out = bpm.run(&["wait", "--any", long, short, "--timeout", "30"]);
    assert_eq!(out.status.code(), Some(7), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), short);
    assert_eq!(bpm.state(long), "running");
    // One of them has ended already: at once.
    let out = bpm.run(&["wait", "--any", long, short]);
    assert_eq!(out.status.code(), Some(7), "{out:?}");
    let other = bpm.ok(&["run", "--", "sleep", "30"]);
    let err = bpm.fails(
        &["wait", "--any", long, other.trim(), "--timeout", "0.3"],
        124,
    );
    assert!(err.contains("none has ended"), "{err}");
    bpm.ok(&["stop", long, other.trim()]);

    // By label or session: the live records that carry it when it begins.
    let slow = bpm.ok(&["run", "--label", "batch=7", "--", "sleep", "30"]);
    let fast = bpm.ok(&[
        "run",
        "--label",
        "batch=7",
        "--session",
        "s1",
        "--",
        "sh",
        "-c",
        "sleep 0.3; exit 5",
    ]);
    let out = bpm.run(&["wait", "--any", "--label", "batch=7", "--timeout", "30"]);
    assert_eq!(out.status.code(), Some(5), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), fast.trim());
    let err = bpm.fails(&["wait", "--label", "batch=9"], 4);
    assert!(
        err.contains("no live process matches --label batch=9"),
        "{err}"
    );
    let err = bpm.fails(&["wait", "--any", "--session", "s1"], 4);
    assert!(err.contains("--session s1"), "{err}");
    let other = bpm.ok(&["run", "--session", "s2", "--", "sleep", "0.2"]);
    bpm.ok(&["wait", "--session", "s2", "--timeout", "30"]);
    assert_eq!(bpm.state(other.trim()), "completed");
    bpm.ok(&["stop", slow.trim()]);
}

/// Each attempt of a record gets its own fencing token in `BPM_FENCE`,
/// one more than the last; `bpm fence check` (from the process or any
/// child of it) passes while the token is the current attempt's, and
/// fails, saying why, once the record ended or for another number.
#[test]
fn each_attempt_guards_its_writes_with_its_own_fencing_token() {
    let bpm = Bpm::new();
    let exe = env!("CARGO_BIN_EXE_bpm");
    let line =
        format!("sh -c '{exe} fence check; echo \"$BPM_FENCE $?\"'; [ \"$BPM_FENCE\" -ge 3 ]");
    let id = bpm.ok(&[
        "run",
        "--restart",
        "on-failure",
        "--max-restarts",
        "5",
        "--shell",
        "--",
        &line,
    ]);
    let id = id.trim();
    bpm.ok(&["wait", "--timeout", "60", id]);
    assert_eq!(bpm.ok(&["logs", id]), "1 0\n2 0\n3 0\n");
    let err = bpm.fails(&["fence", "check", "3", "--id", id], 1);
    assert!(
        err.contains("fence 3 is stale") && err.contains("has ended"),
        "{err}"
    );
    let sleeper = bpm.ok(&["run", "--", "sleep", "30"]);
    let sleeper = sleeper.trim();
    bpm.until_state(sleeper, "running");
    bpm.ok(&["fence", "check", "1", "--id", sleeper]);
    let err = bpm.fails(&["fence", "check", "2", "--id", sleeper], 1);
    assert!(err.contains("token 2 is stale"), "{err}");
    let err = bpm.fails(&["fence", "check"], 2);
    assert!(err.contains("no BPM_FENCE"), "{err}");
}

/// Limits that would leave bpm unusable are refused by key, with the
/// reason; a record that waits says what for.
#[test]
fn unworkable_limits_are_refused_and_a_waiting_record_says_what_it_waits_for() {
    for (text, says) in [
        ("[limits]\nmax_running = 0\n", "limits.max_running = 0"),
        (
            "[limits]\nretention = \"0s\"\n",
            "limits.retention = \"0s\"",
        ),
    ] {
        let bpm = Bpm::new();
        std::fs::write(bpm.home().join("config.toml"), text).expect("config");
        let err = bpm.fails(&["run", "--", "true"], 5);
        assert!(err.contains(says) && err.contains("must be"), "{err}");
    }
    let bpm = Bpm::new();
    std::fs::write(
        bpm.home().join("config.toml"),
        "[limits]\nmax_running = 1\n[limits.group_limits]\nbuild = 1\n",
    )
    .expect("config");
    let first = bpm.ok(&["run", "--group", "build", "--", "sleep", "30"]);
    let first = first.trim();
    bpm.until_state(first, "running");
    let second = bpm.ok(&["run", "--", "true"]);
    let second = second.trim();
    let after = bpm.ok(&["run", "--after", second, "--", "true"]);
    let shown = bpm.json(&["show", second, "--json"]);
    assert_eq!(shown["state"], "pending", "{shown}");
    let waiting = shown["waiting"].as_str().unwrap_or_default();
    assert!(
        waiting.contains("a slot: 1 of limits.max_running = 1 are taken"),
        "{shown}"
    );
    let text = bpm.ok(&["show", second]);
    assert!(
        text.contains("waiting") && text.contains("limits.max_running"),
        "{text}"
    );
    let shown = bpm.json(&["show", after.trim(), "--json"]);
    assert!(
        shown["waiting"]
            .as_str()
            .is_some_and(|w| w.contains("dependencies to complete") && w.contains(second)),
        "{shown}"
    );
    bpm.ok(&["stop", first]);
    bpm.ok(&["wait", "--timeout", "30", after.trim()]);
    let shown = bpm.json(&["show", after.trim(), "--json"]);
    assert!(shown.get("waiting").is_none(), "{shown}");
}

#[test]
fn a_daemon_that_cannot_start_says_why_in_the_command_that_started_it() {
    let bpm = Bpm::new();
    std::fs::write(
        bpm.home().join("config.toml"),
        "[limits]\nmax_running = [\n",
    )
    .expect("config");
    let err = bpm.fails(&["ps"], 5);
    assert!(
        err.contains("the bpm daemon could not start")
            && err.contains("config.toml")
            && err.contains("TOML parse error at line 2"),
        "{err}"
    );
    // A node name that is no valid name is named with the variable it came from.
    let bpm = Bpm::new();
    let out = bpm
        .cmd(&["ps"])
        .env("BPM_NODE", "two words")
        .output()
        .expect("bpm runs");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(5), "{err}");
    assert!(
        err.contains("BPM_NODE") && err.contains("two words"),
        "{err}"
    );
    let out = bpm
        .cmd(&["ps"])
        .env("BPM_NODE", "builder-2")
        .output()
        .expect("bpm runs");
    assert!(out.status.success(), "{out:?}");
    let status = bpm.ok(&["daemon", "status"]);
    assert!(status.contains("node     builder-2"), "{status}");
}

#[test]
fn a_keeper_left_by_another_bpm_is_refused_with_what_to_do() {
    let bpm = Bpm::new();
    std::fs::set_permissions(bpm.home(), std::fs::Permissions::from_mode(0o700)).expect("chmod");
    // A keeper of another protocol that still runs (it holds the socket).
    let listener =
        std::os::unix::net::UnixListener::bind(bpm.home().join("keeper.sock")).expect("bind");
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for mut stream in listener.incoming().flatten() {
            let _ = stream
                .write_all(b"{\"hello\":{\"protocol\":99,\"version\":\"9.9.9\",\"pid\":4242}}\n");
            held.push(stream);
        }
    });
    let err = bpm.fails(&["ps"], 5);
    assert!(
        err.contains("keeper (pid 4242, bpm 9.9.9) speaks keeper protocol 99")
            && err.contains("kill 4242"),
        "{err}"
    );
}

#[test]
fn the_daemon_starts_once_under_a_race_and_guards_its_socket() {
    let bpm = Bpm::new();
    let racers: Vec<_> = (0..4)
        .map(|_| {
            bpm.cmd(&["ps"])
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .expect("spawn")
        })
        .collect();
    for r in racers {
        let out = r.wait_with_output().expect("wait");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let pid = bpm.daemon_pid();
    // A racer that lost the lock exits on its own; wait until only the winner is left.
    let daemons = || -> Vec<u32> {
        std::fs::read_dir("/proc")
            .expect("/proc")
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
            .filter(|p: &u32| {
                let cmd = std::fs::read(format!("/proc/{p}/cmdline")).unwrap_or_default();
                let env = std::fs::read(format!("/proc/{p}/environ")).unwrap_or_default();
                cmd.ends_with(b"daemon\0")
                    && env
                        .split(|b| *b == 0)
                        .any(|v| v == format!("BPM_HOME={}", bpm.home().display()).as_bytes())
                    && alive(*p)
            })
            .collect()
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while daemons().len() > 1 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(daemons(), vec![pid], "exactly one daemon");
    let mode = |p: &Path| std::fs::metadata(p).expect("meta").permissions().mode() & 0o777;
    assert_eq!(mode(bpm.home()), 0o700);
    assert_eq!(mode(&bpm.home().join("bpm.sock")), 0o600);
    let status = bpm.ok(&["daemon", "status"]);
    assert!(
        status.contains(&format!("pid      {pid}")) && status.contains("store    fs"),
        "{status}"
    );
    // The keeper it names is the one running for this home.
    let keeper = status
        .lines()
        .find_map(|l| l.strip_prefix("keeper   pid "))
        .and_then(|l| l.split(' ').next()?.parse::<u32>().ok())
        .unwrap_or_else(|| panic!("no keeper line: {status}"));
    let cmd = std::fs::read(format!("/proc/{keeper}/cmdline")).unwrap_or_default();
    let env = std::fs::read(format!("/proc/{keeper}/environ")).unwrap_or_default();
    assert!(
        cmd.ends_with(b"keeper\0")
            && env
                .split(|b| *b == 0)
                .any(|v| v == format!("BPM_HOME={}", bpm.home().display()).as_bytes()),
        "{status}"
    );
    assert!(
        status.contains(&format!(
            "(bpm {}, keeper protocol {})",
            env!("CARGO_PKG_VERSION"),
            bpm_adapters::keeper::KEEPER_PROTOCOL
        )),
        "{status}"
    );
}

fn raw(
    socket: &Path,
) -> (
    std::os::unix::net::UnixStream,
    BufReader<std::os::unix::net::UnixStream>,
) {
    let s = std::os::unix::net::UnixStream::connect(socket).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let r = BufReader::new(s.try_clone().expect("clone"));
    (s, r)
}

#[test]
fn malformed_oversized_and_mismatched_messages_get_errors_not_crashes() {
    let bpm = Bpm::new();
    bpm.ok(&["ps"]);
    let socket: PathBuf = bpm.home().join("bpm.sock");
    let mut line = String::new();
    let (mut s, mut r) = raw(&socket);
    s.write_all(b"{\"protocol\":99,\"software\":\"future\"}\n")
        .expect("write");
    r.read_line(&mut line).expect("read");
    assert!(
        line.contains(r#""kind":"connection""#) && line.contains("protocol 99"),
        "{line}"
    );
    let (mut s, mut r) = raw(&socket);
    s.write_all(b"{\"protocol\":3,\"software\":\"test\"}\n")
        .expect("write");
    line.clear();
    r.read_line(&mut line).expect("hello");
    s.write_all(b"{this is not json}\n").expect("write");
    line.clear();
    r.read_line(&mut line).expect("read");
    assert!(line.contains("bad_request"), "{line}");
    s.write_all(b"{\"id\":7,\"method\":\"fly\"}\n")
        .expect("write");
    line.clear();
    r.read_line(&mut line).expect("read");
    assert!(
        line.contains("\"id\":7") && line.contains("bad_request"),
        "{line}"
    );
    // The daemon stops reading past the limit and closes; the rest of the write may fail.
    let _ = s.write_all(&vec![b'x'; 2 << 20]);
    let _ = s.write_all(b"\n");
    line.clear();
    r.read_line(&mut line).expect("read");
    assert!(
        line.contains("bad_request") && line.contains("message too large"),
        "{line}"
    );
    let (mut s, _) = raw(&socket);
    s.write_all(b"{\"protocol\":3,\"software\":\"test\"}\n{\"id\":1,\"meth")
        .expect("write");
    drop(s);
    // The daemon is still there and answers.
    assert!(bpm.ok(&["daemon", "status"]).contains("pid"));
}

#[test]
fn a_daemon_of_another_protocol_reads_no_request_and_the_command_says_so_at_once() {
    // The refusal a daemon sends in place of its hello to a client of
    // another protocol, as the real daemon words it.
    let real = Bpm::new();
    real.ok(&["ps"]);
    let (mut s, mut r) = raw(&real.home().join("bpm.sock"));
    s.write_all(b"{\"protocol\":99,\"software\":\"future\"}\n")
        .expect("write");
    let mut refusal = String::new();
    r.read_line(&mut refusal).expect("read");
    assert!(refusal.contains("protocol mismatch"), "{refusal}");
    // A daemon left running by an older bpm: it reads the hello, refuses,
    // and reads no request. The command sends its request without waiting
    // for the hello's answer, so the daemon finds it behind the hello.
    let bpm = Bpm::new();
    let listener =
        std::os::unix::net::UnixListener::bind(bpm.home().join("bpm.sock")).expect("bind");
    listener.set_nonblocking(true).expect("nonblocking");
    // The first connection is read on after the refusal, to see the
    // request behind the hello; the second is closed at once, as the real
    // daemon does, most often before the command has written its request.
    let daemon = std::thread::spawn(move || {
        let mut seen = Vec::new();
        for read_on in [true, false] {
            let deadline = Instant::now() + Duration::from_secs(20);
            let stream = loop {
                match listener.accept() {
                    Ok((stream, _)) => break stream,
                    Err(_) if Instant::now() < deadline => {
                        std::thread::sleep(Duration::from_millis(5));
                    }
                    Err(e) => panic!("the command never connected: {e}"),
                }
            };
            stream.set_nonblocking(false).expect("blocking");
            stream
                .set_read_timeout(Some(Duration::from_secs(5)))
                .expect("timeout");
            let mut lines = BufReader::new(stream.try_clone().expect("clone"));
            let mut hello = String::new();
            lines.read_line(&mut hello).expect("hello");
            (&stream).write_all(refusal.as_bytes()).expect("refuse");
            let mut behind = String::new();
            if read_on {
                let _ = lines.read_line(&mut behind);
            }
            seen.push((hello, behind));
        }
        seen
    });
    let started = Instant::now();
    let said = [
        bpm.fails(&["run", "--", "true"], 4),
        bpm.fails(&["run", "--", "true"], 4),
    ];
    let seen = daemon.join().expect("the fake daemon");
    assert!(seen[0].0.contains("\"protocol\":3"), "{seen:?}");
    assert!(seen[0].1.contains("\"method\":\"start"), "{seen:?}");
    for said in &said {
        assert!(
            said.contains("could not read the request") && said.contains("protocol 99"),
            "{said}"
        );
        // Refused by name, once: not taken for a daemon that died mid-request.
        assert!(!said.contains("asking the next daemon"), "{said}");
    }
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "the refusals took {:?}",
        started.elapsed()
    );
    assert!(
        !bpm.home().join("daemon.pid").exists(),
        "a daemon was started beside the one that refused"
    );
}

/// A daemon killed while a command connects: its threads still hold the
/// socket while they end, the kernel takes the connection, and the daemon
/// closes it without a hello. It read nothing: the command starts the next
/// daemon, which carries the request once, with no retry noise.
#[test]
fn a_daemon_gone_before_its_hello_read_nothing_and_the_next_carries_the_command() {
    let bpm = Bpm::new();
    let listener =
        std::os::unix::net::UnixListener::bind(bpm.home().join("bpm.sock")).expect("bind");
    let dying = std::thread::spawn(move || {
        let (stream, _) = listener.accept().expect("the command connects");
        // It reads the hello (the command has sent it: its connection is
        // made) and closes, the request maybe unread; the listener goes
        // with it.
        let mut hello = String::new();
        BufReader::new(&stream)
            .read_line(&mut hello)
            .expect("the hello");
        drop(stream);
    });
    let out = bpm.run(&["run", "--name", "once", "--", "sleep", "30"]);
    dying.join().expect("the dying daemon");
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{said}");
    assert!(!said.contains("asking the next daemon"), "{said}");
    let records = bpm.json(&["ps", "--all", "--json"]);
    let records = records.as_array().expect("array");
    assert_eq!(records.len(), 1, "{records:?}");
    assert_eq!(records[0]["name"], "once");
    assert_eq!(
        records[0]["id"].as_str(),
        Some(String::from_utf8_lossy(&out.stdout).trim())
    );
}

#[test]
fn processes_survive_kill_9_of_the_daemon_and_keep_their_exit_codes() {
    let bpm = Bpm::new();
    bpm.ok(&[
        "run",
        "--name",
        "ends",
        "--",
        "sh",
        "-c",
        "sleep 1; echo done; exit 5",
    ]);
    let lives = bpm.ok(&[
        "run",
        "--name",
        "lives",
        "--",
        "sh",
        "-c",
        "while true; do echo tick; sleep 0.1; done",
    ]);
    bpm.until_state(lives.trim(), "running");
    let pid = bpm.daemon_pid();
    Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .expect("kill");
    until_gone(pid, "the daemon survived kill -9");
    // Any command starts a new daemon, which adopts what runs and learns what
    // ended (the first process ends about a second after the kill).
    let deadline = Instant::now() + Duration::from_secs(20);
    while bpm.json(&["show", "ends", "--json"])["state"] == "running" {
        assert!(
            Instant::now() < deadline,
            "the exit never reached the new daemon"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let ended = bpm.json(&["show", "ends", "--json"]);
    assert_eq!(ended["state"], "failed");
    assert_eq!(
        ended["exit_code"], 5,
        "the real exit code of a process that ended while no daemon watched"
    );
    assert_ne!(bpm.daemon_pid(), pid);
    assert_eq!(bpm.state(lives.trim()), "running");
    let before = bpm.ok(&["logs", "lives"]).lines().count();
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        bpm.ok(&["logs", "lives"]).lines().count() > before,
        "its output is still captured"
    );
    assert!(bpm.ok(&["pause", "lives"]).contains("paused"));
    assert!(bpm.ok(&["resume", "lives"]).contains("running"));
    assert!(bpm.ok(&["stop", "lives"]).contains("cancelled"));
    assert_eq!(bpm.ok(&["logs", "ends"]), "done\n");
}

#[test]
fn a_request_cut_by_the_daemons_death_is_taken_up_by_the_next_and_nothing_runs_twice() {
    // A bounded chaos test: 10 kills -9 of the daemon, each at its own
    // moment inside (or around) a 150-task request, under the load of the
    // tasks the earlier rounds left running.
    const ROUNDS: u64 = 10;
    const TASKS: usize = 150;
    let bpm = Bpm::new();
    std::fs::write(
        bpm.home().join("config.toml"),
        "[limits]\nmax_running = 4\n",
    )
    .expect("config");
    let ran = bpm.home().join("ran.log");
    let mut all_printed = std::collections::BTreeSet::new();
    // Wherever each kill lands (before, inside or after the request), the
    // ids printed are exactly the records made, each ran once, and the
    // command succeeds.
    for (round, delay_ms) in (0..ROUNDS).map(|r| r * 2).enumerate() {
        bpm.ok(&["ps"]);
        let daemon = bpm.daemon_pid();
        let mut lines = String::new();
        for i in 0..TASKS {
            let _ = writeln!(
                lines,
                "echo \"$BPM_PROCESS_ID\" >> '{}'; exit {}",
                ran.display(),
                i % 3
            );
        }
        let child = bpm.feed(&["run", "--shell", "--from", "-"], lines.as_bytes());
        std::thread::sleep(Duration::from_millis(delay_ms));
        let _ = std::process::Command::new("kill")
            .args(["-9", &daemon.to_string()])
            .status();
        let out = child.wait_with_output().expect("bpm ends");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "round {round}: {stderr}");
        let printed: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .map(str::to_owned)
            .collect();
        assert_eq!(printed.len(), TASKS, "round {round}: {stderr}");
        all_printed.extend(printed);
    }
    let deadline = Instant::now() + Duration::from_mins(1);
    let records = loop {
        let records = bpm.json(&["ps", "--all", "--json"]);
        let list = records.as_array().expect("array").clone();
        let live = list
            .iter()
            .filter(|r| !["completed", "failed"].contains(&r["state"].as_str().unwrap_or("")))
            .count();
        if live == 0 || Instant::now() > deadline {
            break list;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let made: std::collections::BTreeSet<String> = records
        .iter()
        .map(|r| r["id"].as_str().expect("id").to_owned())
        .collect();
    assert_eq!(made, all_printed, "the ids printed are the records made");
    // Every record has its own task's exit code: no `lost`, nothing unknown.
    for r in &records {
        let command = r["spec"]["command"]["shell"].as_str().unwrap_or_default();
        let code: i64 = command
            .rsplit("exit ")
            .next()
            .and_then(|t| t.trim_matches(|c: char| !c.is_ascii_digit()).parse().ok())
            .expect("the command names its code");
        assert_eq!(r["exit_code"].as_i64(), Some(code), "{r}");
    }
    let log = std::fs::read_to_string(&ran).expect("ran");
    let mut seen = std::collections::HashSet::new();
    for id in log.lines() {
        assert!(seen.insert(id), "{id} ran twice");
    }
    assert_eq!(seen.len(), made.len(), "every record ran, once");
}

#[test]
fn daemon_stop_leaves_processes_for_the_next_daemon_and_kill_all_stops_them() {
    let bpm = Bpm::new();
    let id = bpm.ok(&["run", "--", "sleep", "30"]);
    bpm.until_state(id.trim(), "running");
    let pid: u32 = bpm.json(&["show", id.trim(), "--json"])["pid"]
        .as_u64()
        .expect("pid")
        .try_into()
        .expect("u32");
    bpm.ok(&["daemon", "stop"]);
    assert!(alive(pid), "the process outlives the daemon");
    assert_eq!(
        bpm.state(id.trim()),
        "running",
        "adopted by the next daemon"
    );
    bpm.ok(&["daemon", "stop", "--kill-all"]);
    until_gone(pid, "--kill-all left it running");
}

#[test]
fn fifty_concurrent_runs_are_all_recorded() {
    let bpm = Bpm::new();
    bpm.ok(&["ps"]);
    let runs: Vec<_> = (0..50)
        .map(|i| {
            bpm.cmd(&["run", "--name", &format!("job{i}"), "--", "true"])
                .stdout(Stdio::piped())
                .spawn()
                .expect("spawn")
        })
        .collect();
    let mut ids = std::collections::BTreeSet::new();
    for r in runs {
        let out = r.wait_with_output().expect("wait");
        assert!(out.status.success());
        ids.insert(
            String::from_utf8(out.stdout)
                .expect("utf-8")
                .trim()
                .to_owned(),
        );
    }
    assert_eq!(ids.len(), 50);
    let all = bpm.json(&["ps", "--all", "--json"]);
    assert_eq!(all.as_array().expect("array").len(), 50);
}

/// One live process per name: a second `run --name web` is refused (exit
/// 4) naming the live one; 50 concurrent `--ensure` calls start exactly
/// one process and all print its id; `--ensure` with another command is
/// refused naming what differs; `--replace` stops the live one's whole
/// tree (through a TERM-ignoring child) before its replacement starts, so
/// the two never run at once; a name is free again once its record ended.
#[test]
fn one_live_process_per_name() {
    let bpm = Bpm::new();
    let web = bpm.ok(&["run", "--name", "web", "--", "sleep", "300"]);
    let web = web.trim();
    let err = bpm.fails(&["run", "--name", "web", "--", "sleep", "300"], 4);
    assert!(err.contains(web) && err.contains("--ensure"), "{err}");
    let runs: Vec<_> = (0..50)
        .map(|_| {
            bpm.cmd(&["run", "--name", "api", "--ensure", "--", "sleep", "300"])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("spawn")
        })
        .collect();
    let mut ids = std::collections::BTreeSet::new();
    for r in runs {
        let out = r.wait_with_output().expect("wait");
        assert!(out.status.success(), "{out:?}");
        ids.insert(
            String::from_utf8(out.stdout)
                .expect("utf-8")
                .trim()
                .to_owned(),
        );
    }
    assert_eq!(ids.len(), 1, "{ids:?}");
    let api = ids.pop_first().expect("one");
    let named_api = bpm
        .json(&["ps", "--all", "--json"])
        .as_array()
        .expect("array")
        .iter()
        .filter(|r| r["name"] == "api")
        .count();
    assert_eq!(named_api, 1, "exactly one process started");
    let again = bpm.json(&[
        "run", "--name", "api", "--ensure", "--json", "--", "sleep", "300",
    ]);
    assert_eq!(
        (again["id"].as_str(), &again["reused"]),
        (Some(api.as_str()), &serde_json::json!(true))
    );
    let err = bpm.fails(
        &["run", "--name", "api", "--ensure", "--", "sleep", "301"],
        4,
    );
    assert!(
        err.contains("differs in command") && err.contains("--replace"),
        "{err}"
    );
    let err = bpm.fails(&["run", "--ensure", "--", "true"], 4);
    assert!(err.contains("give it a name (--name)"), "{err}");
    let err = bpm.fails(
        &["run", "--name", "x", "--ensure", "--replace", "--", "true"],
        4,
    );
    assert!(err.contains("contradict"), "{err}");

    // The old tree ignores TERM; its replacement starts only once it is gone.
    let (marker, pids) = (bpm.home().join("overlap"), bpm.home().join("pids"));
    let stubborn = format!(
        "trap '' TERM; sleep 300 & echo $! > {p}; echo $$ >> {p}; wait",
        p = pids.display()
    );
    let old = bpm.ok(&[
        "run", "--name", "srv", "--grace", "500ms", "--", "sh", "-c", &stubborn,
    ]);
    let old = old.trim();
    bpm.until_state(old, "running");
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::fs::read_to_string(&pids).map_or(0, |p| p.lines().count()) < 2 {
        assert!(
            Instant::now() < deadline,
            "the old tree never wrote its pids"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let check = format!(
        "for p in $(cat {}); do kill -0 $p 2>/dev/null && echo both >> {}; done; sleep 300",
        pids.display(),
        marker.display()
    );
    let new = bpm.ok(&[
        "run",
        "--name",
        "srv",
        "--replace",
        "--",
        "sh",
        "-c",
        &check,
    ]);
    let new = new.trim();
    bpm.until_state(new, "running");
    assert_eq!(bpm.state(old), "cancelled");
    assert!(
        !marker.exists(),
        "the replacement ran while the old tree did"
    );
    let shown = bpm.json(&["show", old, "--json"]);
    assert!(
        shown["error"].as_str().is_some_and(|e| e.contains(new)),
        "{shown}"
    );

    // Ended: the name is free.
    bpm.ok(&["stop", web]);
    let next = bpm.ok(&["run", "--name", "web", "--", "true"]);
    assert_ne!(next.trim(), web);
    bpm.ok(&["stop", &api, new]);
}

/// `sh -c` running a Python server on `$PORT`, on the loopback.
const SERVE_PORT: &str = "exec python3 -c 'import http.server as h, os; h.HTTPServer((\"127.0.0.1\", int(os.environ[\"PORT\"])), h.SimpleHTTPRequestHandler).serve_forever()'";

/// `--port auto` gives 20 servers started at once 20 ports, each listened
/// on by its own server; a port held by a live record, or listened on by
/// anything, is refused naming what holds it; a restart keeps its port,
/// and a port is free again once its record ended.
#[test]
fn ports_are_handed_out_never_fought_over() {
    let bpm = Bpm::new();
    std::fs::write(
        bpm.home().join("config.toml"),
        "[limits]\nmax_running = 40\n",
    )
    .expect("config");
    bpm.ok(&["ps"]);
    let runs: Vec<_> = (0..20)
        .map(|_| {
            bpm.cmd(&["run", "--port", "auto", "--", "sh", "-c", SERVE_PORT])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("spawn")
        })
        .collect();
    let ids: Vec<String> = runs
        .into_iter()
        .map(|r| {
            let out = r.wait_with_output().expect("wait");
            assert!(out.status.success(), "{out:?}");
            String::from_utf8(out.stdout)
                .expect("utf-8")
                .trim()
                .to_owned()
        })
        .collect();
    let mut ports = std::collections::BTreeSet::new();
    for id in &ids {
        // Ready (by default) once its port accepts connections.
        let deadline = Instant::now() + Duration::from_secs(30);
        let shown = loop {
            let shown = bpm.json(&["show", id, "--json"]);
            if !shown["ready_at"].is_null() {
                break shown;
            }
            assert!(Instant::now() < deadline, "{id} never ready: {shown}");
            std::thread::sleep(Duration::from_millis(50));
        };
        let port = shown["port"].as_u64().expect("a port");
        assert_eq!(shown["spec"]["port"], "auto");
        assert_eq!(
            shown["listening_ports"],
            serde_json::json!([port]),
            "{id} listens on its own port"
        );
        ports.insert(port);
    }
    assert_eq!(ports.len(), 20, "{ports:?}");
    let table = bpm.ok(&["ps"]);
    assert!(
        table.lines().next().is_some_and(|h| h.contains("PORT")),
        "{table}"
    );

    // A port held by a live record is refused, naming it.
    let web = bpm.ok(&[
        "run", "--name", "web", "--port", "auto", "--", "sh", "-c", SERVE_PORT,
    ]);
    let web = web.trim();
    let held = bpm.json(&["show", web, "--json"])["port"]
        .as_u64()
        .expect("port");
    let err = bpm.fails(&["run", "--port", &held.to_string(), "--", "sleep", "1"], 4);
    assert!(err.contains(web) && err.contains("(web)"), "{err}");
    // So is one that something else listens on.
    let other = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let taken = other.local_addr().expect("addr").port().to_string();
    let err = bpm.fails(&["run", "--port", &taken, "--", "sleep", "1"], 4);
    assert!(err.contains("in use"), "{err}");
    drop(other);
    let range = format!("{taken}-{taken}");
    let fixed = bpm.ok(&["run", "--port", &range, "--", "sleep", "300"]);
    assert_eq!(
        bpm.json(&["show", fixed.trim(), "--json"])["port"].to_string(),
        taken
    );
    let err = bpm.fails(&["run", "--port", &range, "--", "sleep", "1"], 4);
    assert!(err.contains("no free port"), "{err}");

    // A restart keeps its port; --replace takes the port of what it replaces.
    bpm.until_state(web, "running");
    let restarted = bpm.ok(&["restart", web]);
    let restarted = restarted.trim();
    assert_eq!(bpm.json(&["show", restarted, "--json"])["port"], held);
    let replaced = bpm.ok(&[
        "run",
        "--name",
        "web",
        "--replace",
        "--port",
        &held.to_string(),
        "--",
        "sh",
        "-c",
        SERVE_PORT,
    ]);
    let replaced = replaced.trim();
    bpm.until_state(replaced, "running");
    assert_eq!(bpm.json(&["show", replaced, "--json"])["port"], held);

    // Ended: the port is free again.
    bpm.ok(&["stop", replaced, fixed.trim()]);
    let again = bpm.ok(&["run", "--port", &held.to_string(), "--", "sleep", "300"]);
    assert_eq!(bpm.json(&["show", again.trim(), "--json"])["port"], held);
    let err = bpm.fails(&["run", "--port", "99999", "--", "true"], 4);
    assert!(err.contains("invalid port"), "{err}");
    let err = bpm.fails(&["run", "--port", "auto", "--node", "any", "--", "true"], 4);
    assert!(err.contains("--node any"), "{err}");
    bpm.ok(&["stop", "--all"]);
}

/// The record with its `error` once it ended, within `within`.
fn ended_within(bpm: &Bpm, id: &str, within: Duration) -> serde_json::Value {
    let deadline = Instant::now() + within;
    loop {
        let shown = bpm.json(&["show", id, "--json"]);
        if !shown["ended_at"].is_null() {
            return shown;
        }
        assert!(Instant::now() < deadline, "{id} did not end: {shown}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A record with owners lives while one of them does: the end of a shell
/// that exits, or of one killed with `kill -9`, stops it after its grace
/// (cause `owner gone`), also when the daemon was dead as the owner died;
/// a record with no owner, or a second owner still alive, runs on.
#[test]
fn a_record_lives_only_while_its_owner_does() {
    let bpm = Bpm::new();
    let spawn_owner = |secs: &str| {
        Command::new("sleep")
            .arg(secs)
            .stdin(Stdio::null())
            .spawn()
            .expect("owner")
    };
    // A shell that exits by itself.
    let mut shell = spawn_owner("1");
    let owner = format!("pid:{}", shell.id());
    let owned = bpm.ok(&[
        "run",
        "--owner",
        &owner,
        "--owner-grace",
        "500ms",
        "--",
        "sleep",
        "300",
    ]);
    let owned = owned.trim();
    let persistent = bpm.ok(&["run", "--persist", "--", "sleep", "300"]);
    let persistent = persistent.trim();
    let mut other = spawn_owner("300");
    let both = bpm.ok(&[
        "run",
        "--owner",
        &owner,
        "--owner",
        &format!("pid:{}", other.id()),
        "--owner-grace",
        "200ms",
        "--",
        "sleep",
        "300",
    ]);
    let both = both.trim();
    bpm.until_state(owned, "running");
    let pid = bpm.json(&["show", owned, "--json"])["pid"]
        .as_u64()
        .expect("pid");
    shell.wait().expect("the shell exits");
    let gone = Instant::now();
    let shown = ended_within(&bpm, owned, Duration::from_secs(10));
    let took = gone.elapsed();
    assert_eq!(
        (shown["state"].as_str(), shown["error"].as_str()),
        (Some("cancelled"), Some("owner gone")),
        "{shown}"
    );
    assert!(
        took >= Duration::from_millis(450),
        "stopped before its grace: {took:?}"
    );
    until_gone(u32::try_from(pid).expect("pid"), "the owner's end");
    std::thread::sleep(Duration::from_millis(400));
    assert_eq!(bpm.state(persistent), "running", "no owner: it lives on");
    assert_eq!(bpm.state(both), "running", "its other owner lives");

    // kill -9 of the last owner.
    other.kill().expect("kill -9");
    other.wait().expect("reaped");
    let shown = ended_within(&bpm, both, Duration::from_secs(10));
    assert_eq!(shown["error"], "owner gone", "{shown}");

    // The daemon is dead while the owner dies: the next daemon finds out.
    let mut owner = spawn_owner("300");
    let late = bpm.ok(&[
        "run",
        "--owner",
        &format!("pid:{}", owner.id()),
        "--owner-grace",
        "300ms",
        "--",
        "sleep",
        "300",
    ]);
    let late = late.trim();
    bpm.until_state(late, "running");
    let daemon = bpm.daemon_pid();
    Command::new("kill")
        .args(["-9", &daemon.to_string()])
        .status()
        .expect("kill");
    until_gone(daemon, "kill -9 of the daemon");
    owner.kill().expect("kill -9");
    owner.wait().expect("reaped");
    let shown = ended_within(&bpm, late, Duration::from_secs(15));
    assert_eq!(shown["error"], "owner gone", "{shown}");
    assert_eq!(bpm.state(persistent), "running");

    // A session nobody holds is gone: its record outlives it by its grace.
    let orphan = bpm.ok(&[
        "run",
        "--owner",
        "session:nobody",
        "--owner-grace",
        "200ms",
        "--",
        "sleep",
        "300",
    ]);
    let shown = ended_within(&bpm, orphan.trim(), Duration::from_secs(10));
    assert_eq!(shown["error"], "owner gone", "{shown}");

    let err = bpm.fails(&["run", "--owner", "pid:999999999", "--", "true"], 4);
    assert!(err.contains("not running"), "{err}");
    let err = bpm.fails(&["run", "--owner", "user:1", "--", "true"], 4);
    assert!(err.contains("pid:PID or session:NAME"), "{err}");
    let shown = bpm.ok(&["show", persistent]);
    assert!(!shown.contains("owners"), "{shown}");
    bpm.ok(&["stop", persistent]);
}

#[test]
fn hooks_clean_and_completions() {
    let bpm = Bpm::new();
    let marker = bpm.home().join("hook.out");
    let hook = format!(
        "cat > {}.json; echo \"$BPM_STATE $BPM_EXIT_CODE\" > {}",
        marker.display(),
        marker.display()
    );
    let id = bpm.ok(&["run", "--on-exit", &hook, "--", "sh", "-c", "exit 4"]);
    bpm.run(&["wait", id.trim()]);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !marker.exists() {
        assert!(Instant::now() < deadline, "the hook never ran");
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(
        std::fs::read_to_string(&marker).expect("marker"),
        "failed 4\n"
    );
    let record: serde_json::Value =
        serde_json::from_slice(&std::fs::read(format!("{}.json", marker.display())).expect("json"))
            .expect("record");
    assert_eq!(record["id"], id.trim());
    bpm.ok(&["run", "--", "true"]);
    std::thread::sleep(Duration::from_millis(300));
    bpm.ok(&["clean", "--state", "failed"]);
    let left = bpm.json(&["ps", "--all", "--json"]);
    assert!(
        left.as_array()
            .expect("array")
            .iter()
            .all(|r| r["state"] != "failed")
    );
    bpm.fails(&["clean", "--state", "running"], 4);
    let script = bpm.ok(&["completions", "bash"]);
    assert!(script.contains("_bpm()"), "a bash completion script");
}

#[test]
fn events_print_as_json_lines_and_follow() {
    let bpm = Bpm::new();
    let id = bpm.ok(&["run", "--", "true"]);
    bpm.ok(&["wait", id.trim()]);
    let past = bpm.ok(&["events"]);
    let kinds: Vec<String> = past
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("a JSON line"))
        .filter(|e| e["id"] == id.trim())
        .map(|e| e["kind"].as_str().expect("kind").to_owned())
        .collect();
    assert_eq!(
        kinds,
        ["submitted", "started", "ready", "exited", "completed"]
    );
    let mut follower = bpm
        .cmd(&["events", "-f"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("follow");
    let mut lines = BufReader::new(follower.stdout.take().expect("stdout")).lines();
    for _ in 0..5 {
        lines.next().expect("the past first").expect("line");
    }
    let next = bpm.ok(&["run", "--", "true"]);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let line = lines.next().expect("a new event").expect("line");
        if line.contains(next.trim()) {
            break;
        }
        assert!(Instant::now() < deadline);
    }
    let _ = follower.kill();
    let _ = follower.wait();
}

#[test]
fn filters_and_the_ways_to_stop() {
    let bpm = Bpm::new();
    let a = bpm.ok(&[
        "run",
        "--kind",
        "server",
        "--session",
        "agent-1",
        "--name",
        "a",
        "--",
        "sleep",
        "30",
    ]);
    let b = bpm.ok(&[
        "run",
        "--kind",
        "build",
        "--session",
        "agent-1",
        "--parent",
        "a",
        "--name",
        "b",
        "--",
        "sleep",
        "30",
    ]);
    let c = bpm.ok(&[
        "run",
        "--session",
        "agent-2",
        "--name",
        "c",
        "--",
        "sh",
        "-c",
        "trap '' TERM; sleep 30",
    ]);
    for id in [&a, &b, &c] {
        bpm.until_state(id.trim(), "running");
    }
    let ids = |args: &[&str]| -> Vec<String> {
        bpm.json(args)
            .as_array()
            .expect("array")
            .iter()
            .map(|r| r["name"].as_str().expect("name").to_owned())
            .collect()
    };
    assert_eq!(ids(&["ps", "--json", "--kind", "server"]), ["a"]);
    assert_eq!(ids(&["ps", "--json", "--parent", "a"]), ["b"]);
    // The node is the machine's hostname unless one is named.
    let status = bpm.ok(&["daemon", "status"]);
    let node = status
        .lines()
        .find_map(|l| l.strip_prefix("node "))
        .expect("status names the node")
        .trim();
    let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname").expect("hostname");
    assert_eq!(node, hostname.trim(), "{status}");
    assert_eq!(ids(&["ps", "--json", "--node", node]).len(), 3);
    assert!(ids(&["ps", "--json", "--node", "elsewhere"]).is_empty());
    assert_eq!(
        ids(&["ps", "--json", "--state", "running", "--session", "agent-1"]),
        ["a", "b"]
    );
    let out = bpm.ok(&["stop", "--session", "agent-1"]);
    assert_eq!(out.lines().count(), 2, "{out}");
    assert!(ids(&["ps", "--json"]) == ["c"]);
    // c ignores TERM: a short grace ends it with KILL; --force would not wait at all.
    let t = Instant::now();
    assert!(
        bpm.ok(&["stop", "c", "--grace", "0.3"])
            .contains("cancelled")
    );
    assert!(t.elapsed() < Duration::from_secs(10));
    assert_eq!(bpm.json(&["show", "c", "--json"])["signal"], 9);
    let d = bpm.ok(&["run", "--", "sh", "-c", "trap '' TERM; sleep 30"]);
    bpm.until_state(d.trim(), "running");
    bpm.ok(&["stop", "--force", d.trim()]);
    assert_eq!(bpm.json(&["show", d.trim(), "--json"])["signal"], 9);
    // logs -f follows to the end.
    let e = bpm.ok(&[
        "run",
        "--",
        "sh",
        "-c",
        "for i in 1 2 3; do echo $i; sleep 0.1; done",
    ]);
    assert_eq!(bpm.ok(&["logs", "-f", e.trim()]), "1\n2\n3\n");
    bpm.ok(&["run", "--name", "f", "--", "sleep", "30"]);
    bpm.ok(&["stop", "--all"]);
    assert!(ids(&["ps", "--json"]).is_empty());
}

/// Runs `bpm ARGS` on a pseudo-terminal (util-linux `script`), feeding `input`.
fn on_a_terminal(bpm: &Bpm, args: &str, input: &str) -> String {
    let cmd = format!("{} {args}", env!("CARGO_BIN_EXE_bpm"));
    let mut child = Command::new("script")
        .args(["-qec", &cmd, "/dev/null"])
        .env("BPM_HOME", bpm.home())
        .env("NO_COLOR", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("script (util-linux) runs");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input.as_bytes())
        .expect("input");
    let out = child.wait_with_output().expect("output");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn on_a_terminal_stop_offers_a_list_and_wait_draws_progress() {
    let bpm = Bpm::new();
    let id = bpm.ok(&["run", "--name", "victim", "--", "sleep", "30"]);
    bpm.until_state(id.trim(), "running");
    let screen = on_a_terminal(&bpm, "stop", "1\n");
    assert!(
        screen.contains("victim") && screen.contains("stop which? [1-1]"),
        "{screen}"
    );
    assert_eq!(bpm.state(id.trim()), "cancelled");
    let op = bpm.ok(&["track", "job"]);
    let op = op.trim().to_owned();
    let reporter = {
        let home = bpm.home().to_path_buf();
        let op = op.clone();
        std::thread::spawn(move || {
            let run = |args: &[&str]| {
                Command::new(env!("CARGO_BIN_EXE_bpm"))
                    .args(args)
                    .env("BPM_HOME", &home)
                    .output()
                    .expect("bpm");
            };
            std::thread::sleep(Duration::from_millis(400));
            run(&["progress", &op, "50", "halfway"]);
            std::thread::sleep(Duration::from_millis(700));
            run(&["complete", &op]);
        })
    };
    let screen = on_a_terminal(&bpm, &format!("wait {op}"), "");
    reporter.join().expect("reporter");
    assert!(
        screen.contains("[##########..........]  50% halfway"),
        "{screen:?}"
    );
}

#[test]
fn a_batch_keeps_the_callers_environment_and_its_own_variables() {
    let bpm = Bpm::new();
    let mut child = bpm
        .cmd(&[
            "run",
            "--from",
            "-",
            "--env",
            "GREETING=hi",
            "--",
            "sh",
            "-c",
        ])
        .env("CALLER", "from-the-caller")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn");
    {
        use std::io::Write as _;
        let mut stdin = child.stdin.take().expect("stdin");
        stdin
            .write_all(b"'echo 1 $GREETING $CALLER'\n'echo 2 $GREETING $CALLER'\n")
            .expect("write");
    }
    let out = child.wait_with_output().expect("wait");
    assert!(out.status.success());
    let out = String::from_utf8(out.stdout).expect("utf-8");
    let ids: Vec<&str> = out.lines().collect();
    assert_eq!(ids.len(), 2, "{out}");
    for (n, id) in ids.iter().enumerate() {
        bpm.until_state(id, "completed");
        assert_eq!(
            bpm.ok(&["logs", id]),
            format!("{} hi from-the-caller\n", n + 1)
        );
    }
}

#[test]
fn run_from_a_file_starts_one_process_per_line_in_one_request() {
    let bpm = Bpm::new();
    let file = bpm.home().join("jobs.txt");
    std::fs::write(&file, "one\n\n'two words' three\n").expect("file");
    let out = bpm.ok(&[
        "run",
        "--from",
        file.to_str().expect("utf-8"),
        "--group",
        "batch",
        "--",
        "echo",
    ]);
    let ids: Vec<&str> = out.lines().collect();
    assert_eq!(ids.len(), 2, "blank lines are skipped: {out}");
    for id in &ids {
        bpm.until_state(id, "completed");
    }
    assert_eq!(bpm.ok(&["logs", ids[0]]), "one\n");
    assert_eq!(bpm.ok(&["logs", ids[1]]), "two words three\n");
    let shown = bpm.json(&["show", ids[1], "--json"]);
    assert_eq!(shown["group"], "batch", "the options apply to every line");

    // From stdin, through the shell, as JSON.
    let mut child = bpm
        .cmd(&["run", "--from", "-", "--shell", "--json"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn");
    {
        use std::io::Write as _;
        let mut stdin = child.stdin.take().expect("stdin");
        stdin.write_all(b"exit 0\nexit 7\n").expect("write");
    }
    let out = child.wait_with_output().expect("wait");
    assert!(out.status.success());
    let records: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let ids: Vec<String> = records
        .as_array()
        .expect("array")
        .iter()
        .map(|r| r["id"].as_str().expect("id").to_owned())
        .collect();
    assert_eq!(ids.len(), 2);
    bpm.until_state(&ids[0], "completed");
    bpm.until_state(&ids[1], "failed");
    assert_eq!(bpm.json(&["show", &ids[1], "--json"])["exit_code"], 7);

    // Bad lines are refused before anything starts.
    let before = bpm
        .json(&["ps", "--all", "--json"])
        .as_array()
        .expect("array")
        .len();
    std::fs::write(&file, "fine\necho 'open\n").expect("file");
    let err = bpm.fails(
        &["run", "--from", file.to_str().expect("utf-8"), "--", "echo"],
        4,
    );
    assert!(
        err.contains("jobs.txt:2: unterminated single quote"),
        "{err}"
    );
    std::fs::write(&file, "\n \n").expect("file");
    let err = bpm.fails(&["run", "--from", file.to_str().expect("utf-8")], 4);
    assert!(err.contains("no commands"), "{err}");
    let err = bpm.fails(&["run", "--from", "/nonexistent/jobs.txt"], 4);
    assert!(err.contains("cannot read /nonexistent/jobs.txt"), "{err}");
    bpm.fails(&["run", "--from", "-", "--wait", "--", "true"], 2);
    let after = bpm
        .json(&["ps", "--all", "--json"])
        .as_array()
        .expect("array")
        .len();
    assert_eq!(before, after, "nothing was started");
}

#[test]
fn a_queue_runs_through_the_keeper_in_order_and_a_stopped_record_never_runs() {
    let bpm = Bpm::new();
    std::fs::write(
        bpm.home().join("config.toml"),
        "[limits]\nmax_running = 1\n",
    )
    .expect("config");
    let marker = bpm.home().join("ran");
    let first = bpm.ok(&["run", "--", "sleep", "1"]).trim().to_owned();
    bpm.until_state(&first, "running");
    // Queued behind it: one that must never run, then twenty quick ones
    // whose exit codes and order must survive the keeper starting them.
    let never = bpm
        .ok(&[
            "run",
            "--shell",
            "--",
            &format!("touch {}", marker.display()),
        ])
        .trim()
        .to_owned();
    let log = bpm.home().join("order");
    let mut child = bpm
        .cmd(&["run", "--from", "-", "--shell"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("bpm run --from");
    {
        use std::io::Write as _;
        let mut stdin = child.stdin.take().expect("stdin");
        for n in 0..20 {
            writeln!(stdin, "echo {n} >> {}; exit {}", log.display(), n % 3).expect("write");
        }
    }
    let out = child.wait_with_output().expect("run --from");
    assert!(out.status.success());
    let ids: Vec<String> = String::from_utf8(out.stdout)
        .expect("utf-8")
        .lines()
        .map(str::to_owned)
        .collect();
    assert_eq!(ids.len(), 20);
    assert_eq!(bpm.state(&never), "pending");
    bpm.ok(&["stop", &never]);
    assert_eq!(bpm.state(&never), "cancelled");
    let mut args = vec!["wait", first.as_str()];
    args.extend(ids.iter().map(String::as_str));
    bpm.ok(&args);
    assert!(!marker.exists(), "a stopped record ran");
    let order: Vec<String> = std::fs::read_to_string(&log)
        .expect("log")
        .lines()
        .map(str::to_owned)
        .collect();
    let expected: Vec<String> = (0..20).map(|n| n.to_string()).collect();
    assert_eq!(order, expected, "one at a time, in submission order");
    for (n, id) in ids.iter().enumerate() {
        let record = bpm.json(&["show", id, "--json"]);
        assert_eq!(record["exit_code"], n % 3, "{record}");
    }
}

/// Every file bpm writes under its state directory is `0600` and every
/// folder `0700`: records hold the caller's whole environment.
#[test]
fn everything_in_the_state_directory_is_private_to_its_owner() {
    let bpm = Bpm::new();
    bpm.ok(&["run", "--wait", "--", "sh", "-c", "echo out; echo err >&2"]);
    let mut seen = 0;
    let mut todo = vec![bpm.home().to_path_buf()];
    while let Some(dir) = todo.pop() {
        for entry in std::fs::read_dir(&dir).expect("read_dir") {
            let path = entry.expect("entry").path();
            let meta = std::fs::symlink_metadata(&path).expect("meta");
            let mode = meta.permissions().mode() & 0o777;
            if meta.is_dir() {
                assert_eq!(mode, 0o700, "{}", path.display());
                todo.push(path);
            } else {
                assert_eq!(mode, 0o600, "{}", path.display());
                seen += 1;
            }
        }
    }
    assert!(
        seen >= 8,
        "only {seen} files under {}",
        bpm.home().display()
    );
}

/// A state directory that another user owns is refused, as ssh refuses a
/// key file others can change, with what to do.
#[test]
fn a_state_directory_owned_by_another_user_is_refused() {
    let bpm = Bpm::new();
    let foreign = if rustix::process::geteuid().is_root() {
        let dir = bpm.home().join("theirs");
        std::fs::create_dir(&dir).expect("mkdir");
        rustix::fs::chown(&dir, Some(rustix::fs::Uid::from_raw(65534)), None).expect("chown");
        dir
    } else {
        PathBuf::from("/")
    };
    let out = bpm
        .cmd(&["run", "--", "true"])
        .env("BPM_HOME", &foreign)
        .output()
        .expect("bpm runs");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(5), "{err}");
    assert!(
        err.contains("belongs to user") && err.contains("BPM_HOME"),
        "{err}"
    );
    assert!(!foreign.join("bpm.sock").exists());
}

/// Environments, arguments and paths are bytes on Unix, and bpm carries
/// them as such end to end: from the caller's shell, its `--env` and its
/// `--from` file, through the daemon, its journal (across a restart) and
/// the keeper, to the process, byte for byte.
#[test]
fn arguments_environment_and_working_directory_reach_the_process_byte_for_byte() {
    use std::ffi::OsStr;
    use std::os::unix::ffi::OsStrExt as _;
    let bpm = Bpm::new();
    let folder = bpm.home().join(OsStr::from_bytes(b"caf\xe9"));
    std::fs::create_dir(&folder).expect("mkdir");
    let script = r#"printf '%s|%s|%s|' "$1" "$INHERITED" "$GIVEN"; pwd"#;
    let out = bpm
        .cmd(&["run", "--env"])
        .arg(OsStr::from_bytes(b"GIVEN=g\xfe"))
        .args(["--", "sh", "-c", script, "sh"])
        .arg(OsStr::from_bytes(b"a\xc3"))
        .env("INHERITED", OsStr::from_bytes(b"i\xff"))
        .env(OsStr::from_bytes(b"ODD_\xfd"), "o")
        .current_dir(&folder)
        .output()
        .expect("bpm runs");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(err.is_empty(), "no warning: nothing is left out: {err}");
    let id = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let mut want = b"a\xc3|i\xff|g\xfe|".to_vec();
    want.extend_from_slice(folder.as_os_str().as_bytes());
    want.push(b'\n');
    bpm.ok(&["wait", &id]);
    assert_eq!(bpm.state(&id), "completed");
    let logs = bpm.cmd(&["logs", &id]).output().expect("logs");
    assert_eq!(
        String::from_utf8_lossy(&logs.stdout),
        String::from_utf8_lossy(&want)
    );
    assert_eq!(logs.stdout, want);
    // A variable whose name is not UTF-8 (sh would drop it: `env` shows it).
    let out = bpm
        .cmd(&["run", "--wait", "--", "env"])
        .env(OsStr::from_bytes(b"ODD_\xfd"), OsStr::from_bytes(b"o\xfc"))
        .output()
        .expect("bpm runs");
    assert!(
        out.stdout.windows(9).any(|w| w == b"ODD_\xfd=o\xfc\n"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    // In JSON, text that is not UTF-8 is its bytes in hex; the rest is as it was.
    let shown = bpm.json(&["show", &id, "--json"]);
    assert_eq!(
        shown["spec"]["command"]["argv"][4],
        serde_json::json!({"hex": "61c3"})
    );
    assert_eq!(shown["spec"]["command"]["argv"][0], "sh");
    // The same after a restart, read back from the journal.
    bpm.ok(&["daemon", "stop"]);
    assert_eq!(bpm.json(&["show", &id, "--json"])["spec"], shown["spec"]);
    // A --from line that is not UTF-8 is split into words as bytes, or
    // handed to sh whole with --shell.
    let list = bpm.home().join("list");
    std::fs::write(&list, b"printf %s 'x\xe9 y'\n").expect("write");
    let ids = bpm.ok(&["run", "--from", list.to_str().expect("path")]);
    let id = ids.trim();
    bpm.ok(&["wait", id]);
    let logs = bpm.cmd(&["logs", id]).output().expect("logs");
    assert_eq!(logs.stdout, b"x\xe9 y");
    std::fs::write(&list, b"printf '%s|' caf\xe9 | tr '|' '!'\n").expect("write");
    let ids = bpm.ok(&["run", "--shell", "--from", list.to_str().expect("path")]);
    let id = ids.trim();
    bpm.ok(&["wait", id]);
    let logs = bpm.cmd(&["logs", id]).output().expect("logs");
    assert_eq!(logs.stdout, b"caf\xe9!");
    // MCP starts in such an environment too.
    let out = bpm
        .cmd(&["mcp"])
        .env("BPM_TEST_ODD", OsStr::from_bytes(b"caf\xe9"))
        .stdin(Stdio::null())
        .output()
        .expect("bpm mcp runs");
    assert_ne!(
        out.status.code(),
        Some(101),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A request over the socket's 1 MiB limit is refused before it is sent,
/// with the limit and what to do; nothing is created.
#[test]
fn a_request_over_the_limit_names_it_and_creates_nothing() {
    let bpm = Bpm::new();
    // One argument may hold at most 128 KiB: twelve of 100 KiB each.
    let vars: Vec<String> = (0..12)
        .map(|i| format!("BIG{i}={}", "x".repeat(100 << 10)))
        .collect();
    let mut args: Vec<&str> = vec!["run"];
    for v in &vars {
        args.extend(["--env", v.as_str()]);
    }
    args.extend(["--", "true"]);
    let err = bpm.fails(&args, 4);
    assert!(
        err.contains("over the daemon's limit of 1048576 bytes")
            && err.contains("nothing was started"),
        "{err}"
    );
    // A batch far over the limit is split into requests that fit.
    let pad = "y".repeat(600);
    let lines = (0..2000).fold(String::new(), |mut all, i| {
        all.push_str("echo ");
        all.push_str(&i.to_string());
        all.push(' ');
        all.push_str(&pad);
        all.push('\n');
        all
    });
    let out = bpm
        .feed(&["run", "--shell", "--from", "-"], lines.as_bytes())
        .wait_with_output()
        .expect("wait");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 2000);
    assert_eq!(
        bpm.json(&["ps", "--all", "--json"])
            .as_array()
            .expect("array")
            .len(),
        2000
    );
}

/// A daemon that finds its journal damaged says so in its log and in
/// `bpm daemon status`, naming the records concerned, and starts anyway.
#[test]
fn a_damaged_journal_is_reported_at_start_and_in_the_status() {
    let bpm = Bpm::new();
    let id = bpm.ok(&["run", "--", "true"]).trim().to_string();
    bpm.ok(&["wait", &id]);
    bpm.ok(&["daemon", "stop"]);
    let records = bpm.home().join("records");
    let damaged = (0..2).find_map(|n| {
        let path = records.join(format!("journal.{n}"));
        let mut bytes = std::fs::read(&path).ok()?;
        let at = bytes.windows(id.len()).position(|w| w == id.as_bytes())?;
        bytes[at + 40..at + 50].copy_from_slice(b"##########");
        std::fs::write(&path, bytes).expect("damage");
        Some(path)
    });
    assert!(damaged.is_some(), "the record is in no journal file");
    bpm.ok(&["ps", "--all"]);
    let status = bpm.ok(&["daemon", "status"]);
    assert!(
        status.contains("warning  the journal") && status.contains(&id),
        "{status}"
    );
    let log = std::fs::read_to_string(bpm.home().join("daemon.log")).expect("log");
    assert!(
        log.contains("ERROR") && log.contains("was damaged"),
        "{log}"
    );
}

/// Waits until `bpm show` counts `processes` in the tree of `id`.
fn until_usage(bpm: &Bpm, id: &str, processes: &str, when: &str) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let shown = bpm.ok(&["show", id]);
        if shown.contains(processes) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{when}: not {processes}:\n{shown}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

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
    let before = bpm.ok(&["logs", id]).lines().count();
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        bpm.ok(&["logs", id]).lines().count() > before + 3,
        "its output is no longer captured"
    );
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

/// A `Bpm` whose state directory is a tmpfs of `size` (`8m`), mounted for
/// the test (it needs root, as CI has: it fails, never skips, without it).
/// The daemon is stopped with every process before the disk is unmounted.
struct SmallDisk {
    bpm: Bpm,
}

impl SmallDisk {
    fn new(size: &str) -> Self {
        assert!(
            rustix::process::geteuid().is_root(),
            "the disk-full tests mount a small tmpfs as BPM_HOME: run them as root (CI does)"
        );
        let bpm = Bpm::new();
        let mounted = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(bpm.home())
            .status()
            .expect("mount runs");
        assert!(mounted.success(), "mount -t tmpfs failed");
        SmallDisk { bpm }
    }

    /// The bytes `logs` says were dropped, from its stderr.
    fn dropped(&self, id: &str) -> (String, u64) {
        let out = self.bpm.run(&["logs", id]);
        assert!(out.status.success(), "{out:?}");
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        let dropped = err
            .split("bpm: [")
            .nth(1)
            .and_then(|rest| rest.split(' ').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        (String::from_utf8_lossy(&out.stdout).into_owned(), dropped)
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = self.bpm.cmd(&["daemon", "stop", "--kill-all"]).output();
        // The keeper leaves by itself 10 s after its last process: a lazy
        // unmount lets the test end now and the disk go with it.
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.bpm.home())
            .status();
    }
}

/// A process whose output fills the disk runs to its own end, with its exit
/// code, and its newest output is kept; what could not be kept is counted,
/// not silently lost; new work is refused with a message that names the
/// device and path, and nothing of it is created; reads go on; and once
/// space returns, new work is taken again by the same daemon.
#[test]
fn a_full_disk_costs_new_work_never_running_processes_and_bpm_recovers_by_itself() {
    let disk = SmallDisk::new("8m");
    let bpm = &disk.bpm;
    assert_eq!(bpm.ok(&["run", "--wait", "--", "echo", "hi"]), "hi\n");
    let daemon = bpm.daemon_pid();
    let go = tempfile::tempdir().expect("tmp");
    let go_file = go.path().join("go");
    // 20 MB of output once the disk is nearly full: before, the keeper
    // died of its own log and the writer of SIGPIPE (141), or blocked.
    let heavy = bpm.ok(&[
        "run",
        "--name",
        "heavy",
        "--",
        "sh",
        "-c",
        &format!(
            "while [ ! -e {} ]; do sleep 0.05; done; head -c 20000000 /dev/zero | tr '\\0' x; echo; echo done; exit 3",
            go_file.display()
        ),
    ]);
    // Someone else fills the disk, leaving less than bpm keeps free for new work.
    let free = rustix::fs::statvfs(bpm.home()).expect("statvfs");
    let room = free.f_bavail * free.f_frsize;
    let filler = bpm.home().join("filler");
    std::fs::write(
        &filler,
        vec![0u8; usize::try_from(room - (512 << 10)).expect("size")],
    )
    .expect("filler");
    std::fs::write(&go_file, "").expect("go");
    let out = bpm.run(&["wait", heavy.trim(), "--timeout", "60"]);
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    let (text, dropped) = disk.dropped("heavy");
    assert!(dropped > 10_000_000, "{dropped} bytes counted as dropped");
    assert!(
        text.ends_with("x\ndone\n"),
        "{}",
        &text[text.len().saturating_sub(80)..]
    );

    let records = |bpm: &Bpm| {
        bpm.json(&["ps", "--all", "--json"])
            .as_array()
            .expect("a list")
            .len()
    };
    assert_eq!(records(bpm), 2);
    let err = bpm.fails(&["run", "--", "true"], 1);
    assert!(
        err.contains("no space left on tmpfs")
            && err.contains(&bpm.home().display().to_string())
            && err.contains("free some space"),
        "{err}"
    );
    let batch = go.path().join("batch.txt");
    let lines = "echo one\n".repeat(50);
    std::fs::write(&batch, lines).expect("batch file");
    let err = bpm.fails(&["run", "--from", batch.to_str().expect("utf-8")], 1);
    assert!(err.contains("50 new records"), "{err}");
    assert_eq!(records(bpm), 2, "nothing of the refused work was created");
    assert_eq!(bpm.state("heavy"), "failed");

    // Space returns: the same daemon takes new work again.
    std::fs::remove_file(&filler).expect("rm filler");
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let out = bpm.run(&["run", "--wait", "--", "echo", "back"]);
        if out.status.success() {
            assert_eq!(String::from_utf8_lossy(&out.stdout), "back\n");
            break;
        }
        assert!(Instant::now() < deadline, "new work still refused: {out:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(bpm.daemon_pid(), daemon);
}

/// A batch too large for one request, refused part way for lack of room:
/// the records of the requests taken stand and are printed, and the lines
/// not started are named, so a caller never has records it does not know
/// of (before, it printed no id, though thousands of its records ran).
#[test]
fn a_batch_refused_part_way_prints_what_was_started_and_names_the_rest() {
    let disk = SmallDisk::new("64m");
    let bpm = &disk.bpm;
    bpm.ok(&["ps"]);
    let free = rustix::fs::statvfs(bpm.home()).expect("statvfs");
    let room = free.f_bavail * free.f_frsize;
    std::fs::write(
        bpm.home().join("filler"),
        vec![0u8; usize::try_from(room - (6 << 20)).expect("size")],
    )
    .expect("filler");
    let go = tempfile::tempdir().expect("tmp");
    let batch = go.path().join("batch.txt");
    let line = format!("true {}\n", "x".repeat(2_000));
    std::fs::write(&batch, line.repeat(6_000)).expect("batch file");
    let out = bpm.run(&["run", "--from", batch.to_str().expect("utf-8")]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    let ids: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect();
    let started = ids.len();
    assert!(started > 0 && started < 6_000, "{started} started: {err}");
    let names = format!("batch.txt:{}-6000: not started:", started + 1);
    assert!(err.contains(&names), "{err}");
    assert!(
        err.contains(&format!(
            "{} of 6000 lines were not started",
            6_000 - started
        )),
        "{err}"
    );
    let records = bpm.json(&["ps", "--all", "--json"]);
    let known: std::collections::BTreeSet<&str> = records
        .as_array()
        .expect("a list")
        .iter()
        .filter_map(|r| r["id"].as_str())
        .collect();
    assert_eq!(known.len(), started, "every record made was printed");
    assert!(ids.iter().all(|id| known.contains(id.as_str())));
}

/// On a disk too small for its journal, the daemon does not start half way
/// and leave an empty log: the command says what is needed.
#[test]
fn a_disk_too_small_for_the_journal_is_named_with_what_it_needs() {
    let disk = SmallDisk::new("2m");
    let err = disk.bpm.fails(&["ps"], 5);
    assert!(
        err.contains("could not start")
            && err.contains("no space left on tmpfs")
            && err.contains("needed for bpm's journal")
            && err.contains("BPM_HOME"),
        "{err}"
    );
}

/// A four-service project: the database is ready by a log line, the
/// migration runs once it is, the API (a port handed out, an env file,
/// ready by HTTP) once the migration completed, and two workers once the
/// API is ready.
const SHOP: &str = r#"
[project]
name = "shop"

[services.db]
command = "sleep 0.2; echo 'ready to accept'; exec sleep 300"
ready = { log = "ready to accept" }

[services.migrate]
command = "echo migrating; sleep 0.2; echo migrated"
depends_on = { db = "ready" }

[services.api]
command = "exec python3 -m http.server --bind 127.0.0.1 $PORT"
port = "auto"
ready = { http = "/" }
depends_on = { migrate = "completed" }
env = { LOG = "debug" }
env_file = ".env"
restart = "always"

[services.worker]
command = "echo working; exec sleep 300"
depends_on = { api = "ready" }
replicas = 2
"#;

/// The project's live records by service, with their pids.
fn services(bpm: &Bpm, project: &str) -> std::collections::BTreeMap<String, (String, u64)> {
    bpm.json(&["ps", "--project", project, "--json"])
        .as_array()
        .expect("array")
        .iter()
        .map(|r| {
            (
                r["labels"]["bpm.service"]
                    .as_str()
                    .expect("service")
                    .to_owned(),
                (
                    r["id"].as_str().expect("id").to_owned(),
                    r["pid"].as_u64().unwrap_or(0),
                ),
            )
        })
        .collect()
}

/// `up --wait` brings a project up in dependency order; `up` again keeps
/// every process; an edited env file replaces only its service; `logs`
/// interleaves the services' output with their names; `down` stops all in
/// reverse order, each tree gone.
#[test]
fn a_project_comes_up_once_and_goes_down_in_order() {
    let bpm = Bpm::new();
    let dir = tempfile::tempdir().expect("dir");
    let file = dir.path().join("bpm.toml");
    std::fs::write(&file, SHOP).expect("file");
    std::fs::write(dir.path().join(".env"), "SECRET=1\n").expect("env");
    let f = file.to_str().expect("utf-8");
    let first = bpm.ok(&["up", "-f", f, "--wait", "--wait-timeout", "60s"]);
    let lines: Vec<&str> = first.lines().collect();
    assert_eq!(lines.len(), 5, "{first}");
    assert!(lines.iter().all(|l| l.starts_with("started")), "{first}");
    let order: Vec<&str> = lines
        .iter()
        .map(|l| l.split_whitespace().nth(1).unwrap_or(""))
        .collect();
    assert_eq!(order, ["db", "migrate", "api", "worker.1", "worker.2"]);
    let up = services(&bpm, "shop");
    assert_eq!(
        up.keys().map(String::as_str).collect::<Vec<_>>(),
        ["api", "db", "worker.1", "worker.2"],
        "migrate completed: {up:?}"
    );
    let api = bpm.json(&["show", &up["api"].0, "--json"]);
    assert!(
        api["port"].as_u64().is_some() && !api["ready_at"].is_null(),
        "{api}"
    );
    // `--project` with no name: the project of the bpm.toml here; and
    // where there is none, an error that says so.
    let here = bpm
        .cmd(&["ps", "--project", "--json"])
        .current_dir(dir.path())
        .output()
        .expect("bpm");
    assert!(here.status.success(), "{here:?}");
    let listed: serde_json::Value = serde_json::from_slice(&here.stdout).expect("json");
    let mut ids: Vec<&str> = listed
        .as_array()
        .expect("array")
        .iter()
        .map(|r| r["id"].as_str().expect("id"))
        .collect();
    ids.sort_unstable();
    let mut want: Vec<&str> = up.values().map(|(id, _)| id.as_str()).collect();
    want.sort_unstable();
    assert_eq!(ids, want, "{listed}");
    let nowhere = bpm
        .cmd(&["ps", "--project"])
        .current_dir("/")
        .output()
        .expect("bpm");
    let said = String::from_utf8_lossy(&nowhere.stderr);
    assert_eq!(nowhere.status.code(), Some(4), "{said}");
    assert!(said.contains("no bpm.toml in / or a parent"), "{said}");
    let nowhere = bpm.cmd(&["logs"]).current_dir("/").output().expect("bpm");
    let said = String::from_utf8_lossy(&nowhere.stderr);
    assert_eq!(nowhere.status.code(), Some(4), "{said}");
    assert!(said.contains("(bpm logs ID)"), "{said}");
    let table = bpm.ok(&["ps"]);
    assert!(
        table.lines().next().is_some_and(|h| h.contains("PROJECT")),
        "{table}"
    );

    // Again: nothing to do, every pid kept.
    let again = bpm.ok(&["up", "-f", f]);
    assert!(again.lines().all(|l| l.starts_with("kept")), "{again}");
    assert_eq!(services(&bpm, "shop"), up);

    // The env file changed: only the API is replaced.
    std::fs::write(dir.path().join(".env"), "SECRET=2\n").expect("env");
    let plan = bpm.ok(&["up", "-f", f, "--dry-run"]);
    assert!(
        plan.lines()
            .any(|l| l.starts_with("replaced") && l.contains("api")),
        "{plan}"
    );
    let changed = bpm.ok(&["up", "-f", f, "--wait"]);
    let replaced: Vec<&str> = changed.lines().filter(|l| !l.starts_with("kept")).collect();
    assert_eq!(replaced.len(), 1, "{changed}");
    assert!(
        replaced[0].starts_with("replaced") && replaced[0].contains("api"),
        "{changed}"
    );
    let now = services(&bpm, "shop");
    assert_ne!(now["api"], up["api"]);
    for kept in ["db", "worker.1", "worker.2"] {
        assert_eq!(now[kept], up[kept], "{kept} kept its process");
    }

    // Every service's output, prefixed.
    let logs = bpm.ok(&["logs", "shop"]);
    assert!(
        logs.lines()
            .any(|l| l.starts_with("db") && l.ends_with("| ready to accept")),
        "{logs}"
    );
    assert!(
        logs.lines()
            .any(|l| l.starts_with("migrate") && l.ends_with("| migrated")),
        "{logs}"
    );
    // No id inside the project's directory: the same, for this project.
    let here = bpm
        .cmd(&["logs"])
        .current_dir(dir.path())
        .output()
        .expect("bpm");
    assert!(here.status.success(), "{here:?}");
    let here = String::from_utf8_lossy(&here.stdout);
    for line in logs
        .lines()
        .filter(|l| l.starts_with("db") || l.starts_with("migrate"))
    {
        assert!(here.lines().any(|l| l == line), "{line} in:\n{here}");
    }

    // Down: reverse order, every tree gone.
    let down = bpm.ok(&["down", "-f", f]);
    let stopped: Vec<&str> = down
        .lines()
        .map(|l| l.split_whitespace().nth(1).unwrap_or(""))
        .collect();
    assert_eq!(stopped, ["worker.2", "worker.1", "api", "db"], "{down}");
    for (_, pid) in now.values() {
        until_gone(u32::try_from(*pid).expect("pid"), "bpm down");
    }
    assert!(services(&bpm, "shop").is_empty());
    // From any directory, by the project's name.
    let elsewhere = bpm
        .cmd(&["up", "shop", "--dry-run"])
        .current_dir("/")
        .output()
        .expect("bpm");
    assert!(elsewhere.status.success(), "{elsewhere:?}");
    assert_eq!(
        String::from_utf8_lossy(&elsewhere.stdout).lines().count(),
        5
    );
}

/// A dependency that fails fails its dependents, naming it, and `up
/// --wait` exits non-zero naming the service with its last lines; two
/// racing `up`s start one copy of each service; a broken file is refused
/// before anything starts, naming the line and the key.
#[test]
fn a_project_refuses_what_cannot_work_and_starts_nothing_twice() {
    let bpm = Bpm::new();
    let dir = tempfile::tempdir().expect("dir");
    let file = dir.path().join("bpm.toml");
    let f = file.to_str().expect("utf-8");
    std::fs::write(
        &file,
        "[project]\nname = \"broken\"\n[services.migrate]\ncommand = \"echo 'no such table'; exit 3\"\n[services.api]\ncommand = \"sleep 300\"\ndepends_on = { migrate = \"completed\" }\n",
    )
    .expect("file");
    let err = bpm.fails(&["up", "-f", f, "--wait", "--wait-timeout", "30s"], 1);
    assert!(
        err.contains("broken/migrate failed") && err.contains("no such table"),
        "{err}"
    );
    let all = bpm.json(&["ps", "--all", "--project", "broken", "--json"]);
    let api = all
        .as_array()
        .expect("array")
        .iter()
        .find(|r| r["name"] == "broken/api")
        .expect("api");
    assert_eq!(api["state"], "failed");
    assert!(
        api["error"]
            .as_str()
            .is_some_and(|e| e.contains("instead of completing")),
        "{api}"
    );

    // Two racing ups: one copy of each.
    std::fs::write(&file, SHOP.replace("\"shop\"", "\"race\"")).expect("file");
    std::fs::write(dir.path().join(".env"), "A=1\n").expect("env");
    let racers: Vec<_> = (0..2)
        .map(|_| {
            bpm.cmd(&["up", "-f", f])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("up")
        })
        .collect();
    for r in racers {
        let out = r.wait_with_output().expect("up");
        assert!(out.status.success(), "{out:?}");
    }
    bpm.ok(&["up", "-f", f, "--wait", "--wait-timeout", "60s"]);
    let all = bpm.json(&["ps", "--all", "--project", "race", "--json"]);
    let mut per_service = std::collections::BTreeMap::new();
    for r in all.as_array().expect("array") {
        *per_service
            .entry(r["labels"]["bpm.service"].as_str().unwrap_or("").to_owned())
            .or_insert(0) += 1;
    }
    assert!(per_service.values().all(|n| *n == 1), "{per_service:?}");
    assert_eq!(per_service.len(), 5, "{per_service:?}");
    bpm.ok(&["down", "-f", f]);

    // Refused before anything starts, naming the line and the key.
    for (text, says) in [
        (
            "[services.a]\ncomand = \"x\"\n",
            "2: unknown field `comand`",
        ),
        (
            "[services.a]\ncommand = \"x\"\ntimeout = \"5x\"\n",
            "services.a.timeout",
        ),
        (
            "[services.a]\ncommand = \"x\"\ndepends_on = { b = \"ready\" }\n",
            "depends on \"b\"",
        ),
        (
            "[services.a]\ncommand = \"x\"\ndepends_on = { b = \"ready\" }\n[services.b]\ncommand = \"y\"\ndepends_on = { a = \"started\" }\n",
            "cycle",
        ),
        (
            "[services.a]\ncommand = \"x\"\ndepends_on = { a = \"soon\" }\n",
            "unknown condition",
        ),
    ] {
        std::fs::write(&file, text).expect("file");
        let err = bpm.fails(&["up", "-f", f], 4);
        assert!(
            err.contains(says) && err.contains("bpm.toml"),
            "{text}: {err}"
        );
    }
    let live = bpm.json(&["ps", "--json"]);
    assert_eq!(live.as_array().map(Vec::len), Some(0), "{live}");
}

/// A liveness check that starts failing restarts its service; a program
/// that says `READY=1` on `NOTIFY_SOCKET` itself is ready then.
#[test]
fn health_and_notify_readiness() {
    let bpm = Bpm::new();
    let dir = tempfile::tempdir().expect("dir");
    let flag = dir.path().join("healthy");
    std::fs::write(&flag, "").expect("flag");
    let file = dir.path().join("bpm.toml");
    std::fs::write(
        &file,
        format!(
            r#"
[services.api]
command = "exec sleep 300"
restart = "always"
health = {{ exec = "test -f {}", every = "200ms", failures = 2 }}

[services.notified]
argv = ["python3", "-c", "import os, socket, time; time.sleep(0.3); s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM); s.sendto(b'READY=1', os.environ['NOTIFY_SOCKET']); time.sleep(300)"]
ready = {{ notify = true }}
"#,
            flag.display()
        ),
    )
    .expect("file");
    let f = file.to_str().expect("utf-8");
    bpm.ok(&["up", "-f", f, "--wait", "--wait-timeout", "30s"]);
    let project = dir
        .path()
        .file_name()
        .and_then(|n| n.to_str())
        .expect("name")
        .to_owned();
    let api = format!("{project}/api");
    let deadline = Instant::now() + Duration::from_secs(10);
    while bpm.json(&["show", &api, "--json"])["health"]["healthy"] != true {
        assert!(Instant::now() < deadline, "never healthy");
        std::thread::sleep(Duration::from_millis(50));
    }
    let shown = bpm.ok(&["show", &api]);
    assert!(shown.contains("healthy"), "{shown}");
    std::fs::remove_file(&flag).expect("unhealthy now");
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let r = bpm.json(&["show", &api, "--json"]);
        if r["restarts"].as_u64() >= Some(1) {
            assert_eq!(r["attempts"][0]["exit"]["signal"], 15, "{r}");
            break;
        }
        assert!(Instant::now() < deadline, "never restarted: {r}");
        std::thread::sleep(Duration::from_millis(50));
    }
    let err = bpm.fails(&["run", "--health-every", "1s", "--", "true"], 4);
    assert!(err.contains("need a check"), "{err}");
    let err = bpm.fails(&["ready"], 4);
    assert!(err.contains("NOTIFY_SOCKET"), "{err}");
    bpm.ok(&["down", "-f", f]);
}

/// A Procfile runs with a port per process, as foreman hands them out,
/// and the `.env` beside it; a process-compose file from its documentation runs unchanged, the keys
/// bpm does not act on named in a warning.
#[test]
fn procfiles_and_process_compose_files_run_as_they_are() {
    let bpm = Bpm::new();
    let dir = tempfile::tempdir().expect("dir");
    let procfile = dir.path().join("Procfile");
    std::fs::write(
        &procfile,
        "# the usual pair\nweb: exec python3 -m http.server --bind 127.0.0.1 $PORT\nworker: echo \"worker $QUEUE on $PORT\"; exec sleep 300\n",
    )
    .expect("Procfile");
    std::fs::write(dir.path().join(".env"), "QUEUE=emails\n").expect(".env");
    let out = bpm.ok(&[
        "up",
        "-f",
        procfile.to_str().expect("utf-8"),
        "--wait",
        "--wait-timeout",
        "30s",
    ]);
    assert_eq!(
        out.lines().filter(|l| l.starts_with("started")).count(),
        2,
        "{out}"
    );
    let project = dir
        .path()
        .file_name()
        .and_then(|n| n.to_str())
        .expect("name")
        .to_owned();
    let up = services(&bpm, &project);
    let ports: std::collections::BTreeSet<u64> = up
        .values()
        .map(|(id, _)| {
            bpm.json(&["show", id, "--json"])["port"]
                .as_u64()
                .expect("a port")
        })
        .collect();
    assert_eq!(ports.len(), 2, "one port each");
    let worker = &up["worker"].0;
    let deadline = Instant::now() + Duration::from_secs(10);
    while !bpm.ok(&["logs", worker]).starts_with("worker emails on ") {
        assert!(
            Instant::now() < deadline,
            "the .env never reached the worker"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    bpm.ok(&["down", "-f", procfile.to_str().expect("utf-8")]);

    // From process-compose's documentation (launcher page), unchanged.
    let compose = dir.path().join("process-compose.yaml");
    std::fs::write(
        &compose,
        r#"processes:
  process1:
    description: This process will sleep for 2 seconds
    command: "sleep 2"
  process2:
    description: This process will sleep for 3 seconds
    command: "sleep 3"
  process_name:
    command: "sleep 2"
    log_location: ./log_file.{PC_REPLICA_NUM}.log  # <- {PC_REPLICA_NUM} will be replaced with replica number. If more than one replica and PC_REPLICA_NUM is not specified, the replica number will be concatenated to the file end.
    replicas: 2
"#,
    )
    .expect("compose");
    let out = bpm
        .cmd(&["up", "-f", compose.to_str().expect("utf-8")])
        .output()
        .expect("up");
    assert!(out.status.success(), "{out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        stdout.lines().filter(|l| l.starts_with("started")).count(),
        4,
        "{stdout}"
    );
    assert!(
        stderr.contains("log_location") && stderr.contains("ignored"),
        "{stderr}"
    );
    // A dependency with a readiness probe, as process-compose writes them.
    std::fs::write(
        &compose,
        r#"version: "0.5"
processes:
  db:
    command: "sleep 0.3; touch db.ready; exec sleep 300"
    readiness_probe:
      exec:
        command: "test -f db.ready"
  api:
    command: "exec sleep 300"
    environment:
      - "MODE=dev"
    depends_on:
      db:
        condition: process_healthy
    availability:
      restart: "on_failure"
      max_restarts: 3
    liveness_probe:
      exec:
        command: "true"
      period_seconds: 1
      failure_threshold: 2
"#,
    )
    .expect("compose");
    bpm.ok(&[
        "up",
        "-f",
        compose.to_str().expect("utf-8"),
        "--wait",
        "--wait-timeout",
        "30s",
    ]);
    let api = bpm.json(&["show", &format!("{project}/api"), "--json"]);
    assert_eq!(api["state"], "running", "{api}");
    assert_eq!(api["spec"]["restart"]["mode"], "on_failure", "{api}");
    assert_eq!(api["spec"]["health"]["every"], "1s", "{api}");
    assert_eq!(api["spec"]["health"]["failures"], 2, "{api}");
    bpm.ok(&["down", "-f", compose.to_str().expect("utf-8")]);
}

/// The daemon killed with `kill -9` in the middle of `up --wait`: the next
/// `up` finishes the job and starts nothing twice; `wait --project` waits
/// for the project; `restart --with-dependents` replaces a service and
/// what depends on it, each after what it waits for is back.
#[test]
fn a_daemon_killed_during_up_leaves_nothing_to_do_twice() {
    let bpm = Bpm::new();
    let dir = tempfile::tempdir().expect("dir");
    let file = dir.path().join("bpm.toml");
    std::fs::write(
        &file,
        r#"
[project]
name = "chain"
[services.a]
command = "sleep 0.8; echo up; exec sleep 300"
ready = { log = "up" }
[services.b]
command = "sleep 0.8; echo up; exec sleep 300"
ready = { log = "up" }
depends_on = { a = "ready" }
[services.c]
command = "sleep 0.8; echo up; exec sleep 300"
ready = { log = "up" }
depends_on = { b = "ready" }
[services.once]
command = "sleep 0.5"
depends_on = { a = "started" }
"#,
    )
    .expect("file");
    let f = file.to_str().expect("utf-8");
    bpm.ok(&["ps"]);
    let mut first = bpm
        .cmd(&["up", "-f", f, "--wait"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("up");
    std::thread::sleep(Duration::from_millis(400));
    let daemon = bpm.daemon_pid();
    Command::new("kill")
        .args(["-9", &daemon.to_string()])
        .status()
        .expect("kill");
    let cut = first.wait().expect("the first up ends");
    assert!(!cut.success(), "the first up cannot have finished");
    let out = bpm.ok(&["up", "-f", f, "--wait", "--wait-timeout", "60s"]);
    assert_eq!(out.lines().count(), 4, "{out}");
    let all = bpm.json(&["ps", "--all", "--project", "chain", "--json"]);
    let mut per_service = std::collections::BTreeMap::new();
    for r in all.as_array().expect("array") {
        *per_service
            .entry(r["labels"]["bpm.service"].as_str().unwrap_or("").to_owned())
            .or_insert(0) += 1;
    }
    assert_eq!(per_service.len(), 4, "{per_service:?}");
    assert!(
        per_service.values().all(|n| *n == 1),
        "started twice: {per_service:?}"
    );
    // `once` ends by itself: wait for the project's live processes to end
    // once they are stopped.
    let before = services(&bpm, "chain");
    let restarted = bpm.ok(&["restart", "chain/b", "--with-dependents"]);
    let lines: Vec<&str> = restarted.lines().collect();
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("kept") && l.contains(" a "))
            && lines
                .iter()
                .any(|l| l.starts_with("replaced") && l.contains(" b "))
            && lines
                .iter()
                .any(|l| l.starts_with("replaced") && l.contains(" c ")),
        "{restarted}"
    );
    let after = services(&bpm, "chain");
    assert_eq!(after["a"], before["a"]);
    assert_ne!(after["b"], before["b"]);
    assert_ne!(after["c"], before["c"]);
    let c = bpm.json(&["show", &after["c"].0, "--json"]);
    assert_eq!(
        c["spec"]["dependencies"][0].as_str(),
        Some(after["b"].0.as_str()),
        "c waits for the new b: {c}"
    );
    let waiter = bpm
        .cmd(&["wait", "--project", "chain"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("wait");
    bpm.ok(&["down", "-f", f]);
    let waited = waiter.wait_with_output().expect("wait");
    assert!(
        waited.status.success(),
        "wait --project returns once down ended them: {waited:?}"
    );
}

/// `--env-file`: the files' variables go over the shell's, `--env` over
/// theirs; each start reads them again, so an edit reaches the next
/// restart, and a file gone by then fails that start naming it. A file
/// that cannot be read is refused when the process is asked for.
#[test]
fn env_files_are_read_again_at_each_start() {
    let bpm = Bpm::new();
    let dir = tempfile::tempdir().expect("dir");
    let (a, b) = (dir.path().join("a.env"), dir.path().join("b.env"));
    std::fs::write(&a, "# shared\nWHO=world\nFROM=file\nGREETING=hello\n").expect("write");
    std::fs::write(&b, "EXTRA=\"one more\"\n").expect("write");
    let run = |args: &[&str]| {
        let out = bpm
            .cmd(args)
            .current_dir(dir.path())
            .env("FROM", "shell")
            .output()
            .expect("bpm runs");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout)
            .expect("utf-8")
            .trim()
            .to_owned()
    };
    let line = "echo \"$GREETING $WHO $FROM $EXTRA\"";
    let id = run(&[
        "run",
        "--name",
        "greet",
        "--env-file",
        "a.env",
        "--env-file",
        "b.env",
        "--env",
        "GREETING=hi",
        "--",
        "sh",
        "-c",
        line,
    ]);
    bpm.ok(&["wait", &id]);
    assert_eq!(bpm.ok(&["logs", &id]), "hi world file one more\n");
    let shown = bpm.ok(&["show", &id]);
    assert!(shown.contains(&a.display().to_string()), "{shown}");

    std::fs::write(&a, "WHO=again\nFROM=file\n").expect("write");
    let next = bpm.ok(&["restart", &id]);
    let next = next.trim();
    bpm.ok(&["wait", next]);
    assert_eq!(bpm.ok(&["logs", next]), "hi again file one more\n");

    std::fs::remove_file(&b).expect("remove");
    let last = bpm.ok(&["restart", next]);
    let last = last.trim();
    bpm.until_state(last, "failed");
    let error = bpm.json(&["show", last, "--json"])["error"].to_string();
    assert!(
        error.contains("b.env") && error.contains("no such file"),
        "{error}"
    );

    let err = bpm.fails(&["run", "--env-file", "/no/such.env", "--", "true"], 4);
    assert!(
        err.contains("--env-file") && err.contains("/no/such.env"),
        "{err}"
    );
    std::fs::write(&a, "WHO=x\nnot a variable\n").expect("write");
    let err = bpm.fails(
        &["run", "--env-file", &a.display().to_string(), "--", "true"],
        4,
    );
    // Named by line and column; an env file's text is never quoted.
    assert!(
        err.contains("line 2, column 5") && !err.contains("not a variable"),
        "{err}"
    );
}

/// A service's `env_file` is read again when the service restarts (by
/// `bpm restart` or its restart policy), not only by `bpm up`.
#[test]
fn a_service_restart_reads_its_env_file_again() {
    let bpm = Bpm::new();
    let dir = tempfile::tempdir().expect("dir");
    let file = dir.path().join("bpm.toml");
    std::fs::write(
        &file,
        "[services.hello]\ncommand = 'echo \"hello $WHO\"; exec sleep 300'\nenv_file = \"hello.env\"\n",
    )
    .expect("file");
    std::fs::write(dir.path().join("hello.env"), "WHO=world\n").expect("env");
    let f = file.to_str().expect("utf-8");
    bpm.ok(&["up", "-f", f, "--wait"]);
    let project = dir
        .path()
        .file_name()
        .and_then(|n| n.to_str())
        .expect("name")
        .to_owned();
    let first = services(&bpm, &project)["hello"].0.clone();
    let until_logs = |id: &str, text: &str| {
        let deadline = Instant::now() + Duration::from_secs(10);
        while bpm.ok(&["logs", id]) != text {
            assert!(Instant::now() < deadline, "{id} never printed {text:?}");
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    until_logs(&first, "hello world\n");
    std::fs::write(dir.path().join("hello.env"), "WHO=again\n").expect("env");
    let said = bpm.ok(&["restart", &first]);
    assert!(said.starts_with("replaced hello"), "{said}");
    let next = services(&bpm, &project)["hello"].0.clone();
    assert_ne!(next, first);
    until_logs(&next, "hello again\n");
    bpm.ok(&["down", "-f", f]);
}

/// The records whose JSON `field` is `value`, oldest first (ids sort by
/// creation, a schedule's runs by due time).
fn listed(bpm: &Bpm, field: &str, value: &str) -> Vec<serde_json::Value> {
    let mut all: Vec<serde_json::Value> = bpm
        .json(&["ps", "--all", "--json"])
        .as_array()
        .expect("array")
        .iter()
        .filter(|r| r[field] == value)
        .cloned()
        .collect();
    all.sort_by_key(|r| r["id"].as_str().unwrap_or_default().to_owned());
    all
}

/// The records named `name`, oldest first, as JSON.
fn named(bpm: &Bpm, name: &str) -> Vec<serde_json::Value> {
    listed(bpm, "name", name)
}

/// `--watch`: twenty saves in 100 ms are one restart, a new record
/// `restarted_from` the old, which sees the last save; writes under
/// `.git` and to ignored files restart nothing; a stopped process is
/// watched no more; a path that does not exist is refused by name.
#[test]
fn a_burst_of_saves_restarts_a_watched_process_once() {
    let bpm = Bpm::new();
    let dir = tempfile::tempdir().expect("dir");
    let src = dir.path().join("src");
    std::fs::create_dir_all(&src).expect("src");
    std::fs::create_dir_all(dir.path().join(".git")).expect("git");
    std::fs::write(src.join("app.txt"), "v0").expect("write");
    let out = bpm
        .cmd(&[
            "run",
            "--name",
            "dev",
            "--watch",
            ".",
            "--watch-ignore",
            "*.log",
            "--watch-debounce",
            "200ms",
            "--",
            "sh",
            "-c",
            "cat src/app.txt; echo; exec sleep 300",
        ])
        .current_dir(dir.path())
        .output()
        .expect("bpm runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let first = String::from_utf8(out.stdout)
        .expect("utf-8")
        .trim()
        .to_owned();
    bpm.until_state(&first, "running");
    let shown = bpm.ok(&["show", &first]);
    assert!(
        shown.contains("debounce 200ms") && shown.contains("ignoring *.log"),
        "{shown}"
    );
    for i in 1..=20 {
        std::fs::write(src.join("app.txt"), format!("v{i}")).expect("write");
        std::thread::sleep(Duration::from_millis(5));
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while named(&bpm, "dev").len() < 2 {
        assert!(Instant::now() < deadline, "no restart after the saves");
        std::thread::sleep(Duration::from_millis(20));
    }
    // Well past the debounce: still one restart.
    std::thread::sleep(Duration::from_millis(800));
    let records = named(&bpm, "dev");
    assert_eq!(records.len(), 2, "one restart: {records:?}");
    let second = records[1]["id"].as_str().expect("id").to_owned();
    assert_eq!(records[1]["restarted_from"], first.as_str());
    bpm.until_state(&first, "cancelled");
    bpm.until_state(&second, "running");
    let deadline = Instant::now() + Duration::from_secs(10);
    while bpm.ok(&["logs", &second]) != "v20\n" {
        assert!(
            Instant::now() < deadline,
            "the new one never read the last save"
        );
        std::thread::sleep(Duration::from_millis(20));
    }

    // Git's writes and ignored files restart nothing.
    std::fs::write(dir.path().join(".git").join("index"), "x").expect("write");
    std::fs::write(src.join("debug.log"), "x").expect("write");
    std::thread::sleep(Duration::from_millis(800));
    assert_eq!(named(&bpm, "dev").len(), 2, "ignored changes restarted it");

    // Stopped, it is watched no more.
    bpm.ok(&["stop", &second]);
    std::fs::write(src.join("app.txt"), "after").expect("write");
    std::thread::sleep(Duration::from_millis(800));
    assert_eq!(named(&bpm, "dev").len(), 2, "a stopped process restarted");

    let err = bpm.fails(&["run", "--watch", "/no/such/dir", "--", "true"], 4);
    assert!(
        err.contains("--watch") && err.contains("/no/such/dir"),
        "{err}"
    );
}

/// A service's `watch` restarts it when its files change, and with
/// `restart_dependents` what depends on it too; the rest is kept.
#[test]
fn a_watched_service_restarts_with_its_dependents() {
    let bpm = Bpm::new();
    let dir = tempfile::tempdir().expect("dir");
    let file = dir.path().join("bpm.toml");
    std::fs::write(
        &file,
        r#"
[project]
name = "watched"

[services.api]
command = "cat conf.txt; echo; exec sleep 300"
watch = "conf.txt"
watch_debounce = "100ms"
restart_dependents = true

[services.web]
command = "echo web; exec sleep 300"
depends_on = ["api"]

[services.other]
command = "exec sleep 300"
"#,
    )
    .expect("file");
    std::fs::write(dir.path().join("conf.txt"), "v1").expect("conf");
    let f = file.to_str().expect("utf-8");
    bpm.ok(&["up", "-f", f, "--wait"]);
    let before = services(&bpm, "watched");
    std::fs::write(dir.path().join("conf.txt"), "v2").expect("conf");
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let now = services(&bpm, "watched");
        if now.len() == 3 && now["api"] != before["api"] && now["web"] != before["web"] {
            assert_eq!(now["other"], before["other"], "the rest is kept");
            let api = &now["api"].0;
            let web = bpm.json(&["show", &now["web"].0, "--json"]);
            assert_eq!(web["spec"]["dependencies"][0], api.as_str(), "{web}");
            let until = Instant::now() + Duration::from_secs(10);
            while bpm.ok(&["logs", api]) != "v2\n" {
                assert!(Instant::now() < until, "the new api never read v2");
                std::thread::sleep(Duration::from_millis(20));
            }
            break;
        }
        assert!(Instant::now() < deadline, "not restarted: {now:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
    bpm.ok(&["down", "-f", f]);
}

/// kill -9 of the daemon, the keeper and every process they ran, then any
/// command: what has a restart policy (or is a project's service) runs
/// again, once, as a new record `restarted_from` the old; the rest is
/// `lost` with the reason, `machine restarted` when the boot id changed
/// (a reboot, simulated by the boot id the daemon noted). Kills at varied
/// moments, in rounds.
#[test]
fn after_everything_is_killed_what_should_run_comes_back_once() {
    let bpm = Bpm::new();
    for round in 0..3u64 {
        let keep = bpm.ok(&["run", "--restart", "always", "--", "sleep", "300"]);
        let plain = bpm.ok(&["run", "--", "sleep", "300"]);
        let (keep, plain) = (keep.trim().to_owned(), plain.trim().to_owned());
        bpm.until_state(&keep, "running");
        bpm.until_state(&plain, "running");
        std::thread::sleep(Duration::from_millis(37 * round));
        let pids: Vec<String> = bpm
            .json(&["ps", "--json"])
            .as_array()
            .expect("array")
            .iter()
            .filter_map(|r| r["pid"].as_u64())
            .map(|p| p.to_string())
            .collect();
        let (daemon, keeper) = (bpm.daemon_pid(), bpm.keeper_pid());
        let mut kill = Command::new("kill");
        kill.args(["-9", &daemon.to_string(), &keeper.to_string()])
            .args(&pids);
        assert!(kill.status().expect("kill").success());
        while alive(daemon) || alive(keeper) {
            std::thread::sleep(Duration::from_millis(20));
        }
        let rebooted = round == 2;
        if rebooted {
            std::fs::write(bpm.home().join("boot_id"), "an-earlier-boot\n").expect("boot id");
        }
        // Any command brings the daemon back.
        let all = bpm.json(&["ps", "--all", "--json"]);
        let records = all.as_array().expect("array");
        let reason = if rebooted {
            "machine restarted"
        } else {
            "could not re-attach"
        };
        for old in [&keep, &plain] {
            let r = bpm.json(&["show", old, "--json"]);
            assert_eq!(r["state"], "lost", "{r}");
            assert!(
                r["error"].as_str().is_some_and(|e| e.contains(reason)),
                "{r}"
            );
        }
        let again: Vec<&serde_json::Value> = records
            .iter()
            .filter(|r| r["restarted_from"] == keep.as_str())
            .collect();
        assert_eq!(again.len(), 1, "runs again once: {all}");
        let again = again[0]["id"].as_str().expect("id").to_owned();
        bpm.until_state(&again, "running");
        assert!(
            !records
                .iter()
                .any(|r| r["restarted_from"] == plain.as_str()),
            "a process without a restart policy does not come back: {all}"
        );
        bpm.ok(&["stop", &again]);
    }
}

/// `bpm daemon install` writes a user unit that runs this bpm's daemon
/// for this `BPM_HOME`, leaving the keeper and the processes to run on when
/// the unit stops, and enables it; it says how to start at boot when
/// lingering is off; `uninstall` disables and removes it. Where systemd
/// does not answer, it installs nothing and prints the unit. (This machine
/// runs no systemd: `systemctl` and `loginctl` are stand-ins on PATH that
/// note their arguments, and answer as a running one, or a missing one.)
#[test]
fn daemon_install_writes_and_enables_a_user_unit() {
    let bpm = Bpm::new();
    let dir = tempfile::tempdir().expect("dir");
    let bin = dir.path().join("bin");
    std::fs::create_dir(&bin).expect("bin");
    let log = dir.path().join("calls");
    let script = |name: &str, body: &str| {
        let path = bin.join(name);
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).expect("script");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("mode");
    };
    script(
        "systemctl",
        &format!("echo \"$*\" >> '{}'; exit 0", log.display()),
    );
    script("loginctl", "echo no");
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let config = dir.path().join("config");
    let run = |args: &[&str]| {
        bpm.cmd(args)
            .env("PATH", &path)
            .env("XDG_CONFIG_HOME", &config)
            .env("USER", "tester")
            .output()
            .expect("bpm runs")
    };
    let out = run(&["daemon", "install"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("loginctl enable-linger tester"), "{said}");
    let unit = std::fs::read_to_string(config.join("systemd/user/bpm.service")).expect("unit");
    assert!(
        unit.contains(&format!(
            "ExecStart=\"{}\" daemon",
            env!("CARGO_BIN_EXE_bpm")
        )) && unit.contains(&format!(
            "Environment=\"BPM_HOME={}\"",
            bpm.home().display()
        )) && unit.contains("KillMode=process")
            && unit.contains("WantedBy=default.target"),
        "{unit}"
    );
    let calls = std::fs::read_to_string(&log).expect("calls");
    assert!(
        calls.contains("--user daemon-reload") && calls.contains("--user enable bpm.service"),
        "{calls}"
    );
    let out = run(&["daemon", "uninstall"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!config.join("systemd/user/bpm.service").exists());
    let calls = std::fs::read_to_string(&log).expect("calls");
    assert!(calls.contains("--user disable bpm.service"), "{calls}");

    // No systemd: nothing written, the unit printed, exit 1.
    script(
        "systemctl",
        "echo 'Failed to connect to bus: No medium found' >&2; exit 1",
    );
    let out = run(&["daemon", "install"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("systemd does not run") && err.contains("Failed to connect"),
        "{err}"
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("[Service]"));
    assert!(!config.join("systemd/user/bpm.service").exists());
}

/// `bpm input` types into a process started with `--stdin`: TEXT and a
/// newline, or its own standard input as it is; a process without a pipe
/// is refused, saying so.
#[test]
fn input_types_into_a_process() {
    let bpm = Bpm::new();
    let id = bpm.ok(&[
        "run",
        "--stdin",
        "--",
        "sh",
        "-c",
        "read a; echo \"got $a\"; read b; echo \"then $b\"",
    ]);
    let id = id.trim();
    bpm.until_state(id, "running");
    bpm.ok(&["input", id, "hello"]);
    let typed = bpm.feed(&["input", id], b"world\n");
    assert!(
        typed
            .wait_with_output()
            .expect("bpm input")
            .status
            .success()
    );
    bpm.ok(&["wait", id]);
    assert_eq!(bpm.ok(&["logs", id]), "got hello\nthen world\n");

    let closed = bpm.ok(&["run", "--", "sleep", "30"]);
    let closed = closed.trim();
    bpm.until_state(closed, "running");
    let out = bpm.run(&["input", closed, "x"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("stdin"), "{err}");
}

/// The runs of schedule `id`, by due time.
fn runs_of(bpm: &Bpm, id: &str) -> Vec<serde_json::Value> {
    listed(bpm, "scheduled_from", id)
}

/// A schedule (`--every`) starts a run, a record of its own, at each due
/// time; with the default overlap a due time that finds its last run live
/// is skipped, so runs never overlap; a kill -9 of the daemon neither runs
/// a due time twice nor loses the schedule; pause, resume and
/// `stop --all-runs` act on it.
#[test]
fn a_schedule_runs_each_due_time_once_through_a_daemon_kill() {
    let bpm = Bpm::new();
    let tick = bpm.ok(&[
        "run",
        "--every",
        "1s",
        "--name",
        "tick",
        "--",
        "sh",
        "-c",
        "echo run; sleep 0.2",
    ]);
    let tick = tick.trim();
    let slow = bpm.ok(&[
        "run", "--every", "1s", "--name", "slow", "--", "sleep", "1.5",
    ]);
    let slow = slow.trim();
    std::thread::sleep(Duration::from_millis(3500));
    let ticks = runs_of(&bpm, tick);
    assert_eq!(ticks.len(), 3, "three due times in 3.5 s: {ticks:#?}");
    for run in &ticks {
        let id = run["id"].as_str().expect("id");
        bpm.until_state(id, "completed");
        assert_eq!(bpm.ok(&["logs", id]), "run\n");
    }
    let slows = runs_of(&bpm, slow);
    assert_eq!(
        slows.len(),
        2,
        "the due time that found a run live was skipped: {slows:#?}"
    );
    assert!(
        slows[1]["started_at"].as_str() >= slows[0]["ended_at"].as_str(),
        "runs never overlap: {slows:#?}"
    );
    let shown = bpm.json(&["show", "slow", "--json"]);
    assert_eq!(shown["state"], "running");
    assert_eq!(shown["pid"], serde_json::Value::Null);
    assert!(
        shown["schedule"]["skipped"].as_u64() >= Some(1),
        "{shown:#}"
    );
    let table = bpm.ok(&["ps"]);
    assert!(
        table
            .lines()
            .any(|l| l.contains("tick") && l.contains("scheduled")),
        "{table}"
    );

    // kill -9 of the daemon: the schedule goes on under the next one, and
    // no due time runs twice (a run's id follows from its due time).
    let pid = bpm.daemon_pid();
    Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .expect("kill");
    until_gone(pid, "the daemon survived kill -9");
    std::thread::sleep(Duration::from_millis(300));
    bpm.ok(&["ps"]);
    std::thread::sleep(Duration::from_millis(2500));
    // The count and the runs read between two due times: a run may start
    // between two reads (one each second), so the reads are taken again
    // until the runs listed before and after the count are the same.
    let mut tries = 0;
    let (ticks, shown) = loop {
        let before = runs_of(&bpm, tick);
        let shown = bpm.json(&["show", "tick", "--json"]);
        if runs_of(&bpm, tick).len() == before.len() {
            break (before, shown);
        }
        tries += 1;
        assert!(tries < 10, "a run started between every two reads");
    };
    let state = &shown["schedule"];
    assert_eq!(
        state["runs"].as_u64(),
        Some(ticks.len() as u64),
        "every run it counted is a record: {shown:#}"
    );
    assert!(ticks.len() > 3, "it ran on after the kill: {ticks:#?}");
    // A run's id carries its due time (its first 48 bits, in ms): the
    // due times are distinct and on the schedule's cadence.
    let due_of = |r: &serde_json::Value| {
        let id = r["id"].as_str().expect("id").replace('-', "");
        u64::from_str_radix(&id[..12], 16).expect("hex")
    };
    let mut dues: Vec<u64> = ticks.iter().map(due_of).collect();
    dues.sort_unstable();
    dues.dedup();
    assert_eq!(dues.len(), ticks.len(), "one run per due time: {ticks:#?}");
    assert!(
        dues.windows(2).all(|w| (w[1] - w[0]) % 1000 == 0),
        "due times a whole number of periods apart: {dues:?}"
    );
    // Paused, it starts nothing; resumed, it goes on.
    bpm.ok(&["pause", "tick"]);
    let paused_runs = runs_of(&bpm, tick).len();
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(runs_of(&bpm, tick).len(), paused_runs);
    assert!(bpm.ok(&["resume", "tick"]).contains("running"));
    let deadline = Instant::now() + Duration::from_secs(10);
    while runs_of(&bpm, tick).len() == paused_runs {
        assert!(Instant::now() < deadline, "no run after the resume");
        std::thread::sleep(Duration::from_millis(100));
    }

    // A stop of the schedule leaves its live run; --all-runs stops it too.
    let live = runs_of(&bpm, slow)
        .into_iter()
        .find(|r| r["state"] == "running");
    let out = bpm.ok(&["stop", "--all-runs", "slow"]);
    assert!(out.contains("cancelled"), "{out}");
    if let Some(run) = live {
        assert_eq!(bpm.state(run["id"].as_str().expect("id")), "cancelled");
    }
    assert!(bpm.ok(&["stop", "tick"]).contains("cancelled"));
    let stopped = runs_of(&bpm, tick).len();
    std::thread::sleep(Duration::from_millis(1200));
    assert_eq!(runs_of(&bpm, tick).len(), stopped, "no run after its stop");

    // What cannot work is refused by name.
    let err = bpm.fails(&["run", "--cron", "*/5 * * *", "--", "true"], 4);
    assert!(err.contains("five standard fields"), "{err}");
    let err = bpm.fails(
        &[
            "run",
            "--cron",
            "0 9 * * *",
            "--tz",
            "Mars/Olympus",
            "--",
            "true",
        ],
        4,
    );
    assert!(err.contains("unknown time zone \"Mars/Olympus\""), "{err}");
    let err = bpm.fails(
        &[
            "run",
            "--every",
            "1s",
            "--overlap",
            "sometimes",
            "--",
            "true",
        ],
        4,
    );
    assert!(err.contains("expected skip, queue or allow"), "{err}");
    let err = bpm.fails(&["run", "--jitter", "5s", "--", "true"], 4);
    assert!(err.contains("need a schedule"), "{err}");
    let err = bpm.fails(&["run", "--every", "1m", "--wait", "--", "true"], 4);
    assert!(err.contains("a schedule runs until it is stopped"), "{err}");
}

/// A project's service with `every` (or `cron`) is a schedule: `up`
/// brings it up once (and again is a no-op), its runs carry the project,
/// `down` ends it; depending on a schedule is refused by name.
#[test]
fn a_projects_scheduled_service_comes_up_and_down_with_it() {
    let bpm = Bpm::new();
    let dir = tempfile::tempdir().expect("dir");
    let file = dir.path().join("bpm.toml");
    std::fs::write(
        &file,
        "[project]\nname = \"jobs\"\n\n[services.tick]\ncommand = \"echo tick\"\nevery = \"1s\"\noverlap = \"queue\"\n",
    )
    .expect("file");
    let f = file.to_str().expect("utf-8");
    bpm.ok(&["up", "-f", f, "--wait"]);
    let tick = bpm.json(&["show", "jobs/tick", "--json"]);
    assert_eq!(tick["state"], "running", "{tick:#}");
    assert_eq!(tick["spec"]["schedule"]["overlap"], "queue", "{tick:#}");
    let id = tick["id"].as_str().expect("id").to_owned();
    let deadline = Instant::now() + Duration::from_secs(10);
    while runs_of(&bpm, &id).is_empty() {
        assert!(Instant::now() < deadline, "no run");
        std::thread::sleep(Duration::from_millis(100));
    }
    let run = &runs_of(&bpm, &id)[0];
    assert_eq!(run["labels"]["bpm.project"], "jobs", "{run:#}");
    assert!(
        bpm.ok(&["up", "-f", f]).contains("kept"),
        "up again changes nothing"
    );
    bpm.ok(&["down", "-f", f]);
    assert_eq!(bpm.state(&id), "cancelled");

    std::fs::write(
        &file,
        "[services.web]\ncommand = \"sleep 300\"\n\n[services.tick]\ncommand = \"true\"\nevery = \"1m\"\ndepends_on = [\"web\"]\n",
    )
    .expect("file");
    let err = bpm.fails(&["up", "-f", f], 4);
    assert!(
        err.contains("service tick: a schedule starts its runs at due times"),
        "{err}"
    );
}

/// Resource limits through a cgroup, as this machine (root, cgroup v1
/// writable) offers: a process that allocates past `--memory-max` ends
/// failed with the reason, `--pids-max` stops a fork bomb, `--cpu-max`
/// holds a busy loop to its share, `--nofile` is the process's rlimit;
/// `bpm show` says what enforces each, and no group is left behind.
#[test]
fn resource_limits_hold_a_process_tree_through_its_cgroups() {
    let bpm = Bpm::new();
    let hog = bpm.ok(&[
        "run",
        "--memory-max",
        "64M",
        "--nofile",
        "64",
        "--",
        "python3",
        "-c",
        "import resource; print(resource.getrlimit(resource.RLIMIT_NOFILE), flush=True); x = bytearray(300 << 20); print('survived')",
    ]);
    let hog = hog.trim();
    let ended = ended_within(&bpm, hog, Duration::from_secs(20));
    assert_eq!(ended["state"], "failed", "{ended}");
    assert_eq!(ended["error"], "memory limit (64 MiB)", "{ended}");
    assert_eq!(bpm.ok(&["logs", hog]), "(64, 64)\n");
    let shown = bpm.ok(&["show", hog]);
    let limits = shown
        .lines()
        .find(|l| l.starts_with("limits"))
        .expect("a limits line");
    assert!(
        limits.contains("memory 64 MiB by cgroup v")
            && limits.contains("open files 64 by setrlimit RLIMIT_NOFILE"),
        "{limits}"
    );
    assert!(cgroups_of(hog).is_empty(), "{:?}", cgroups_of(hog));

    // What ps shows of a limited record's memory is what its group is
    // charged, the figure the limit counts.
    let holder = bpm.ok(&[
        "run",
        "--memory-max",
        "256M",
        "--",
        "python3",
        "-c",
        "import time; x = b'x' * (100 << 20); print('held', flush=True); time.sleep(60)",
    ]);
    let holder = holder.trim();
    let deadline = Instant::now() + Duration::from_secs(20);
    while bpm.ok(&["logs", holder]) != "held\n" {
        assert!(Instant::now() < deadline, "never held");
        std::thread::sleep(Duration::from_millis(50));
    }
    let group = cgroups_of(holder)
        .into_iter()
        .find(|d| d.starts_with("/sys/fs/cgroup/memory"))
        .expect("a memory group");
    let charged: u64 = std::fs::read_to_string(group.join("memory.usage_in_bytes"))
        .expect("usage")
        .trim()
        .parse()
        .expect("bytes");
    let shown = bpm.json(&["show", holder, "--json"])["rss_bytes"]
        .as_u64()
        .expect("rss_bytes");
    assert!(
        (100 << 20..256 << 20).contains(&shown) && shown.abs_diff(charged) < 16 << 20,
        "shown {shown}, charged {charged}"
    );
    bpm.ok(&["stop", holder]);

    // A fork bomb, bounded (2^9 processes at most) should the limit fail:
    // each process that starts notes itself, then sleeps. Its live
    // processes are counted by bpm's mark in their environment.
    let dir = tempfile::tempdir().expect("dir");
    let started = dir.path().join("started");
    let bomb = format!(
        "b() {{ echo x >> {f}; if [ $1 -gt 0 ]; then b $(($1-1)) & b $(($1-1)) & fi; exec sleep 60; }}; b 8",
        f = started.display()
    );
    let bomb_id = bpm.ok(&["run", "--pids-max", "20", "--shell", "--", &bomb]);
    let bomb_id = bomb_id.trim();
    let mark = format!("{}={bomb_id}", bpm_adapters::os::PROCESS_ID_ENV);
    let live = || {
        std::fs::read_dir("/proc")
            .expect("/proc")
            .flatten()
            .filter(|e| {
                std::fs::read(e.path().join("environ"))
                    .is_ok_and(|env| env.split(|b| *b == 0).any(|v| v == mark.as_bytes()))
            })
            .count()
    };
    let mut most = 0;
    for _ in 0..20 {
        most = most.max(live());
        std::thread::sleep(Duration::from_millis(100));
    }
    let tried = std::fs::read_to_string(&started)
        .unwrap_or_default()
        .lines()
        .count();
    assert!(
        (2..=20).contains(&most),
        "{most} processes of the bomb ran at once (limit 20; {tried} started in all)"
    );
    assert!(
        bpm.ok(&["logs", bomb_id, "--stream", "stderr"])
            .to_lowercase()
            .contains("fork"),
        "the shell says it cannot fork"
    );
    bpm.ok(&["stop", bomb_id]);
    ended_within(&bpm, bomb_id, Duration::from_secs(20));
    assert!(cgroups_of(bomb_id).is_empty());

    let busy = bpm.ok(&[
        "run",
        "--cpu-max",
        "20",
        "--",
        "python3",
        "-c",
        "import os, time\nt = time.time()\nwhile time.time() - t < 2: pass\nu = os.times()\nprint(u[0] + u[1])",
    ]);
    let busy = busy.trim();
    let ended = ended_within(&bpm, busy, Duration::from_secs(20));
    assert_eq!(ended["state"], "completed", "{ended}");
    let used: f64 = bpm.ok(&["logs", busy]).trim().parse().expect("seconds");
    assert!(
        used < 1.0,
        "2 s of a busy loop at 20% of a CPU used {used} s of CPU"
    );
    assert!(cgroups_of(busy).is_empty());

    // Bad values name their flag; nothing is created.
    for (flag, value) in [
        ("--memory-max", "lots"),
        ("--memory-max", "100K"),
        ("--cpu-max", "0"),
        ("--pids-max", "-1"),
        ("--nofile", "many"),
    ] {
        let err = bpm.fails(&["run", &format!("{flag}={value}"), "--", "true"], 4);
        assert!(err.contains(flag), "{flag} {value}: {err}");
    }
    assert_eq!(
        bpm.json(&["ps", "--all", "--json"])
            .as_array()
            .map(Vec::len),
        Some(4)
    );
}

/// Where bpm may make no cgroup (`BPM_NO_CGROUPS=1` stands in for such a
/// machine): memory is an address-space rlimit, and a limit nothing can
/// enforce (a CPU share; processes, for root) is refused by name.
#[test]
fn without_cgroups_limits_fall_back_to_rlimits_or_are_refused_by_name() {
    let bpm = Bpm::new();
    let run = |args: &[&str]| {
        bpm.cmd(args)
            .env(bpm_adapters::os::NO_CGROUPS_ENV, "1")
            .output()
            .expect("bpm runs")
    };
    let out = run(&[
        "run",
        "--memory-max",
        "64M",
        "--",
        "python3",
        "-c",
        "x = bytearray(300 << 20); print('survived')",
    ]);
    assert!(out.status.success(), "{out:?}");
    let id = String::from_utf8(out.stdout).expect("utf-8");
    let id = id.trim();
    let ended = ended_within(&bpm, id, Duration::from_secs(20));
    assert_eq!(ended["state"], "failed", "{ended}");
    assert!(
        bpm.ok(&["logs", id, "--stream", "stderr"])
            .contains("MemoryError")
    );
    assert!(cgroups_of(id).is_empty());
    let out = run(&["show", id]);
    let shown = String::from_utf8(out.stdout).expect("utf-8");
    assert!(
        shown.contains("memory 64 MiB by setrlimit RLIMIT_AS"),
        "{shown}"
    );

    let out = run(&["run", "--cpu-max", "50", "--", "true"]);
    assert_eq!(out.status.code(), Some(4), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--cpu-max") && err.contains("cannot be enforced"),
        "{err}"
    );
    let out = run(&["run", "--pids-max", "50", "--", "true"]);
    if rustix::process::geteuid().is_root() {
        assert_eq!(out.status.code(), Some(4), "{out:?}");
        assert!(String::from_utf8_lossy(&out.stderr).contains("--pids-max"));
    } else {
        assert!(out.status.success(), "RLIMIT_NPROC stands in: {out:?}");
    }
}

/// A project's service takes `memory_max`, `cpu_max`, `pids_max` and
/// `nofile`, as text or numbers, and `tty_size`; its process runs under
/// them; an edit of
/// one is a change `up` applies; a bad value names the service and key.
#[test]
fn a_projects_service_runs_under_its_resource_limits() {
    let bpm = Bpm::new();
    let dir = tempfile::tempdir().expect("dir");
    let file = dir.path().join("bpm.toml");
    let service = |nofile: u32| {
        format!(
            "[project]\nname = \"capped\"\n\n[services.api]\ncommand = \"python3 -c 'import resource; print(resource.getrlimit(resource.RLIMIT_NOFILE)[0], flush=True)'; exec sleep 300\"\nmemory_max = \"128M\"\ncpu_max = \"50%\"\npids_max = 16\nnofile = {nofile}\ntty_size = \"100x30\"\n"
        )
    };
    std::fs::write(&file, service(128)).expect("file");
    let f = file.to_str().expect("utf-8");
    bpm.ok(&["up", "-f", f, "--wait"]);
    let api = bpm.json(&["show", "capped/api", "--json"]);
    assert_eq!(
        api["spec"]["limits"],
        serde_json::json!({"memory_max": 128 << 20, "cpu_max": 50, "pids_max": 16, "nofile": 128}),
        "{api:#}"
    );
    let id = api["id"].as_str().expect("id").to_owned();
    let deadline = Instant::now() + Duration::from_secs(10);
    assert_eq!(
        api["spec"]["tty"],
        serde_json::json!({"cols": 100, "rows": 30})
    );
    // On its terminal, a line ends with CR LF.
    while bpm.ok(&["logs", &id]) != "128\r\n" {
        assert!(Instant::now() < deadline, "{}", bpm.ok(&["logs", &id]));
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(cgroups_of(&id).len(), 3, "memory, cpu and pids groups");
    std::fs::write(&file, service(256)).expect("file");
    bpm.ok(&["up", "-f", f, "--wait"]);
    let again = bpm.json(&["show", "capped/api", "--json"]);
    assert_ne!(
        again["id"], api["id"],
        "a changed limit replaces the process"
    );
    bpm.ok(&["down", "-f", f]);
    assert!(cgroups_of(&id).is_empty(), "{:?}", cgroups_of(&id));

    std::fs::write(
        &file,
        "[services.api]\ncommand = \"true\"\nmemory_max = \"huge\"\n",
    )
    .expect("file");
    let err = bpm.fails(&["up", "-f", f], 4);
    assert!(err.contains("api") && err.contains("memory_max"), "{err}");
}

/// Runs `bpm ARGS` on a pseudo-terminal (util-linux `script`), typing each
/// step's text after its pause; its screen, and its exit code.
fn typed_on_a_terminal(bpm: &Bpm, args: &str, steps: &[(u64, &str)]) -> (String, Option<i32>) {
    let cmd = format!("{} {args}", env!("CARGO_BIN_EXE_bpm"));
    let mut child = Command::new("script")
        .args(["-qec", &cmd, "/dev/null"])
        .env("BPM_HOME", bpm.home())
        .env("NO_COLOR", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("script (util-linux) runs");
    let mut input = child.stdin.take().expect("stdin");
    for (pause_ms, text) in steps {
        std::thread::sleep(Duration::from_millis(*pause_ms));
        input.write_all(text.as_bytes()).expect("type");
        input.flush().expect("flush");
    }
    // Open until the command ends: script ends it at the end of its input.
    let out = std::thread::spawn(move || child.wait_with_output().expect("output"));
    let deadline = Instant::now() + Duration::from_secs(20);
    while !out.is_finished() {
        assert!(Instant::now() < deadline, "bpm {args} did not end");
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(input);
    let out = out.join().expect("script");
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        out.status.code(),
    )
}

/// `--tty` runs a process on a pseudo-terminal of `--tty-size`: it sees a
/// terminal on all three streams, its colours are kept, a prompt and a
/// password prompt take `bpm input`; `bpm attach` connects a terminal to a
/// REPL until the detach key, and ends with the process's own exit code.
#[test]
fn a_terminal_process_sees_a_terminal_takes_input_and_attach_connects_to_it() {
    let bpm = Bpm::new();
    let prompts = bpm.ok(&[
        "run",
        "--tty-size",
        "120x40",
        "--",
        "python3",
        "-c",
        "import getpass, os, sys\nprint(sys.stdin.isatty(), sys.stdout.isatty(), sys.stderr.isatty(), tuple(os.get_terminal_size()))\nprint('\\033[31mred\\033[0m')\nname = input('name? ')\nprint('hello', name)\nsecret = getpass.getpass('password: ')\nprint('length', len(secret))",
    ]);
    let prompts = prompts.trim();
    let shown = bpm.json(&["show", prompts, "--json"]);
    assert_eq!(
        shown["spec"]["tty"],
        serde_json::json!({"cols": 120, "rows": 40})
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while !bpm.ok(&["logs", prompts]).ends_with("name? ") {
        assert!(
            Instant::now() < deadline,
            "{:?}",
            bpm.ok(&["logs", prompts])
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    bpm.ok(&["input", prompts, "alice"]);
    while !bpm.ok(&["logs", prompts]).ends_with("password: ") {
        assert!(
            Instant::now() < deadline,
            "{:?}",
            bpm.ok(&["logs", prompts])
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    bpm.ok(&["input", prompts, "hunter2"]);
    let ended = ended_within(&bpm, prompts, Duration::from_secs(10));
    assert_eq!(ended["state"], "completed", "{ended}");
    assert_eq!(
        bpm.ok(&["logs", prompts]),
        "True True True (120, 40)\r\n\u{1b}[31mred\u{1b}[0m\r\nname? alice\r\nhello alice\r\npassword: \r\nlength 7\r\n",
        "the terminal echoes the name, not the password"
    );

    let repl = bpm.ok(&[
        "run", "--tty", "--name", "repl", "--", "python3", "-q", "-i",
    ]);
    let repl = repl.trim();
    let (screen, code) =
        typed_on_a_terminal(&bpm, "attach repl", &[(800, "6*7\r"), (800, "\u{1d}")]);
    assert_eq!(code, Some(0), "{screen}");
    assert!(
        screen.contains("ctrl-] detaches")
            && screen.contains("42")
            && screen.contains("detached from repl"),
        "{screen:?}"
    );
    assert_eq!(bpm.state(repl), "running", "detaching leaves it running");
    let (screen, code) = typed_on_a_terminal(
        &bpm,
        "attach repl --detach-key ctrl-q",
        &[(800, "print('back')\r"), (500, "exit(3)\r"), (1500, "")],
    );
    assert!(
        screen.contains(">>> 6*7"),
        "the last screen first: {screen:?}"
    );
    assert!(
        screen.contains("back") && screen.contains("[repl ended: exit code 3]"),
        "{screen:?}"
    );
    assert_eq!(code, Some(3), "{screen:?}");

    let plain = bpm.ok(&["run", "--", "sleep", "30"]);
    let err = bpm.fails(&["attach", plain.trim()], 4);
    assert!(err.contains("--tty"), "{err}");
    let err = bpm.fails(&["run", "--tty-size", "0x10", "--", "true"], 4);
    assert!(err.contains("--tty-size"), "{err}");
    let err = bpm.fails(&["attach", repl, "--detach-key", "q"], 4);
    assert!(err.contains("--detach-key"), "{err}");
}

/// A limited record's stop reaches, through its cgroup, a process that
/// left both its process group and its parent chain and cleared bpm's mark
/// (a double fork after `setsid env -i`): the gap the mark leaves for an
/// unlimited record.
#[test]
fn a_stop_reaches_through_the_cgroup_what_escaped_the_tree() {
    let bpm = Bpm::new();
    let id = bpm.ok(&[
        "run",
        "--pids-max",
        "64",
        "--shell",
        "--",
        "(setsid env -i sleep 300 &); exec sleep 300",
    ]);
    let id = id.trim();
    let group = cgroups_of(id)
        .into_iter()
        .find(|d| d.starts_with("/sys/fs/cgroup/pids"))
        .expect("the record's pids group");
    let members = || -> Vec<u32> {
        std::fs::read_to_string(group.join("cgroup.procs"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect()
    };
    let unmarked = |pids: &[u32]| -> Vec<u32> {
        pids.iter()
            .copied()
            .filter(|p| {
                std::fs::read(format!("/proc/{p}/environ"))
                    .is_ok_and(|env| !env.windows(14).any(|w| w == b"BPM_PROCESS_ID"))
            })
            .collect()
    };
    // Until the escapee has run `env -i` (the subshell that started it is gone).
    let deadline = Instant::now() + Duration::from_secs(10);
    let (pids, escaped) = loop {
        let pids = members();
        let escaped = unmarked(&pids);
        if pids.len() == 2 && escaped.len() == 1 {
            break (pids, escaped);
        }
        assert!(Instant::now() < deadline, "{pids:?}, unmarked {escaped:?}");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(escaped.len(), 1, "one process without the mark: {pids:?}");
    bpm.ok(&["stop", id]);
    ended_within(&bpm, id, Duration::from_secs(20));
    for pid in pids {
        until_gone(pid, "a process of the stopped record's cgroup");
    }
    assert!(cgroups_of(id).is_empty());
}
