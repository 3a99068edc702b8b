//! Real processes through the engine: exit codes and signals, spawn failures,
//! timeouts, stops of whole trees, pause and resume, capture, readiness,
//! idleness, input, concurrency limits, and no leaked descriptors or zombies.

use std::collections::BTreeSet;
use std::time::Duration;

use bpm_domain::{
    EventKind, ExitStatus, GroupName, Limits, LogPattern, ProcessSpec, ReadinessCheck, Span,
    StateName, StdinMode,
};
use bpm_ports::{Cursor, OutputQuery, ProcessManager, StopOptions, Stream, StreamSelect};
use bpm_runtime::Engine;
use tempfile::TempDir;

async fn engine_with(limits: Limits, output_cap: Option<u64>) -> (Engine, TempDir) {
    let dir = tempfile::tempdir().expect("temp dir");
    // Records in memory, output in capped files under the directory.
    let mut builder = bpm_embed::builder().file_output(dir.path().join("output"));
    if let Some(cap) = output_cap {
        builder = builder.output_cap(cap);
    }
    let engine = builder.limits(limits).start().await.expect("engine");
    (engine, dir)
}

async fn engine() -> (Engine, TempDir) {
    engine_with(Limits::default(), None).await
}

fn sh(script: &str) -> ProcessSpec {
    ProcessSpec::argv(["sh", "-c", script])
}

async fn finish(engine: &Engine, spec: ProcessSpec) -> bpm_domain::ProcessRecord {
    let r = engine.start(spec).await.expect("start");
    engine
        .wait(r.id(), Some(Duration::from_secs(20)))
        .await
        .expect("ends")
}

