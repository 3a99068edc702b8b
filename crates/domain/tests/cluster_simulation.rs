//! Several nodes in one deterministic simulation: three supervisors share
//! one store and one membership, under the domain's cluster rules (claims,
//! renewals, `may_write`, fencing by epoch, sweeps of lapsed leases, and
//! the rejoin of a node that comes back), while proptest cuts nodes off,
//! heals them, stalls time and ends processes in any order. Each node is
//! the code a daemon runs: its `Supervisor` and its `Member` (renewals,
//! stand-downs, takes again, reconciles and looks at the leases, in the order
//! the member says), whose effects the world carries out at once, as the
//! cluster driver does. After every step:
//! - no record is written by two epochs of its node: once an epoch wrote
//!   it, no older epoch writes it again;
//! - no record is both lost in the store and running on its node, once
//!   that node holds its name again;
//! - a record the store holds finished (given up as lost, or ended) never
//!   becomes live again there, nor ends otherwise;
//! - every node's core keeps its own invariants;
//! - no record starts before each of its dependencies completed, on its
//!   own node or (as the store holds it) on another;
//! - once everyone is back and the events were delivered, no record runs
//!   whose parent on another node was stopped;
//! - records placed on any node are claimed once each (a claim whose
//!   placing write never came goes back when its node is swept), their
//!   node is set once, and no record runs on two nodes at once;
//! - a group's cluster-wide limit holds, but for records whose node was cut
//!   off (their slots free as a sweep makes them `unreachable` or gives
//!   them up as `lost`, by design: a node cut off runs them on);
//! - once everyone is back, every record placed on any node was taken;
//! - never two live attempts of one record: a `--failover` record and the
//!   records that replace it (`restarted_from`) never run at once, though
//!   a node cut off stands down only on its own clock and the others
//!   fail over on the store's.
//!
//! Records may name records of other nodes (dependencies, parents): a node
//! whose core does not know one reads it from the store and hands it over
//! (`Input::Foreign`), and a write to the store is an event that every
//! connected node whose core watches the record follows with a read; a
//! node that was cut off reads its watched records again when it heals.

use std::collections::{HashMap, HashSet};

use bpm_domain::cluster::claimer::{Claimer, ClaimerEffect, ClaimerInput};
use bpm_domain::cluster::look::{LookEffect, LookInput, SeenLease};
use bpm_domain::cluster::member::{Member, MemberEffect, MemberInput, RenewFailure};
use bpm_domain::cluster::placement::{NodeLabels, Queued, Room, takes, unplaced};
use bpm_domain::cluster::slots::{Grants, grant_stands, holds_slot};
use bpm_domain::cluster::{Sweep, accepts_write, failover, sweep_record, take_name};
use bpm_domain::{
    ClusterTiming, CoreError, Effect, ExitStatus, GroupName, Input, Lease, Limits, NodeId,
    ProcessId, ProcessRecord, ProcessSpec, Signal, Span, StateName, Supervisor, Timestamp,
};
use proptest::prelude::*;

const NODES: usize = 3;

/// Group `agents`'s cluster-wide limit.
const AGENTS: usize = 2;

#[derive(Debug, Clone)]
enum Op {
    Submit(usize),
    /// Node n submits a record that depends on the k-th record in the store.
    SubmitAfter(usize, usize),
    /// Node n submits a child of the k-th record in the store.
    SubmitChild(usize, usize),
    /// Node n stops the k-th of its live records.
    Stop(usize, usize),
    Exit(usize, usize),
    Cut(usize),
    Heal(usize),
    Advance(u64),
    /// Node n queues a record for any node (of group `agents` if true).
    SubmitAny(usize, bool),
    /// Node n claims what it has room for, and places it.
    Claim(usize),
    /// Node n claims a record and is cut off before it places it.
    ClaimThenCut(usize),
    /// A record ended elsewhere: node n's refused groups ask again.
    SlotsFreed(usize),
    /// Node n submits a failover record (placed on any node if true) with
    /// a stop grace of g seconds.
    SubmitFailover(usize, bool, u64),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0..NODES).prop_map(Op::Submit),
        2 => (0..NODES, 0..8usize).prop_map(|(n, k)| Op::SubmitAfter(n, k)),
        2 => (0..NODES, 0..8usize).prop_map(|(n, k)| Op::SubmitChild(n, k)),
        1 => (0..NODES, 0..4usize).prop_map(|(n, k)| Op::Stop(n, k)),
        3 => (0..NODES, 0..4usize).prop_map(|(n, k)| Op::Exit(n, k)),
        1 => (0..NODES).prop_map(Op::Cut),
        1 => (0..NODES).prop_map(Op::Heal),
        3 => (100..4_000u64).prop_map(Op::Advance),
        3 => (0..NODES, prop::bool::weighted(0.7)).prop_map(|(n, a)| Op::SubmitAny(n, a)),
        3 => (0..NODES).prop_map(Op::Claim),
        1 => (0..NODES).prop_map(Op::ClaimThenCut),
        1 => (0..NODES).prop_map(Op::SlotsFreed),
        2 => (0..NODES, prop::bool::ANY, 0..4u64).prop_map(|(n, a, g)| Op::SubmitFailover(n, a, g)),
    ]
}

