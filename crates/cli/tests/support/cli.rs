//! What the test files that drive `bpm` from a shell share: waiting for
//! a process or its record, a raw socket, a terminal, a small disk.

use super::bpm::{Bpm, alive};
use std::io::{BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The record's JSON once its leader has exited with processes of its tree
/// running on, and the pid of the one named `name` among them.
pub fn leader_gone(bpm: &Bpm, id: &str, name: &str) -> (serde_json::Value, u32) {
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
pub fn until_gone(pid: u32, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while alive(pid) {
        assert!(Instant::now() < deadline, "{what}: {pid} runs on");
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub fn raw(
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

/// `sh -c` running a Python server on `$PORT`, on the loopback.
pub const SERVE_PORT: &str = "exec python3 -c 'import http.server as h, os; h.HTTPServer((\"127.0.0.1\", int(os.environ[\"PORT\"])), h.SimpleHTTPRequestHandler).serve_forever()'";

/// The record with its `error` once it ended, within `within`.
pub fn ended_within(bpm: &Bpm, id: &str, within: Duration) -> serde_json::Value {
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

/// Runs `bpm ARGS` on a pseudo-terminal (util-linux `script`), feeding `input`.
pub fn on_a_terminal(bpm: &Bpm, args: &str, input: &str) -> String {
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

/// Waits until `bpm show` counts `processes` in the tree of `id`.
pub fn until_usage(bpm: &Bpm, id: &str, processes: &str, when: &str) {
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

/// A `Bpm` whose state directory is a tmpfs of `size` (`8m`), mounted for
/// the test (it needs root, as CI has: it fails, never skips, without it).
/// The daemon is stopped with every process before the disk is unmounted.
pub struct SmallDisk {
    pub bpm: Bpm,
}

impl SmallDisk {
    pub fn new(size: &str) -> Self {
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
    pub fn dropped(&self, id: &str) -> (String, u64) {
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

/// A four-service project: the database is ready by a log line, the
/// migration runs once it is, the API (a port handed out, an env file,
/// ready by HTTP) once the migration completed, and two workers once the
/// API is ready.
pub const SHOP: &str = r#"
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
pub fn services(bpm: &Bpm, project: &str) -> std::collections::BTreeMap<String, (String, u64)> {
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

/// The records whose JSON `field` is `value`, oldest first (ids sort by
/// creation, a schedule's runs by due time).
pub fn listed(bpm: &Bpm, field: &str, value: &str) -> Vec<serde_json::Value> {
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
pub fn named(bpm: &Bpm, name: &str) -> Vec<serde_json::Value> {
    listed(bpm, "name", name)
}

/// The runs of schedule `id`, by due time.
pub fn runs_of(bpm: &Bpm, id: &str) -> Vec<serde_json::Value> {
    listed(bpm, "scheduled_from", id)
}

/// Runs `bpm ARGS` on a pseudo-terminal (util-linux `script`), typing each
/// step's text after its pause; its screen, and its exit code.
pub fn typed_on_a_terminal(bpm: &Bpm, args: &str, steps: &[(u64, &str)]) -> (String, Option<i32>) {
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
