//! Readiness checks beyond a log line and a port: an HTTP GET, a command
//! that must exit 0, and the process's own `READY=1` on a notify socket
//! (systemd's `sd_notify` protocol).

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::sync::watch;

use super::capture::Watcher;

/// How often a check that failed is tried again.
pub(crate) const EVERY: Duration = Duration::from_millis(250);
/// How long one HTTP check or one command may take.
pub(crate) const ATTEMPT: Duration = Duration::from_secs(5);

/// An `http://host:port/path` URL, split.
fn split_url(url: &str) -> Option<(String, u16, String)> {
    let rest = url.strip_prefix("http://")?;
    let (authority, path) = match rest.find('/') {
        Some(at) => (&rest[..at], &rest[at..]),
        None => (rest, "/"),
    };
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) => (h, p.parse().ok()?),
        None => (authority, 80),
    };
    Some((
        host.trim_matches(['[', ']']).to_owned(),
        port,
        path.to_owned(),
    ))
}

/// The URL a target names: itself, or a path on `port` of the loopback.
pub(crate) fn url_of(target: &str, port: Option<u16>) -> Option<String> {
    if target.starts_with("http://") {
        Some(target.to_owned())
    } else {
        port.map(|p| format!("http://127.0.0.1:{p}{target}"))
    }
}

/// One GET of `url`, cut at `within`: `Ok` for 2xx or 3xx, otherwise what
/// it answered or why it did not.
pub(crate) async fn http_check(url: &str, within: Duration) -> Result<(), String> {
    let Some((host, port, path)) = split_url(url) else {
        return Err(format!("not an http:// URL: {url}"));
    };
    let attempt = async {
        let mut s = tokio::net::TcpStream::connect((host.as_str(), port))
            .await
            .map_err(|e| format!("GET {url}: {e}"))?;
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUser-Agent: bpm\r\nConnection: close\r\n\r\n"
        );
        s.write_all(request.as_bytes())
            .await
            .map_err(|e| format!("GET {url}: {e}"))?;
        let mut head = [0u8; 16];
        let mut n = 0;
        while n < head.len() {
            match s.read(&mut head[n..]).await {
                Ok(0) => break,
                Ok(k) => n += k,
                Err(e) => return Err(format!("GET {url}: {e}")),
            }
        }
        let line = String::from_utf8_lossy(&head[..n]).into_owned();
        let code: u16 = line
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .ok_or_else(|| format!("GET {url}: not an HTTP answer"))?;
        if (200..400).contains(&code) {
            Ok(())
        } else {
            Err(format!("GET {url}: HTTP {code}"))
        }
    };
    tokio::time::timeout(within, attempt)
        .await
        .unwrap_or_else(|_| Err(format!("GET {url}: no answer within {within:?}")))
}

/// Tries `url` until it answers 2xx or 3xx, or the process exits.
pub(crate) async fn wait_for_http(
    url: String,
    watcher: Watcher,
    mut exited: watch::Receiver<bool>,
) {
    loop {
        if http_check(&url, ATTEMPT).await.is_ok() {
            watcher.ready();
            return;
        }
        tokio::select! {
            () = tokio::time::sleep(EVERY) => {}
            _ = exited.wait_for(|e| *e) => return,
        }
    }
}

/// Where the notify socket of record `id` lives: a directory of this
/// user's only, short enough for a socket's path.
pub(crate) fn notify_path(id: &bpm_domain::ProcessId) -> PathBuf {
    let uid = rustix::process::getuid().as_raw();
    std::env::temp_dir()
        .join(format!("bpm-notify-{uid}"))
        .join(format!("{}.sock", id.as_uuid().simple()))
}

/// A notify socket bound at `path` (its directory made private first).
/// The directory goes when its last socket does, so another process's
/// socket may take it away between making and binding: tried again then.
pub(crate) fn bind_notify(path: &Path) -> std::io::Result<tokio::net::UnixDatagram> {
    use std::os::unix::fs::PermissionsExt as _;
    let mut tries = 0;
    loop {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
        }
        let _ = std::fs::remove_file(path);
        match tokio::net::UnixDatagram::bind(path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && tries < 3 => tries += 1,
            other => return other,
        }
    }
}

/// Reads the notify socket until `READY=1` comes or the process exits;
/// removes the socket then.
pub(crate) async fn wait_for_notify(
    socket: tokio::net::UnixDatagram,
    path: PathBuf,
    watcher: Watcher,
    mut exited: watch::Receiver<bool>,
) {
    let mut buf = vec![0u8; 4096];
    loop {
        tokio::select! {
            got = socket.recv(&mut buf) => {
                let Ok(n) = got else { break };
                let text = String::from_utf8_lossy(&buf[..n]);
                if text.lines().any(|l| l.trim() == "READY=1") {
                    watcher.ready();
                }
            }
            _ = exited.wait_for(|e| *e) => break,
        }
    }
    let _ = std::fs::remove_file(&path);
    // The directory too, once no other socket is in it.
    if let Some(dir) = path.parent() {
        let _ = std::fs::remove_dir(dir);
    }
}

/// Says `READY=1` (and `STATUS=status`) on the socket `NOTIFY_SOCKET`
/// names, as `sd_notify` does: what `bpm ready` sends from a shell script.
///
/// # Errors
/// Why it could not be sent: no `NOTIFY_SOCKET` (the process was not
/// started with notify readiness), or the socket refused it.
pub fn notify_ready(status: Option<&str>) -> Result<(), String> {
    let path = std::env::var_os("NOTIFY_SOCKET").ok_or(
        "no NOTIFY_SOCKET in the environment: bpm sets it for a process started with notify readiness (--ready-notify, ready = { notify = true })",
    )?;
    let message = match status {
        Some(s) => format!("READY=1\nSTATUS={s}\n"),
        None => "READY=1\n".to_owned(),
    };
    let socket = std::os::unix::net::UnixDatagram::unbound().map_err(|e| e.to_string())?;
    socket
        .send_to(message.as_bytes(), &path)
        .map(|_| ())
        .map_err(|e| {
            format!(
                "cannot reach NOTIFY_SOCKET {}: {e}",
                Path::new(&path).display()
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_split_and_paths_go_to_the_port() {
        assert_eq!(
            split_url("http://localhost:8080/healthz?x=1"),
            Some(("localhost".into(), 8080, "/healthz?x=1".into()))
        );
        assert_eq!(split_url("http://h"), Some(("h".into(), 80, "/".into())));
        assert_eq!(split_url("https://h/"), None);
        assert_eq!(url_of("/ok", Some(9)), Some("http://127.0.0.1:9/ok".into()));
        assert_eq!(url_of("/ok", None), None);
    }
}
