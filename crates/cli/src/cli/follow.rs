//! Following output without a timer: beside the caller, a task per
//! followed record waits in the daemon until it writes past a position
//! ([`ProcessManager::wait_output`](bpm_ports::ProcessManager::wait_output)),
//! then says which woke and waits to be given the new position. A wait is
//! made again only once it has answered or its target changed, so a
//! follower of many records leaves no waits behind in the daemon.

use bpm_domain::ProcessId;
use bpm_ports::Cursor;
use tokio::sync::{mpsc, watch};

use super::Manager;

/// A record and the position its output was read up to.
pub(super) type Target = Option<(ProcessId, Cursor)>;

/// The followers of one caller, by key.
pub(super) struct Follow {
    m: Manager,
    woke_tx: mpsc::Sender<usize>,
    woke: mpsc::Receiver<usize>,
    targets: Vec<watch::Sender<Target>>,
}

impl Follow {
    pub(super) fn new(m: Manager) -> Self {
        let (woke_tx, woke) = mpsc::channel(64);
        Follow {
            m,
            woke_tx,
            woke,
            targets: Vec::new(),
        }
    }

    /// Follows `target` under `key` (`None`: nothing). The wait under way
    /// goes on unless the target changed, or `again` says it answered.
    pub(super) fn set(&mut self, key: usize, target: Target, again: bool) {
        while self.targets.len() <= key {
            let (tx, rx) = watch::channel(None);
            let index = self.targets.len();
            tokio::spawn(follower(self.m.clone(), index, rx, self.woke_tx.clone()));
            self.targets.push(tx);
        }
        let sender = &self.targets[key];
        if again || *sender.borrow() != target {
            sender.send_replace(target);
        }
    }

    /// The key of the next follower whose record wrote (or ended, or whose
    /// wait ran out): read it, then [`set`](Self::set) it `again`.
    pub(super) async fn next(&mut self) -> usize {
        // The sender kept here never drops, so this never ends.
        self.woke.recv().await.unwrap_or_default()
    }
}

/// One follower: waits on its target, reports `key` once it answered.
async fn follower(
    m: Manager,
    key: usize,
    mut target: watch::Receiver<Target>,
    woke: mpsc::Sender<usize>,
) {
    loop {
        let now = *target.borrow_and_update();
        if let Some((id, after)) = now {
            tokio::select! {
                () = bpm_intake::more_output(m.as_ref(), id, after, bpm_intake::FOLLOW_WITHIN) => {
                    if woke.send(key).await.is_err() {
                        return;
                    }
                }
                changed = target.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    continue;
                }
            }
        }
        if target.changed().await.is_err() {
            return;
        }
    }
}