struct Node {
    name: NodeId,
    core: Supervisor,
    /// Its daemon's part in the cluster: the real core, whose effects the
    /// world carries out at once.
    member: Member,
    /// Its store's write fence, as its member last moved it: the epoch its
    /// writes carry and when the renewal that holds it was sent.
    writes_with: (u64, Timestamp),
    connected: bool,
    /// The processes running on its machine.
    running: HashMap<ProcessId, u32>,
    /// Writes the store did not take yet (newest per record).
    unsaved: HashMap<ProcessId, (Option<u64>, ProcessRecord)>,
    /// Its daemon's taking of records placed on any node: the real core,
    /// and the effects it asked for that are not carried out yet.
    claimer: (Claimer, Vec<ClaimerEffect>),
    /// Its armed timers: when each fires.
    timers: Vec<(Timestamp, bpm_domain::Timer)>,
}

impl Node {
    /// The epoch its writes carry.
    fn epoch(&self) -> u64 {
        self.writes_with.0
    }
}

struct World {
    now: Timestamp,
    timing: ClusterTiming,
    nodes: Vec<Node>,
    store: HashMap<ProcessId, ProcessRecord>,
    leases: HashMap<NodeId, Lease>,
    epochs: HashMap<NodeId, u64>,
    /// The newest epoch of its own node that wrote each record.
    written_by: HashMap<ProcessId, u64>,
    swept: HashSet<(NodeId, u64, Sweep)>,
    /// Records the store has held in a final state.
    finished: HashSet<ProcessId>,
    next: u128,
    pid: u32,
    /// Store writes not yet heard by the other nodes: id and version.
    events: Vec<(ProcessId, u64)>,
    /// Claims of records placed on any node not yet placed: id → claimer.
    claims: HashMap<ProcessId, usize>,
    /// Cluster-wide slots granted to records still pending: each record's
    /// version then, and the node and epoch that asked.
    grants: Grants<(NodeId, u64)>,
    /// Records of `agents` a sweep made `unreachable` or gave up: their
    /// slots were freed while they may still run on their cut-off node.
    cut_off: HashSet<ProcessId>,
}

impl World {
    fn new() -> World {
        let timing = ClusterTiming::new(Span::from_secs(2), Span::from_secs(6)).expect("timing");
        let now = Timestamp::from_millis(1_000_000);
        let mut world = World {
            now,
            timing,
            nodes: Vec::new(),
            store: HashMap::new(),
            leases: HashMap::new(),
            epochs: HashMap::new(),
            written_by: HashMap::new(),
            swept: HashSet::new(),
            finished: HashSet::new(),
            next: 1,
            pid: 100,
            events: Vec::new(),
            claims: HashMap::new(),
            grants: Grants::default(),
            cut_off: HashSet::new(),
        };
        for n in 0..NODES {
            let name = NodeId::new(format!("n{n}")).expect("name");
            let epoch = world.take_name(&name).expect("a free name");
            let mut limits = Limits {
                max_running: 3,
                ..Limits::default()
            };
            limits
                .cluster_groups
                .insert(GroupName::new("agents").expect("a group"), AGENTS);
            world.nodes.push(Node {
                name: name.clone(),
                member: Member::joined(name.clone(), timing, epoch, now),
                claimer: Claimer::start(name.clone()),
                core: Supervisor::new(name, limits),
                writes_with: (epoch, now),
                connected: true,
                running: HashMap::new(),
                unsaved: HashMap::new(),
                timers: Vec::new(),
            });
            // Its engine runs: told of the lease, and sweeping.
            world.drive(n, MemberInput::EngineAttached);
        }
        world
    }

    fn lease_of(&self, n: usize) -> Option<&Lease> {
        self.leases.get(&self.nodes[n].name)
    }

