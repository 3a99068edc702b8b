//! The event bus contract: what every node's subscribers hear, in what
//! order, and what `recent` keeps. A subject is two nodes' buses on one
//! fresh backend (one bus serves both where the backend is this process).

use std::sync::Arc;
use std::time::Duration;

use bpm_domain::{
    Event, EventKind, NodeId, ProcessId, ProcessRecord, ProcessSpec, StateName, Timestamp,
};
use tokio::sync::broadcast;

use crate::EventBus;

/// Two nodes' buses, `alpha`'s and `beta`'s, on one fresh backend, made
/// before any case publishes (what is published after a bus is made
/// reaches it).
pub struct Subject {
    /// Node `alpha`'s bus.
    pub alpha: Arc<dyn EventBus>,
    /// Node `beta`'s bus.
    pub beta: Arc<dyn EventBus>,
}

/// An end event of record `n` on node `on`, its version `n`.
fn event(n: u64, on: &str) -> Event {
    let at = Timestamp::from_millis(n);
    let record = ProcessRecord::new(
        ProcessId::from_uuid(uuid::Uuid::from_u128(u128::from(n))),
        NodeId::new(on).expect("a node name"),
        ProcessSpec::argv(["x"]),
        at,
    );
    let mut event = Event::new(EventKind::Exited, &record, at);
    event.state = StateName::Completed;
    event.version = n;
    event
}

/// The versions of the next `n` events `rx` hears, each within 5 s.
async fn hear(rx: &mut broadcast::Receiver<Event>, n: usize, who: &str) -> Vec<u64> {
    let mut heard = Vec::new();
    while heard.len() < n {
        let e = tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .unwrap_or_else(|_| panic!("{who} hears within 5 s (heard {heard:?})"))
            .expect("open");
        heard.push(e.version);
    }
    heard
}

/// Publishing with nobody subscribed is not an error.
pub async fn publishing_to_nobody_is_not_an_error(s: Subject) {
    s.alpha.publish(event(1, "alpha")).await.expect("publish");
}

/// Every node's events reach every node's subscribers, once each and each
/// node's in the order it published them; a node's own events are not
/// delivered to it twice, and `recent` holds them.
pub async fn every_nodes_events_reach_every_nodes_subscribers_once(s: Subject) {
    let mut at_alpha = s.alpha.subscribe();
    let mut at_beta = s.beta.subscribe();
    for n in 1..=3 {
        s.alpha.publish(event(n, "alpha")).await.expect("publish");
    }
    s.beta.publish(event(10, "beta")).await.expect("publish");
    for (rx, who) in [(&mut at_beta, "beta"), (&mut at_alpha, "alpha")] {
        let mut heard = hear(rx, 4, who).await;
        assert!(heard.contains(&10), "{who}: {heard:?}");
        heard.retain(|v| *v != 10);
        assert_eq!(heard, [1, 2, 3], "{who} hears alpha's in order");
    }
    let more = tokio::time::timeout(Duration::from_millis(1500), at_alpha.recv()).await;
    assert!(more.is_err(), "nothing twice: {more:?}");
    let recent: Vec<u64> = s.alpha.recent().iter().map(|e| e.version).collect();
    assert_eq!(recent.len(), 4, "{recent:?}");
}

/// `recent` shows the events published so far, oldest first; a
/// subscription made before reading it receives what came after, and
/// nothing `recent` showed.
pub async fn recent_and_a_subscription_leave_no_gap(s: Subject) {
    for n in 1..=3 {
        s.alpha.publish(event(n, "alpha")).await.expect("publish");
    }
    let mut rx = s.alpha.subscribe();
    let recent: Vec<u64> = s.alpha.recent().iter().map(|e| e.version).collect();
    assert_eq!(recent, [1, 2, 3]);
    for n in 4..=5 {
        s.alpha.publish(event(n, "alpha")).await.expect("publish");
    }
    assert_eq!(hear(&mut rx, 2, "alpha").await, [4, 5]);
}
