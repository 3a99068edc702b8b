//! Records placed on any node (`--node any`). A start placed so is written
//! unplaced to the shared store, which queues it ([`ClaimQueue`]); this
//! node's claimer takes records from that queue while its core has room
//! ([`bpm_domain::Supervisor::room`]), and its core adopts each one
//! ([`Input::Claimed`]). When it looks, and in what order it gives back,
//! claims and places, is the domain's [`Claimer`]; this file runs it.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bpm_domain::cluster::claimer::{Claimer, ClaimerEffect, ClaimerInput};
use bpm_domain::cluster::member::Level;
use bpm_domain::cluster::placement::{self, NameAnswer, NodeLabels, Room};
use bpm_domain::{Event, EventKind, Input, NodeId, ProcessRecord, ProcessSpec, Timestamp};
use bpm_ports::{
    ClaimQueue, ClaimedOne, ManagerError, ProcessManager, RoutingRefusal, StopOptions,
};
use tokio::sync::{broadcast, oneshot};

use crate::{Engine, ToLoop};

/// How many times a start placed on any node that replaces the live record
/// of its name stops one and tries again, when other starts keep taking
/// the name meanwhile.
const REPLACE_ROUNDS: usize = 3;

/// How many records placed on any node one batch writes at once.
const QUEUED_AT_ONCE: usize = 32;

/// How long a call on an unplaced record waits for the node that claimed
/// it to write it, before saying so.
const PLACED_WITHIN: Duration = Duration::from_secs(5);

impl Engine {
    /// Takes records placed on any node through `claims`, for this node
    /// carrying `labels`, on a task of the current tokio runtime; starts
    /// placed on any node are queued there. Set once; a second queue is
    /// ignored.
    pub fn claim_through(&self, claims: Arc<dyn ClaimQueue>, labels: NodeLabels) {
        if self.claims.set(Arc::clone(&claims)).is_ok() {
            tokio::spawn(claimer(self.clone(), claims, labels));
        }
    }

    /// Queues `specs`, placed on any node: each written unplaced and
    /// announced, up to [`QUEUED_AT_ONCE`] at a time (their order in the
    /// queue is their ids', not the order the writes land in); an answer
    /// per spec, in order.
    pub(crate) async fn queue_any(
        &self,
        specs: Vec<ProcessSpec>,
    ) -> Vec<Result<ProcessRecord, ManagerError>> {
        let count = specs.len();
        if self.claims.get().is_none() {
            let refused = self.not_shared(NodeId::any(), "start placed on any node");
            return vec![Err(refused); count];
        }
        if let Err(e) = self.takes_new_work(count).await {
            return vec![Err(e); count];
        }
        let mut answers: Vec<Option<Result<ProcessRecord, ManagerError>>> =
            (0..count).map(|_| None).collect();
        let mut writing = tokio::task::JoinSet::new();
        for (i, spec) in specs.into_iter().enumerate() {
            let record = match self.unplaced(spec).await {
                Ok(record) => record,
                Err(e) => {
                    answers[i] = Some(Err(e));
                    continue;
                }
            };
            if writing.len() >= QUEUED_AT_ONCE
                && let Some(Ok((at, answer))) = writing.join_next().await
            {
                answers[at] = Some(answer);
            }
            let engine = self.clone();
            writing.spawn(async move { (i, engine.queue_one(record).await) });
        }
        while let Some(joined) = writing.join_next().await {
            if let Ok((at, answer)) = joined {
                answers[at] = Some(answer);
            }
        }
        answers
            .into_iter()
            .map(|a| a.unwrap_or(Err(ManagerError::ShutDown)))
            .collect()
    }

    /// A new unplaced record for `spec`, if what it names exists now (as
    /// a node's core would check).
    async fn unplaced(&self, spec: ProcessSpec) -> Result<ProcessRecord, ManagerError> {
        let mut named = std::collections::HashMap::new();
        for id in spec.dependencies.iter().chain(&spec.parent) {
            match self.ports.store.get(*id).await {
                Ok(r) => {
                    named.insert(*id, r.state());
                }
                Err(bpm_ports::StoreError::NotFound(_)) => {}
                Err(e) => return Err(e.into()),
            }
        }
        placement::check_named(&spec, |id| named.get(&id).copied())
            .map_err(ManagerError::Refused)?;
        let now = self.ports.clock.now();
        Ok(placement::unplaced(self.ports.ids.next_id(), spec, now)?)
    }