    /// Takes the name `name` (it must be free): a new epoch.
    fn take_name(&mut self, name: &NodeId) -> Option<u64> {
        let name = name.clone();
        let newest = self.epochs.get(&name).copied().unwrap_or(0);
        let epoch = take_name(&name, self.leases.get(&name), newest, self.now, None).ok()?;
        self.epochs.insert(name.clone(), epoch);
        self.leases.insert(
            name.clone(),
            Lease {
                node: name,
                epoch,
                host: "sim".into(),
                pid: 1,
                version: "sim".into(),
                since: self.now,
                renewed_at: self.now,
                ttl: Span::from_secs(2),
                slots: 3,
                left: false,
                labels: std::collections::BTreeMap::default(),
                boot: String::new(),
            },
        );
        Some(epoch)
    }

    /// The store's answer to node `n`'s renewal of `epoch`.
    fn renew(&mut self, n: usize, epoch: u64) -> MemberInput {
        if !self.nodes[n].connected {
            return MemberInput::RenewFailed(RenewFailure::Unavailable("cut off".into()));
        }
        let now = self.now;
        match self.leases.get_mut(&self.nodes[n].name) {
            Some(l)
                if l.epoch == epoch && l.renewed_at.saturating_add(l.ttl.as_duration()) >= now =>
            {
                l.renewed_at = now;
                MemberInput::Renewed { sent: now }
            }
            Some(l) if l.epoch == epoch => {
                MemberInput::RenewFailed(RenewFailure::Lapsed("expired".into()))
            }
            _ => MemberInput::RenewFailed(RenewFailure::Lapsed("fenced".into())),
        }
    }

    /// Hands node `n`'s member `first`, and carries out what it says (the
    /// answers of the store, the engine and the keeper come at once), as
    /// the cluster driver would.
    fn drive(&mut self, n: usize, first: MemberInput) {
        let mut inputs = std::collections::VecDeque::from([first]);
        while let Some(input) = inputs.pop_front() {
            let now = self.now;
            let effects = self.nodes[n].member.handle(input, now);
            for effect in effects {
                match effect {
                    MemberEffect::Renew { epoch } => inputs.push_back(self.renew(n, epoch)),
                    MemberEffect::TakeAgain => {
                        let name = self.nodes[n].name.clone();
                        let connected = self.nodes[n].connected;
                        inputs.push_back(
                            match connected.then(|| self.take_name(&name)).flatten() {
                                Some(epoch) => MemberInput::Taken { epoch, sent: now },
                                None => MemberInput::TakeFailed("held".into()),
                            },
                        );
                    }
                    MemberEffect::Reconcile { epoch, sent } => {
                        let name = self.nodes[n].name.clone();
                        let stored = self
                            .store
                            .values()
                            .filter(|r| r.node() == &name)
                            .map(|r| (r.id(), r.version(), r.state()))
                            .collect();
                        // What waited from before the lapse is reconciled,
                        // not written; the new epoch writes from now on.
                        self.nodes[n].unsaved.clear();
                        self.nodes[n].writes_with = (epoch, sent);
                        self.handle(n, Input::Rejoined { stored });
                        inputs.push_back(MemberInput::Reconciled { epoch, sent });
                    }
                    MemberEffect::WriteWith { epoch, sent } => {
                        self.nodes[n].writes_with = (epoch, sent);
                    }
                    MemberEffect::TellEngine { held } => {
                        self.handle(n, Input::Lease { held });
                        inputs.push_back(MemberInput::EngineTold { held });
                    }
                    MemberEffect::HoldKeeper { lapses, .. } => {
                        inputs.push_back(MemberInput::KeeperHeld { lapses });
                    }
                    MemberEffect::Look(LookEffect::Done(_))
                    | MemberEffect::Status(_)
                    | MemberEffect::Warn(_)
                    | MemberEffect::Log(..)
                    | MemberEffect::WakeAt(_) => {}
                    MemberEffect::Look(effect) => inputs.push_back(self.look(n, effect)),
                }
            }
        }
    }

    /// Whether node `n`'s writes reach the store now.
    fn writes(&self, n: usize) -> bool {
        let node = &self.nodes[n];
        node.connected
            && self.timing.may_write(node.writes_with.1, self.now)
            && accepts_write(self.epochs[&node.name], node.epoch())
    }

    fn handle(&mut self, n: usize, input: Input) {
        let now = self.now;
        if let Ok(effects) = self.nodes[n].core.handle(input, now) {
            self.carry_out(n, effects);
        }
    }

