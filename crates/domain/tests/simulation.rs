//! Deterministic simulation of the supervisor core: thousands of random
//! interleavings of submits, spawn results, exits, stops, pauses, restarts,
//! progress reports and timer firings on a simulated clock, with the world's
//! invariants checked after every step.
//!
//! The spawner's notices (exits, and starts made on exits) come in the order
//! it sent them, but a spawn's answer travels its own way: a process can
//! exit, and be reported so, before the core hears that it started.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};

use bpm_domain::cluster::slots::{Grants, grant_stands, holds_slot};
use bpm_domain::{
    CoreError, Effect, ExitStatus, GroupName, Input, Limits, NodeId, Percent, ProcessId,
    ProcessName, ProcessRecord, ProcessSpec, RestartMode, Signal, Span, StateName, Supervisor,
    Timer, Timestamp,
};
use proptest::prelude::*;

#[derive(Debug, Clone)]
struct Submit {
    group: u8,
    priority: i32,
    parent: Option<usize>,
    deps: Vec<usize>,
    delay_ms: Option<u64>,
    timeout_ms: Option<u64>,
    restart: u8,
    ignores_term: bool,
    tracked: bool,
}

#[derive(Debug, Clone)]
enum Op {
    Submit(Submit),
    /// The spawner carries out a spawn; its answer is delivered at once
    /// (`now`) or later, in any order with the notices.
    ResolveSpawn {
        pick: usize,
        ok: bool,
        now: bool,
    },
    /// A spawn's answer that was held back reaches the core.
    DeliverResult {
        pick: usize,
    },
    Exit {
        pick: usize,
        code: i32,
    },
    DeliverSignalExit {
        pick: usize,
    },
    Stop {
        pick: usize,
        force: bool,
    },
    StopLevel {
        level: usize,
    },
    Pause {
        pick: usize,
    },
    Resume {
        pick: usize,
    },
    Restart {
        pick: usize,
    },
    Progress {
        pick: usize,
        percent: u8,
    },
    Complete {
        pick: usize,
    },
    Fail {
        pick: usize,
    },
    Remove {
        pick: usize,
    },
    Advance {
        ms: u64,
    },
    /// The driver hands the next records to the spawner.
    HandOver,
    /// The spawner's oldest notice not yet delivered reaches the core.
    DeliverNotice,
    /// Another writer stores its own version of a record, or deletes it.
    ForeignWrite {
        pick: usize,
        delete: bool,
    },
    /// The store answers an ask for a cluster-wide slot of group `g3`.
    AnswerSlot {
        pick: usize,
    },
    /// A record ended on another node: refused groups may ask again.
    SlotsFreed,
}

fn op() -> impl Strategy<Value = Op> {
    let submit = (
        0u8..4,
        0i32..3,
        prop::option::weighted(0.3, 0usize..64),
        prop::collection::vec(0usize..64, 0..2),
        prop::option::weighted(0.2, 1u64..5_000),
        prop::option::weighted(0.3, 100u64..20_000),
        0u8..3,
        prop::bool::weighted(0.3),
        prop::bool::weighted(0.15),
    )
        .prop_map(
            |(
                group,
                priority,
                parent,
                deps,
                delay_ms,
                timeout_ms,
                restart,
                ignores_term,
                tracked,
            )| {
                Op::Submit(Submit {
                    group,
                    priority,
                    parent,
                    deps,
                    delay_ms,
                    timeout_ms,
                    restart,
                    ignores_term,
                    tracked,
                })
            },
        );
    let pick = 0usize..64;
    prop_oneof![
        5 => submit,
        6 => (pick.clone(), prop::bool::weighted(0.9), prop::bool::weighted(0.5)).prop_map(|(pick, ok, now)| Op::ResolveSpawn { pick, ok, now }),
        3 => pick.clone().prop_map(|pick| Op::DeliverResult { pick }),
        4 => (pick.clone(), 0i32..3).prop_map(|(pick, code)| Op::Exit { pick, code }),
        4 => pick.clone().prop_map(|pick| Op::DeliverSignalExit { pick }),
        3 => (pick.clone(), prop::bool::weighted(0.2)).prop_map(|(pick, force)| Op::Stop { pick, force }),
        1 => (0usize..3).prop_map(|level| Op::StopLevel { level }),
        2 => pick.clone().prop_map(|pick| Op::Pause { pick }),
        2 => pick.clone().prop_map(|pick| Op::Resume { pick }),
        1 => pick.clone().prop_map(|pick| Op::Restart { pick }),
        1 => (pick.clone(), 0u8..=100).prop_map(|(pick, percent)| Op::Progress { pick, percent }),
        1 => pick.clone().prop_map(|pick| Op::Complete { pick }),
        1 => pick.clone().prop_map(|pick| Op::Fail { pick }),
        1 => pick.clone().prop_map(|pick| Op::Remove { pick }),
        5 => (1u64..8_000).prop_map(|ms| Op::Advance { ms }),
        3 => Just(Op::HandOver),
        5 => Just(Op::DeliverNotice),
        1 => (pick.clone(), prop::bool::weighted(0.3)).prop_map(|(pick, delete)| Op::ForeignWrite { pick, delete }),
        3 => pick.clone().prop_map(|pick| Op::AnswerSlot { pick }),
        1 => Just(Op::SlotsFreed),
    ]
}

