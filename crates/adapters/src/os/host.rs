//! The host as bpm sees it beyond its own processes: free TCP ports, found
//! by binding, and owners' lives, watched through pidfds.

use std::net::{Ipv4Addr, TcpListener};
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

/// A listener on every IPv4 address at `port`: it binds only when nothing
/// listens there on any address (a listener on one address blocks it).
fn listen(port: u16) -> Option<TcpListener> {
    TcpListener::bind((Ipv4Addr::UNSPECIFIED, port)).ok()
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
