//! How long a process lives and what it holds: one live process per
//! name, handed-out ports, owners, and a command that backgrounds itself
//! kept under control.

// Scenario tests name their processes a, b, c...
#![allow(clippy::many_single_char_names)]

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod support;
use support::bpm::{Bpm, alive};
#[allow(clippy::wildcard_imports)]
use support::cli::*;

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