    fn carry_out(&mut self, n: usize, effects: Vec<Effect>) {
        for effect in effects {
            match effect {
                Effect::Persist {
                    record,
                    expected_version,
                    ..
                } => {
                    let id = record.id();
                    self.nodes[n].unsaved.insert(id, (expected_version, record));
                    self.flush(n);
                }
                Effect::Spawn { record } => {
                    for dep in &record.spec().dependencies {
                        let state = match self.nodes[n].core.get(*dep) {
                            Some(own) => own.state(),
                            None => self
                                .store
                                .get(dep)
                                .map_or(StateName::Lost, ProcessRecord::state),
                        };
                        assert_eq!(
                            state,
                            StateName::Completed,
                            "{} starts on {} before its dependency {dep} completed",
                            record.id(),
                            self.nodes[n].name
                        );
                    }
                    self.pid += 1;
                    let (id, pid) = (record.id(), self.pid);
                    self.nodes[n].running.insert(id, pid);
                    self.handle(n, Input::Spawned { id, pid });
                }
                Effect::ArmTimer { timer, at } => self.nodes[n].timers.push((at, timer)),
                Effect::CancelTimer { timer } => {
                    self.nodes[n].timers.retain(|(_, t)| *t != timer);
                }
                Effect::TakeClusterSlot { id, group, limit } => {
                    assert_eq!((group.as_str(), limit), ("agents", AGENTS));
                    // The store answers a node that reaches it; a node cut
                    // off is refused, and asks again later.
                    let granted = self.writes(n) && self.grant(id, n);
                    self.handle(n, Input::ClusterSlot { id, granted });
                }
                Effect::Signal { id, signal, .. }
                    if self.nodes[n].running.remove(&id).is_some() =>
                {
                    let status = ExitStatus::Signal(match signal {
                        Signal::Kill => 9,
                        _ => 15,
                    });
                    self.handle(
                        n,
                        Input::Exited {
                            id,
                            status,
                            limit: None,
                        },
                    );
                }
                _ => {}
            }
        }
    }

    /// The store's answer to an ask for one of `agents`'s slots: its
    /// records holding one, and the grants of records still pending at the
    /// version they were granted at by a daemon still at its epoch, are
    /// fewer than the limit (a grant of `id` that still holds stands).
    fn grant(&mut self, id: ProcessId, n: usize) -> bool {
        let (store, epochs) = (&self.store, &self.epochs);
        let agents = GroupName::new("agents").expect("group");
        let holding = store.values().filter(|r| holds_slot(r, &agents)).count();
        let asker = &self.nodes[n];
        let version = store.get(&id).map(ProcessRecord::version);
        let by = (asker.name.clone(), asker.epoch());
        self.grants
            .ask(id, AGENTS, holding, version, by, |g, grant| {
                let (node, epoch) = &grant.by;
                epochs.get(node) == Some(epoch) && grant_stands(store.get(g), grant.at)
            })
    }

    /// Node `n` takes the best record queued for any node that fits its
    /// room, as the claim script does; `None` if none fits.
    fn take(&mut self, n: usize, room: &Room) -> Option<ProcessRecord> {
        let best = self
            .store
            .values()
            .filter(|r| {
                Queued::of(r).is_some()
                    && !self.claims.contains_key(&r.id())
                    && takes(room, &NodeLabels::new(), r)
            })
            .min_by_key(|r| Queued::order(r))
            .cloned()?;
        self.claims.insert(best.id(), n);
        Some(best)
    }

    /// Node `n`'s claimer looks (as on an event), and the world carries out
    /// its effects until it rests: it gives back what its daemon claimed
    /// and never placed, then claims and places records while it has
    /// room, each written placed on the node before its core takes it.
    fn claim_all(&mut self, n: usize) {
        const CUT: &str = "the store does not take this node's writes";
        let (claimer, pending) = &mut self.nodes[n].claimer;
        let mut effects: std::collections::VecDeque<ClaimerEffect> = if pending.is_empty() {
            claimer.handle(ClaimerInput::Missed, self.now).into()
        } else {
            std::mem::take(pending).into()
        };
        while let Some(effect) = effects.pop_front() {
            let input = match effect {
                ClaimerEffect::GiveBack if self.writes(n) => {
                    let before = self.claims.len();
                    self.claims.retain(|_, claimer| *claimer != n);
                    ClaimerInput::GaveBack(Ok(before - self.claims.len()))
                }
                ClaimerEffect::GiveBack => ClaimerInput::GaveBack(Err(CUT.into())),
                ClaimerEffect::AskRoom => ClaimerInput::Room(self.nodes[n].core.room()),
                ClaimerEffect::Claim(room) if self.writes(n) => {
                    ClaimerInput::Claimed(Ok(self.take(n, &room)))
                }
                ClaimerEffect::Claim(_) => ClaimerInput::Claimed(Err(CUT.into())),
                ClaimerEffect::Place(record) => {
                    let id = record.id();
                    let result = if self.writes(n) {
                        self.place(n, &record);
                        Ok(())
                    } else {
                        Err(CUT.into())
                    };
                    ClaimerInput::Placed { id, result }
                }
                ClaimerEffect::WakeAt(_) | ClaimerEffect::Log(..) => continue,
            };
            let now = self.now;
            effects.extend(self.nodes[n].claimer.0.handle(input, now));
        }
    }

