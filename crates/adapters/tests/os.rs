//! The OS spawner against the spawner contract suite, with real processes.

use std::sync::Arc;

use bpm_adapters::memory::InMemoryOutput;
use bpm_adapters::os::{OsSpawner, OsSpawnerConfig};
use bpm_ports::contract::spawner::SpawnerHarness;
use bpm_ports::{OutputStore, ProcessSpawner};

mod common;

fn harness() -> Arc<dyn SpawnerHarness> {
    let output = Arc::new(InMemoryOutput::default());
    let spawner = Arc::new(OsSpawner::new(output.clone(), OsSpawnerConfig::default()));
    Arc::new(common::ShHarness {
        spawner,
        output,
        keep: None,
    })
}

mod os_spawner {
    use super::*;
    bpm_ports::spawner_contract_tests!(harness());
}

mod proc_sampler {
    use super::*;
    bpm_ports::usage_contract_tests!(
        Arc::new(bpm_adapters::os::ProcSampler::new()) as Arc<dyn bpm_ports::ResourceSampler>
    );
}

mod os_host {
    use super::*;
    bpm_ports::host_contract_tests!(
        Arc::new(bpm_adapters::os::OsHost::new()) as Arc<dyn bpm_ports::Host>
    );
}

/// Output behind a slow disk: each append takes longer than the spawner's drain wait.
struct SlowOutput(InMemoryOutput);

