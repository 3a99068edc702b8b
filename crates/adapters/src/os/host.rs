//! The host as bpm sees it beyond its own processes: free TCP ports, found
//! by binding, and owners' lives, watched through pidfds.

use std::net::{Ipv4Addr, Ipv6Addr, TcpListener};
use std::path::PathBuf;

use async_trait::async_trait;
use bpm_domain::{FileWatch, PortAsk, ProcessRef};
use bpm_ports::{Host, WatchError};
use rustix::process::{Pid, PidfdFlags, pidfd_open};
use tokio::io::unix::AsyncFd;
use tokio::sync::mpsc;

use super::procfs;

/// How many ports a range or `auto` offers at most.
const OFFERED: usize = 64;
/// How many ports `auto` asks the kernel for.
const AUTO: usize = 8;

/// The [`Host`] of this machine.
#[derive(Debug, Default, Clone)]
pub struct OsHost {
    /// Directories whose changes no file watch counts.
    unwatched: Vec<PathBuf>,
    /// Its file watches, on one inotify instance.
    watches: std::sync::Arc<super::files::Watches>,
}

impl OsHost {
    /// The host.
    pub fn new() -> Self {
        OsHost::default()
    }

    /// The host, with changes under `dir` (bpm's own state) counted by no
    /// file watch.
    #[must_use]
    pub fn unwatching(mut self, dir: impl Into<PathBuf>) -> Self {
        self.unwatched.push(dir.into());
        self
    }
}

/// A listener on every IPv4 address at `port` (0: one the kernel picks),
/// held only when nothing listens on that port on any address, IPv4 or
/// IPv6: a listener on one address blocks it.
fn listen(port: u16) -> Option<TcpListener> {
    let v4 = TcpListener::bind((Ipv4Addr::UNSPECIFIED, port)).ok()?;
    let port = v4.local_addr().ok()?.port();
    free_on_ipv6(port).then_some(v4)
}

/// Whether nothing listens at `port` on an IPv6 address (`[::1]`, as
/// Node's `localhost` and `python3 -m http.server --bind ::1` do): a
/// v6-only socket binds the wildcard there, which fails while anything
/// listens on the port over IPv6, and not for the IPv4 listener held
/// beside it. A host without IPv6 has no such listener.
fn free_on_ipv6(port: u16) -> bool {
    use rustix::net::{AddressFamily, SocketType, sockopt};
    let Ok(socket) = rustix::net::socket(AddressFamily::INET6, SocketType::STREAM, None) else {
        return true;
    };
    // As TcpListener::bind does: a port whose last connection lingers in
    // TIME_WAIT is free.
    let _ = sockopt::set_socket_reuseaddr(&socket, true);
    if sockopt::set_ipv6_v6only(&socket, true).is_err() {
        return true;
    }
    let at = std::net::SocketAddrV6::new(Ipv6Addr::UNSPECIFIED, port, 0, 0);
    !matches!(
        rustix::net::bind(&socket, &at),
        Err(rustix::io::Errno::ADDRINUSE)
    )
}

#[async_trait]
impl Host for OsHost {
    fn free_ports(&self, ask: PortAsk) -> Vec<u16> {
        match ask {
            PortAsk::Fixed(p) => listen(p).map(|_| p).into_iter().collect(),
            PortAsk::Range { first, last } => (first..=last)
                .filter(|p| listen(*p).is_some())
                .take(OFFERED)
                .collect(),
            PortAsk::Auto => {
                // Held together, so that the kernel gives out distinct ones.
                let held: Vec<TcpListener> = (0..AUTO).filter_map(|_| listen(0)).collect();
                held.iter()
                    .filter_map(|l| l.local_addr().ok().map(|a| a.port()))
                    .collect()
            }
        }
    }

    fn start_of(&self, pid: u32) -> Option<u64> {
        procfs::stat(pid)
            .filter(|s| !s.has_ended())
            .map(|s| s.start)
    }

    async fn until_gone(&self, process: ProcessRef) {
        let Some(pid) = i32::try_from(process.pid).ok().and_then(Pid::from_raw) else {
            return;
        };
        let Ok(fd) = pidfd_open(pid, PidfdFlags::NONBLOCK) else {
            return;
        };
        // Opened first, so the check looks at the process the pidfd pins.
        if self.start_of(process.pid) != Some(process.start) {
            return;
        }
        // SAFETY: the OwnedFd moves into the AsyncFd, stays open and keeps its number until dropped.
        #[allow(unsafe_code)]
        let Ok(fd) =
            (unsafe { AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE) })
        else {
            return;
        };
        let _ = fd.readable().await;
    }

    fn watch_files(&self, watch: &FileWatch) -> Result<mpsc::Receiver<()>, WatchError> {
        self.watches.watch(watch, &self.unwatched)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 60, item 9: a port something listens on over IPv6 only is
    /// not handed out, nor one on IPv4 loopback; a free one is.
    #[test]
    fn a_port_taken_on_any_address_is_not_free() {
        let host = OsHost::new();
        let v4 = TcpListener::bind("127.0.0.1:0").expect("bind");
        let p4 = v4.local_addr().expect("addr").port();
        assert!(
            host.free_ports(PortAsk::Fixed(p4)).is_empty(),
            "127.0.0.1:{p4} listens"
        );
        match TcpListener::bind("[::1]:0") {
            Ok(v6) => {
                let p6 = v6.local_addr().expect("addr").port();
                assert!(
                    host.free_ports(PortAsk::Fixed(p6)).is_empty(),
                    "[::1]:{p6} listens"
                );
                let auto = host.free_ports(PortAsk::Auto);
                assert!(!auto.contains(&p6) && !auto.is_empty(), "{auto:?}");
                drop(v6);
                assert_eq!(
                    host.free_ports(PortAsk::Fixed(p6)),
                    [p6],
                    "free once closed"
                );
            }
            // Said, not skipped: without IPv6 no listener can be there.
            Err(e) => {
                eprintln!("NOTE: no IPv6 loopback here ({e}): only the IPv4 half was checked");
            }
        }
    }
}