/// The world around the core: a store, OS processes, timers and a clock, all simulated.
struct World {
    core: Supervisor,
    now: Timestamp,
    store: BTreeMap<ProcessId, ProcessRecord>,
    ids: Vec<ProcessId>,
    next_id: u128,
    next_pid: u32,
    /// Records whose spawn was asked for and not yet carried out.
    spawning: Vec<ProcessId>,
    /// Spawns carried out whose answer has not reached the core.
    results: Vec<Input>,
    /// Processes the spawner started whose exit the core has not recorded
    /// (`Effect::ExitRecorded`): it answers a spawn of one with its pid.
    started: HashMap<ProcessId, u32>,
    /// Records started on exits whose start the core has not taken yet.
    reported: HashSet<ProcessId>,
    /// Records another writer changed or deleted, until the core writes
    /// its own view over them.
    foreign: HashSet<ProcessId>,
    /// Writes the store refused, for the core to reconcile.
    conflicts: Vec<ProcessId>,
    /// Records whose last write the store refused, until one is taken.
    refused: HashSet<ProcessId>,

    /// Live simulated processes: id → (pid, ignores TERM).
    alive: HashMap<ProcessId, (u32, bool)>,
    ignores_term: HashSet<ProcessId>,
    /// Exits caused by signals, not yet delivered.
    dying: Vec<(ProcessId, ExitStatus)>,
    timers: BTreeMap<Timer, Timestamp>,
    ended: HashSet<ProcessId>,
    /// Records the spawner holds to start on exits, in order.
    queued: VecDeque<ProcessId>,
    /// The spawner's notices (exits, starts made on exits), in the order
    /// it sent them, not yet delivered to the core.
    notices: VecDeque<Input>,
    /// Asks for a cluster-wide slot the store has not answered.
    asks: Vec<ProcessId>,
    /// Slots the store granted, with their records' versions then: each
    /// counts while its record is pending at that version.
    grants: Grants<()>,
    /// Records of `g3` another writer changed while they held a slot: the
    /// store's count misses them while they run.
    miscounted: HashSet<ProcessId>,
}

fn limits() -> Limits {
    let mut l = Limits {
        max_running: 4,
        max_depth: 3,
        max_per_level: 6,
        retention: Some(Span::from_secs(30)),
        hand_over_ahead: 3,
        ..Limits::default()
    };
    l.group_limits
        .insert(GroupName::new("g1").expect("valid"), 2);
    l.group_limits
        .insert(GroupName::new("g2").expect("valid"), 1);
    l.default_group_limit = Some(3);
    l.cluster_groups
        .insert(GroupName::new("g3").expect("valid"), CLUSTER_G3);
    l
}

/// Group `g3`'s cluster-wide limit.
const CLUSTER_G3: usize = 2;

