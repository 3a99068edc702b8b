//! The real `bpm` binary in a temporary `BPM_HOME`, driven as a person at
//! a shell would: the fixture the CLI's test files share.

use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

pub struct Bpm {
    pub home: tempfile::TempDir,
}

impl Bpm {
    pub fn new() -> Self {
        Bpm {
            home: tempfile::tempdir().expect("home"),
        }
    }

    pub fn home(&self) -> &Path {
        self.home.path()
    }

    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_bpm"));
        c.args(args)
            .env("BPM_HOME", self.home())
            .env("NO_COLOR", "1")
            .stdin(Stdio::null());
        c
    }

    /// Starts `bpm ARGS` with `input` on its standard input (then closed),
    /// and its output captured.
    pub fn feed(&self, args: &[&str], input: &[u8]) -> std::process::Child {
        let mut child = self
            .cmd(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("bpm runs");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(input)
            .expect("write");
        child
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().expect("bpm runs")
    }

    /// Runs and expects success; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "bpm {args:?} failed ({:?}): {}",
            out.status.code(),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("utf-8")
    }

    /// Runs and expects the exit code; returns stderr.
    pub fn fails(&self, args: &[&str], code: i32) -> String {
        let out = self.run(args);
        assert_eq!(
            out.status.code(),
            Some(code),
            "bpm {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stderr).expect("utf-8")
    }

    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        serde_json::from_str(&self.ok(args)).expect("JSON")
    }

    pub fn daemon_pid(&self) -> u32 {
        std::fs::read_to_string(self.home().join("daemon.pid"))
            .expect("pid file")
            .trim()
            .parse()
            .expect("pid")
    }

    /// The pid of the keeper `bpm daemon status` names.
    pub fn keeper_pid(&self) -> u32 {
        let status = self.ok(&["daemon", "status"]);
        status
            .lines()
            .find_map(|l| l.strip_prefix("keeper   pid "))
            .and_then(|l| l.split(' ').next()?.parse().ok())
            .unwrap_or_else(|| panic!("no keeper line: {status}"))
    }

    pub fn state(&self, id: &str) -> String {
        self.json(&["show", id, "--json"])["state"]
            .as_str()
            .expect("state")
            .to_owned()
    }

    pub fn until_state(&self, id: &str, state: &str) {
        let deadline = Instant::now() + Duration::from_secs(15);
        while self.state(id) != state {
            assert!(Instant::now() < deadline, "{id} never became {state}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Bpm {
    fn drop(&mut self) {
        let _ = self.cmd(&["daemon", "stop", "--kill-all"]).output();
    }
}

pub fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|s| !s[s.rfind(')').unwrap_or(0)..].starts_with(") Z"))
}

/// The record's cgroups left on the machine: `bpm-<id>` folders anywhere
/// under `/sys/fs/cgroup` (the v1 hierarchies, or the v2 unified one).
pub fn cgroups_of(id: &str) -> Vec<std::path::PathBuf> {
    let name = format!("bpm-{id}");
    let mut found = Vec::new();
    let mut dirs = vec![std::path::PathBuf::from("/sys/fs/cgroup")];
    while let Some(dir) = dirs.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                let path = e.path();
                if e.file_name().to_string_lossy() == name {
                    found.push(path.clone());
                }
                dirs.push(path);
            }
        }
    }
    found
}
