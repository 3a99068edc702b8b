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

/// An `http://` or `https://` URL, split: its host, port and path, and
/// whether it is spoken over TLS.
fn split_url(url: &str) -> Option<(String, u16, String, bool)> {
    let (rest, tls) = match url.strip_prefix("https://") {
        Some(rest) => (rest, true),
        None => (url.strip_prefix("http://")?, false),
    };
    let (authority, path) = match rest.find('/') {
        Some(at) => (&rest[..at], &rest[at..]),
        None => (rest, "/"),
    };
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) if !p.contains(']') => (h, p.parse().ok()?),
        _ => (authority, if tls { 443 } else { 80 }),
    };
    Some((
        host.trim_matches(['[', ']']).to_owned(),
        port,
        path.to_owned(),
        tls,
    ))
}

/// The URL a target names: itself, or a path on `port` of the loopback.
pub(crate) fn url_of(target: &str, port: Option<u16>) -> Option<String> {
    if target.starts_with("http://") || target.starts_with("https://") {
        Some(target.to_owned())
    } else {
        port.map(|p| format!("http://127.0.0.1:{p}{target}"))
    }
}

/// One GET of `url`, cut at `within`: `Ok` for 2xx or 3xx, otherwise what
/// it answered or why it did not. An `https://` URL is asked over TLS,
/// its certificate taken as it is (as Kubernetes' HTTPS probes take it:
/// a local service's is often its own).
pub(crate) async fn http_check(url: &str, within: Duration) -> Result<(), String> {
    let Some((host, port, path, tls)) = split_url(url) else {
        return Err(format!("not an http:// or https:// URL: {url}"));
    };
    let attempt = async {
        let s = tokio::net::TcpStream::connect((host.as_str(), port))
            .await
            .map_err(|e| format!("GET {url}: {e}"))?;
        let _ = s.set_nodelay(true);
        if tls {
            let mut s = tls::connect(s, &host)
                .await
                .map_err(|e| format!("GET {url}: TLS: {e}"))?;
            ask(&mut s, &host, port, &path).await
        } else {
            let mut s = s;
            ask(&mut s, &host, port, &path).await
        }
        .map_err(|e| format!("GET {url}: {e}"))
    };
    tokio::time::timeout(within, attempt)
        .await
        .unwrap_or_else(|_| Err(format!("GET {url}: no answer within {within:?}")))
}

/// Sends a GET of `path` on `s` and reads the status: `Ok` for 2xx or 3xx.
async fn ask<S>(s: &mut S, host: &str, port: u16, path: &str) -> Result<(), String>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUser-Agent: bpm\r\nConnection: close\r\n\r\n"
    );
    s.write_all(request.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    s.flush().await.map_err(|e| e.to_string())?;
    let mut head = [0u8; 16];
    let mut n = 0;
    while n < head.len() {
        match s.read(&mut head[n..]).await {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) => return Err(e.to_string()),
        }
    }
    let line = String::from_utf8_lossy(&head[..n]).into_owned();
    let code: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| "not an HTTP answer".to_owned())?;
    if (200..400).contains(&code) {
        Ok(())
    } else {
        Err(format!("HTTP {code}"))
    }
}

#[cfg(feature = "tls")]
mod tls {
    //! TLS for HTTPS checks: any certificate, the handshake's signatures
    //! checked.

    use std::sync::{Arc, OnceLock};

    use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
    use rustls::crypto::CryptoProvider;
    use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
    use rustls::{DigitallySignedStruct, SignatureScheme};

    /// Takes the server's certificate as it is.
    #[derive(Debug)]
    struct AnyCertificate(Arc<CryptoProvider>);