impl World {
    fn new() -> Self {
        World {
            core: Supervisor::new(NodeId::local(), limits()),
            now: Timestamp::from_millis(1_000_000),
            store: BTreeMap::new(),
            ids: Vec::new(),
            next_id: 1,
            next_pid: 100,
            spawning: Vec::new(),
            results: Vec::new(),
            started: HashMap::new(),
            reported: HashSet::new(),
            foreign: HashSet::new(),
            conflicts: Vec::new(),
            refused: HashSet::new(),
            alive: HashMap::new(),
            ignores_term: HashSet::new(),
            dying: Vec::new(),
            timers: BTreeMap::new(),
            ended: HashSet::new(),
            queued: VecDeque::new(),
            notices: VecDeque::new(),
            asks: Vec::new(),
            grants: Grants::default(),
            miscounted: HashSet::new(),
        }
    }

    fn pick(&self, i: usize) -> Option<ProcessId> {
        (!self.ids.is_empty()).then(|| self.ids[i % self.ids.len()])
    }

    fn fresh_id(&mut self) -> ProcessId {
        let id = ProcessId::from_uuid(uuid::Uuid::from_u128(self.next_id));
        self.next_id += 1;
        id
    }

    fn input(&mut self, input: Input) -> Result<(), CoreError> {
        let store_before = self.store.clone();
        match self.core.handle(input, self.now) {
            Ok(effects) => {
                self.carry_out(effects);
                // The driver hands the core what the store refused.
                while let Some(id) = self.conflicts.pop() {
                    let stored = self.store.get(&id).map(ProcessRecord::version);
                    self.input(Input::StoreConflict { id, stored })
                        .expect("a record the core wrote is its to reconcile");
                }
                Ok(())
            }
            Err(e) => {
                assert_eq!(
                    self.store, store_before,
                    "a refused input must change nothing"
                );
                Err(e)
            }
        }
    }

    /// The store's compare-and-set write of `record`, and what must hold
    /// of every write the core makes.
    fn persist(&mut self, record: ProcessRecord, expected_version: Option<u64>, durable: bool) {
        let before = self.store.get(&record.id());
        let stored = before.map(ProcessRecord::version);
        if stored != expected_version {
            // Compare-and-set fails: another writer came between.
            assert!(
                self.foreign.contains(&record.id()),
                "compare-and-set against what the store holds"
            );
            self.conflicts.push(record.id());
            self.refused.insert(record.id());
            return;
        }
        self.refused.remove(&record.id());
        let between_active_states = before.is_some_and(|b| b.state().is_active())
            && record.state().is_active()
            && !record.is_tracked();
        // After a conflict the core flushes (always safe).
        if !self.foreign.remove(&record.id()) {
            assert_eq!(
                durable, !between_active_states,
                "only changes between active states of a process may stay unflushed"
            );
        }
        assert!(record.version() > stored.unwrap_or(0), "versions only grow");
        // Whatever order the notices came in, an exit is handled
        // as it happened: after the start, so under the restart policy.
        if let Some(status) = record.lifecycle().exit()
            && matches!(record.state(), StateName::Completed | StateName::Failed)
            && !record.is_tracked()
        {
            let policy = record.spec().restart;
            let wants = match policy.mode {
                RestartMode::Never => false,
                RestartMode::OnFailure => !status.success(),
                RestartMode::Always => true,
            };
            assert!(
                !wants || policy.max_restarts.is_some_and(|m| record.restarts() >= m),
                "{} ended {} on an exit its restart policy restarts",
                record.id(),
                record.state()
            );
        }
        // The core has taken the start (or ended the record).
        if record.pid().is_some() || record.is_terminal() {
            self.reported.remove(&record.id());
        }
        self.store.insert(record.id(), record);
    }

