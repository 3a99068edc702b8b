//! What waits for the disk: the store's syncs, and the work (events, a
//! caller's answer, an exit's acknowledgement) that waits for one.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use bpm_domain::{Event, ProcessId, ProcessRecord};
use bpm_ports::ManagerError;

use crate::{BatchTx, RecordsTx};

/// How often records the store refused are written again.
pub(crate) const STORE_RETRY: Duration = Duration::from_millis(500);

/// The answer to a caller whose new record the store did not take.
pub(crate) fn unstored() -> ManagerError {
    ManagerError::Store(bpm_ports::StoreError::Unavailable(
        "the store stopped answering as the record was created: nothing was started; try again once it answers".into(),
    ))
}

/// A caller waiting for its answer.
pub(crate) enum Waiter {
    One(RecordsTx),
    Batch(Vec<Result<(), ManagerError>>, BatchTx),
    /// A refusal that names a record whose write may be under way (a
    /// submission answered with the live record of its name): sent once
    /// that record can be read.
    Refused(ManagerError, RecordsTx),
}

impl Waiter {
    /// Answers the caller with the records its call changed.
    pub(crate) fn send(self, changed: Vec<ProcessRecord>) {
        match self {
            Waiter::One(reply) => {
                let _ = reply.send(Ok(changed));
            }
            Waiter::Batch(accepted, reply) => {
                let _ = reply.send(Ok((accepted, changed)));
            }
            Waiter::Refused(e, reply) => {
                let _ = reply.send(Err(e));
            }
        }
    }
}

/// What waits until the writes made before it are on disk.
pub(crate) enum AfterSync {
    /// Events to publish.
    Announce(Vec<Event>),
    /// A caller's answer (once the spawns of the records it submitted have ended).
    Send(Vec<ProcessRecord>, Waiter),
    /// The spawner may let go of this exit.
    ExitRecorded(ProcessId),
}

/// The store's syncs, which run beside the loop one at a time, and the work
/// waiting for them.
#[derive(Default)]
pub(crate) struct Syncs {
    /// Whether durable writes were made since the last sync started.
    pub(crate) owed: bool,
    /// How many syncs were started; the last one may still be running.
    pub(crate) started: u64,
    pub(crate) running: bool,
    /// When the last sync started (or is due to start).
    pub(crate) last_start: Option<tokio::time::Instant>,
    /// Whether a caller's answer waits for the next sync: it starts at once.
    pub(crate) urgent: bool,
    /// Cuts short the wait of a sync that is spaced from the last one.
    pub(crate) hurry: Arc<tokio::sync::Notify>,
    /// Work and the number of the sync it waits for, in the order it came.
    pub(crate) waiting: VecDeque<(u64, AfterSync)>,
}

impl Syncs {
    /// How many syncs have ended.
    pub(crate) fn ended(&self) -> u64 {
        self.started - u64::from(self.running)
    }

    /// Whether nothing is running or waiting.
    pub(crate) fn idle(&self) -> bool {
        !self.running && !self.owed && self.waiting.is_empty()
    }
}
