//! The real `bpm` binary in a temporary `BPM_HOME`: every command, its
//! options, its JSON, its errors and exit codes.

// Scenario tests name their processes a, b, c...
#![allow(clippy::many_single_char_names)]

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod support;
use support::bpm::Bpm;
#[allow(clippy::wildcard_imports)]
use support::cli::*;

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

/// `--log-archive N`: output pushed out by newer output is kept, the
/// newest N pieces compressed, and `bpm logs --archived` prints them in
/// order, before what `bpm logs` shows; a number out of bounds is refused
/// by its flag, and a process without archives says how to get them.
#[test]
fn old_output_is_archived_when_asked_and_read_back() {
    let bpm = Bpm::new();
    std::fs::write(bpm.home().join("config.toml"), "output_cap = 100000\n").expect("config");
    // Lines of 8 bytes, written a few at a time, 800 kB in all.
    let id = bpm.ok(&[
        "run",
        "--log-archive",
        "4",
        "--",
        "sh",
        "-c",
        "i=0; while [ $i -lt 2000 ]; do seq -f %07g $((i*50+1)) $((i*50+50)); i=$((i+1)); done",
    ]);
    bpm.ok(&["wait", &id]);
    let archive = bpm.home().join("output").join(&id).join("archive");
    for _ in 0..200 {
        let gz = std::fs::read_dir(&archive).map_or(0, |e| {
            e.filter_map(Result::ok)
                .filter(|e| e.path().extension().is_some_and(|x| x == "gz"))
                .count()
        });
        if gz == 4 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let old = bpm.ok(&["logs", "--archived", &id]);
    let kept = bpm.ok(&["logs", &id]);
    let numbers =
        |text: &str| -> Vec<u64> { text.lines().filter_map(|l| l.trim().parse().ok()).collect() };
    let (old, kept) = (numbers(&old), numbers(&kept));
    assert!(
        old.len() > 10_000,
        "4 archives of about 50 kB: {} lines",
        old.len()
    );
    assert!(
        old.windows(2).all(|w| w[1] == w[0] + 1),
        "archives are whole and in order"
    );
    assert_eq!(kept.last(), Some(&100_000));
    assert_eq!(
        old.last().map(|n| n + 1),
        kept.first().copied(),
        "no gap before what is kept"
    );

    let out = bpm
        .cmd(&["run", "--log-archive", "0", "--", "true"])
        .output()
        .expect("bpm run");
    let said = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(4), "{said}");
    assert!(
        said.contains("--log-archive: 0: keep from 1 to 100"),
        "{said}"
    );
    let plain = bpm.ok(&["run", "--", "true"]);
    let out = bpm
        .cmd(&["logs", "--archived", &plain])
        .output()
        .expect("bpm logs");
    assert!(out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("has no archives of old output"),
        "{out:?}"
    );
}