    fn carry_out(&mut self, effects: Vec<Effect>) {
        for effect in effects {
            match effect {
                Effect::Persist {
                    record,
                    expected_version,
                    durable,
                } => self.persist(record, expected_version, durable),
                Effect::Delete { id } => {
                    let gone = self.store.remove(&id);
                    assert!(
                        gone.as_ref().is_some_and(ProcessRecord::is_terminal)
                            || self.foreign.remove(&id),
                        "only finished records are deleted"
                    );
                    self.foreign.remove(&id);
                    self.refused.remove(&id);
                }
                Effect::Spawn { record } => {
                    assert_eq!(record.state(), StateName::Starting);
                    let id = record.id();
                    // The spawner drops a queued record it is asked to start,
                    // and answers for one it started on an exit with that process.
                    self.queued.retain(|q| *q != id);
                    assert!(
                        !self.alive.contains_key(&id) || self.reported.contains(&id),
                        "a live process is never spawned twice"
                    );
                    self.spawning.push(id);
                }
                Effect::StopByCommand { .. } => {
                    unreachable!("the simulation's specs have no stop command")
                }
                Effect::Reattach { .. } => {
                    unreachable!(
                        "only a restore re-attaches; the simulation never restarts the core"
                    )
                }
                Effect::Signal { id, pid, signal } => {
                    let Some(&(live_pid, ignores)) = self.alive.get(&id) else {
                        continue;
                    };
                    assert_eq!(pid, live_pid, "signals go to the record's own process");
                    let dies = match signal {
                        Signal::Kill => Some(ExitStatus::Signal(9)),
                        Signal::Term if !ignores => Some(ExitStatus::Signal(15)),
                        _ => None,
                    };
                    if let Some(status) = dies
                        && !self.dying.iter().any(|(d, _)| *d == id)
                    {
                        self.dying.push((id, status));
                    }
                }
                Effect::ArmTimer { timer, at } => {
                    self.timers.insert(timer, at);
                }
                Effect::CancelTimer { timer } => {
                    self.timers.remove(&timer);
                }
                Effect::Publish(event) => {
                    assert!(
                        self.store.contains_key(&event.id)
                            || event.state.is_terminal()
                            || self.foreign.contains(&event.id),
                        "events follow writes"
                    );
                }
                Effect::ExitRecorded { id } => {
                    assert!(
                        !self.alive.contains_key(&id),
                        "an exit is recorded only once the process has ended"
                    );
                    self.started.remove(&id);
                }
                Effect::TakeClusterSlot { id, group, limit } => {
                    assert_eq!((group.as_str(), limit), ("g3", CLUSTER_G3));
                    assert!(!self.asks.contains(&id), "one ask at a time");
                    self.asks.push(id);
                }
                Effect::WatchOwner { .. } => panic!("no record here has an owner"),
                Effect::WatchFiles { .. } | Effect::UnwatchFiles { .. } => {
                    panic!("no record here watches files")
                }
            }
        }
    }

    /// A process exited: the spawner starts the next queued record in its
    /// place if the process hands over its slot, and reports both later.
    fn exit(&mut self, id: ProcessId, status: ExitStatus) {
        let hands_over = self
            .store
            .get(&id)
            .is_some_and(|r| !r.is_tracked() && r.spec().restart.mode == RestartMode::Never);
        match self.queued.pop_front().filter(|_| hands_over) {
            Some(next) => {
                let started = if self.next_pid.is_multiple_of(7) {
                    Err("exec failed".to_owned())
                } else {
                    let pid = self.next_pid;
                    self.alive
                        .insert(next, (pid, self.ignores_term.contains(&next)));
                    self.started.insert(next, pid);
                    self.reported.insert(next);
                    Ok(pid)
                };
                self.next_pid += 1;
                self.notices.push_back(Input::HandedOver {
                    id,
                    status,
                    next,
                    started,
                });
            }
            None => self.notices.push_back(Input::Exited {
                id,
                status,
                limit: None,
            }),
        }
    }

    /// Delivers every notice and spawn answer still on its way.
    fn deliver_all(&mut self) {
        while !self.notices.is_empty() || !self.results.is_empty() {
            while let Some(n) = self.notices.pop_front() {
                let _ = self.input(n);
            }
            while !self.results.is_empty() {
                let r = self.results.remove(0);
                let _ = self.input(r);
            }
        }
    }

