//! Commands for another node's records within one process (see
//! [`bpm_ports::CommandBus`]): the twin of the Redis bus, for tests and
//! for nodes simulated side by side. Nodes share a [`CommandHub`]; each
//! daemon has its own [`InMemoryCommands`] on it, and a node counts as
//! alive as the shared [`Membership`] says.
//!
//! As on Redis: a command read and never answered stays pending for the
//! node, and its next daemon reads it first; a command is marked taken
//! before it is carried out, so one found taken (its daemon stopped) or
//! answered is answered without being carried out again.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bpm_domain::NodeId;
use bpm_ports::{
    Call, CommandBus, CommandMark, Delivery, ManagerError, Membership, Reply,
    answer_without_carrying_out, not_answering, only_if_alive, unanswered,
};
use tokio::sync::{Notify, oneshot};

/// How long one `receive` waits for a command.
const BLOCK: Duration = Duration::from_secs(1);

type Outcome = Result<Reply, ManagerError>;

/// The queues every node's daemons share, within one process.
#[derive(Default)]
pub struct CommandHub {
    state: Mutex<Hub>,
    /// Woken whenever a command is queued.
    queued: Notify,
}

#[derive(Default)]
struct Hub {
    /// Per node: commands sent and not read yet.
    queues: HashMap<NodeId, VecDeque<Delivery>>,
    /// Per node: commands read and not answered.
    pending: HashMap<NodeId, Vec<Delivery>>,
    /// Each command's mark, and its answer once answered.
    marks: HashMap<String, (CommandMark, Option<Outcome>)>,
    /// Senders waiting, by command.
    replies: HashMap<String, oneshot::Sender<Outcome>>,
}

impl CommandHub {
    /// An empty hub.
    pub fn new() -> Arc<Self> {
        Arc::new(CommandHub::default())
    }

    fn lock(&self) -> MutexGuard<'_, Hub> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Hub {
    /// Answers command `id`: keeps the answer, takes it off `node`'s
    /// pending commands and hands it to its sender if one waits.
    fn reply(&mut self, node: &NodeId, id: &str, answer: &Outcome) {
        self.marks
            .insert(id.to_owned(), (CommandMark::Answered, Some(answer.clone())));
        if let Some(pending) = self.pending.get_mut(node) {
            pending.retain(|d| d.id != id);
        }
        if let Some(waiting) = self.replies.remove(id) {
            let _ = waiting.send(answer.clone());
        }
    }
}

/// One daemon's bus on a [`CommandHub`], for node `node`.
pub struct InMemoryCommands {
    hub: Arc<CommandHub>,
    node: NodeId,
    membership: Arc<dyn Membership>,
    /// Commands this daemon read and has not answered.
    mine: Mutex<HashSet<String>>,
    /// Whether the node's commands read by a former daemon were read again.
    caught_up: AtomicBool,
}

impl InMemoryCommands {
    /// A daemon of `node` on `hub`; nodes are alive as `membership` says.
    pub fn new(hub: Arc<CommandHub>, node: NodeId, membership: Arc<dyn Membership>) -> Self {
        InMemoryCommands {
            hub,
            node,
            membership,
            mine: Mutex::new(HashSet::new()),
            caught_up: AtomicBool::new(false),
        }
    }

    fn mine(&self) -> MutexGuard<'_, HashSet<String>> {
        self.mine.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The next command for this node, if one is there now: first those a
    /// former daemon read and never answered, then new ones. Marks it.
    fn take(&self) -> Option<(Delivery, CommandMark, Option<Outcome>)> {
        let mut hub = self.hub.lock();
        let delivery = if self.caught_up.load(Ordering::Relaxed) {
            let d = hub.queues.get_mut(&self.node)?.pop_front()?;
            hub.pending
                .entry(self.node.clone())
                .or_default()
                .push(d.clone());
            d
        } else {
            let mine = self.mine();
            let again = hub
                .pending
                .get(&self.node)
                .and_then(|p| p.iter().find(|d| !mine.contains(&d.id)).cloned());
            drop(mine);
            if again.is_none() {
                self.caught_up.store(true, Ordering::Relaxed);
            }
            again?
        };
        let (mark, kept) = hub
            .marks
            .get(&delivery.id)
            .cloned()
            .unwrap_or((CommandMark::New, None));
        if mark == CommandMark::New {
            hub.marks
                .insert(delivery.id.clone(), (CommandMark::Taken, None));
        }
        Some((delivery, mark, kept))
    }
}

#[async_trait]
impl CommandBus for InMemoryCommands {
    async fn send(
        &self,
        node: &NodeId,
        call: Call,
        within: Duration,
    ) -> Result<Reply, ManagerError> {
        let started = Instant::now();
        only_if_alive(self.membership.as_ref(), node, &call).await?;
        let id = uuid::Uuid::now_v7().to_string();
        let (tx, rx) = oneshot::channel();
        {
            let mut hub = self.hub.lock();
            hub.replies.insert(id.clone(), tx);
            hub.queues
                .entry(node.clone())
                .or_default()
                .push_back(Delivery {
                    id: id.clone(),
                    call: call.clone(),
                });
        }
        self.hub.queued.notify_waiters();
        if let Ok(Ok(answer)) = tokio::time::timeout(within, rx).await {
            return answer;
        }
        // No answer in time: withdraw the command if no daemon took it.
        let (mark, kept) = {
            let mut hub = self.hub.lock();
            hub.replies.remove(&id);
            let now = hub
                .marks
                .get(&id)
                .cloned()
                .unwrap_or((CommandMark::New, None));
            if now.0 == CommandMark::New {
                hub.marks.insert(id.clone(), (CommandMark::Withdrawn, None));
                if let Some(queue) = hub.queues.get_mut(node) {
                    queue.retain(|d| d.id != id);
                }
            }
            now
        };
        if let Some(answer) = kept {
            // It answered as the wait ended.
            return answer;
        }
        Err(not_answering(
            self.membership.as_ref(),
            node,
            &call,
            started.elapsed(),
            unanswered(mark).into(),
        )
        .await)
    }

    async fn receive(&self) -> Result<Option<Delivery>, ManagerError> {
        let deadline = Instant::now() + BLOCK;
        loop {
            let queued = self.hub.queued.notified();
            tokio::pin!(queued);
            queued.as_mut().enable();
            let was_caught_up = self.caught_up.load(Ordering::Relaxed);
            if let Some((delivery, mark, kept)) = self.take() {
                let answered =
                    answer_without_carrying_out(mark, &self.node, &delivery.call, || {
                        kept.unwrap_or_else(|| {
                            Err(ManagerError::Connection("the kept answer is gone".into()))
                        })
                    });
                return match answered {
                    None => {
                        self.mine().insert(delivery.id.clone());
                        Ok(Some(delivery))
                    }
                    Some(answer) => {
                        self.hub.lock().reply(&self.node, &delivery.id, &answer);
                        Ok(None)
                    }
                };
            }
            // A first read finds what a former daemon left, without waiting.
            let left = deadline.saturating_duration_since(Instant::now());
            if !was_caught_up || left.is_zero() {
                return Ok(None);
            }
            if tokio::time::timeout(left, queued).await.is_err() {
                return Ok(None);
            }
        }
    }

    async fn answer(&self, delivery: &Delivery, answer: &Outcome) -> Result<(), ManagerError> {
        if self.mine().remove(&delivery.id) {
            self.hub.lock().reply(&self.node, &delivery.id, answer);
        }
        Ok(())
    }
}
