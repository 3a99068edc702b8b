//! The spawner's side: while every slot is taken, the loop hands the spawner
//! the next records to start ([`Supervisor::hand_over`]). The spawner starts
//! one the moment a process ends and reports both at once, so the next
//! process does not wait for the loop. Before an input that could cancel a
//! record handed over (a stop, a restart, a completion or a failure), the
//! loop withdraws them and hears of every start the spawner made from them
//! first.
//!
//! [`Supervisor::hand_over`]: bpm_domain::Supervisor::hand_over

use std::time::Duration;

use bpm_domain::ProcessId;
use bpm_ports::SpawnRequest;

use crate::ToLoop;
use crate::driver::{Driver, Inbox};

/// How long the loop waits for the reports of starts the spawner made from
/// records it took back, before it goes on without them.
const HANDOVER_REPORTS: Duration = Duration::from_secs(5);

impl Driver {
    /// Hands the spawner the next records to start on exits, if every slot is taken.
    pub(crate) async fn hand_over(&mut self) {
        let added = self.next_handed();
        self.send_handed(added).await;
    }

    /// The records the core hands over now (none if the spawner takes none).
    pub(crate) fn next_handed(&mut self) -> Vec<ProcessId> {
        if self.ports.spawner.hands_over() {
            self.core.hand_over()
        } else {
            Vec::new()
        }
    }

    /// Gives the spawner the records the core just handed over.
    pub(crate) async fn send_handed(&mut self, mut added: Vec<ProcessId>) {
        // Nothing is started that the store does not know.
        let (unstored, known): (Vec<_>, Vec<_>) = added
            .into_iter()
            .partition(|id| self.creation_unstored(*id));
        self.core.withdraw(&unstored);
        added = known;
        if added.is_empty() {
            return;
        }
        let requests: Vec<_> = added
            .iter()
            .filter_map(|id| self.core.get(*id).and_then(SpawnRequest::for_record))
            .collect();
        if let Err(e) = self.ports.spawner.hand_over(requests).await {
            tracing::warn!(error = %e, "could not hand records over to the spawner");
            self.core.withdraw(&added);
        }
    }

    /// Takes back the records handed to the spawner, then handles the
    /// reports of those it started already: afterwards none is outstanding.
    /// Messages that come meanwhile wait in `deferred`; spawn results are
    /// handled, since a report may be held behind one.
    pub(crate) async fn withdraw_handed(&mut self, inbox: &mut Inbox) {
        let handed: Vec<_> = self.core.handed_over().collect();
        if handed.is_empty() {
            return;
        }
        match self.ports.spawner.withdraw().await {
            Ok(back) => self.core.withdraw(&back),
            Err(e) => {
                // The spawner is gone or cut off; it starts nothing more.
                tracing::warn!(error = %e, "could not take records back from the spawner");
                self.core.withdraw(&handed);
            }
        }
        let deadline = tokio::time::Instant::now() + HANDOVER_REPORTS;
        while self.core.handed_over().next().is_some() {
            let waited = tokio::time::timeout_at(deadline, async {
                tokio::select! {
                    n = inbox.notices.recv() => n.map(Ok),
                    m = inbox.msgs.recv() => m.map(Err),
                }
            })
            .await;
            match waited {
                Ok(Some(Ok(notice))) => self.notice(notice).await,
                Ok(Some(Err(msg))) => match msg {
                    ToLoop::SpawnEnded(input) => self.spawn_ended(*input).await,
                    ToLoop::Synced(result) => self.synced(result).await,
                    other => self.deferred.push_back(other),
                },
                _ => {
                    let left: Vec<_> = self.core.handed_over().collect();
                    tracing::warn!(
                        ?left,
                        "the spawner did not report starts it made; going on without them"
                    );
                    self.core.withdraw(&left);
                }
            }
        }
    }
}
