//! Projects through `bpm up` and `bpm down`: `bpm.toml`, Procfiles and
//! process-compose files, readiness, env files, watches and schedules.

// Scenario tests name their processes a, b, c...
#![allow(clippy::many_single_char_names)]

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod support;
use support::bpm::Bpm;
#[allow(clippy::wildcard_imports)]
use support::cli::*;

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
    assert_eq!(order, ["db", "migrate", "api", "worker", "worker.2"]);
    let up = services(&bpm, "shop");
    assert_eq!(
        up.keys().map(String::as_str).collect::<Vec<_>>(),
        ["api", "db", "worker", "worker.2"],
        "migrate completed: {up:?}"
    );
    let api = bpm.json(&["show", &up["api"].0, "--json"]);
    assert!(
        api["port"].as_u64().is_some() && !api["ready_at"].is_null(),
        "{api}"
    );
    the_project_here_is_found_or_missed_by_name(&bpm, dir.path(), &up);
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
            .any(|l| l.starts_with("would replace") && l.contains("api")),
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
    for kept in ["db", "worker", "worker.2"] {
        assert_eq!(now[kept], up[kept], "{kept} kept its process");
    }

    logs_of_every_service_are_prefixed(&bpm, dir.path());

    // Down: reverse order, every tree gone.
    let down = bpm.ok(&["down", "-f", f]);
    let stopped: Vec<&str> = down
        .lines()
        .map(|l| l.split_whitespace().nth(1).unwrap_or(""))
        .collect();
    assert_eq!(stopped, ["worker.2", "worker", "api", "db"], "{down}");
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

/// `--project` with no name: the project of the bpm.toml here (its
/// records are `up`'s); and where there is none, an error that says so.
fn the_project_here_is_found_or_missed_by_name(
    bpm: &Bpm,
    dir: &std::path::Path,
    up: &std::collections::BTreeMap<String, (String, u64)>,
) {
    let here = bpm
        .cmd(&["ps", "--project", "--json"])
        .current_dir(dir)
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
}

/// Every service's output, prefixed; with no id inside the project's
/// directory, the same, for this project.
fn logs_of_every_service_are_prefixed(bpm: &Bpm, dir: &std::path::Path) {
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
    let here = bpm.cmd(&["logs"]).current_dir(dir).output().expect("bpm");
    assert!(here.status.success(), "{here:?}");
    let here = String::from_utf8_lossy(&here.stdout);
    for line in logs
        .lines()
        .filter(|l| l.starts_with("db") || l.starts_with("migrate"))
    {
        assert!(here.lines().any(|l| l == line), "{line} in:\n{here}");
    }
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

    process_compose_files_run_unchanged(&bpm, dir.path(), &project);
}

/// From process-compose's documentation (launcher page), unchanged, the
/// keys bpm does not act on named; then a dependency with a readiness
/// probe, as process-compose writes them. In `dir`, whose project is
/// `project`.
fn process_compose_files_run_unchanged(bpm: &Bpm, dir: &std::path::Path, project: &str) {
    let compose = dir.join("process-compose.yaml");
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
      period_seconds: 1
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
    one_run_per_due_time(&bpm, tick);
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

    schedule_mistakes_are_refused_by_name(&bpm);
}

/// Every run the schedule `tick` counted is a record, and each due time
/// ran once: a run's id carries its due time.
fn one_run_per_due_time(bpm: &Bpm, tick: &str) {
    // The count and the runs read between two due times: a run may start
    // between two reads (one each second), so the reads are taken again
    // until the runs listed before and after the count are the same.
    let mut tries = 0;
    let (ticks, shown) = loop {
        let before = runs_of(bpm, tick);
        let shown = bpm.json(&["show", "tick", "--json"]);
        if runs_of(bpm, tick).len() == before.len() {
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
}

/// What cannot work is refused by name.
fn schedule_mistakes_are_refused_by_name(bpm: &Bpm) {
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

/// `bpm ps` shows a project's services by their whole names (up to 40
/// characters; longer ones lose their middle), so that services whose
/// names differ only at the end can be told apart.
#[test]
fn ps_shows_services_whose_names_differ_at_the_end_apart() {
    let bpm = Bpm::new();
    let dir = tempfile::tempdir().expect("dir");
    let file = dir.path().join("bpm.toml");
    std::fs::write(
        &file,
        "[project]\nname = \"fixtures\"\n[services.process5]\ncommand = \"sleep 30\"\n[services.process6]\ncommand = \"sleep 30\"\n",
    )
    .expect("file");
    let f = file.to_str().expect("utf-8");
    bpm.ok(&["up", "-f", f]);
    let table = bpm.ok(&["ps"]);
    for name in ["fixtures/process5", "fixtures/process6"] {
        assert!(table.contains(name), "{name} in:\n{table}");
    }
    bpm.ok(&["down", "-f", f]);
}

/// `bpm logs --grep RE`: only the matching lines, of one process or of
/// every service of a project (each after its service's name); an
/// expression that does not parse is refused by name.
#[test]
fn logs_grep_keeps_the_matching_lines_of_a_process_or_a_project() {
    let bpm = Bpm::new();
    let dir = tempfile::tempdir().expect("project");
    std::fs::write(
        dir.path().join("bpm.toml"),
        "[project]\nname = \"greps\"\n[services.a]\ncommand = \"echo one-a; echo two-a\"\n[services.b]\ncommand = \"echo one-b; printf one-last\"\n",
    )
    .expect("bpm.toml");
    let up = bpm
        .cmd(&["up", "--wait"])
        .current_dir(dir.path())
        .output()
        .expect("up");
    assert!(up.status.success(), "{up:?}");
    let project = bpm.ok(&["logs", "greps", "--grep", "^one"]);
    let mut lines: Vec<&str> = project.lines().collect();
    lines.sort_unstable();
    assert_eq!(lines, ["a | one-a", "b | one-b", "b | one-last"]);
    let one = bpm.ok(&["logs", "greps/a", "--grep", "two"]);
    assert_eq!(one, "two-a\n");
    let bad = bpm.fails(&["logs", "greps/a", "--grep", "("], 4);
    assert!(
        bad.contains("--grep \"(\": not a regular expression"),
        "{bad}"
    );
}
