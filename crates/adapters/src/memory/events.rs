use async_trait::async_trait;
use bpm_domain::Event;
use bpm_ports::{EventBus, EventBusError};
use tokio::sync::broadcast;

/// An event bus within one process, on a tokio broadcast channel.
#[derive(Debug)]
pub struct BroadcastBus {
    tx: broadcast::Sender<Event>,
}

impl BroadcastBus {
    /// A bus whose subscribers may fall `capacity` events behind before they lag.
    pub fn new(capacity: usize) -> Self {
        BroadcastBus {
            tx: broadcast::Sender::new(capacity.max(1)),
        }
    }
}

impl Default for BroadcastBus {
    fn default() -> Self {
        BroadcastBus::new(4096)
    }
}

#[async_trait]
impl EventBus for BroadcastBus {
    async fn publish(&self, event: Event) -> Result<(), EventBusError> {
        // No subscriber is not an error: nobody is listening yet.
        let _ = self.tx.send(event);
        Ok(())
    }

    fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.tx.subscribe()
    }
}