    /// What the driver does before a stop, a restart, a completion or a
    /// failure: takes the queued records back, then lets the core hear of
    /// every start the spawner made (and the spawn answers a report may be
    /// held behind).
    fn withdraw(&mut self) {
        let back: Vec<_> = self.queued.drain(..).collect();
        self.core.withdraw(&back);
        self.deliver_all();
    }

    fn apply(&mut self, op: Op) {
        if matches!(
            op,
            Op::Stop { .. }
                | Op::StopLevel { .. }
                | Op::Restart { .. }
                | Op::Complete { .. }
                | Op::Fail { .. }
        ) {
            self.withdraw();
        }
        let _ = match op {
            Op::Submit(s) => self.submit(&s),
            Op::ResolveSpawn { pick, ok, now } => self.resolve_spawn(pick, ok, now),
            Op::DeliverResult { pick } => {
                if self.results.is_empty() {
                    return;
                }
                let answer = self.results.remove(pick % self.results.len());
                self.input(answer)
            }
            Op::Exit { pick, code } => {
                self.end_one(pick, code);
                Ok(())
            }
            Op::DeliverSignalExit { pick } => {
                self.deliver_signal_exit(pick);
                Ok(())
            }
            Op::Stop { pick, force } => match self.pick(pick) {
                Some(id) => self.input(Input::Stop {
                    id,
                    force,
                    grace: None,
                }),
                None => return,
            },
            Op::StopLevel { level } => self.input(Input::StopLevel {
                level,
                force: false,
                grace: None,
            }),
            Op::Pause { pick } => match self.pick(pick) {
                Some(id) => self.input(Input::Pause { id }),
                None => return,
            },
            Op::Resume { pick } => match self.pick(pick) {
                Some(id) => self.input(Input::Resume { id }),
                None => return,
            },
            Op::Restart { pick } => {
                let Some(id) = self.pick(pick) else { return };
                let new_id = self.fresh_id();
                let r = self.input(Input::Restart { id, new_id });
                if r.is_ok() {
                    self.ids.push(new_id);
                    if self.ignores_term.contains(&id) {
                        self.ignores_term.insert(new_id);
                    }
                }
                r
            }
            Op::Progress { pick, percent } => match self.pick(pick) {
                Some(id) => self.input(Input::Progress {
                    id,
                    percent: Percent::new(percent).expect("valid"),
                    message: None,
                }),
                None => return,
            },
            Op::Complete { pick } => match self.pick(pick) {
                Some(id) => self.input(Input::Complete { id, result: None }),
                None => return,
            },
            Op::Fail { pick } => match self.pick(pick) {
                Some(id) => self.input(Input::Fail {
                    id,
                    error: "caller says no".into(),
                }),
                None => return,
            },
            Op::Remove { pick } => match self.pick(pick) {
                Some(id) => self.input(Input::Remove { id }),
                None => return,
            },
            Op::Advance { ms } => {
                self.advance(ms);
                Ok(())
            }
            Op::AnswerSlot { pick } => self.answer_slot(pick),
            Op::SlotsFreed => self.input(Input::ClusterSlotsFreed),
            Op::HandOver => {
                self.hand_over();
                Ok(())
            }
            Op::ForeignWrite { pick, delete } => {
                self.foreign_write(pick, delete);
                Ok(())
            }
            Op::DeliverNotice => match self.notices.pop_front() {
                // Notices come in the order the spawner sent them.
                Some(n) => self.input(n),
                None => return,
            },
        };
    }

    /// Submits a record as `s` describes it.
    fn submit(&mut self, s: &Submit) -> Result<(), CoreError> {
        let id = self.fresh_id();
        let mut spec = if s.tracked {
            ProcessSpec::tracked(ProcessName::new("op").expect("valid"))
        } else {
            ProcessSpec::argv(["work"])
        };
        spec.group = match s.group {
            1 => Some(GroupName::new("g1").expect("valid")),
            2 => Some(GroupName::new("g2").expect("valid")),
            3 => Some(GroupName::new("g3").expect("valid")),
            _ => None,
        };
        spec.priority = s.priority;
        spec.parent = s.parent.and_then(|p| self.pick(p));
        spec.dependencies = s.deps.iter().filter_map(|d| self.pick(*d)).collect();
        spec.dependencies.sort();
        spec.dependencies.dedup();
        spec.delay = s.delay_ms.map(Span::from_millis);
        spec.timeout = s.timeout_ms.map(Span::from_millis);
        if !s.tracked {
            spec.restart.mode = [
                RestartMode::Never,
                RestartMode::OnFailure,
                RestartMode::Always,
            ][usize::from(s.restart)];
            spec.restart.max_restarts = Some(2);
        }
        if s.ignores_term {
            self.ignores_term.insert(id);
        }
        let r = self.input(Input::Submit { id, spec });
        if r.is_ok() {
            self.ids.push(id);
        }
        r
    }

