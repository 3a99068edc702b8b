//! Helpers shared by the test files that drive the real binary from outside:
//! a Python with pinned packages, and a `bpm web` of the test's own.
#![allow(dead_code, unreachable_pub)]

pub mod bpm;
pub mod cli;

use std::fmt::Write as _;
use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub const BPM: &str = env!("CARGO_BIN_EXE_bpm");

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .expect("workspace root")
        .to_path_buf()
}

fn passes(python: &Path, probe: &str) -> bool {
    Command::new(python)
        .args(["-c", probe])
        .status()
        .is_ok_and(|s| s.success())
}

/// A Python on which `probe` passes: the one `env_var` names (`.ci/run`
/// sets it), else a virtualenv `target/VENV` made with `requirements`
/// (a file under the workspace root) on first use. Panics with what to do
/// when neither works: these tests never skip.
pub fn python(env_var: &str, venv: &str, requirements: &str, probe: &str) -> PathBuf {
    // Tests of one binary ask at once: one makes the virtualenv, the
    // others wait for it.
    static MAKING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    if let Some(p) = std::env::var_os(env_var) {
        let p = PathBuf::from(p);
        assert!(
            passes(&p, probe),
            "{env_var}={} lacks what {requirements} pins: pip install -r {requirements}",
            p.display()
        );
        return p;
    }
    let _one = MAKING
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let root = workspace_root();
    let venv = root.join("target").join(venv);
    let python = venv.join("bin/python");
    if passes(&python, probe) {
        return python;
    }
    let made = Command::new("python3")
        .args(["-m", "venv"])
        .arg(&venv)
        .status()
        .expect("python3 runs (these tests need Python 3.10 or later)");
    assert!(made.success(), "python3 -m venv {} failed", venv.display());
    let installed = Command::new(&python)
        .args(["-m", "pip", "install", "--quiet", "-r"])
        .arg(root.join(requirements))
        .status()
        .expect("pip runs");
    assert!(
        installed.success() && passes(&python, probe),
        "could not install {requirements} into {}",
        venv.display()
    );
    python
}

/// A Python with the browser test's pinned packages (Selenium, Pillow).
pub fn web_python() -> PathBuf {
    python(
        "BPM_WEB_PYTHON",
        "web-venv",
        "tests/web/requirements.txt",
        "import selenium, PIL",
    )
}

/// `bpm web` on a free loopback port, over a daemon in its own state
/// directory; both are stopped (with every process) when dropped.
pub struct Web {
    pub home: tempfile::TempDir,
    pub url: String,
    pub port: u16,
    pub token: String,
    child: Child,
}

impl Web {
    pub fn start(extra: &[&str]) -> Web {
        let home = tempfile::tempdir().expect("home");
        Web::start_in(home, extra)
    }

    pub fn start_in(home: tempfile::TempDir, extra: &[&str]) -> Web {
        let mut child = Command::new(BPM)
            .args(["web", "--listen", "127.0.0.1:0"])
            .args(extra)
            .env("BPM_HOME", home.path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("bpm web starts");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("bpm web prints its URL");
        let url = line.trim().to_owned();
        let rest = url
            .strip_prefix("http://127.0.0.1:")
            .unwrap_or_else(|| panic!("a loopback URL: {url:?}"));
        let (port, token) = rest.split_once("/?token=").expect("port and token");
        Web {
            port: port.parse().expect("port"),
            token: token.to_owned(),
            url: url.clone(),
            home,
            child,
        }
    }

    /// The `bpm` command on this state directory.
    pub fn bpm(&self, args: &[&str]) -> String {
        let out = Command::new(BPM)
            .args(args)
            .env("BPM_HOME", self.home.path())
            .output()
            .expect("bpm runs");
        assert!(
            out.status.success(),
            "bpm {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// The `bpm web` process.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn cookie(&self) -> String {
        format!("bpm_web_{}={}", self.port, self.token)
    }

    pub fn origin(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// One HTTP/1.1 request; the status, the headers (lower-case names) and the body.
    pub fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> Response {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).expect("connect");
        s.set_read_timeout(Some(Duration::from_mins(1)))
            .expect("timeout");
        let mut req = format!(
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nConnection: close\r\nContent-Length: {}\r\n",
            self.port,
            body.len()
        );
        for (k, v) in headers {
            let _ = write!(req, "{k}: {v}\r\n");
        }
        req.push_str("\r\n");
        req.push_str(body);
        s.write_all(req.as_bytes()).expect("send");
        let mut raw = Vec::new();
        s.read_to_end(&mut raw).expect("read");
        Response::parse(&raw)
    }

    /// The lines of the server-sent-event stream at `path`, as they come;
    /// the iterator ends when 20 s pass without one.
    pub fn stream(&self, path: &str) -> impl Iterator<Item = String> {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).expect("connect");
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nCookie: {}\r\n\r\n",
            self.cookie()
        )
        .expect("send");
        s.set_read_timeout(Some(Duration::from_secs(20)))
            .expect("timeout");
        BufReader::new(s).lines().map_while(Result::ok)
    }

    /// The live stream, once subscribed (its first usage sample has come).
    pub fn live(&self) -> impl Iterator<Item = String> {
        let mut lines = self.stream("/api/live");
        assert!(
            lines.any(|l| l.starts_with("event: usage")),
            "the live stream's first sample"
        );
        lines
    }

    /// A GET with the cookie.
    pub fn get(&self, path: &str) -> Response {
        self.request("GET", path, &[("Cookie", &self.cookie())], "")
    }

    /// A POST (or DELETE) with the cookie and the page's own origin.
    pub fn send(&self, method: &str, path: &str, json: &str) -> Response {
        self.request(
            method,
            path,
            &[
                ("Cookie", &self.cookie()),
                ("Origin", &self.origin()),
                ("Content-Type", "application/json"),
            ],
            json,
        )
    }
}

impl Drop for Web {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = Command::new(BPM)
            .args(["daemon", "stop", "--kill-all"])
            .env("BPM_HOME", self.home.path())
            .output();
    }
}

pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Response {
    fn parse(raw: &[u8]) -> Response {
        let text = String::from_utf8_lossy(raw);
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
        let mut lines = head.lines();
        let status = lines
            .next()
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|s| s.parse().ok())
            .expect("a status line");
        let headers = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
            .collect::<Vec<_>>();
        let chunked = headers
            .iter()
            .any(|(k, v)| k == "transfer-encoding" && v.contains("chunked"));
        Response {
            status,
            body: if chunked {
                dechunk(body)
            } else {
                body.to_owned()
            },
            headers,
        }
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.body))
    }
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        body = rest[n..].trim_start_matches("\r\n");
    }
    out
}