/// Processes (not zombies) whose environment carries this record's mark.
fn marked(id: bpm_domain::ProcessId) -> BTreeSet<u32> {
    let needle = format!("BPM_PROCESS_ID={id}");
    let mut found = BTreeSet::new();
    for entry in std::fs::read_dir("/proc").expect("/proc") {
        let Some(pid) = entry
            .ok()
            .and_then(|e| e.file_name().to_str()?.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(env) = std::fs::read(format!("/proc/{pid}/environ")) else {
            continue;
        };
        if env.split(|b| *b == 0).any(|v| v == needle.as_bytes())
            && proc_state(pid).is_some_and(|s| s != 'Z')
        {
            found.insert(pid);
        }
    }
    found
}

fn proc_state(pid: u32) -> Option<char> {
    // Read as bytes: a command name need not be UTF-8.
    let stat = std::fs::read(format!("/proc/{pid}/stat")).ok()?;
    let close = stat.iter().rposition(|b| *b == b')')?;
    stat.get(close + 2).map(|b| char::from(*b))
}

async fn until<F: FnMut() -> bool>(what: &str, mut check: F) {
    for _ in 0..1000 {
        if check() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("never happened: {what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exit_codes_and_signals_are_recorded_exactly() {
    let (bpm, _dir) = engine().await;
    let ok = finish(&bpm, ProcessSpec::argv(["true"])).await;
    assert_eq!(
        (ok.state(), ok.lifecycle().exit()),
        (StateName::Completed, Some(ExitStatus::Code(0)))
    );
    let seven = finish(&bpm, sh("exit 7")).await;
    assert_eq!(
        (seven.state(), seven.lifecycle().exit()),
        (StateName::Failed, Some(ExitStatus::Code(7)))
    );
    let killed = finish(&bpm, sh("kill -9 $$")).await;
    assert_eq!(killed.lifecycle().exit(), Some(ExitStatus::Signal(9)));
    assert_eq!(
        killed.lifecycle().exit().map(ExitStatus::shell_code),
        Some(137)
    );
    let own = finish(&bpm, sh("kill -USR1 $$")).await;
    assert_eq!(own.lifecycle().exit(), Some(ExitStatus::Signal(10)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spawn_failures_fail_the_record_and_say_which_and_why() {
    let (bpm, dir) = engine().await;
    let missing = finish(&bpm, ProcessSpec::argv(["bpm-no-such-program"])).await;
    assert_eq!(missing.state(), StateName::Failed);
    assert_eq!(
        missing.lifecycle().error().as_deref(),
        Some("program not found: \"bpm-no-such-program\"")
    );
    let script = dir.path().join("not-executable.sh");
    std::fs::write(&script, "#!/bin/sh\necho hi\n").expect("write");
    let denied = finish(&bpm, ProcessSpec::argv([script.to_str().expect("utf-8")])).await;
    assert!(
        denied
            .lifecycle()
            .error()
            .expect("error")
            .starts_with("permission denied: cannot execute"),
        "{denied:?}"
    );
    let mut nowhere = ProcessSpec::argv(["true"]);
    nowhere.cwd = Some(dir.path().join("no-such-dir"));
    let nowhere = finish(&bpm, nowhere).await;
    assert!(
        nowhere
            .lifecycle()
            .error()
            .expect("error")
            .starts_with("working directory not found"),
        "{nowhere:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timeout_stops_the_process_and_records_timed_out() {
    let (bpm, _dir) = engine().await;
    let mut spec = ProcessSpec::argv(["sleep", "30"]);
    spec.timeout = Some(Span::from_millis(300));
    let end = finish(&bpm, spec).await;
    assert_eq!(end.state(), StateName::TimedOut);
    assert_eq!(end.lifecycle().exit(), Some(ExitStatus::Signal(15)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_ends_a_term_ignoring_tree_with_escaped_grandchildren() {
    let (bpm, _dir) = engine().await;
    let mut spec = sh(r#"trap "" TERM; sleep 1000 & setsid sleep 1001 & wait"#);
    spec.stop.grace = Span::from_secs(1);
    let r = bpm.start(spec).await.expect("start");
    until("the shell and both sleeps run", || {
        marked(r.id()).len() == 3
    })
    .await;
    let tree = marked(r.id());
    let end = bpm
        .stop(r.id(), StopOptions::default())
        .await
        .expect("stop");
    assert_eq!(end.state(), StateName::Cancelled);
    assert_eq!(
        end.lifecycle().exit(),
        Some(ExitStatus::Signal(9)),
        "TERM was ignored, so KILL ended it"
    );
    let left: Vec<_> = tree
        .iter()
        .filter(|p| proc_state(**p).is_some_and(|s| s != 'Z'))
        .collect();
    assert!(left.is_empty(), "still running after stop: {left:?}");
    assert!(marked(r.id()).is_empty());
}

/// A process whose command name is not UTF-8 (a `sleep` run through a link
/// named `z\xffz`) that left the group and ignores TERM is stopped with its
/// tree. Stops read each `/proc/PID/stat` as text until 2026-11-28, which
/// failed for such a name and left the process out of the scan: it
/// outlived the stop.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_reaches_an_escaped_process_whose_name_is_not_utf8() {
    use std::os::unix::ffi::OsStrExt as _;
    let (bpm, dir) = engine().await;
    let sleep = ["/usr/bin/sleep", "/bin/sleep"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .expect("a sleep binary");
    let odd = std::ffi::OsStr::from_bytes(b"z\xffz");
    std::os::unix::fs::symlink(sleep, dir.path().join(odd)).expect("link");
    let mut spec = sh(r#"trap "" TERM; setsid ./"$(printf 'z\377z')" 1003 & sleep 1000 & wait"#);
    spec.cwd = Some(dir.path().to_path_buf());
    spec.stop.grace = Span::from_secs(1);
    let r = bpm.start(spec).await.expect("start");
    // `setsid` runs first under its own name and becomes the odd name only
    // once it has exec'd it, so wait for the name, not for the count.
    let comm_names = |tree: &BTreeSet<u32>| -> Vec<Vec<u8>> {
        tree.iter()
            .filter_map(|p| std::fs::read(format!("/proc/{p}/comm")).ok())
            .collect()
    };
    until("the shell, the sleep and the odd name run", || {
        let tree = marked(r.id());
        tree.len() == 3 && comm_names(&tree).iter().any(|n| n == b"z\xffz\n")
    })
    .await;
    let tree = marked(r.id());
    bpm.stop(r.id(), StopOptions::default())
        .await
        .expect("stop");
    let left: Vec<_> = tree
        .iter()
        .filter(|p| proc_state(**p).is_some_and(|s| s != 'Z'))
        .collect();
    assert!(left.is_empty(), "still running after stop: {left:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_a_double_forked_daemon_after_its_parent_exited() {
    let (bpm, _dir) = engine().await;
    // The leader exits on TERM at once; its double-forked child ignores TERM.
    let r = bpm
        .start(sh(r#"(trap "" TERM; setsid sleep 1002 &) ; sleep 1000"#))
        .await
        .expect("start");
    until("the leader and the escapee run", || {
        marked(r.id()).len() >= 2
    })
    .await;
    let end = bpm
        .stop(r.id(), StopOptions::default())
        .await
        .expect("stop");
    assert_eq!(end.state(), StateName::Cancelled);
    assert!(marked(r.id()).is_empty(), "the escapee outlived the stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_and_resume_the_whole_tree() {
    let (bpm, _dir) = engine().await;
    let r = bpm.start(sh("sleep 30 & wait")).await.expect("start");
    until("shell and sleep", || marked(r.id()).len() == 2).await;
    let paused = bpm.pause(r.id()).await.expect("pause");
    assert_eq!(paused.state(), StateName::Paused);
    let tree = marked(r.id());
    until("every process stopped", || {
        tree.iter().all(|p| proc_state(*p) == Some('T'))
    })
    .await;
    bpm.resume(r.id()).await.expect("resume");
    until("every process runs again", || {
        tree.iter()
            .all(|p| matches!(proc_state(*p), Some('S' | 'R')))
    })
    .await;
    bpm.stop(r.id(), StopOptions::force()).await.expect("stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_keeps_stream_order_and_raw_bytes() {
    let (bpm, _dir) = engine().await;
    let r = finish(
        &bpm,
        sh("echo one; sleep 0.05; echo two >&2; sleep 0.05; echo three; printf '\\377\\376raw'"),
    )
    .await;
    let all = bpm
        .read_output(r.id(), OutputQuery::default())
        .await
        .expect("read");
    let tagged: Vec<_> = all
        .pieces
        .iter()
        .map(|p| (p.stream, String::from_utf8_lossy(&p.data).into_owned()))
        .collect();
    assert_eq!(tagged[0], (Stream::Stdout, "one\n".to_owned()));
    assert_eq!(tagged[1], (Stream::Stderr, "two\n".to_owned()));
    let bytes = all.bytes();
    assert!(
        bytes.ends_with(&[0xff, 0xfe, b'r', b'a', b'w']),
        "raw bytes kept: {bytes:?}"
    );
    let stdout = bpm
        .read_output(
            r.id(),
            OutputQuery {
                stream: StreamSelect::Stdout,
                ..OutputQuery::default()
            },
        )
        .await
        .expect("read");
    assert!(stdout.text().starts_with("one\nthree\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cursor_reads_everything_once_while_output_grows() {
    let (bpm, _dir) = engine().await;
    let r = bpm
        .start(sh(
            "for i in $(seq 1 60); do echo line $i; sleep 0.005; done",
        ))
        .await
        .expect("start");
    let mut cursor = Cursor(0);
    let mut seen = Vec::new();
    loop {
        let done = bpm.get(r.id()).await.expect("record").is_terminal();
        let chunk = bpm
            .read_output(
                r.id(),
                OutputQuery {
                    cursor: Some(cursor),
                    max_bytes: 50,
                    ..OutputQuery::default()
                },
            )
            .await
            .expect("read");
        assert_eq!(chunk.skipped, 0);
        seen.extend(chunk.bytes());
        cursor = chunk.next;
        if done && !chunk.truncated {
            break;
        }
        tokio::time::sleep(Duration::from_millis(7)).await;
    }
    let expected: Vec<String> = (1..=60).map(|i| format!("line {i}")).collect();
    let expected = expected.join("\n") + "\n";
    assert_eq!(String::from_utf8(seen).expect("utf-8"), expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_is_capped_and_rotation_says_what_was_dropped() {
    let (bpm, _dir) = engine_with(Limits::default(), Some(4096)).await;
    let r = finish(
        &bpm,
        sh("for i in $(seq 1 3000); do echo \"line $i\"; done"),
    )
    .await;
    let chunk = bpm
        .read_output(
            r.id(),
            OutputQuery {
                cursor: Some(Cursor(0)),
                ..OutputQuery::default()
            },
        )
        .await
        .expect("read");
    let total: u64 = (1..=3000u64)
        .map(|i| format!("line {i}\n").len() as u64)
        .sum();
    assert!(chunk.bytes().len() as u64 <= 4096);
    assert_eq!(chunk.skipped + chunk.bytes().len() as u64, total);
    assert!(chunk.text().ends_with("line 3000\n"));
    let text = chunk.text();
    let last: Vec<&str> = text.lines().rev().take(2).collect();
    assert_eq!(last, ["line 3000", "line 2999"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_by_log_pattern_and_by_port() {
    let (bpm, _dir) = engine().await;
    let mut by_log = sh("echo booting; sleep 0.2; echo 'listening on 8080'; sleep 30");
    by_log.readiness.check = ReadinessCheck::LogPattern {
        pattern: LogPattern::new("^listening on \\d+$").expect("regex"),
    };
    let r = bpm.start(by_log).await.expect("start");
    assert_eq!(r.lifecycle().ready_at(), None);
    let bpm2 = bpm.clone();
    let id = r.id();
    until_async(|| {
        let bpm = bpm2.clone();
        async move {
            bpm.get(id)
                .await
                .expect("r")
                .lifecycle()
                .ready_at()
                .is_some()
        }
    })
    .await;
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let script = format!(
        "import socket,time; time.sleep(0.3); s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(('127.0.0.1',{port})); s.listen(); time.sleep(30)"
    );
    let mut by_port = ProcessSpec::argv(["python3", "-c", &script]);
    by_port.readiness.check = ReadinessCheck::Port { port };
    by_port.readiness.timeout = Some(Span::from_secs(15));
    let p = bpm.start(by_port).await.expect("start");
    let bpm3 = bpm.clone();
    let pid_ = p.id();
    until_async(|| {
        let bpm = bpm3.clone();
        async move {
            bpm.get(pid_)
                .await
                .expect("r")
                .lifecycle()
                .ready_at()
                .is_some()
        }
    })
    .await;
    bpm.stop(r.id(), StopOptions::force()).await.expect("stop");
    bpm.stop(p.id(), StopOptions::force()).await.expect("stop");
}

async fn until_async<F, Fut>(mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..1000 {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("condition never held");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idleness_is_announced_when_output_stops() {
    let (bpm, _dir) = engine().await;
    let mut events = bpm.subscribe();
    let mut spec = sh("echo waiting for input; sleep 30");
    spec.idle_after = Some(Span::from_millis(300));
    let r = bpm.start(spec).await.expect("start");
    let idle = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let e = events.recv().await.expect("event");
            if e.id == r.id() && e.kind == EventKind::Idle {
                return e;
            }
        }
    })
    .await
    .expect("an idle event");
    assert_eq!(idle.state, StateName::Running);
    bpm.stop(r.id(), StopOptions::force()).await.expect("stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn input_reaches_the_process_and_it_knows_its_own_id() {
    let (bpm, _dir) = engine().await;
    let mut spec = ProcessSpec::argv([
        "sh",
        "-c",
        "echo \"me=$BPM_PROCESS_ID\"; read line; echo \"got $line\"",
    ]);
    spec.stdin = StdinMode::Pipe;
    let r = bpm.start(spec).await.expect("start");
    bpm.send_input(r.id(), b"hello\n".to_vec())
        .await
        .expect("input");
    let end = bpm
        .wait(r.id(), Some(Duration::from_secs(10)))
        .await
        .expect("ends");
    assert_eq!(end.state(), StateName::Completed);
    let text = bpm
        .read_output(r.id(), OutputQuery::default())
        .await
        .expect("read")
        .text();
    assert_eq!(text, format!("me={}\ngot hello\n", r.id()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_marks_a_process_gets_are_bpm_s_even_where_its_spec_sets_them() {
    let (bpm, _dir) = engine().await;
    // `env` itself (a shell would merge duplicates) lists every entry, so a
    // second variable of the same name would show.
    let mut spec = ProcessSpec::argv(["env"]);
    let env = std::sync::Arc::make_mut(&mut spec.env);
    env.insert("BPM_PROCESS_ID".into(), "someone-else".into());
    env.insert("BPM_NODE".into(), "elsewhere".into());
    env.insert("KEPT".into(), "yes".into());
    let r = finish(&bpm, spec).await;
    assert_eq!(r.state(), StateName::Completed);
    let text = bpm
        .read_output(r.id(), OutputQuery::default())
        .await
        .expect("read")
        .text();
    let mut seen: Vec<&str> = text
        .lines()
        .filter(|l| {
            ["BPM_PROCESS_ID=", "BPM_NODE=", "KEPT="]
                .iter()
                .any(|p| l.starts_with(p))
        })
        .collect();
    seen.sort_unstable();
    assert_eq!(
        seen,
        [
            format!("BPM_NODE={}", r.node()),
            format!("BPM_PROCESS_ID={}", r.id()),
            "KEPT=yes".to_string()
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_processes_run_at_most_four_at_a_time_in_their_group() {
    let mut limits = Limits::default();
    let group = GroupName::new("suite").expect("group");
    limits.group_limits.insert(group.clone(), 4);
    let (bpm, _dir) = engine_with(limits, None).await;
    let mut events = bpm.subscribe();
    let mut ids = Vec::new();
    for _ in 0..100 {
        let mut spec = ProcessSpec::argv(["sleep", "0.02"]);
        spec.group = Some(group.clone());
        ids.push(bpm.start(spec).await.expect("start").id());
    }
    let mut running = 0i32;
    let mut most = 0;
    let mut ended = 0;
    while ended < 100 {
        let e = tokio::time::timeout(Duration::from_secs(30), events.recv())
            .await
            .expect("events")
            .expect("open");
        match e.kind {
            EventKind::Started => running += 1,
            EventKind::Completed | EventKind::Failed => {
                running -= 1;
                ended += 1;
            }
            _ => {}
        }
        most = most.max(running);
    }
    assert!(most <= 4, "{most} ran at once");
    assert_eq!(most, 4, "the group limit was used");
    for id in ids {
        assert_eq!(
            bpm.get(id).await.expect("record").state(),
            StateName::Completed
        );
    }
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").expect("fd dir").count()
}

fn zombie_children() -> usize {
    let me = std::process::id();
    std::fs::read_dir("/proc")
        .expect("/proc")
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
                let rest = &s[s.rfind(')').map_or(0, |i| i + 2)..];
                let mut f = rest.split_whitespace();
                f.next() == Some("Z") && f.next().and_then(|p| p.parse::<u32>().ok()) == Some(me)
            })
        })
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_processes_leak_no_descriptor_and_leave_no_zombie() {
    let (bpm, _dir) = engine_with(
        Limits {
            max_running: 8,
            retention: None,
            ..Limits::default()
        },
        None,
    )
    .await;
    let run_batch = |n: usize| {
        let bpm = bpm.clone();
        async move {
            let mut ids = Vec::with_capacity(n);
            for _ in 0..n {
                ids.push(
                    bpm.start(ProcessSpec::argv(["true"]))
                        .await
                        .expect("start")
                        .id(),
                );
            }
            for id in ids {
                let r = bpm
                    .wait(id, Some(Duration::from_mins(1)))
                    .await
                    .expect("ends");
                assert_eq!(r.state(), StateName::Completed);
            }
        }
    };
    run_batch(20).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (fds, zombies) = (open_fds(), zombie_children());
    run_batch(1000).await;
    // Exits are reported once reaped; give the last pipes a moment to close.
    until("descriptors back", || open_fds() <= fds).await;
    assert!(
        open_fds() <= fds,
        "open descriptors: {} after, {fds} before",
        open_fds()
    );
    // Other tests in this binary run beside this one, and a child of theirs
    // may be a zombie for the instant before their engine reaps it. A zombie
    // this test's engine left would stay one, so the count must come back.
    until("zombies back", || zombie_children() <= zombies).await;
    assert!(
        zombie_children() <= zombies,
        "zombie children: {} after, {zombies} before",
        zombie_children()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_process_leads_its_own_session_and_group_with_default_signals() {
    let (bpm, _dir) = engine().await;
    let r = bpm
        .start(ProcessSpec::argv(["sleep", "30"]))
        .await
        .expect("start");
    let pid = r.pid().expect("pid");
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    let fields: Vec<&str> = stat[stat.rfind(')').expect("comm") + 2..]
        .split_whitespace()
        .collect();
    // Fields after the name: state, ppid, pgrp, session.
    assert_eq!(fields[2], pid.to_string(), "process group");
    assert_eq!(fields[3], pid.to_string(), "session");
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    let ignored = status
        .lines()
        .find(|l| l.starts_with("SigIgn:"))
        .expect("SigIgn");
    let mask =
        u64::from_str_radix(ignored.split_whitespace().nth(1).expect("mask"), 16).expect("hex");
    // Signals 1 to 31 (SIGPIPE above all, which Rust programs ignore) are back to their defaults.
    assert_eq!(mask & 0x7fff_ffff, 0, "ignored standard signals: {mask:#x}");
    bpm.stop(r.id(), StopOptions::default())
        .await
        .expect("stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_the_filesystem_store_records_and_output_survive_a_new_engine() {
    let home = tempfile::tempdir().expect("home");
    let on_disk = || bpm_embed::builder().fs_store(home.path()).start();
    let bpm = on_disk().await.expect("engine");
    let done = finish(&bpm, sh("echo kept on disk; exit 3")).await;
    let op = bpm
        .track(ProcessSpec::tracked("migration".parse().expect("name")))
        .await
        .expect("track");
    let live = bpm
        .start(ProcessSpec::argv(["sleep", "30"]))
        .await
        .expect("start");
    bpm.shutdown().await;
    drop(bpm);
    let bpm = on_disk().await.expect("engine again");
    let again = bpm.get(done.id()).await.expect("record kept");
    assert_eq!(again, done);
    assert_eq!(again.lifecycle().exit(), Some(ExitStatus::Code(3)));
    let text = bpm
        .read_output(done.id(), OutputQuery::default())
        .await
        .expect("output")
        .text();
    assert_eq!(text, "kept on disk\n");
    assert_eq!(
        bpm.get(op.id()).await.expect("op").state(),
        StateName::Running
    );
    // The sleep still runs: the new engine's spawner adopts it (by pidfd,
    // checked against its mark), and a stop reaches it.
    let adopted = bpm.get(live.id()).await.expect("record");
    assert_eq!(adopted.state(), StateName::Running);
    assert_eq!(adopted.pid(), live.pid());
    let stopped = bpm
        .stop(live.id(), bpm_ports::StopOptions::default())
        .await
        .expect("stop");
    assert_eq!(stopped.state(), StateName::Cancelled, "{stopped:?}");
    let pid = live.pid().expect("pid");
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}")).exists()
            || std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .is_ok_and(|s| s.contains(") Z")),
        "the adopted process still runs"
    );
}