#[async_trait::async_trait]
impl OutputStore for SlowOutput {
    async fn append(
        &self,
        id: bpm_domain::ProcessId,
        stream: bpm_ports::Stream,
        data: &[u8],
    ) -> Result<bpm_ports::Cursor, bpm_ports::OutputError> {
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        self.0.append(id, stream, data).await
    }
    async fn read(
        &self,
        id: bpm_domain::ProcessId,
        query: &bpm_ports::OutputQuery,
    ) -> Result<bpm_ports::OutputChunk, bpm_ports::OutputError> {
        self.0.read(id, query).await
    }
    async fn tail(
        &self,
        id: bpm_domain::ProcessId,
        stream: bpm_ports::StreamSelect,
        lines: usize,
        max_bytes: usize,
    ) -> Result<bpm_ports::OutputChunk, bpm_ports::OutputError> {
        self.0.tail(id, stream, lines, max_bytes).await
    }
    async fn remove(&self, id: bpm_domain::ProcessId) -> Result<(), bpm_ports::OutputError> {
        self.0.remove(id).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exit_waits_for_output_still_being_copied_to_a_slow_store() {
    use bpm_domain::{NodeId, ProcessId, ProcessRecord, ProcessSpec, Timestamp};
    let output = Arc::new(SlowOutput(InMemoryOutput::default()));
    let spawner = OsSpawner::new(output.clone(), OsSpawnerConfig::default());
    let mut notices = spawner.notices().expect("notices");
    let record = ProcessRecord::new(
        ProcessId::from_uuid(uuid::Uuid::now_v7()),
        NodeId::local(),
        ProcessSpec::argv([
            "sh",
            "-c",
            "echo one; sleep 0.05; echo two; sleep 0.05; echo three",
        ]),
        Timestamp::from_millis(1),
    );
    let request = bpm_ports::SpawnRequest::for_record(&record).expect("a command");
    spawner.spawn(request).await.expect("spawn");
    loop {
        match notices.recv().await.expect("a notice") {
            bpm_ports::ProcessNotice::Exited { id, .. } if id == record.id() => break,
            _ => {}
        }
    }
    let all = output
        .read(record.id(), &bpm_ports::OutputQuery::default())
        .await
        .expect("read");
    assert_eq!(
        all.text(),
        "one\ntwo\nthree\n",
        "all of it, when the exit is told"
    );
}

/// Arguments, variables (names and values) and the working directory that
/// are not UTF-8 reach the process byte for byte.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bytes_that_are_not_utf8_reach_the_process_exactly() {
    use bpm_domain::OsText;
    use std::os::unix::ffi::OsStrExt as _;
    let output: Arc<dyn OutputStore> = Arc::new(InMemoryOutput::default());
    let spawner = OsSpawner::new(output.clone(), OsSpawnerConfig::default());
    let mut notices = spawner.notices().expect("notices");
    let dir = tempfile::tempdir().expect("tempdir");
    let odd = dir.path().join(std::ffi::OsStr::from_bytes(b"caf\xe9"));
    std::fs::create_dir(&odd).expect("a folder whose name is not UTF-8");
    // The process prints its argument, a variable, and its working directory.
    let env = Arc::new(bpm_domain::Environment::from([
        ("V".into(), OsText::from_bytes(b"val\xfe".to_vec())),
        (OsText::from_bytes(b"W_\xff".to_vec()), "w".into()),
    ]));
    let mut request = common::sh_request(r#"printf '%s|%s|' "$1" "$V"; pwd | tr -d '\n'"#, &env);
    request.argv.push("sh".into());
    request.argv.push(OsText::from_bytes(b"arg\xc3".to_vec()));
    request.cwd = Some(odd.clone());
    let id = request.id;
    spawner.spawn(request).await.expect("spawn");
    let mut want = b"arg\xc3|val\xfe|".to_vec();
    want.extend_from_slice(odd.as_os_str().as_bytes());
    // Read as a string (lossy, for the message), then compare the bytes.
    let lossy = common::stdout_at_exit(&mut notices, &output, id).await;
    assert_eq!(lossy, String::from_utf8_lossy(&want));
    let chunk = output
        .read(id, &bpm_ports::OutputQuery::default())
        .await
        .expect("output");
    let got: Vec<u8> = chunk
        .pieces
        .iter()
        .filter(|p| p.stream == bpm_ports::Stream::Stdout)
        .flat_map(|p| p.data.iter().copied())
        .collect();
    assert_eq!(got, want);
    // sh drops a variable whose name is not UTF-8 (nor a name it could
    // use): `env` shows that it came.
    let mut request = common::sh_request("", &env);
    request.argv = vec!["env".into()];
    let id = request.id;
    spawner.spawn(request).await.expect("spawn");
    let shown = common::stdout_at_exit(&mut notices, &output, id).await;
    assert!(shown.contains("W_\u{fffd}=w\n"), "{shown}");
    let chunk = output
        .read(id, &bpm_ports::OutputQuery::default())
        .await
        .expect("output");
    assert!(
        chunk
            .pieces
            .iter()
            .any(|p| p.data.windows(6).any(|w| w == b"W_\xff=w\n")),
        "{shown}"
    );
}

/// A process gets the manager's environment under its request's, except
/// that bpm's marks win: its own id and node always, its record's session
/// when it has one. The program is looked up in the request's `PATH`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_gets_its_requests_environment_with_bpms_marks_winning() {
    use std::collections::BTreeMap;
    let output: Arc<dyn OutputStore> = Arc::new(InMemoryOutput::default());
    let spawner = OsSpawner::new(output.clone(), OsSpawnerConfig::default());
    let mut notices = spawner.notices().expect("notices");
    let script = r#"printf '%s|%s|%s|%s|%s' "$A" "$BPM_SESSION" "$BPM_NODE" "$BPM_PROCESS_ID" "${HOME:+home}""#;
    let shared = Arc::new(BTreeMap::from([
        ("A".into(), "a1".into()),
        ("BPM_NODE".into(), "not-the-node".into()),
        ("BPM_PROCESS_ID".into(), "not-the-id".into()),
        ("BPM_SESSION".into(), "from-the-env".into()),
    ]));
    let node = bpm_domain::NodeId::local();
    // Twice with one map (the second composed from the first's), with and
    // without a session of the record's own.
    for session in [Some("s1"), None, Some("s2")] {
        let mut request = common::sh_request(script, &shared);
        request.session = session.map(|s| bpm_domain::SessionId::new(s).expect("session"));
        let id = request.id;
        spawner.spawn(request).await.expect("spawn");
        assert_eq!(
            common::stdout_at_exit(&mut notices, &output, id).await,
            format!(
                "a1|{}|{}|{id}|{}",
                session.unwrap_or("from-the-env"),
                node.as_str(),
                if std::env::var_os("HOME").is_some() {
                    "home"
                } else {
                    ""
                }
            )
        );
    }
    let other = Arc::new(BTreeMap::from([("A".into(), "a2".into())]));
    let request = common::sh_request(script, &other);
    let id = request.id;
    spawner.spawn(request).await.expect("spawn");
    assert!(
        common::stdout_at_exit(&mut notices, &output, id)
            .await
            .starts_with("a2||"),
        "another map, another environment"
    );
    let nowhere = Arc::new(BTreeMap::from([(
        "PATH".into(),
        "/nonexistent-bpm-path".into(),
    )]));
    assert!(matches!(
        spawner.spawn(common::sh_request("true", &nowhere)).await,
        Err(bpm_ports::SpawnError::ProgramNotFound(p)) if p == "sh"
    ));
}

/// Without a subreaper (an embedded engine), a leader whose process group
/// runs on after it is said to have exited, and its exit is told only once
/// the group has ended; with `leader_only`, at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_that_backgrounds_its_work_ends_with_the_work() {
    use bpm_domain::{ExitStatus, NodeId, ProcessId, ProcessRecord, ProcessSpec, Timestamp};
    use bpm_ports::ProcessNotice;
    let output = Arc::new(InMemoryOutput::default());
    let spawner = OsSpawner::new(output.clone(), OsSpawnerConfig::default());
    let mut notices = spawner.notices().expect("notices");
    for leader_only in [false, true] {
        let mut spec = ProcessSpec::argv(["sh", "-c", "sleep 30 & echo $!; exit 4"]);
        spec.leader_only = leader_only;
        let record = ProcessRecord::new(
            ProcessId::from_uuid(uuid::Uuid::now_v7()),
            NodeId::local(),
            spec,
            Timestamp::from_millis(1),
        );
        let id = record.id();
        let request = bpm_ports::SpawnRequest::for_record(&record).expect("a command");
        spawner.spawn(request).await.expect("spawn");
        let mut said = None;
        let status = loop {
            let notice = tokio::time::timeout(std::time::Duration::from_secs(10), notices.recv())
                .await
                .expect("a notice in time")
                .expect("a notice");
            match notice {
                ProcessNotice::LeaderExited {
                    id: of,
                    status,
                    running,
                } if of == id => {
                    assert_eq!(status, ExitStatus::Code(4));
                    let sleeper = running.iter().find(|r| r.name == "sleep").map(|r| r.pid);
                    if let Some(pid) = sleeper {
                        said = Some(pid);
                        // Ended from outside: then the record's exit is told.
                        let _ = std::process::Command::new("kill")
                            .arg(pid.to_string())
                            .status();
                    }
                }
                ProcessNotice::Exited { id: of, status, .. } if of == id => break status,
                _ => {}
            }
        };
        assert_eq!(status, ExitStatus::Code(4), "the leader's code");
        if leader_only {
            assert_eq!(said, None, "leader_only: told at once");
            let text = output
                .read(id, &bpm_ports::OutputQuery::default())
                .await
                .expect("read")
                .text();
            let pid = text.trim().to_owned();
            let _ = std::process::Command::new("kill").arg(&pid).status();
        } else {
            assert!(said.is_some(), "what runs on was named");
        }
    }
}