    /// Answers one spawn under way: started, or failed; at once or later.
    fn resolve_spawn(&mut self, pick: usize, ok: bool, now: bool) -> Result<(), CoreError> {
        if self.spawning.is_empty() {
            return Ok(());
        }
        let id = self.spawning.remove(pick % self.spawning.len());
        let answer = if let Some(&pid) = self.started.get(&id) {
            // Started already (on an exit): the spawner answers with that process.
            Input::Spawned { id, pid }
        } else if ok {
            let pid = self.next_pid;
            self.next_pid += 1;
            self.alive
                .insert(id, (pid, self.ignores_term.contains(&id)));
            self.started.insert(id, pid);
            Input::Spawned { id, pid }
        } else {
            Input::SpawnFailed {
                id,
                error: "exec failed".into(),
            }
        };
        if now {
            self.input(answer)
        } else {
            self.results.push(answer);
            Ok(())
        }
    }

    /// Moves the clock on, firing every timer due, in order.
    fn advance(&mut self, ms: u64) {
        self.now = Timestamp::from_millis(self.now.as_millis() + ms);
        loop {
            let due = self
                .timers
                .iter()
                .filter(|(_, at)| **at <= self.now)
                .min_by_key(|(t, at)| (**at, **t))
                .map(|(t, _)| *t);
            let Some(timer) = due else { break };
            self.timers.remove(&timer);
            self.input(Input::TimerFired(timer))
                .expect("timers never error");
        }
    }

    /// Answers one ask for a cluster-wide slot as the store would.
    fn answer_slot(&mut self, pick: usize) -> Result<(), CoreError> {
        if self.asks.is_empty() {
            return Ok(());
        }
        let id = self.asks.remove(pick % self.asks.len());
        // The store's count: g3's records holding a slot (tracked
        // operations hold none), and the grants of records still
        // pending and unchanged since (not queued again after a run).
        let store = &self.store;
        let group = GroupName::new("g3").expect("group");
        let holding = store.values().filter(|r| holds_slot(r, &group)).count();
        let version = store.get(&id).map(ProcessRecord::version);
        let granted = self
            .grants
            .ask(id, CLUSTER_G3, holding, version, (), |g, grant| {
                grant_stands(store.get(g), grant.at)
            });
        self.input(Input::ClusterSlot { id, granted })
    }

    /// Hands the pending roots over, as a daemon that exits does.
    fn hand_over(&mut self) {
        let added = self.core.hand_over();
        for id in &added {
            let r = self
                .core
                .get(*id)
                .expect("the core hands over its own records");
            assert_eq!(
                r.state(),
                StateName::Pending,
                "only pending records are handed over"
            );
            assert!(r.parent().is_none(), "only roots are handed over");
        }
        self.queued.extend(added);
    }

    /// Another writer changes or deletes a record in the store.
    fn foreign_write(&mut self, pick: usize, delete: bool) {
        let Some(id) = self.pick(pick) else {
            return;
        };
        // The store counts cluster-wide slots: another writer that
        // changes a record holding one miscounts it.
        if self.store.get(&id).is_some_and(|r| {
            r.state().is_active()
                && !r.is_tracked()
                && r.group().is_some_and(|g| g.as_str() == "g3")
        }) {
            self.miscounted.insert(id);
        }
        if delete {
            if self.store.remove(&id).is_none() {
                return;
            }
        } else if let Some(r) = self.store.get_mut(&id) {
            let theirs = r.version() + 1;
            r.rebase(theirs);
        } else {
            return;
        }
        self.foreign.insert(id);
    }