    /// Writes `record`, claimed by node `n`, placed on it, and hands it to
    /// its core.
    fn place(&mut self, n: usize, record: &ProcessRecord) {
        let id = record.id();
        let name = self.nodes[n].name.clone();
        let placed = record.placed_on(&name, self.now).expect("queued");
        assert_eq!(
            self.store.get(&id).map(ProcessRecord::version),
            Some(record.version()),
            "only its claimer writes a queued record"
        );
        self.written_by.insert(id, self.nodes[n].epoch());
        self.keep(placed.clone());
        self.claims.remove(&id);
        let now = self.now;
        let taken = self.nodes[n].core.handle(
            Input::Claimed {
                record: placed.clone(),
            },
            now,
        );
        let effects = match taken {
            Ok(effects) => effects,
            Err(e) => self.nodes[n]
                .core
                .handle(
                    Input::NameHeld {
                        record: placed,
                        reason: e.to_string(),
                    },
                    now,
                )
                .expect("a refused claim fails here"),
        };
        self.carry_out(n, effects);
    }

    /// Writes what node `n` holds unsaved, if it may write: compare-and-set,
    /// a conflict reconciled by its core.
    fn flush(&mut self, n: usize) {
        if !self.writes(n) {
            return;
        }
        let pending: Vec<_> = self.nodes[n].unsaved.drain().collect();
        for (id, (expected, record)) in pending {
            let stored = self.store.get(&id).map(ProcessRecord::version);
            if stored != expected {
                self.handle(n, Input::StoreConflict { id, stored });
                continue;
            }
            let epoch = self.nodes[n].epoch();
            let newest = self.written_by.entry(id).or_insert(epoch);
            assert!(
                epoch >= *newest,
                "{id} written by epoch {epoch} after epoch {newest}"
            );
            *newest = epoch;
            self.keep(record);
        }
    }

    /// What each node's member says is due at `now` (renewals, claims
    /// again, reconciles, stands down, looks at the leases), and its timers.
    fn tick(&mut self) {
        for n in 0..NODES {
            self.drive(n, MemberInput::Tick);
            self.flush(n);
        }
        // Timers fire on each node's own clock, cut off or not.
        for n in 0..NODES {
            let now = self.now;
            let (due, later): (Vec<_>, Vec<_>) = std::mem::take(&mut self.nodes[n].timers)
                .into_iter()
                .partition(|(at, _)| *at <= now);
            self.nodes[n].timers = later;
            for (_, timer) in due {
                self.handle(n, Input::TimerFired(timer));
            }
        }
    }

    /// Carries out one step of node `by`'s look at the leases, at once,
    /// as the daemon's sweeper does against the store: the answer for its
    /// member. A node whose writes do not reach the store cannot read the
    /// leases: its look fails there.
    fn look(&mut self, by: usize, effect: LookEffect) -> MemberInput {
        let by_name = self.nodes[by].name.clone();
        MemberInput::Look(match effect {
            LookEffect::ReadLeases if !self.writes(by) => {
                return MemberInput::LookFailed("cut off".into());
            }
            LookEffect::ReadLeases => {
                let mut leases: Vec<SeenLease> = self
                    .leases
                    .values()
                    .map(|lease| SeenLease {
                        lease: lease.clone(),
                        now: self.now,
                    })
                    .collect();
                leases.sort_by(|a, b| a.lease.node.cmp(&b.lease.node));
                LookInput::Leases(leases)
            }
            LookEffect::FailOver { lease, now } => LookInput::FailedOver {
                records: self.fail_over(&by_name, &lease, now),
            },
            LookEffect::BidForSweep { lease, sweep } => LookInput::Bid {
                won: self.swept.insert((lease.node.clone(), lease.epoch, sweep)),
            },
            LookEffect::Sweep { lease, sweep } => {
                self.give_back(&lease.node);
                LookInput::Swept {
                    records: self.sweep(&by_name, &lease, sweep),
                }
            }
            LookEffect::FinishSweep { .. } => LookInput::Finished,
            LookEffect::Done(_) => unreachable!("a look's end wants no answer"),
        })
    }

