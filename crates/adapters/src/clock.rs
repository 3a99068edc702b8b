//! Clocks: the system's, and one that only moves when a test says so.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use bpm_domain::Timestamp;
use bpm_ports::Clock;
use tokio::sync::watch;

/// The system's wall clock, made monotonic: it never reports an earlier
/// instant than it reported before, even if the system time is set back.
#[derive(Debug, Default)]
pub struct SystemClock {
    last: AtomicU64,
}

impl SystemClock {
    /// A system clock.
    pub fn new() -> Self {
        SystemClock::default()
    }
}

#[async_trait]
impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        let wall = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        let prev = self.last.fetch_max(wall, Ordering::Relaxed);
        Timestamp::from_millis(prev.max(wall))
    }

    async fn sleep_until(&self, at: Timestamp) {
        loop {
            let now = self.now();
            if now >= at {
                return;
            }
            // Re-check after sleeping: the wall clock may have been adjusted meanwhile.
            tokio::time::sleep(at.saturating_since(now)).await;
        }
    }
}

/// A clock that stands still until [`ManualClock::advance`] or [`ManualClock::set`]
/// moves it; sleepers wake when it passes their instant. For deterministic tests.
#[derive(Debug)]
pub struct ManualClock {
    now: watch::Sender<Timestamp>,
}

impl ManualClock {
    /// A clock standing at `start`.
    pub fn new(start: Timestamp) -> Self {
        ManualClock {
            now: watch::Sender::new(start),
        }
    }

    /// Moves the clock forward by `d`.
    pub fn advance(&self, d: Duration) {
        self.now.send_modify(|t| *t = t.saturating_add(d));
    }

    /// Moves the clock to `t` (never backwards).
    pub fn set(&self, t: Timestamp) {
        self.now.send_modify(|now| *now = (*now).max(t));
    }
}

#[async_trait]
impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        *self.now.borrow()
    }

    async fn sleep_until(&self, at: Timestamp) {
        let mut rx = self.now.subscribe();
        // The sender lives as long as self, so wait_for only ends when the time comes.
        let _ = rx.wait_for(|now| *now >= at).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[tokio::test]
    async fn manual_clock_wakes_sleepers_when_advanced() {
        let clock = Arc::new(ManualClock::new(Timestamp::from_millis(1000)));
        let c = clock.clone();
        let sleeper =
            tokio::spawn(async move { c.sleep_until(Timestamp::from_millis(1500)).await });
        tokio::task::yield_now().await;
        clock.advance(Duration::from_millis(200));
        tokio::task::yield_now().await;
        assert!(!sleeper.is_finished());
        clock.advance(Duration::from_millis(300));
        tokio::time::timeout(Duration::from_secs(5), sleeper)
            .await
            .expect("woke")
            .expect("joined");
        assert_eq!(clock.now(), Timestamp::from_millis(1500));
        clock.set(Timestamp::from_millis(10));
        assert_eq!(clock.now(), Timestamp::from_millis(1500), "never backwards");
    }

    #[tokio::test]
    async fn system_clock_is_monotonic_and_sleeps() {
        let clock = SystemClock::new();
        let a = clock.now();
        clock
            .sleep_until(a.saturating_add(Duration::from_millis(20)))
            .await;
        let b = clock.now();
        assert!(b.as_millis() >= a.as_millis() + 20);
        assert!(a.as_millis() > 1_700_000_000_000, "a wall-clock instant");
    }
}