    /// Any process may end, whether or not the core has heard of its start.
    fn end_one(&mut self, pick: usize, code: i32) {
        let mut live: Vec<_> = self.alive.keys().copied().collect();
        live.sort();
        if live.is_empty() {
            return;
        }
        let id = live[pick % live.len()];
        self.alive.remove(&id);
        self.dying.retain(|(d, _)| *d != id);
        self.exit(id, ExitStatus::Code(code));
    }

    /// A signal sent earlier takes effect: its process ends.
    fn deliver_signal_exit(&mut self, pick: usize) {
        if self.dying.is_empty() {
            return;
        }
        let (id, status) = self.dying[pick % self.dying.len()];
        self.dying.retain(|(d, _)| *d != id);
        if self.alive.remove(&id).is_none() {
            return;
        }
        self.exit(id, status);
    }

    fn view(&self) -> BTreeMap<ProcessId, ProcessRecord> {
        let mut view = self.store.clone();
        for id in &self.foreign {
            match self.core.get(*id) {
                Some(r) => view.insert(*id, r.clone()),
                None => view.remove(id),
            };
        }
        view
    }

    fn check(&mut self) {
        self.core
            .check_invariants()
            .unwrap_or_else(|e| panic!("core invariant: {e}"));
        // The store and the core agree, record for record.
        // (Except where another writer came between, until the core writes again.)
        let core: BTreeMap<_, _> = self.core.records().map(|r| (r.id(), r.clone())).collect();
        for (id, r) in &core {
            if !self.foreign.contains(id) {
                assert_eq!(
                    self.store.get(id),
                    Some(r),
                    "store and core disagree on {id}"
                );
            }
        }
        for id in self.store.keys() {
            assert!(
                core.contains_key(id),
                "the store holds {id}, unknown to the core"
            );
        }
        assert!(
            self.refused.is_empty(),
            "writes the store refused were never made good: {:?}",
            self.refused
        );
        // What follows reads the world's records: the store's, or, where
        // another writer came between, the core's until it writes again.
        let view = self.view();
        // Limits, counted from the store.
        let active: Vec<_> = self
            .store
            .values()
            .filter(|r| r.state().is_active() && !r.is_tracked())
            .collect();
        assert!(
            active.len() <= 4,
            "{} active over the overall limit",
            active.len()
        );
        for (g, limit) in [("g1", 2), ("g2", 1), ("g3", 3)] {
            let n = active
                .iter()
                .filter(|r| r.group().is_some_and(|x| x.as_str() == g))
                .count();
            assert!(n <= limit, "group {g} has {n} active over {limit}");
        }
        for r in view.values() {
            if r.is_terminal() {
                // A finished record has its end and its outcome.
                assert!(r.lifecycle().ended_at().is_some());
                assert!(r.state() == StateName::Completed || r.lifecycle().error().is_some());
                // No OS process runs for it.
                assert!(
                    !self.alive.contains_key(&r.id()),
                    "{} is {} yet its process runs",
                    r.id(),
                    r.state()
                );
                self.ended.insert(r.id());
            }
        }
        // A terminal record never runs again (a manual restart makes a new record).
        for id in &self.ended {
            if let Some(r) = view.get(id) {
                assert!(
                    r.is_terminal(),
                    "{id} left its final state for {}",
                    r.state()
                );
            }
        }
        self.check_limits(&view);
        self.check_processes(&view);
    }