    /// The store's failover of `lease`'s node's due records for node `by`:
    /// each given up and replaced in one write, only while its node is
    /// still lost at that epoch.
    fn fail_over(&mut self, by: &NodeId, lease: &Lease, now: Timestamp) -> usize {
        if self.epochs[&lease.node] != lease.epoch {
            return 0;
        }
        let mut records: Vec<ProcessRecord> = self
            .store
            .values()
            .filter(|r| r.node() == &lease.node)
            .cloned()
            .collect();
        records.sort_by_key(ProcessRecord::id);
        let mut replaced = 0;
        for record in records {
            let new_id = ProcessId::from_uuid(uuid::Uuid::from_u128(self.next));
            if let Some((old, new)) = failover(lease, by, &record, new_id, now) {
                self.next += 1;
                self.keep(old);
                self.keep(new);
                replaced += 1;
            }
        }
        replaced
    }

    /// The lost node's claims it never placed go back to the queue.
    fn give_back(&mut self, node: &NodeId) {
        let lost = self.nodes.iter().position(|x| &x.name == node);
        self.claims.retain(|_, claimer| Some(*claimer) != lost);
    }

    /// Applies `sweep` of `lease`'s node to each record, for node `by`.
    fn sweep(&mut self, by: &NodeId, lease: &Lease, sweep: Sweep) -> usize {
        let mut records: Vec<ProcessRecord> = self.store.values().cloned().collect();
        records.sort_by_key(ProcessRecord::id);
        let mut changed = 0;
        for mut record in records {
            if sweep_record(sweep, lease, by, &self.timing, &mut record, self.now).is_some() {
                // Its node is cut off: whether the sweep made it
                // unreachable or, the node gone past `lost_after`,
                // gave it up at once, its slot frees while its process
                // may run on there.
                if is_agent(&record) {
                    self.cut_off.insert(record.id());
                }
                self.keep(record);
                changed += 1;
            }
        }
        changed
    }

    /// Puts `record` in the store: a final record stays final, and a
    /// record's node is set once.
    fn keep(&mut self, record: ProcessRecord) {
        let id = record.id();
        if let Some(was) = self.store.get(&id).map(ProcessRecord::node)
            && !was.is_any()
        {
            assert_eq!(record.node(), was, "{id} moved from node {was}");
        }
        if self.finished.contains(&id) {
            let was = self.store[&id].state();
            assert_eq!(
                record.state(),
                was,
                "{id} was {was} in the store and is written {} again",
                record.state()
            );
        }
        if record.is_terminal() {
            self.finished.insert(id);
        }
        self.events.push((id, record.version()));
        self.store.insert(id, record);
    }

    /// The k-th record in the store (in id order), if any.
    fn kth(&self, k: usize) -> Option<ProcessId> {
        let mut ids: Vec<ProcessId> = self.store.keys().copied().collect();
        ids.sort();
        ids.get(k % ids.len().max(1)).copied()
    }

    /// `ids` and their ancestors as the store holds them, for node `n`
    /// (its own records left out): what its engine would read.
    fn read_for(&self, n: usize, ids: &[ProcessId]) -> Vec<ProcessRecord> {
        let mut out: Vec<ProcessRecord> = Vec::new();
        for &first in ids {
            let mut next = Some(first);
            while let Some(id) = next {
                let Some(r) = self.store.get(&id) else { break };
                if r.node() == &self.nodes[n].name || out.iter().any(|o| o.id() == id) {
                    break;
                }
                next = r.parent();
                out.push(r.clone());
            }
        }
        out
    }

    /// Node `n` submits `spec`; when its core does not know a record the
    /// spec names, it reads it from the store (if connected) and tries again.
    fn submit_naming(&mut self, n: usize, spec: &ProcessSpec) {
        let id = ProcessId::from_uuid(uuid::Uuid::from_u128(self.next));
        self.next += 1;
        for _ in 0..3 {
            let now = self.now;
            match self.nodes[n].core.handle(
                Input::Submit {
                    id,
                    spec: spec.clone(),
                },
                now,
            ) {
                Ok(effects) => return self.carry_out(n, effects),
                Err(CoreError::UnknownDependency(x) | CoreError::ParentNotFound(x))
                    if self.nodes[n].connected =>
                {
                    let records = self.read_for(n, &[x]);
                    if records.is_empty() {
                        return;
                    }
                    self.handle(
                        n,
                        Input::Foreign {
                            records,
                            gone: Vec::new(),
                        },
                    );
                }
                Err(_) => return,
            }
        }
    }

    /// Delivers the store's writes to every connected node whose core
    /// watches the record, which reads it (and acts, which may write more).
    fn deliver(&mut self) {
        while !self.events.is_empty() {
            let events = std::mem::take(&mut self.events);
            for (id, version) in events {
                for n in 0..NODES {
                    if self.nodes[n].connected && self.nodes[n].core.watches(id, version) {
                        let records = self.read_for(n, &[id]);
                        self.handle(
                            n,
                            Input::Foreign {
                                records,
                                gone: Vec::new(),
                            },
                        );
                    }
                }
            }
        }
    }

