use std::collections::VecDeque;
use std::sync::{Mutex, PoisonError};

use async_trait::async_trait;
use bpm_domain::Event;
use bpm_ports::{EventBus, EventBusError};
use tokio::sync::broadcast;

/// How many past events [`BroadcastBus`] keeps for [`EventBus::recent`].
pub const RECENT_EVENTS: usize = 1000;

/// An event bus within one process, on a tokio broadcast channel, keeping
/// the latest [`RECENT_EVENTS`] events.
#[derive(Debug)]
pub struct BroadcastBus {
    tx: broadcast::Sender<Event>,
    recent: Mutex<VecDeque<Event>>,
}

impl BroadcastBus {
    /// A bus whose subscribers may fall `capacity` events behind before they lag.
    pub fn new(capacity: usize) -> Self {
        BroadcastBus {
            tx: broadcast::Sender::new(capacity.max(1)),
            recent: Mutex::new(VecDeque::with_capacity(RECENT_EVENTS)),
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
        // Kept and sent under one lock, which `subscribe` takes too: a
        // subscription made after `recent` shows an event never receives
        // it, and one made before receives whatever `recent` lacked.
        let mut recent = self.recent.lock().unwrap_or_else(PoisonError::into_inner);
        if recent.len() == RECENT_EVENTS {
            recent.pop_front();
        }
        recent.push_back(event.clone());
        // No subscriber is not an error: nobody is listening yet.
        let _ = self.tx.send(event);
        Ok(())
    }

    fn subscribe(&self) -> broadcast::Receiver<Event> {
        let _recent = self.recent.lock().unwrap_or_else(PoisonError::into_inner);
        self.tx.subscribe()
    }

    fn recent(&self) -> Vec<Event> {
        let recent = self.recent.lock().unwrap_or_else(PoisonError::into_inner);
        recent.iter().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bpm_domain::{EventKind, NodeId, ProcessId, StateName, Timestamp};

    fn event(n: u64) -> Event {
        Event {
            id: ProcessId::from_uuid(uuid::Uuid::from_u128(1)),
            kind: EventKind::Progress,
            state: StateName::Running,
            at: Timestamp::from_millis(n),
            name: None,
            session: None,
            node: NodeId::new("n").expect("node"),
            version: n,
            started_at: None,
            ended_at: None,
            duration_ms: None,
            exit: None,
            error: None,
            progress: None,
            related: None,
            output_tail: None,
        }
    }

    #[tokio::test]
    async fn the_latest_events_are_kept_oldest_first_up_to_the_cap() {
        let bus = BroadcastBus::default();
        assert!(bus.recent().is_empty());
        let total = u64::try_from(RECENT_EVENTS).expect("fits") + 5;
        for n in 0..total {
            bus.publish(event(n)).await.expect("publish");
        }
        let kept: Vec<u64> = bus.recent().iter().map(|e| e.at.as_millis()).collect();
        assert_eq!(kept, (5..total).collect::<Vec<_>>());
    }
}
