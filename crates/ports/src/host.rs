use std::path::PathBuf;

use async_trait::async_trait;
use bpm_domain::{FileWatch, PortAsk, ProcessRef};
use tokio::sync::mpsc;

/// Why files cannot be watched.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WatchError {
    /// A watched path does not exist.
    #[error("cannot watch {}: no such file or directory", .0.display())]
    NotFound(PathBuf),
    /// The system refused (too many watches, say).
    #[error("cannot watch {}: {reason}", .path.display())]
    Os {
        /// The path.
        path: PathBuf,
        /// What the system said.
        reason: String,
    },
}

/// What the machine shows beyond bpm's own processes: which TCP ports
/// nothing listens on ([`bpm_domain::ProcessSpec::port`]), and the lives
/// of processes that own records ([`bpm_domain::Owner`]).
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
#[async_trait]
pub trait Host: Send + Sync + 'static {
    /// Ports of `ask` nothing listens on now, in the order to try: for a
    /// range, lowest first (at most 64); for `auto`, a few the kernel
    /// picks; for a fixed port, that port or none. Bound and released to
    /// find out: a port some socket listens on (on any address) is never
    /// among them.
    fn free_ports(&self, ask: PortAsk) -> Vec<u16>;

    /// The start time of the process `pid` runs now, which tells it from
    /// a later process given the same pid; `None` if none runs.
    fn start_of(&self, pid: u32) -> Option<u64>;

    /// Returns once `process` is gone: at once if no process runs with its
    /// pid and start time now. It notices the end without polling where
    /// the system allows (a pidfd).
    async fn until_gone(&self, process: ProcessRef);

    /// Watches `watch`'s paths, each with everything under it: the
    /// receiver gets a message soon after each change (changes that come
    /// while one waits unread are one message), but not for paths under a
    /// `.git` directory, under bpm's own state, or matching one of its
    /// `ignore` globs. Dropping the receiver ends the watch.
    ///
    /// # Errors
    /// - MUST return [`WatchError::NotFound`] if a path does not exist.
    /// - MUST return [`WatchError::Os`] if the system refuses the watch.
    fn watch_files(&self, watch: &FileWatch) -> Result<mpsc::Receiver<()>, WatchError>;
}