    /// Node `n` reads every record its core watches again.
    fn read_watched(&mut self, n: usize) {
        let watched = self.nodes[n].core.watched();
        let records = self.read_for(n, &watched);
        if !records.is_empty() {
            self.handle(
                n,
                Input::Foreign {
                    records,
                    gone: Vec::new(),
                },
            );
        }
    }

    /// Everyone back and settled: no record runs whose parent on another
    /// node was stopped.
    fn check_cascades(&self) {
        for node in &self.nodes {
            for record in node.core.records() {
                let live = !record.is_terminal() && record.state() != StateName::Stopping;
                let Some(parent) = record.parent().and_then(|p| self.store.get(&p)) else {
                    continue;
                };
                if live && parent.node() != &node.name {
                    assert!(
                        !matches!(parent.state(), StateName::Cancelled | StateName::TimedOut),
                        "{} is {} on {} while its parent {} is {}",
                        record.id(),
                        record.state(),
                        node.name,
                        parent.id(),
                        parent.state()
                    );
                }
            }
        }
    }

    /// The first record of `id`'s line of failovers.
    fn first_of(&self, id: ProcessId) -> ProcessId {
        let mut at = id;
        while let Some(from) = self.store.get(&at).and_then(ProcessRecord::restarted_from) {
            at = from;
        }
        at
    }

    fn check(&self) {
        // No record runs on two nodes at once, nor two attempts of one.
        let mut seen = HashSet::new();
        let mut lines = HashMap::new();
        for node in &self.nodes {
            for id in node.running.keys() {
                assert!(seen.insert(*id), "{id} runs on two nodes");
                if let Some(other) = lines.insert(self.first_of(*id), (*id, &node.name)) {
                    panic!(
                        "two attempts run at once: {id} on {} and {} on {}",
                        node.name, other.0, other.1
                    );
                }
            }
        }
        // A cluster-wide limit holds, but for records whose node was cut off.
        let excused = |id: &ProcessId| self.cut_off.contains(id);
        let held = self
            .store
            .values()
            .filter(|r| r.state().is_active() && is_agent(r) && !excused(&r.id()))
            .count();
        assert!(held <= AGENTS, "{held} agents hold a cluster-wide slot");
        let running = self
            .nodes
            .iter()
            .flat_map(|node| node.running.keys().map(move |id| (node, id)))
            .filter(|(node, id)| node.core.get(**id).is_some_and(is_agent) && !excused(id))
            .count();
        assert!(running <= AGENTS, "{running} agents run");
        for (n, node) in self.nodes.iter().enumerate() {
            node.core.check_invariants().expect("the core's invariants");
            let holds = node.connected
                && self
                    .lease_of(n)
                    .is_some_and(|l| l.epoch == node.epoch() && self.writes(n));
            if !holds {
                continue;
            }
            for (id, record) in &self.store {
                if record.node() == &node.name
                    && record.state() == StateName::Lost
                    && node.unsaved.is_empty()
                {
                    assert!(
                        !node.running.contains_key(id),
                        "{id} is lost in the store and runs on {}",
                        node.name
                    );
                }
            }
        }
    }

    /// Node `n` submits a failover record, placed on any node if
    /// `anywhere` (written to the store while `n` reaches it), else its own.
    fn submit_failover(&mut self, n: usize, anywhere: bool, grace: u64) {
        let mut spec = ProcessSpec::argv(["server"]);
        spec.restart.mode = bpm_domain::RestartMode::OnFailure;
        spec.failover = true;
        spec.stop.grace = Span::from_secs(grace);
        let id = ProcessId::from_uuid(uuid::Uuid::from_u128(self.next));
        if anywhere {
            if self.writes(n) {
                self.next += 1;
                spec.node = Some(NodeId::any());
                let record = unplaced(id, spec, self.now).expect("a valid spec");
                self.keep(record);
            }
        } else {
            self.next += 1;
            self.handle(n, Input::Submit { id, spec });
        }
    }

    /// Node `n` stops the k-th of its records that has not ended.
    fn stop_kth_live(&mut self, n: usize, k: usize) {
        let mut live: Vec<ProcessId> = self.nodes[n]
            .core
            .records()
            .filter(|r| !r.is_terminal())
            .map(ProcessRecord::id)
            .collect();
        live.sort();
        if let Some(&id) = live.get(k % live.len().max(1)) {
            self.handle(
                n,
                Input::Stop {
                    id,
                    force: false,
                    grace: None,
                },
            );
        }
    }