    /// Never above the cluster-wide limit, in the store and on the OS
    /// (but for records another writer took out of the store's count), and
    /// the processes that run, counted from the OS, within the limits too.
    fn check_limits(&mut self, view: &BTreeMap<ProcessId, ProcessRecord>) {
        let alive = &self.alive;
        self.miscounted.retain(|id| {
            alive.contains_key(id) || view.get(id).is_some_and(|r| r.state().is_active())
        });
        let g3 = |id: &ProcessId| {
            self.core
                .get(*id)
                .and_then(ProcessRecord::group)
                .is_some_and(|x| x.as_str() == "g3")
        };
        let excused = self.miscounted.len();
        let held = self
            .store
            .values()
            .filter(|r| r.state().is_active() && !r.is_tracked())
            .filter(|r| r.group().is_some_and(|g| g.as_str() == "g3"))
            .count();
        assert!(
            held <= CLUSTER_G3 + excused,
            "g3 holds {held} cluster-wide slots ({excused} miscounted)"
        );
        let running = self.alive.keys().filter(|id| g3(id)).count();
        assert!(
            running <= CLUSTER_G3 + excused,
            "g3 runs {running} processes ({excused} miscounted)"
        );
        // Processes that run, counted from the OS: within the limits too.
        assert!(self.alive.len() <= 4, "{} processes run", self.alive.len());
        for (g, limit) in [("g1", 2), ("g2", 1), ("g3", 3)] {
            let n = self
                .alive
                .keys()
                .filter(|id| {
                    self.core
                        .get(**id)
                        .and_then(ProcessRecord::group)
                        .is_some_and(|x| x.as_str() == g)
                })
                .count();
            assert!(n <= limit, "group {g} runs {n} processes over {limit}");
        }
    }

    /// Every live process belongs to a record that runs, and no child
    /// outlives a stopped parent.
    fn check_processes(&self, view: &BTreeMap<ProcessId, ProcessRecord>) {
        // Every live process belongs to a record that is running, paused or
        // stopping, or was started on an exit the core has not heard of.
        for id in self.alive.keys() {
            // Or whose spawn's answer is on its way.
            let answering = self
                .results
                .iter()
                .any(|r| matches!(r, Input::Spawned { id: x, .. } if x == id));
            if self.reported.contains(id) || answering {
                continue;
            }
            let state = view.get(id).map(ProcessRecord::state);
            assert!(
                matches!(
                    state,
                    Some(StateName::Running | StateName::Paused | StateName::Stopping)
                ),
                "a process runs for a record in {state:?}"
            );
        }
        // No child outlives a stopped parent.
        for r in view.values() {
            let Some(parent) = r.parent().and_then(|p| view.get(&p)) else {
                continue;
            };
            if matches!(
                parent.state(),
                StateName::Cancelled | StateName::TimedOut | StateName::Stopping
            ) {
                assert!(
                    r.is_terminal() || r.state() == StateName::Stopping,
                    "child {} is {} while its parent is {}",
                    r.id(),
                    r.state(),
                    parent.state()
                );
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1500, max_shrink_iters: 2000, .. ProptestConfig::default() })]

    #[test]
    fn invariants_hold_under_random_interleavings(ops in prop::collection::vec(op(), 1..160)) {
        let mut world = World::new();
        for op in ops {
            world.apply(op);
            world.check();
        }
        // Drain the world: deliver every answer and exit and fire every
        // timer; nothing may stay stuck, and no exit may be lost.
        for _ in 0..200 {
            // The callers end their tracked operations too.
            let tracked: Vec<_> = world
                .view()
                .values()
                .filter(|r| r.is_tracked() && !r.is_terminal())
                .map(ProcessRecord::id)
                .collect();
            for id in tracked {
                let _ = world.input(Input::Complete { id, result: None });
            }
            world.deliver_all();
            world.check();
            while !world.asks.is_empty() {
                world.apply(Op::AnswerSlot { pick: 0 });
                world.check();
            }
            while !world.spawning.is_empty() {
                world.apply(Op::ResolveSpawn { pick: 0, ok: true, now: true });
                world.check();
            }
            let live: Vec<_> = world.alive.keys().copied().collect();
            for _ in live {
                world.apply(Op::Exit { pick: 0, code: 0 });
                world.check();
            }
            world.deliver_all();
            world.apply(Op::Advance { ms: 60_000 });
            world.check();
        }
        assert!(world.alive.is_empty(), "processes still run: {:?}", world.alive);
        for r in world.view().values() {
            assert!(
                r.is_terminal(),
                "{} is still {} with nothing left to happen",
                r.id(),
                r.state()
            );
        }
    }
}