    impl ServerCertVerifier for AnyCertificate {
        fn verify_server_cert(
            &self,
            _end_entity: &CertificateDer<'_>,
            _intermediates: &[CertificateDer<'_>],
            _server_name: &ServerName<'_>,
            _ocsp_response: &[u8],
            _now: UnixTime,
        ) -> Result<ServerCertVerified, rustls::Error> {
            Ok(ServerCertVerified::assertion())
        }

        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls12_signature(
                message,
                cert,
                dss,
                &self.0.signature_verification_algorithms,
            )
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls13_signature(
                message,
                cert,
                dss,
                &self.0.signature_verification_algorithms,
            )
        }

        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            self.0.signature_verification_algorithms.supported_schemes()
        }
    }

    /// The client's configuration, made once.
    fn connector() -> Result<tokio_rustls::TlsConnector, String> {
        static CONFIG: OnceLock<Result<Arc<rustls::ClientConfig>, String>> = OnceLock::new();
        CONFIG
            .get_or_init(|| {
                let provider = Arc::new(rustls::crypto::ring::default_provider());
                let config = rustls::ClientConfig::builder_with_provider(provider.clone())
                    .with_safe_default_protocol_versions()
                    .map_err(|e| e.to_string())?
                    .dangerous()
                    .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
                    .with_no_client_auth();
                Ok(Arc::new(config))
            })
            .clone()
            .map(tokio_rustls::TlsConnector::from)
    }

    /// `s` spoken over TLS to `host`.
    pub(super) async fn connect(
        s: tokio::net::TcpStream,
        host: &str,
    ) -> Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>, String> {
        let name = ServerName::try_from(host.to_owned()).map_err(|e| e.to_string())?;
        connector()?
            .connect(name, s)
            .await
            .map_err(|e| e.to_string())
    }
}

#[cfg(not(feature = "tls"))]
use no_tls as tls;

// Also compiled in test builds with TLS, for its test: the test command
// builds the workspace once, TLS on.
#[cfg(any(test, not(feature = "tls")))]
mod no_tls {
    /// Without the `tls` feature, no TLS is spoken.
    #[allow(clippy::unused_async)] // the same shape as with the feature
    pub(super) async fn connect(
        _s: tokio::net::TcpStream,
        _host: &str,
    ) -> Result<tokio::net::TcpStream, String> {
        Err("this build checks no https:// URL (bpm-adapters' tls feature)".into())
    }

    #[cfg(test)]
    #[tokio::test]
    async fn an_https_check_fails_saying_the_build_has_no_tls() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let s = tokio::net::TcpStream::connect(listener.local_addr().expect("addr"))
            .await
            .expect("connect");
        let e = connect(s, "localhost").await.expect_err("no TLS");
        assert!(e.contains("https://") && e.contains("tls feature"), "{e}");
    }
}

/// Where this spawner makes notify sockets: a directory of this user's
/// only, under a name no other user can make first. The state directory's
/// `notify/` when the keeper names one (and a socket's path fits there);
/// otherwise a directory in the temporary folder whose name ends in random
/// hex, made afresh (under a new name) whenever the one in use turns out
/// to be someone else's. A shared name such as `/tmp/bpm-notify-UID`
/// would let another user make it first and so refuse every notify start.
#[derive(Debug)]
pub(crate) struct NotifyDir {
    /// The directory named by the configuration, if its sockets fit.
    fixed: Option<PathBuf>,
    /// The temporary directory in use (when not `fixed`).
    current: std::sync::Mutex<PathBuf>,
}

/// The longest path a Unix socket takes (`sun_path` less its NUL).
const SOCKET_PATH_MAX: usize = 107;
/// A socket's name: 32 hex digits and `.sock`.
const SOCKET_NAME_LEN: usize = 37;

impl NotifyDir {
    pub(crate) fn new(fixed: Option<PathBuf>) -> Self {
        let fixed = fixed.filter(|d| d.as_os_str().len() + 1 + SOCKET_NAME_LEN <= SOCKET_PATH_MAX);
        NotifyDir {
            fixed,
            current: std::sync::Mutex::new(Self::fresh()),
        }
    }

    fn fresh() -> PathBuf {
        let uid = rustix::process::getuid().as_raw();
        let random = uuid::Uuid::new_v4().simple().to_string();
        std::env::temp_dir().join(format!("bpm-notify-{uid}-{}", &random[..16]))
    }

    /// A socket for record `id`, bound, and its path.
    pub(crate) fn bind(
        &self,
        id: &bpm_domain::ProcessId,
    ) -> std::io::Result<(tokio::net::UnixDatagram, PathBuf)> {
        let name = format!("{}.sock", id.as_uuid().simple());
        let mut tries = 0;
        loop {
            tries += 1;
            let dir = match &self.fixed {
                Some(d) => d.clone(),
                None => self
                    .current
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .clone(),
            };
            if !own_private_dir(&dir)? {
                if self.fixed.is_some() || tries > 5 {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::PermissionDenied,
                        format!(
                            "{} belongs to another user or is open to others",
                            dir.display()
                        ),
                    ));
                }
                tracing::warn!(dir = %dir.display(), "the notify directory is another user's: using a new one");
                *self
                    .current
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = Self::fresh();
                continue;
            }
            let path = dir.join(&name);
            let _ = std::fs::remove_file(&path);
            match tokio::net::UnixDatagram::bind(&path) {
                // Its last socket's end took the directory away meanwhile.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound && tries <= 5 => {}
                Err(e) => return Err(e),
                Ok(socket) => return Ok((socket, path)),
            }
        }
    }
}

