//! The daemon and the keeper under `bpm`: the auto-start race, the
//! socket's protocol and permissions, the state directory, and what
//! survives `kill -9` of either, a full disk and a damaged journal.

// Scenario tests name their processes a, b, c...
#![allow(clippy::many_single_char_names)]

use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod support;
use support::bpm::{Bpm, alive};
#[allow(clippy::wildcard_imports)]
use support::cli::*;

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
