use async_trait::async_trait;
use bpm_domain::Timestamp;

/// The time, and waiting for it.
///
/// The engine reads the time only here, so tests can drive it with a manual
/// clock and timers fire exactly when the test says.
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
#[async_trait]
pub trait Clock: Send + Sync + 'static {
    /// The current instant. Never goes backwards.
    fn now(&self) -> Timestamp;

    /// Returns once [`Clock::now`] is at or past `at` (at once if it already is).
    async fn sleep_until(&self, at: Timestamp);
}