/// A busy writer's output (its pipe grown, read a megabyte at a time) is
/// in the file store byte for byte and whole by the time its exit is told,
/// and a readiness pattern is still seen after megabytes of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_writers_output_is_kept_whole_in_the_files() {
    use bpm_ports::{Cursor, OutputQuery, ProcessNotice, StreamSelect};
    let dir = tempfile::tempdir().expect("tempdir");
    let output: Arc<dyn OutputStore> =
        Arc::new(bpm_adapters::fs::FileOutput::new(dir.path(), 64 << 20).expect("store"));
    let spawner = OsSpawner::new(output.clone(), OsSpawnerConfig::default());
    let mut notices = spawner.notices().expect("notices");
    let env = Arc::new(bpm_domain::Environment::default());
    let want = (1..=1_000_000).fold(String::new(), |mut all, i| {
        use std::fmt::Write as _;
        let _ = writeln!(all, "{i}");
        all
    });
    // All that one stream of `id` kept, as text.
    let kept = async |id, stream| {
        let all = OutputQuery {
            stream,
            cursor: Some(Cursor(0)),
            max_bytes: 16 << 20,
            tail_lines: None,
        };
        output.read(id, &all).await.expect("read").text()
    };

    let request = common::sh_request("seq 1 1000000; echo done >&2", &env);
    let id = request.id;
    spawner.spawn(request).await.expect("spawn");
    let _ = common::stdout_at_exit(&mut notices, &output, id).await;
    let got = kept(id, StreamSelect::Stdout).await;
    assert!(
        got == want,
        "{} bytes kept of {}; they end {:?}",
        got.len(),
        want.len(),
        &got[got.len().saturating_sub(40)..]
    );
    assert_eq!(kept(id, StreamSelect::Stderr).await, "done\n");

    let mut request = common::sh_request("seq 1 1000000; echo 'all out'; sleep 0.3", &env);
    request.readiness = bpm_domain::ReadinessCheck::LogPattern {
        pattern: bpm_domain::LogPattern::new("^all out$").expect("regex"),
    };
    let id = request.id;
    spawner.spawn(request).await.expect("spawn");
    let ready = loop {
        match tokio::time::timeout(std::time::Duration::from_secs(20), notices.recv())
            .await
            .expect("a notice within 20 s")
            .expect("notices")
        {
            ProcessNotice::Ready { id: r } if r == id => break true,
            ProcessNotice::Exited { id: e, .. } if e == id => break false,
            _ => {}
        }
    };
    assert!(ready, "the pattern after 6.9 MB of output was not seen");
    let _ = common::stdout_at_exit(&mut notices, &output, id).await;
    assert_eq!(
        kept(id, StreamSelect::Stdout).await.len(),
        want.len() + "all out\n".len()
    );
}

