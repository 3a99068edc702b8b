//! The armed timers: one queue of deadlines, and one sleep, for the
//! earliest, in the loop. A timer costs an entry here, not a task.

use std::collections::{BTreeSet, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use bpm_domain::{Timer, Timestamp};
use bpm_ports::Clock;

/// The timers the core armed and has not cancelled, by deadline.
#[derive(Default)]
pub(crate) struct Timers {
    at: HashMap<Timer, Timestamp>,
    queue: BTreeSet<(Timestamp, Timer)>,
}

impl Timers {
    /// Arms `timer` for `at`, in place of its earlier deadline if any.
    pub(crate) fn arm(&mut self, timer: Timer, at: Timestamp) {
        if let Some(old) = self.at.insert(timer, at) {
            self.queue.remove(&(old, timer));
        }
        self.queue.insert((at, timer));
    }

    /// Forgets `timer`.
    pub(crate) fn cancel(&mut self, timer: Timer) {
        if let Some(old) = self.at.remove(&timer) {
            self.queue.remove(&(old, timer));
        }
    }

    /// The earliest deadline.
    pub(crate) fn next(&self) -> Option<Timestamp> {
        self.queue.first().map(|(at, _)| *at)
    }

    /// Takes out every timer due at `now`, earliest first.
    pub(crate) fn due(&mut self, now: Timestamp) -> Vec<Timer> {
        let mut due = Vec::new();
        while let Some(&(at, timer)) = self.queue.first()
            && at <= now
        {
            self.queue.pop_first();
            self.at.remove(&timer);
            due.push(timer);
        }
        due
    }
}

type Sleep = Pin<Box<dyn Future<Output = ()> + Send>>;

/// The loop's one sleep: until the earliest deadline, made again only when
/// that deadline changes.
#[derive(Default)]
pub(crate) struct Wake(Option<(Timestamp, Sleep)>);

impl Wake {
    /// Sleeps until `next` from now on (not at all for `None`).
    pub(crate) fn set(&mut self, next: Option<Timestamp>, clock: &Arc<dyn Clock>) {
        if next == self.0.as_ref().map(|(at, _)| *at) {
            return;
        }
        self.0 = next.map(|at| {
            let clock = clock.clone();
            let sleep: Sleep = Box::pin(async move { clock.sleep_until(at).await });
            (at, sleep)
        });
    }

    /// Returns when the deadline comes; never without one.
    pub(crate) async fn until(&mut self) {
        match &mut self.0 {
            Some((_, sleep)) => {
                sleep.as_mut().await;
                self.0 = None;
            }
            None => std::future::pending().await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bpm_domain::{ProcessId, TimerKind};

    fn timer(n: u128, kind: TimerKind) -> Timer {
        Timer {
            id: ProcessId::from_uuid(uuid::Uuid::from_u128(n)),
            kind,
            attempt: 0,
        }
    }

    #[test]
    fn timers_come_due_in_order_once_and_never_when_cancelled_or_moved() {
        let mut timers = Timers::default();
        let (a, b, c) = (
            timer(1, TimerKind::Timeout),
            timer(2, TimerKind::Retention),
            timer(3, TimerKind::Grace),
        );
        timers.arm(a, Timestamp::from_millis(30));
        timers.arm(b, Timestamp::from_millis(10));
        timers.arm(c, Timestamp::from_millis(20));
        assert_eq!(timers.next(), Some(Timestamp::from_millis(10)));
        timers.cancel(c);
        // Armed again, a timer keeps only its newest deadline.
        timers.arm(b, Timestamp::from_millis(40));
        assert!(timers.due(Timestamp::from_millis(25)).is_empty());
        assert_eq!(timers.due(Timestamp::from_millis(35)), vec![a]);
        assert_eq!(timers.due(Timestamp::from_millis(100)), vec![b]);
        assert_eq!(timers.next(), None);
        assert!(timers.at.is_empty());
    }
}