impl NotifyDir {
    /// A socket bound again at `path`, the one a process taken over from a
    /// keeper that died still names in `NOTIFY_SOCKET`: only in a directory
    /// of this user's own.
    pub(crate) fn rebind(path: &Path) -> std::io::Result<tokio::net::UnixDatagram> {
        let dir = path
            .parent()
            .ok_or_else(|| std::io::Error::other("no directory"))?;
        if !own_private_dir(dir)? {
            return Err(std::io::Error::new(
                std::io::ErrorKind::PermissionDenied,
                format!(
                    "{} belongs to another user or is open to others",
                    dir.display()
                ),
            ));
        }
        let _ = std::fs::remove_file(path);
        tokio::net::UnixDatagram::bind(path)
    }
}

/// Makes `dir` (mode 0700) unless it is there, and says whether it is this
/// user's own, a real directory (not a link) that no one else may enter.
fn own_private_dir(dir: &Path) -> std::io::Result<bool> {
    use std::os::unix::fs::{DirBuilderExt as _, MetadataExt as _};
    if let Some(parent) = dir.parent() {
        std::fs::create_dir_all(parent)?;
    }
    match std::fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e),
    }
    let meta = std::fs::symlink_metadata(dir)?;
    Ok(meta.is_dir()
        && meta.uid() == rustix::process::getuid().as_raw()
        && meta.mode().trailing_zeros() >= 6)
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

    /// Issue 60, item 14: a directory another user made first (open to
    /// all, or theirs) is never used; a fresh private one is.
    #[tokio::test]
    async fn a_notify_directory_another_user_made_first_is_not_used() {
        use std::os::unix::fs::PermissionsExt as _;
        let id = bpm_domain::ProcessId::from_uuid(uuid::Uuid::now_v7());
        let dirs = NotifyDir::new(None);
        let taken = dirs.current.lock().expect("lock").clone();
        std::fs::create_dir(&taken).expect("mkdir");
        std::fs::set_permissions(&taken, std::fs::Permissions::from_mode(0o777)).expect("chmod");
        if rustix::process::getuid().is_root() {
            // As root, hand it to nobody, as another user would have it.
            rustix::fs::chown(
                &taken,
                Some(rustix::fs::Uid::from_raw(65534)),
                Some(rustix::fs::Gid::from_raw(65534)),
            )
            .expect("chown");
        }
        let (socket, path) = dirs.bind(&id).expect("bound elsewhere");
        assert!(
            !path.starts_with(&taken),
            "{} is in the taken directory",
            path.display()
        );
        let mode = std::fs::metadata(path.parent().expect("dir"))
            .expect("meta")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o700);
        drop(socket);
        std::fs::remove_file(&path).expect("socket");
        std::fs::remove_dir(path.parent().expect("dir")).expect("own dir");
        std::fs::remove_dir(&taken).expect("taken dir");

        // A configured directory whose sockets would not fit a socket's
        // path is not used either.
        let long = std::env::temp_dir().join("x".repeat(100));
        assert!(NotifyDir::new(Some(long)).fixed.is_none());
    }

    #[test]
    fn urls_split_and_paths_go_to_the_port() {
        assert_eq!(
            split_url("http://localhost:8080/healthz?x=1"),
            Some(("localhost".into(), 8080, "/healthz?x=1".into(), false))
        );
        assert_eq!(
            split_url("http://h"),
            Some(("h".into(), 80, "/".into(), false))
        );
        assert_eq!(
            split_url("https://h/"),
            Some(("h".into(), 443, "/".into(), true))
        );
        assert_eq!(
            split_url("https://[::1]:8443/x"),
            Some(("::1".into(), 8443, "/x".into(), true))
        );
        assert_eq!(
            split_url("https://[::1]"),
            Some(("::1".into(), 443, "/".into(), true))
        );
        assert_eq!(split_url("ftp://h/"), None);
        assert_eq!(url_of("/ok", Some(9)), Some("http://127.0.0.1:9/ok".into()));
        assert_eq!(url_of("/ok", None), None);
    }
}
