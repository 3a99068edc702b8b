//! The node's lease as the keeper watches it: when renewals are late
//! the failover processes are frozen, when it lapses they are stopped,
//! and when the watch itself overslept they are killed.

#[allow(clippy::wildcard_imports)]
use super::*;
use bpm_domain::cluster::lease_watch::{LeaseAct, LeaseWatch, NextLook};

/// The node's lease as a keeper knows it: its timeline
/// ([`LeaseWatch`], the domain's), on a monotonic clock from `origin`.
#[derive(Debug)]
pub(super) struct LeaseHold {
    /// The lease's timeline.
    pub(super) watch: LeaseWatch,
    /// Where the timeline's times count from.
    pub(super) origin: std::time::Instant,
    /// Whether a thread watches it.
    pub(super) watched: bool,
}

impl Default for LeaseHold {
    fn default() -> Self {
        LeaseHold {
            watch: LeaseWatch::default(),
            origin: std::time::Instant::now(),
            watched: false,
        }
    }
}

impl LeaseHold {
    /// The time now on the timeline.
    pub(super) fn now(&self) -> Duration {
        self.origin.elapsed()
    }
}

impl SpawnerShared {
    /// Sends `signal` to the tree of every failover process `pick` takes
    /// (and marks as it sees fit), saying `why` for each.
    pub(super) fn signal_failover(
        &self,
        signal: Signal,
        why: &str,
        pick: impl Fn(&mut Live) -> bool,
    ) {
        let targets: Vec<(ProcessId, u32, Option<u32>)> = lock(&self.live)
            .iter_mut()
            .filter(|(_, l)| l.stand_down.is_some() && !l.reaped)
            .filter_map(|(id, l)| {
                pick(l).then(|| (*id, l.pid, (l.origin != Origin::Adopted).then_some(l.pid)))
            })
            .collect();
        for (id, pid, leader) in targets {
            tracing::warn!(%id, pid, "{why}");
            if let Err(e) = deliver(id, pid, leader, signal) {
                tracing::warn!(%id, pid, error = %e, "cannot signal a failover record's process");
            }
        }
    }

    /// Stops the failover processes with SIGSTOP while the lease's renewals
    /// are late (`true`), or continues them when one lands (`false`); a
    /// process being stopped, or paused by its caller, is left as it is.
    pub(super) fn freeze_failover(&self, freeze: bool) {
        let (signal, why) = if freeze {
            (
                Signal::Stop,
                "the node's lease renewals are late: a failover record's process is stopped (SIGSTOP) until the next renewal",
            )
        } else {
            (
                Signal::Cont,
                "the node's lease was renewed: a failover record's process continues",
            )
        };
        let (from, to) = if freeze {
            (Halt::No, Halt::Frozen)
        } else {
            (Halt::Frozen, Halt::No)
        };
        self.signal_failover(signal, why, |l| {
            let take = !l.stopping && l.halt == from;
            if take {
                l.halt = to;
            }
            take
        });
    }

    /// Kills every failover process at once, with no grace: the keeper
    /// found itself far past the lease's lapse (the machine was paused), so
    /// another node may run them already.
    pub(super) fn kill_failover_now(&self) {
        self.signal_failover(
            Signal::Kill,
            "woke long past the node's lease: killing a failover record's process at once, which another node may run already",
            |l| {
                l.stopping = true;
                l.halt = Halt::No;
                true
            },
        );
    }

    /// Watches the node's lease on a thread of its own, so that it looks
    /// at the clock the moment it runs again after a pause, before any
    /// task of the runtime: when renewals are late, the failover processes
    /// are stopped (SIGSTOP) until the next; when the lease lapses, they
    /// are stopped for good, with their signal and KILL after their grace,
    /// or with KILL at once when the keeper slept far past the lapse.
    pub(super) fn watch_lease(self: &Arc<Self>, runtime: &tokio::runtime::Handle) {
        loop {
            let mut lease = self.lease.lock().unwrap_or_else(PoisonError::into_inner);
            let now = lease.now();
            let (act, next) = lease.watch.look(now);
            if next == NextLook::Done {
                lease.watched = false;
            }
            drop(lease);
            match act {
                Some(LeaseAct::Freeze) => self.freeze_failover(true),
                Some(LeaseAct::StandDown) => {
                    let _guard = runtime.enter();
                    self.stand_down_all();
                }
                Some(LeaseAct::KillNow) => self.kill_failover_now(),
                Some(LeaseAct::Thaw) | None => {}
            }
            match next {
                NextLook::Done => return,
                NextLook::At(at) => std::thread::sleep(at.saturating_sub(now)),
            }
        }
    }

    /// Stands down every process that has a `stand_down` policy: its signal now (unless a stop
    /// was already sent, by the daemon standing down say: a second TERM may
    /// cut a graceful shutdown short), and KILL after its grace if it is
    /// still there.
    pub(super) fn stand_down_all(self: &Arc<Self>) {
        let standing_down: Vec<(ProcessId, u32, bpm_domain::StopPolicy, bool)> = lock(&self.live)
            .iter()
            .filter(|(_, l)| !l.reaped)
            .filter_map(|(id, l)| l.stand_down.map(|f| (*id, l.pid, f, l.stopping)))
            .collect();
        for (id, pid, policy, stopping) in standing_down {
            tracing::warn!(%id, pid, "the node's lease lapsed: stopping a failover record's process, which another node may now run");
            let inner = self.clone();
            tokio::spawn(async move {
                if !stopping {
                    let _ = inner.signal(id, pid, policy.signal).await;
                }
                tokio::time::sleep(policy.grace.as_duration()).await;
                let _ = inner.signal(id, pid, Signal::Kill).await;
            });
        }
    }
}
