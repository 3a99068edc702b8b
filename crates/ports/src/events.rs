use async_trait::async_trait;
use bpm_domain::Event;
use tokio::sync::broadcast;

/// The event bus could not deliver.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EventBusError {
    /// The bus's backend is unreachable.
    #[error("event bus unavailable: {0}")]
    Unavailable(String),
}

/// Publishes record events to every subscriber.
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
#[async_trait]
pub trait EventBus: Send + Sync + 'static {
    /// Delivers `event` to every current subscriber. Having no subscriber is not an error.
    ///
    /// # Errors
    /// MUST return [`EventBusError::Unavailable`] when the backend cannot be reached.
    async fn publish(&self, event: Event) -> Result<(), EventBusError>;

    /// A receiver of every event published from now on. A slow receiver may
    /// lag and miss events (it is told so by `RecvError::Lagged`); it must
    /// then re-read the records it cares about from the store.
    fn subscribe(&self) -> broadcast::Receiver<Event>;

    /// The latest events published, oldest first: at most the bus's
    /// history (the in-process bus keeps 1,000). A caller that subscribes
    /// first and then reads these sees the past and the future with no gap
    /// (dropping what it sees twice).
    fn recent(&self) -> Vec<Event>;
}