    /// Writes `record`, unplaced (the store queues it), and announces it.
    async fn queue_one(&self, record: ProcessRecord) -> Result<ProcessRecord, ManagerError> {
        if record.spec().name.is_some() {
            return self.queue_named(record).await;
        }
        self.ports.store.create(&record).await?;
        self.announce_queued(&record).await;
        Ok(record)
    }

    /// Queues a named record unless a live record of the cluster carries
    /// its name ([`placement::name_taken`]): answers that one when asked
    /// to ensure it, stops it first when asked to replace it, refuses
    /// otherwise. The store creates a name once among racing nodes.
    async fn queue_named(&self, record: ProcessRecord) -> Result<ProcessRecord, ManagerError> {
        let mut last = None;
        for _ in 0..REPLACE_ROUNDS {
            let Some(live) = self.ports.store.create_named(&record).await? else {
                self.announce_queued(&record).await;
                return Ok(record);
            };
            match placement::name_taken(record.spec(), &live) {
                NameAnswer::Reuse => return Ok(live),
                NameAnswer::Refuse(e) => return Err(ManagerError::Refused(e)),
                // Refused when the spec was checked: a record placed on any
                // node does not roll.
                NameAnswer::Roll => {
                    return Err(ManagerError::InvalidSpec(
                        bpm_domain::SpecError::InvalidRoll(
                            "is for a record of one node, not one placed on any".into(),
                        ),
                    ));
                }
                // Stopped and ended (whole tree) before this one is queued:
                // never both running.
                NameAnswer::Replace => match self.stop(live.id(), StopOptions::default()).await {
                    Ok(_) | Err(ManagerError::NotFound(_)) => last = Some(live),
                    Err(e) => return Err(e),
                },
            }
        }
        // Others kept taking the name: refused, naming the last of them.
        let mut spec = record.spec().clone();
        spec.if_name_taken = bpm_domain::NameTaken::Refuse;
        match last.map(|live| placement::name_taken(&spec, &live)) {
            Some(NameAnswer::Refuse(e)) => Err(ManagerError::Refused(e)),
            _ => Err(ManagerError::ShutDown),
        }
    }

    /// Announces a record just queued for any node.
    async fn announce_queued(&self, record: &ProcessRecord) {
        let event = Event::new(EventKind::Submitted, record, record.created_at());
        if let Err(e) = self.ports.events.publish(event).await {
            tracing::warn!(id = %record.id(), error = %e, "a record placed on any node was queued, but its event was not sent; nodes find it within a second");
        }
    }