/// `runs_bpm` (which a node's claim asks of the pid that held its name)
/// is true of a live program named bpm, and false of another program, of
/// the same one once it is a zombie, and once it is gone.
#[test]
fn runs_bpm_tells_a_live_bpm_from_a_zombie_and_from_others() {
    use bpm_adapters::os::runs_bpm;
    let dir = tempfile::tempdir().expect("dir");
    let sleep = ["/usr/bin/sleep", "/bin/sleep"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .expect("a sleep binary");
    let named = dir.path().join("bpm-sleeper");
    // A link, not a copy: a file just written may not be run while another
    // test's fork holds it open. The command name is the link's.
    std::os::unix::fs::symlink(sleep, &named).expect("link");
    let mut other = std::process::Command::new(sleep)
        .arg("30")
        .spawn()
        .expect("sleep");
    let mut bpm = std::process::Command::new(&named)
        .arg("30")
        .spawn()
        .expect("bpm-sleeper");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !runs_bpm(bpm.id()) {
        assert!(std::time::Instant::now() < deadline, "never seen as bpm");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    assert!(!runs_bpm(other.id()));
    bpm.kill().expect("kill");
    while std::fs::read(format!("/proc/{}/stat", bpm.id()))
        .is_ok_and(|s| !s.windows(3).any(|w| w == b") Z"))
    {
        assert!(std::time::Instant::now() < deadline, "never a zombie");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    assert!(!runs_bpm(bpm.id()), "a zombie");
    let pid = bpm.id();
    bpm.wait().expect("reaped");
    assert!(!runs_bpm(pid), "gone");
    let _ = other.kill();
    let _ = other.wait();
}

/// A paced readiness check waits its initial delay, needs its passes in a
/// row, and after its failures in a row reports the process unhealthy
/// with the last failure; a health check's initial delay is kept too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paced_readiness_check_keeps_its_delay_its_passes_and_its_failures() {
    use bpm_domain::{Pace, Span};
    use bpm_ports::ProcessNotice;
    let output: Arc<dyn OutputStore> = Arc::new(InMemoryOutput::new(1 << 20));
    let spawner = OsSpawner::new(output, OsSpawnerConfig::default());
    let mut notices = spawner.notices().expect("notices");
    let env = Arc::new(bpm_domain::Environment::default());
    let dir = tempfile::tempdir().expect("dir");
    let tries = dir.path().join("tries");
    let paced = |delay_ms, every_ms, successes, failures| Pace {
        initial_delay: Span::from_millis(delay_ms),
        every: Span::from_millis(every_ms),
        timeout: Span::from_secs(2),
        successes,
        failures,
    };
    // Until a notice about `id`: what it was, and when.
    let next = async |notices: &mut tokio::sync::mpsc::UnboundedReceiver<ProcessNotice>, id| loop {
        let n = tokio::time::timeout(std::time::Duration::from_secs(20), notices.recv())
            .await
            .expect("a notice within 20 s")
            .expect("notices");
        match &n {
            ProcessNotice::Ready { id: r } | ProcessNotice::Health { id: r, .. } if *r == id => {
                break n;
            }
            ProcessNotice::Exited { id: r, .. } if *r == id => panic!("it exited: {n:?}"),
            _ => {}
        }
    };

    // Ready after 600 ms of delay and three passes 200 ms apart: 1 s at
    // the least; each try is counted in a file.
    let mut request = common::sh_request("exec sleep 30", &env);
    request.readiness = bpm_domain::ReadinessCheck::Exec {
        command: format!("echo x >> {}", tries.display()),
    };
    request.ready_pace = Some(paced(600, 200, 3, None));
    let id = request.id;
    let began = std::time::Instant::now();
    spawner.spawn(request).await.expect("spawn");
    let n = next(&mut notices, id).await;
    let took = began.elapsed();
    assert!(matches!(n, ProcessNotice::Ready { .. }), "{n:?}");
    assert!(
        took >= std::time::Duration::from_secs(1),
        "ready after {took:?}"
    );
    assert!(
        took < std::time::Duration::from_secs(5),
        "ready after {took:?}"
    );
    let counted = std::fs::read_to_string(&tries).expect("tries");
    assert_eq!(counted.lines().count(), 3, "tries made: {counted:?}");

    // Never ready: two failures in a row end the wait, naming the check.
    let mut request = common::sh_request("exec sleep 30", &env);
    request.readiness = bpm_domain::ReadinessCheck::Exec {
        command: "echo not yet; exit 3".into(),
    };
    request.ready_pace = Some(paced(0, 100, 1, Some(2)));
    let id = request.id;
    spawner.spawn(request).await.expect("spawn");
    match next(&mut notices, id).await {
        ProcessNotice::Health {
            healthy: false,
            detail: Some(d),
            ..
        } => assert!(
            d.starts_with("readiness check failed 2 times in a row: ") && d.contains("exited 3"),
            "{d}"
        ),
        other => panic!("expected unhealthy, got {other:?}"),
    }

    // A health check's first run waits its initial delay, not `every`.
    let mut request = common::sh_request("exec sleep 30", &env);
    let mut check = bpm_domain::HealthCheck::of(bpm_domain::Probe::Exec {
        command: "true".into(),
    });
    check.every = Span::from_secs(10);
    check.initial_delay = Some(Span::from_millis(100));
    request.health = Some(check);
    let id = request.id;
    let began = std::time::Instant::now();
    spawner.spawn(request).await.expect("spawn");
    let n = next(&mut notices, id).await;
    assert!(
        matches!(n, ProcessNotice::Health { healthy: true, .. }),
        "{n:?}"
    );
    assert!(
        began.elapsed() < std::time::Duration::from_secs(5),
        "{:?}",
        began.elapsed()
    );
}
