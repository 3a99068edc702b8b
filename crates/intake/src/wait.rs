//! [`until`]: the one way a front end waits for records to reach a
//! condition (ended, ready, up, a line of output): look, and look again
//! when an event of one of them comes, when events were missed, at the
//! next look the condition needs without an event, or at the deadline.
//! [`more_output`]: the one way a follower of output waits for more.

use std::time::Duration;

use bpm_domain::{Event, ProcessId};
use bpm_ports::{Cursor, ProcessManager};
use tokio::sync::broadcast::{self, error::RecvError};
use tokio::time::Instant;

/// The longest one wait of [`more_output`] should last before its
/// follower makes it again: what a wait left behind (its follower gone)
/// holds in the daemon at most.
pub const FOLLOW_WITHIN: Duration = Duration::from_secs(10);

/// Returns once record `id` has written past `after`, has ended, or
/// `within` has passed: the daemon answers when it does
/// ([`ProcessManager::wait_output`]). A daemon that cannot (an earlier
/// build), or a call that fails, is looked at again after
/// [`OUTPUT_LOOK`](bpm_ports::OUTPUT_LOOK); the follower reads again
/// either way.
pub async fn more_output(m: &dyn ProcessManager, id: ProcessId, after: Cursor, within: Duration) {
    if m.wait_output(id, after, within).await.is_err() {
        bpm_ports::look_again(within).await;
    }
}

/// When [`until`] looks again.
#[derive(Debug, Clone, Copy)]
pub struct Looking<'a> {
    /// The records whose events make it look again.
    pub ids: &'a [ProcessId],
    /// When it gives up (`None`: never).
    pub deadline: Option<Instant>,
    /// The longest it goes without looking when no event comes: a
    /// condition no event announces (a line of output, a quiet spell), or
    /// a manager gone quiet. `None`: it looks again only on an event.
    pub every: Option<Duration>,
}

/// The wait between two looks of a loop that waits for records: a loop
/// looks, and while the condition is not met and [`Waiter::next`] says
/// so, looks again.
pub struct Waiter<'a> {
    m: &'a dyn ProcessManager,
    events: broadcast::Receiver<Event>,
    how: Looking<'a>,
}

impl<'a> Waiter<'a> {
    /// A waiter on `m`'s records `how.ids`, hearing `events`: a
    /// subscription taken before whatever made the records change was
    /// asked for, so that no event is missed between the two.
    pub fn new(
        m: &'a dyn ProcessManager,
        events: broadcast::Receiver<Event>,
        how: Looking<'a>,
    ) -> Self {
        Waiter { m, events, how }
    }

    /// Waits until it is time to look again (`true`): an event of one of
    /// the records came, events were missed, `how.every` passed, or the
    /// deadline came (for a last look). `false`, at once, once the
    /// deadline has passed. When the manager closes its events (a client
    /// reconnecting), a new subscription is taken.
    pub async fn next(&mut self) -> bool {
        let now = Instant::now();
        if self.how.deadline.is_some_and(|at| now >= at) {
            return false;
        }
        let wake = match (self.how.deadline, self.how.every) {
            (Some(at), Some(every)) => Some(at.min(now + every)),
            (Some(at), None) => Some(at),
            (None, Some(every)) => Some(now + every),
            (None, None) => None,
        };
        let (m, ids, events) = (self.m, self.how.ids, &mut self.events);
        let heard = async {
            loop {
                match events.recv().await {
                    Ok(e) if ids.contains(&e.id) => return,
                    Ok(_) => {}
                    // Events were missed: look again.
                    Err(RecvError::Lagged(_)) => return,
                    Err(RecvError::Closed) => {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        *events = m.subscribe();
                        return;
                    }
                }
            }
        };
        match wake {
            Some(at) => {
                let _ = tokio::time::timeout_at(at, heard).await;
            }
            None => heard.await,
        }
        true
    }
}

/// Looks (`look`) until it answers `Some`, and returns that answer, or
/// `None` once `how.deadline` has passed with no answer (after a last
/// look); between looks, as [`Waiter::next`] says.
///
/// # Errors
/// The first error of `look`.
pub async fn until<T, E>(
    m: &dyn ProcessManager,
    events: broadcast::Receiver<Event>,
    how: Looking<'_>,
    mut look: impl AsyncFnMut() -> Result<Option<T>, E>,
) -> Result<Option<T>, E> {
    let mut waiter = Waiter::new(m, events, how);
    loop {
        if let Some(answer) = look().await? {
            return Ok(Some(answer));
        }
        if !waiter.next().await {
            return Ok(None);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use bpm_domain::{EventKind, NodeId, ProcessRecord, ProcessSpec, Timestamp};
    use bpm_ports::MockProcessManager;

    use super::*;

    fn event(id: ProcessId) -> Event {
        let record = ProcessRecord::new(
            id,
            NodeId::local(),
            ProcessSpec::argv(["true"]),
            Timestamp::from_millis(0),
        );
        Event::new(EventKind::Started, &record, Timestamp::from_millis(0))
    }

    #[tokio::test]
    async fn it_looks_again_on_an_event_of_its_records_and_not_on_others() {
        let m = MockProcessManager::new();
        let (tx, rx) = broadcast::channel(16);
        let (mine, other) = (
            ProcessId::from_uuid(uuid::Uuid::from_u128(1)),
            ProcessId::from_uuid(uuid::Uuid::from_u128(2)),
        );
        let looks = Arc::new(AtomicUsize::new(0));
        let counted = looks.clone();
        let sender = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            tx.send(event(other)).expect("sent");
            tokio::time::sleep(Duration::from_millis(50)).await;
            tx.send(event(mine)).expect("sent");
            tx
        });
        let how = Looking {
            ids: &[mine],
            deadline: Some(Instant::now() + Duration::from_secs(5)),
            every: None,
        };
        let answer: Result<Option<usize>, ()> = until(&m, rx, how, async || {
            let n = counted.fetch_add(1, Ordering::SeqCst) + 1;
            Ok((n == 2).then_some(n))
        })
        .await;
        assert_eq!(
            answer,
            Ok(Some(2)),
            "the second look, after its record's event"
        );
        assert_eq!(
            looks.load(Ordering::SeqCst),
            2,
            "another record's event woke nothing"
        );
        drop(sender.await);
    }

    #[tokio::test]
    async fn past_the_deadline_it_answers_none_after_a_last_look() {
        let m = MockProcessManager::new();
        let (_tx, rx) = broadcast::channel::<Event>(16);
        let looks = AtomicUsize::new(0);
        let how = Looking {
            ids: &[],
            deadline: Some(Instant::now() + Duration::from_millis(200)),
            every: Some(Duration::from_millis(50)),
        };
        let started = Instant::now();
        let answer: Result<Option<()>, ()> = until(&m, rx, how, async || {
            looks.fetch_add(1, Ordering::SeqCst);
            Ok(None)
        })
        .await;
        assert_eq!(answer, Ok(None));
        assert!(started.elapsed() >= Duration::from_millis(200));
        let n = looks.load(Ordering::SeqCst);
        assert!((4..=8).contains(&n), "looked every 50 ms: {n} looks");
    }

    #[tokio::test]
    async fn an_error_of_a_look_ends_the_wait() {
        let m = MockProcessManager::new();
        let (_tx, rx) = broadcast::channel::<Event>(16);
        let how = Looking {
            ids: &[],
            deadline: None,
            every: Some(Duration::from_millis(10)),
        };
        let answer: Result<Option<()>, &str> = until(&m, rx, how, async || Err("gone")).await;
        assert_eq!(answer, Err("gone"));
    }
}