    /// Stops `record`, unplaced: this node takes it and cancels it, never
    /// started; or, when another node took it first, `record` as that node
    /// wrote it, for the stop to go there.
    pub(crate) async fn stop_unplaced(
        &self,
        record: ProcessRecord,
    ) -> Result<ProcessRecord, ManagerError> {
        let id = record.id();
        let Some(claims) = self.claims.get() else {
            return Err(self.not_shared(NodeId::any(), "stop of a process placed on any node"));
        };
        let deadline = self.ports.clock.now().saturating_add(PLACED_WITHIN);
        let mut claimer = None;
        loop {
            match claims.claim_one(id).await? {
                ClaimedOne::Taken(record) => {
                    let placed = match self.place(record).await {
                        Ok(placed) => placed,
                        Err(e) => {
                            // Not placed: the claim goes back to the queue.
                            let _ = claims.give_back(&self.node).await;
                            return Err(e);
                        }
                    };
                    self.call_once(Input::ClaimedToStop { record: placed })
                        .await?;
                    return self.get(id).await;
                }
                ClaimedOne::ClaimedBy(node) => claimer = Some(node),
                ClaimedOne::NotWaiting => {}
            }
            let now = self.get(id).await?;
            if !now.node().is_any() {
                return Ok(now);
            }
            if self.ports.clock.now() >= deadline {
                let node =
                    claimer.map_or_else(|| "another node".to_owned(), |n| format!("node {n}"));
                return Err(RoutingRefusal::NotPlaced {
                    id,
                    taker: node,
                    secs: PLACED_WITHIN.as_secs(),
                }
                .into());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Writes `record`, which this node claimed, placed on this node
    /// (compare-and-set over the queued version): nothing is done with a
    /// claim before the store holds it so, and a claim never placed goes
    /// back to the queue, for another node to take. Its placed version.
    async fn place(&self, record: ProcessRecord) -> Result<ProcessRecord, ManagerError> {
        let id = record.id();
        let now = self.ports.clock.now();
        let placed = record
            .placed_on(&self.node, now)
            .ok_or_else(|| ManagerError::from(RoutingRefusal::NotWaiting { id }))?;
        match self.ports.store.update(&placed, record.version()).await {
            Ok(()) => Ok(placed),
            // An answer lost on its way may hide a write that was taken.
            Err(e) => match self.ports.store.get(id).await {
                Ok(stored) if stored.node() == &self.node => Ok(stored),
                _ => Err(e.into()),
            },
        }
    }

    /// Places `record`, which this node claimed, on this node, then hands
    /// it to the core: it becomes this node's; if the core cannot take it,
    /// it becomes this node's, failed with why, so it does not wait for ever.
    async fn adopt(&self, record: ProcessRecord) -> Result<(), ManagerError> {
        let record = self.place(record).await?;
        let input = Input::Claimed {
            record: record.clone(),
        };
        match self.call(input).await {
            Ok(_) => Ok(()),
            Err(ManagerError::Refused(e)) => {
                let reason = e.to_string();
                self.call_once(Input::NameHeld { record, reason })
                    .await
                    .map(|_| ())
            }
            Err(e) => Err(e),
        }
    }

    /// What the core can take now.
    async fn room(&self) -> Result<Room, ManagerError> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(ToLoop::QueueRoom(reply))
            .map_err(|_| ManagerError::ShutDown)?;
        answer.await.map_err(|_| ManagerError::ShutDown)
    }
}

/// Runs this node's [`Claimer`]: carries out its effects one at a time,
/// each answer its next input, and hands it the store's events and its
/// wake-ups, as `Driver` runs the core.
async fn claimer(engine: Engine, claims: Arc<dyn ClaimQueue>, labels: NodeLabels) {
    let mut events = engine.ports.events.subscribe();
    let start = Instant::now();
    let now =
        || Timestamp::from_millis(u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX));
    let (mut core, mut effects) = Claimer::start(engine.node.clone());
    let mut wake: Option<Instant> = None;
    loop {
        let mut queue: VecDeque<ClaimerEffect> = effects.into();
        while let Some(effect) = queue.pop_front() {
            let input = match effect {
                ClaimerEffect::GiveBack => ClaimerInput::GaveBack(
                    claims
                        .give_back(&engine.node)
                        .await
                        .map_err(|e| e.to_string()),
                ),
                ClaimerEffect::AskRoom => match engine.room().await {
                    Ok(room) => ClaimerInput::Room(room),
                    Err(_) => return,
                },
                ClaimerEffect::Claim(room) => ClaimerInput::Claimed(
                    claims
                        .claim(&room, &labels)
                        .await
                        .map_err(|e| e.to_string()),
                ),
                ClaimerEffect::Place(record) => {
                    let id = record.id();
                    match engine.adopt(*record).await {
                        Err(ManagerError::ShutDown) => return,
                        result => ClaimerInput::Placed {
                            id,
                            result: result.map_err(|e| e.to_string()),
                        },
                    }
                }
                ClaimerEffect::WakeAt(at) => {
                    wake = Some(start + Duration::from_millis(at.as_millis()));
                    continue;
                }
                ClaimerEffect::Log(level, line) => {
                    match level {
                        Level::Debug => tracing::debug!("{line}"),
                        Level::Info => tracing::info!("{line}"),
                        Level::Warn => tracing::warn!("{line}"),
                    }
                    continue;
                }
            };
            queue.extend(core.handle(input, now()));
        }
        let woken = async {
            match wake {
                Some(at) => tokio::time::sleep_until(at.into()).await,
                None => std::future::pending().await,
            }
        };
        let input = tokio::select! {
            event = events.recv() => match event {
                Ok(event) => ClaimerInput::Heard(Box::new(event)),
                Err(broadcast::error::RecvError::Lagged(_)) => ClaimerInput::Missed,
                Err(broadcast::error::RecvError::Closed) => return,
            },
            () = woken => {
                wake = None;
                ClaimerInput::Tick
            }
        };
        effects = core.handle(input, now());
    }
}