    fn step(&mut self, op: &Op) {
        match *op {
            Op::Submit(n) => {
                let id = ProcessId::from_uuid(uuid::Uuid::from_u128(self.next));
                self.next += 1;
                self.handle(
                    n,
                    Input::Submit {
                        id,
                        spec: ProcessSpec::argv(["work"]),
                    },
                );
            }
            Op::Exit(n, k) => {
                let mut ids: Vec<ProcessId> = self.nodes[n].running.keys().copied().collect();
                ids.sort();
                if let Some(&id) = ids.get(k % ids.len().max(1)) {
                    self.nodes[n].running.remove(&id);
                    let code = i32::try_from(k).expect("small");
                    self.handle(
                        n,
                        Input::Exited {
                            id,
                            status: ExitStatus::Code(code),
                            limit: None,
                        },
                    );
                }
            }
            Op::SubmitAfter(n, k) => {
                if let Some(dep) = self.kth(k) {
                    let mut spec = ProcessSpec::argv(["next"]);
                    spec.dependencies = vec![dep];
                    self.submit_naming(n, &spec);
                }
            }
            Op::SubmitChild(n, k) => {
                if let Some(parent) = self.kth(k) {
                    let mut spec = ProcessSpec::argv(["child"]);
                    spec.parent = Some(parent);
                    self.submit_naming(n, &spec);
                }
            }
            Op::Stop(n, k) => self.stop_kth_live(n, k),
            Op::SubmitAny(n, agent) => {
                if self.writes(n) {
                    let id = ProcessId::from_uuid(uuid::Uuid::from_u128(self.next));
                    self.next += 1;
                    let mut spec = ProcessSpec::argv(["anywhere"]);
                    spec.node = Some(NodeId::any());
                    if agent {
                        spec.group = Some(GroupName::new("agents").expect("a group"));
                    }
                    let record = unplaced(id, spec, self.now).expect("a valid spec");
                    self.keep(record);
                }
            }
            Op::Claim(n) => self.claim_all(n),
            Op::ClaimThenCut(n) => {
                let room = self.nodes[n].core.room();
                if self.writes(n) && self.take(n, &room).is_some() {
                    // Its daemon dies before it places the record: the next
                    // one's claimer starts by giving its claims back.
                    self.nodes[n].claimer = Claimer::start(self.nodes[n].name.clone());
                    self.nodes[n].connected = false;
                }
            }
            Op::SlotsFreed(n) => self.handle(n, Input::ClusterSlotsFreed),
            Op::SubmitFailover(n, anywhere, grace) => self.submit_failover(n, anywhere, grace),
            Op::Cut(n) => self.nodes[n].connected = false,
            Op::Heal(n) => {
                let was_cut = !self.nodes[n].connected;
                self.nodes[n].connected = true;
                if was_cut {
                    self.flush(n);
                    self.read_watched(n);
                }
            }
            Op::Advance(ms) => {
                // Renewals come every third of a lease while time passes.
                let mut left = ms;
                while left > 0 {
                    let dt = left.min(600);
                    self.now = self
                        .now
                        .saturating_add(std::time::Duration::from_millis(dt));
                    left -= dt;
                    self.tick();
                }
            }
        }
        self.deliver();
        self.check();
    }
}

/// Whether `record` is of group `agents`.
fn is_agent(record: &ProcessRecord) -> bool {
    record.group().is_some_and(|g| g.as_str() == "agents")
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn no_record_is_written_by_two_epochs_nor_runs_while_lost(
        ops in proptest::collection::vec(op(), 1..80),
        dead in proptest::option::of(0..NODES),
    ) {
        let mut world = World::new();
        for op in &ops {
            world.step(op);
        }
        // Everyone back, time enough to settle: the invariants still hold.
        for n in 0..NODES {
            world.step(&Op::Heal(n));
        }
        world.step(&Op::Advance(3_000));
        world.check_cascades();
        // Every node claims, runs and ends what it can: the queue drains,
        // even if one node dies for good now (the claims it never placed
        // go back when it is swept).
        if let Some(dead) = dead {
            world.step(&Op::ClaimThenCut(dead));
            world.step(&Op::Cut(dead));
        }
        for _ in 0..40 {
            for n in (0..NODES).filter(|n| Some(*n) != dead) {
                world.step(&Op::Claim(n));
                let running: Vec<usize> = (0..world.nodes[n].running.len()).collect();
                for _ in running {
                    world.step(&Op::Exit(n, 0));
                }
                world.step(&Op::SlotsFreed(n));
            }
            world.step(&Op::Advance(1_000));
        }
        let waiting: Vec<ProcessId> = world
            .store
            .values()
            .filter(|r| Queued::of(r).is_some())
            .map(ProcessRecord::id)
            .collect();
        prop_assert!(waiting.is_empty(), "records still queued for any node: {waiting:?}");
    }
}
