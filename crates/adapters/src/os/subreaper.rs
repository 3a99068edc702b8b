//! The daemon as a child subreaper: when bpm's keeper dies, the processes
//! it was the parent of become the daemon's children rather than init's, so
//! their exit codes can still be learnt. The daemon reaps every child of
//! its that has ended (the keeper's own waiter and a hook's `wait` then
//! find it gone, which they take as an end) and keeps each status a while
//! for [`Subreaper::status_of`].

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use bpm_domain::ExitStatus;
use rustix::process::{Pid, WaitId, WaitIdOptions, waitid};
use tokio::sync::Notify;

use super::{exit_status, procfs};

/// How long a status is kept for someone to ask for it.
const KEPT_FOR: Duration = Duration::from_mins(2);
/// How often children are looked at besides `SIGCHLD`.
const EVERY: Duration = Duration::from_secs(1);

/// Exit statuses of this process's children that ended (see the module's
/// documentation).
pub struct Subreaper {
    statuses: Mutex<HashMap<u32, (ExitStatus, Instant)>>,
    reaped: Notify,
}

impl Subreaper {
    /// Makes this process a child subreaper and starts reaping its ended
    /// children (in a task of the current runtime).
    ///
    /// # Errors
    /// The kernel refused `PR_SET_CHILD_SUBREAPER`.
    pub fn start() -> std::io::Result<Arc<Self>> {
        rustix::process::set_child_subreaper(Some(rustix::process::getpid()))?;
        let me = Arc::new(Subreaper {
            statuses: Mutex::default(),
            reaped: Notify::new(),
        });
        let weak = Arc::downgrade(&me);
        let mut sigchld =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::child()).ok();
        tokio::spawn(async move {
            loop {
                let Some(me) = weak.upgrade() else { return };
                me.reap_ended();
                drop(me);
                match &mut sigchld {
                    Some(s) => {
                        let _ = tokio::time::timeout(EVERY, s.recv()).await;
                    }
                    None => tokio::time::sleep(EVERY).await,
                }
            }
        });
        Ok(me)
    }

    /// Reaps every child that has ended, keeping its status.
    fn reap_ended(&self) {
        let now = Instant::now();
        let ended = reap_children_except(&HashSet::new());
        let reaped = !ended.is_empty();
        self.statuses
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend(ended.into_iter().map(|(pid, status)| (pid, (status, now))));
        self.statuses
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|_, (_, at)| now.duration_since(*at) < KEPT_FOR);
        if reaped {
            self.reaped.notify_waiters();
        }
    }

    /// How `pid` ended, if it was a child of this process that it reaped
    /// (waiting up to `within` for it to be reaped); taken, so asked once.
    pub async fn status_of(&self, pid: u32, within: Duration) -> Option<ExitStatus> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let reaped = self.reaped.notified();
            if let Some((status, _)) = self
                .statuses
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .remove(&pid)
            {
                return Some(status);
            }
            if tokio::time::timeout_at(deadline, reaped).await.is_err() {
                return None;
            }
        }
    }

    /// Whether `pid` is a child of this process now (and so will be reaped here).
    pub fn is_child(pid: u32) -> bool {
        procfs::stat(pid).is_some_and(|s| s.ppid == std::process::id())
    }
}

/// Reaps `pid`, a child of this process that is not a record's leader, if
/// it has ended: its status; `None` if it runs, or is not a child here.
pub(super) fn reap_one(pid: u32) -> Option<ExitStatus> {
    let raw = i32::try_from(pid).ok().and_then(Pid::from_raw)?;
    waitid(
        WaitId::Pid(raw),
        WaitIdOptions::EXITED | WaitIdOptions::NOHANG,
    )
    .ok()
    .flatten()
    .map(|status| exit_status(&status))
}

/// Reaps every child of this process that has ended, but those in
/// `keep` (whose own waiters reap them): each pid with its status.
pub(super) fn reap_children_except(keep: &HashSet<u32>) -> Vec<(u32, ExitStatus)> {
    let mut ended = Vec::new();
    for pid in children() {
        if keep.contains(&pid) || procfs::stat(pid).is_none_or(|s| !s.has_ended()) {
            continue;
        }
        let Some(raw) = i32::try_from(pid).ok().and_then(Pid::from_raw) else {
            continue;
        };
        if let Ok(Some(status)) = waitid(
            WaitId::Pid(raw),
            WaitIdOptions::EXITED | WaitIdOptions::NOHANG,
        ) {
            ended.push((pid, exit_status(&status)));
        }
    }
    ended
}

/// This process's children, from every thread's list. A thread that ends
/// meanwhile hands its children to another, perhaps one already read: the
/// threads are listed again after, and all is read again if they changed.
pub(super) fn children() -> Vec<u32> {
    let threads = || -> Vec<std::path::PathBuf> {
        let mut t: Vec<_> = std::fs::read_dir("/proc/self/task")
            .map(|d| d.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        t.sort_unstable();
        t
    };
    let mut before = threads();
    let mut pids = Vec::new();
    for _ in 0..3 {
        pids.clear();
        for task in &before {
            if let Ok(list) = std::fs::read_to_string(task.join("children")) {
                pids.extend(
                    list.split_whitespace()
                        .filter_map(|p| p.parse::<u32>().ok()),
                );
            }
        }
        let after = threads();
        if after == before {
            break;
        }
        before = after;
    }
    pids.sort_unstable();
    pids.dedup();
    pids
}
