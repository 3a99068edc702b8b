//! Output capture, readiness and idleness of one process.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bpm_domain::{LogPattern, ProcessId};
use bpm_ports::{OutputStore, ProcessNotice, Stream};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

/// The longest partial line kept while looking for a readiness pattern.
const MAX_LINE: usize = 64 * 1024;

/// What the capture of one process shares: where notices go, the readiness
/// pattern, and the time of the last output.
#[derive(Clone)]
pub(crate) struct Watcher {
    id: ProcessId,
    tx: mpsc::UnboundedSender<ProcessNotice>,
    /// Set at the start, or later for a process taken over before it was
    /// ready ([`Watcher::look_for`]).
    pattern: Arc<std::sync::OnceLock<LogPattern>>,
    ready: Arc<AtomicBool>,
    activity: Arc<watch::Sender<Instant>>,
    /// How many pumps are writing what they read to the output store.
    copying: Arc<std::sync::atomic::AtomicUsize>,
}

impl Watcher {
    pub(crate) fn new(
        id: ProcessId,
        tx: mpsc::UnboundedSender<ProcessNotice>,
        pattern: Option<LogPattern>,
    ) -> Self {
        let cell = std::sync::OnceLock::new();
        if let Some(p) = pattern {
            let _ = cell.set(p);
        }
        Watcher {
            id,
            tx,
            pattern: Arc::new(cell),
            ready: Arc::new(AtomicBool::new(false)),
            activity: Arc::new(watch::Sender::new(Instant::now())),
            copying: Arc::new(std::sync::atomic::AtomicUsize::new(0)),
        }
    }

    /// Changes whenever a pump has copied something.
    pub(crate) fn activity(&self) -> watch::Receiver<Instant> {
        self.activity.subscribe()
    }

    /// Whether a pump is in the middle of writing to the output store.
    pub(crate) fn copying(&self) -> bool {
        self.copying.load(Ordering::SeqCst) > 0
    }

    /// Looks for `pattern` in the lines copied from now on (a process
    /// taken over before it was ready); a pattern set already stays.
    pub(crate) fn look_for(&self, pattern: LogPattern) {
        let _ = self.pattern.set(pattern);
    }

    pub(crate) fn ready(&self) {
        if !self.ready.swap(true, Ordering::SeqCst) {
            let _ = self.tx.send(ProcessNotice::Ready { id: self.id });
        }
    }
}

const MIN_READ: usize = 4 * 1024;
const PIPE_DEFAULT: usize = 64 * 1024;
const MAX_READ: usize = 1024 * 1024;

/// Copies one stream into the output store until it closes, watching lines
/// for the readiness pattern.
///
/// While an append is written, the pipe fills (up to 1 MiB for a busy
/// writer), and the next read takes all of it at once. Reading meanwhile was
/// tried: the reader then woke for each of the writer's small writes, which
/// slowed the writer more than the overlap won (bench/NOTEBOOK.md).
pub(crate) async fn pump(
    mut from: impl AsyncRead + Unpin + std::os::fd::AsFd,
    stream: Stream,
    output: Arc<dyn OutputStore>,
    watcher: Watcher,
) {
    // Small while the process is quiet (most are, and a keeper holds a
    // buffer per stream), doubled up to 1 MiB while reads fill it. It goes to
    // the store and back, uncopied; reads go into its spare capacity, so
    // nothing is zeroed first.
    let mut size = MIN_READ;
    let mut buf = Vec::with_capacity(MIN_READ);
    let mut line = Vec::new();
    // Bytes dropped since the store last took a write: one warning when it
    // starts refusing, one when it takes writes again, not one per read.
    let mut dropping: Option<u64> = None;
    loop {
        buf.clear();
        buf.reserve_exact(size);
        let n = match from.read_buf(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if n >= size && size < MAX_READ {
            if size == PIPE_DEFAULT {
                // A heavy writer: a larger pipe lets each read (and each
                // append) carry more. Only writers this busy get one, so
                // the user's pipe memory quota is not spent on quiet ones.
                let _ = rustix::pipe::fcntl_setpipe_size(&from, MAX_READ);
            }
            size *= 2;
        }
        if let Some(pattern) = watcher.pattern.get()
            && !watcher.ready.load(Ordering::SeqCst)
            && scan_lines(&mut line, &buf, pattern)
        {
            watcher.ready();
        }
        watcher.copying.fetch_add(1, Ordering::SeqCst);
        let (back, result) = output.append_owned(watcher.id, stream, buf).await;
        buf = back;
        match result {
            Ok(_) => {
                if let Some(bytes) = dropping.take() {
                    tracing::warn!(id = %watcher.id, ?stream, bytes, "output kept again, after dropping what could not be kept");
                }
            }
            Err(e) => {
                if dropping.is_none() {
                    tracing::warn!(id = %watcher.id, ?stream, error = %e, "output dropped until it can be kept again");
                }
                *dropping.get_or_insert(0) += n as u64;
            }
        }
        watcher.copying.fetch_sub(1, Ordering::SeqCst);
        watcher.activity.send_replace(Instant::now());
    }
    // A last line without a newline counts too.
    if let Some(pattern) = watcher.pattern.get()
        && !line.is_empty()
        && pattern.is_match(&String::from_utf8_lossy(&line))
    {
        watcher.ready();
    }
}

/// Appends `data` to the partial `line` and tests every completed line.
fn scan_lines(line: &mut Vec<u8>, data: &[u8], pattern: &LogPattern) -> bool {
    let mut found = false;
    for chunk in data.split_inclusive(|b| *b == b'\n') {
        if line.len() < MAX_LINE {
            line.extend_from_slice(&chunk[..chunk.len().min(MAX_LINE - line.len())]);
        }
        if chunk.ends_with(b"\n") {
            found |= pattern.is_match(String::from_utf8_lossy(line).trim_end_matches(['\n', '\r']));
            line.clear();
        }
    }
    // A partial line that already matches need not wait for its newline.
    found || (!line.is_empty() && pattern.is_match(&String::from_utf8_lossy(line)))
}

/// Reports idleness each time the process writes nothing for `idle`.
pub(crate) async fn watch_idle(
    idle: Duration,
    watcher: Watcher,
    mut exited: watch::Receiver<bool>,
) {
    let mut activity = watcher.activity.subscribe();
    let mut announced = false;
    loop {
        let last = *activity.borrow_and_update();
        let quiet = async {
            if announced {
                // Quiet until the process writes again.
                std::future::pending::<()>().await;
            }
            tokio::time::sleep_until(last + idle).await;
        };
        tokio::select! {
            () = quiet => {
                let _ = watcher.tx.send(ProcessNotice::Idle { id: watcher.id });
                announced = true;
            }
            r = activity.changed() => {
                if r.is_err() {
                    return;
                }
                announced = false;
            }
            _ = exited.wait_for(|e| *e) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_matched_across_reads() {
        let p = LogPattern::new("^listening on \\d+$").expect("regex");
        let mut line = Vec::new();
        assert!(!scan_lines(&mut line, b"booting\nlisten", &p));
        assert!(!scan_lines(&mut line, b"ing on ", &p));
        assert!(scan_lines(&mut line, b"8080\r\nmore", &p));
        assert_eq!(line, b"more");
    }
}
