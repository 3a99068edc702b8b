//! Helpers shared by bpm's end-to-end tests and benchmarks.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

/// The workspace root.
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ sits in the workspace root")
        .to_path_buf()
}

/// A `redis-server` of the tests' own, without persistence, on a free loopback
/// port. A watchdog shell ends it when the test process ends, however it ends.
pub struct RedisServer {
    port: u16,
    pid: Mutex<u32>,
    extra: String,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// Whether something answers like Redis on the port (a server that wants a password answers too).
fn answers_ping(port: u16) -> bool {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
    let mut buf = [0u8; 1];
    s.write_all(b"PING\r\n").is_ok()
        && s.read_exact(&mut buf).is_ok()
        && matches!(&buf, b"+" | b"-")
}

impl RedisServer {
    /// Starts a server. Panics with what to do when `redis-server` is missing:
    /// Redis tests never skip silently.
    pub fn start() -> RedisServer {
        RedisServer::start_with("")
    }

    /// Starts a server with extra command-line settings (already shell-quoted).
    pub fn start_with(extra: &str) -> RedisServer {
        let port = free_port();
        let server = RedisServer {
            port,
            pid: Mutex::new(0),
            extra: extra.to_owned(),
        };
        server.launch();
        server
    }

    fn launch(&self) {
        let found = Command::new("sh")
            .args(["-c", "command -v redis-server"])
            .output()
            .is_ok_and(|o| o.status.success());
        assert!(
            found,
            "redis-server is not installed: install it (apt-get install redis-server) or set REDIS_URL to a Redis to test against"
        );
        let script = format!(
            "redis-server --port {port} --bind 127.0.0.1 --save '' --appendonly no --protected-mode no --loglevel warning {extra} >/dev/null 2>&1 & r=$!; \
             echo $r; while kill -0 {parent} 2>/dev/null && kill -0 $r 2>/dev/null; do sleep 0.2; done; kill -9 $r 2>/dev/null",
            port = self.port,
            extra = self.extra,
            parent = std::process::id()
        );
        let mut watchdog = Command::new("sh")
            .args(["-c", &script])
            .stdout(Stdio::piped())
            .stdin(Stdio::null())
            .spawn()
            .expect("start the redis-server watchdog");
        let mut line = String::new();
        BufReader::new(watchdog.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("redis pid");
        *self.pid.lock().unwrap_or_else(PoisonError::into_inner) =
            line.trim().parse().expect("a pid");
        // The watchdog reaps itself when it ends; nothing waits for it here.
        std::mem::forget(watchdog);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !answers_ping(self.port) {
            assert!(
                Instant::now() < deadline,
                "redis-server did not answer on port {} within 10 s",
                self.port
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        *self.pid.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Kills the server (its data goes with it: there is no persistence).
    pub fn kill(&self) {
        let _ = Command::new("kill")
            .args(["-9", &self.pid().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while answers_ping(self.port) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Starts the server again on the same port.
    pub fn restart(&self) {
        self.launch();
    }

    /// Freezes (SIGSTOP) or thaws (SIGCONT) the server: it keeps its data but answers nothing meanwhile.
    pub fn freeze(&self, frozen: bool) {
        let sig = if frozen { "-STOP" } else { "-CONT" };
        let _ = Command::new("kill")
            .args([sig, &self.pid().to_string()])
            .status();
    }
}

/// The Redis to test against: `REDIS_URL` if set, else one server started for this test binary.
pub fn redis_url() -> String {
    static SHARED: OnceLock<RedisServer> = OnceLock::new();
    if let Ok(url) = std::env::var("REDIS_URL") {
        return url;
    }
    SHARED.get_or_init(RedisServer::start).url()
}

/// A key prefix no other test uses, so tests share one server without meeting.
pub fn unique_prefix() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!(
        "test-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// A TCP proxy on a free loopback port in front of `target` (a loopback
/// address), which a test can cut: while cut, it closes every connection
/// it carries and every new one at once, as a partition would; healed, it
/// carries traffic again. It stops when dropped.
pub struct CutProxy {
    port: u16,
    cut: std::sync::Arc<std::sync::atomic::AtomicBool>,
    /// Bumped on every cut, so the pumps of older connections end.
    generation: std::sync::Arc<std::sync::atomic::AtomicU64>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl CutProxy {
    /// Starts carrying connections to `target`.
    pub fn start(target: std::net::SocketAddr) -> CutProxy {
        use std::sync::Arc;
        use std::sync::atomic::{AtomicBool, AtomicU64};
        assert!(
            target.ip().is_loopback(),
            "a test proxy only reaches loopback"
        );
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.set_nonblocking(true).expect("nonblocking");
        let port = listener.local_addr().expect("addr").port();
        let proxy = CutProxy {
            port,
            cut: Arc::new(AtomicBool::new(false)),
            generation: Arc::new(AtomicU64::new(0)),
            stop: Arc::new(AtomicBool::new(false)),
        };
        let (cut, generation, stop) = (
            Arc::clone(&proxy.cut),
            Arc::clone(&proxy.generation),
            Arc::clone(&proxy.stop),
        );
        std::thread::spawn(move || {
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                match listener.accept() {
                    Ok((client, _)) => {
                        if cut.load(std::sync::atomic::Ordering::SeqCst) {
                            drop(client);
                            continue;
                        }
                        let Ok(server) =
                            TcpStream::connect_timeout(&target, Duration::from_secs(1))
                        else {
                            continue;
                        };
                        let born = generation.load(std::sync::atomic::Ordering::SeqCst);
                        for (from, to) in [
                            (client.try_clone(), server.try_clone()),
                            (server.try_clone(), client.try_clone()),
                        ] {
                            if let (Ok(from), Ok(to)) = (from, to) {
                                let (generation, stop) =
                                    (Arc::clone(&generation), Arc::clone(&stop));
                                std::thread::spawn(move || {
                                    pump(from, to, born, &generation, &stop);
                                });
                            }
                        }
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        proxy
    }

    /// The proxy's URL, for a Redis behind it.
    pub fn redis_url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Cuts every connection and refuses new ones (`true`), or heals (`false`).
    pub fn cut(&self, cut: bool) {
        use std::sync::atomic::Ordering;
        self.cut.store(cut, Ordering::SeqCst);
        if cut {
            self.generation.fetch_add(1, Ordering::SeqCst);
        }
    }
}

impl Drop for CutProxy {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        self.cut(true);
    }
}

/// Copies `from` to `to` until either closes or the proxy cuts this
/// connection's generation.
fn pump(
    mut from: TcpStream,
    mut to: TcpStream,
    born: u64,
    generation: &std::sync::atomic::AtomicU64,
    stop: &std::sync::atomic::AtomicBool,
) {
    use std::sync::atomic::Ordering;
    let _ = from.set_read_timeout(Some(Duration::from_millis(50)));
    let mut buf = [0u8; 16 * 1024];
    loop {
        if generation.load(Ordering::SeqCst) != born || stop.load(Ordering::SeqCst) {
            break;
        }
        match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => break,
        }
    }
    let _ = from.shutdown(std::net::Shutdown::Both);
    let _ = to.shutdown(std::net::Shutdown::Both);
}
